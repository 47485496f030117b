"""A fifth vendor, "fifth", written the way a new vendor module is: settings, adapter and
registry entry in one module, built only on what `consumer` offers every vendor.

Its API (served by `fifth_sandbox.py`): `POST /v1/token` trades the client credentials
for a bearer token; `PUT /v1/erasure-api` switches erasure on for the workspace (the
one-time `setup`); `POST /v1/erasures` takes up to 100 emails and answers a job id, or 409
while erasure is off; `GET /v1/erasures/{job}` says `running`, or `done` with `erased` or
`absent` per email.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar
from urllib.parse import quote

from pydantic import Field, SecretStr

from consumer.config import VendorSettings
from consumer.ledger.records import DueJob, WorkItem
from consumer.model import Status
from consumer.vendors.base import (
    ItemOutcome,
    PermanentVendorError,
    PollResult,
    SubmitResult,
    SubmittedJob,
    VendorAuthError,
    unknown_job_status,
)
from consumer.vendors.http import TokenAuth, VendorHttp, token_answer
from consumer.vendors.registry import VendorEntry

NAME = "fifth"
MAX_IDS_PER_CALL = 100
_RESULTS = {"erased": Status.COMPLETED, "absent": Status.NOT_FOUND}


class FifthSettings(VendorSettings):
    vendor: ClassVar[str] = NAME
    hard_batch_limit: ClassVar[int | None] = MAX_IDS_PER_CALL

    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    identity_type: str = "email"
    batch_size: int = Field(default=MAX_IDS_PER_CALL, ge=1)


class FifthAdapter:
    """`VendorAdapter` for "fifth": one job per batch, polled until `done`."""

    name = NAME

    def __init__(self, settings: FifthSettings, http: VendorHttp) -> None:
        self._settings = settings
        self._http = http
        self._auth = TokenAuth(self._fetch_token)

    def submit(self, items: Sequence[WorkItem]) -> SubmitResult:
        values = [item.identity_value for item in items]
        response = self._http.call(
            "submit",
            "POST",
            f"{self._settings.base_url}/v1/erasures",
            auth=self._auth,
            json={"emails": sorted(set(values))},
            handled_statuses=(409,),
            redact=values,
        )
        if response.status_code == 409:
            raise VendorAuthError("fifth submit: erasure is off: run `erasure-worker setup`")
        job_id = response.json().get("job_id")
        if not isinstance(job_id, str):
            raise PermanentVendorError("fifth submit: answer without a job id")
        return SubmitResult(jobs=(SubmittedJob(job_id, None, tuple(i.item_id for i in items)),))

    def poll(self, job: DueJob) -> PollResult:
        url = f"{self._settings.base_url}/v1/erasures/{quote(job.vendor_job_id, safe='')}"
        answer = self._http.call("poll", "GET", url, auth=self._auth).json()
        if answer.get("state") == "running":
            return PollResult(Status.IN_PROGRESS)
        if answer.get("state") != "done":
            return unknown_job_status(NAME, answer.get("state"))
        results = answer.get("results", {})
        return PollResult(
            Status.COMPLETED,
            tuple(
                ItemOutcome(
                    item.item_id, _RESULTS.get(results.get(item.identity_value), Status.QUEUED)
                )
                for item in job.items
            ),
        )

    def check(self) -> None:
        self._auth.invalidate()
        self._auth.token()

    def close(self) -> None:
        self._http.close()

    def enable_erasure(self) -> bool:
        """Switch erasure on; True if it was off."""
        url = f"{self._settings.base_url}/v1/erasure-api"
        answer = self._http.call("submit", "PUT", url, auth=self._auth, json={"enabled": True})
        return bool(answer.json().get("changed"))

    def _fetch_token(self) -> tuple[str, float]:
        secret = self._settings.client_secret.get_secret_value()
        response = self._http.call(
            "auth",
            "POST",
            f"{self._settings.base_url}/v1/token",
            json={"client_id": self._settings.client_id, "client_secret": secret},
            redact=(secret,),
        )
        answer = token_answer(response, NAME)
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise VendorAuthError("fifth auth: answer without a token")
        return token, float(answer.get("expires_in", 3600))


def enable_erasure(settings: FifthSettings) -> str:
    """`erasure-worker setup` for "fifth"."""
    with VendorHttp(NAME, timeout_seconds=settings.timeout_seconds) as http:
        changed = FifthAdapter(settings, http).enable_erasure()
    return "erasure API enabled" if changed else "erasure API already enabled"


VENDOR = VendorEntry(
    NAME,
    FifthSettings,
    adapter=lambda settings, http, _sleep: FifthAdapter(settings, http),
    setup=enable_erasure,
)
