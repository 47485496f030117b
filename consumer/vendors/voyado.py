"""Voyado Elevate remove-customer-data adapter (VENDOR-FACTS §1).

One remove job per customer key: `POST {prefix}/create-remove-customer-job?customerKey=`
with the `Api-Key` header and no body, the key percent-encoded whatever it holds. A job is
polled at `{prefix}/job-status?jid=`; it waits until the day after it was created and then
for Elevate to archive the data (about 5 days), so it is polled slowly (the config's
defaults). Voyado has no "nothing held" answer: `done` completes every item.

`{prefix}` follows `api_version`: v4 (current), v3 (long-term support until 2026-12-31)
or v2 (past end of life). Host names differ between generations, so the base URL is
configuration too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal
from urllib.parse import quote

import requests
from pydantic import Field, SecretStr

from consumer.config import VendorSettings
from consumer.ledger.records import DueJob, WorkItem
from consumer.model import Status
from consumer.vendors.base import (
    ItemOutcome,
    PermanentVendorError,
    PollResult,
    RetryableVendorError,
    SubmitResult,
    SubmittedJob,
    VendorAuthError,
    VendorError,
    unknown_job_status,
)
from consumer.vendors.http import VendorHttp, vendor_error_summary
from consumer.vendors.registry import VendorEntry

API_PREFIXES: Mapping[str, str] = {
    "v2": "/api/v2/event-data",
    "v3": "/api/admin/v3/event-data",
    "v4": "/api/admin/v4/event-data",
}
CHECK_JID = "healthcheck"
"""A jid no job has: `check` asks its status to prove URL, API version and key."""
JOB_ERROR_DETAIL = "Voyado reported the job as error"
UNKNOWN_JOB_RESEND_DETAIL = "job unknown to Voyado (not_found); sending again"
UNKNOWN_JOB_FAILED_DETAIL = "job unknown to Voyado twice (not_found); giving up"
_OPEN_STATUSES = {
    "created": Status.SUBMITTED,
    "started": Status.SUBMITTED,  # shown by an older page in place of "created"
    "waiting": Status.SUBMITTED,
    "running": Status.IN_PROGRESS,
}


class VoyadoSettings(VendorSettings):
    """`vendors.voyado`: one customer key per call, and jobs that take days."""

    vendor: ClassVar[str] = "voyado"
    hard_batch_limit: ClassVar[int | None] = 1

    api_key: SecretStr
    api_version: Literal["v2", "v3", "v4"] = "v4"
    identity_type: str = "customer_key"
    batch_size: int = Field(default=1, ge=1)
    flush_interval_seconds: float = Field(default=1.0, gt=0)
    first_poll_after_seconds: float = Field(default=86400.0, ge=0)
    poll_interval_seconds: float = Field(default=21600.0, gt=0)
    rate_per_second: float = Field(default=5.0, gt=0)
    max_in_flight: int = Field(default=8, ge=1, le=64)


class VoyadoAdapter:
    """`VendorAdapter` for Voyado Elevate; one instance per worker loop (not thread-safe)."""

    name = "voyado"

    def __init__(self, settings: VoyadoSettings, http: VendorHttp | None = None) -> None:
        self._settings = settings
        self._prefix = settings.base_url + API_PREFIXES[settings.api_version]
        self._api_key = settings.api_key.get_secret_value()
        self._http = http or VendorHttp(self.name, timeout_seconds=settings.timeout_seconds)

    def submit(self, items: Sequence[WorkItem]) -> SubmitResult:
        """One call (one job) per item, in order; config caps batches at one item anyway.

        A rejected item fails alone. After a failure that may pass later the rest are not
        sent (they are released without spending an attempt), so a struggling vendor is not
        pressed. Nothing accepted and every item failed alike: the batch raises as a whole.
        """
        jobs: list[SubmittedJob] = []
        failures: list[tuple[WorkItem, VendorError]] = []
        for item in items:
            try:
                jobs.append(self._submit_one(item))
            except VendorAuthError:
                if not jobs:
                    raise
                break
            except PermanentVendorError as error:
                failures.append((item, error))
            except RetryableVendorError as error:
                failures.append((item, error))
                break
        if not jobs and len(failures) == len(items) and len({type(e) for _, e in failures}) == 1:
            raise failures[0][1]
        return SubmitResult(jobs=tuple(jobs), outcomes=_failure_outcomes(failures))

    def poll(self, job: DueJob) -> PollResult:
        """Ask for the job's status; see `status_result` for what each word means."""
        return status_result(job, self._job_status(job.vendor_job_id, "poll"))

    def check(self) -> None:
        """Voyado has no auth endpoint, so ask job-status about `CHECK_JID`, a jid no job has.

        A 200 (`not_found`) proves the base URL, the API version and the key; a 403 raises
        VendorAuthError (wrong cluster credentials); a 404 says the base URL or the API
        version is wrong (PermanentVendorError).
        """
        self._job_status(CHECK_JID, "auth")

    def close(self) -> None:
        self._http.close()

    def _submit_one(self, item: WorkItem) -> SubmittedJob:
        expected = self._settings.identity_type
        if item.identity_type != expected:
            raise PermanentVendorError(
                f"voyado submit: Voyado erases by {expected!r}, not {item.identity_type!r}"
            )
        response = self._http.call(
            "submit",
            "POST",
            remove_job_url(self._prefix, item.identity_value),
            headers={"Api-Key": self._api_key},
            redact=(item.identity_value, self._api_key),
        )
        if not 200 <= response.status_code < 300:
            raise PermanentVendorError(f"voyado submit: unexpected HTTP {response.status_code}")
        jid = _json_object(response, "submit").get("jid")
        if not isinstance(jid, str) or not jid:
            # The job may exist, but we cannot follow it: sending again is the only way on.
            raise RetryableVendorError("voyado submit: accepted without a jid")
        return SubmittedJob(jid, None, (item.item_id,))

    def _job_status(self, jid: str, operation: Literal["poll", "auth"]) -> str:
        """The job's status word, lower-cased. 400 and 404 are judged here rather than by
        the HTTP layer, which would call any refusal of an "auth" call a credentials one."""
        response = self._http.call(
            operation,
            "GET",
            job_status_url(self._prefix, jid),
            headers={"Api-Key": self._api_key},
            handled_statuses=(400, 404),
            redact=(self._api_key,),
        )
        status = response.status_code
        if status == 404:
            version = self._settings.api_version
            raise PermanentVendorError(
                f"voyado {operation}: HTTP 404 from job-status (base_url or api_version "
                f"{version} wrong?)"
            )
        if not 200 <= status < 300:
            summary = vendor_error_summary(response, (self._api_key,))
            raise PermanentVendorError(
                f"voyado {operation}: HTTP {status}" + (f" ({summary})" if summary else "")
            )
        return _status_word(response, operation)


def remove_job_url(prefix: str, customer_key: str) -> str:
    """The create-remove-customer-job URL; every character of the key but unreserved
    ones is percent-encoded (UTF-8), so `&`, `=`, `+`, `/` and spaces arrive intact."""
    return f"{prefix}/create-remove-customer-job?customerKey={quote(customer_key, safe='')}"


def job_status_url(prefix: str, jid: str) -> str:
    return f"{prefix}/job-status?jid={quote(jid, safe='')}"


def status_result(job: DueJob, word: str) -> PollResult:
    """A job-status word as a poll result. Contract §3: `done` is COMPLETED, never
    NOT_FOUND (Voyado cannot tell whether it held anything); `error` fails the job, so its
    items are sent again; `not_found` (job unknown) is `_unknown_job`; a word we do not
    know keeps the job open."""
    if word in _OPEN_STATUSES:
        return PollResult(_OPEN_STATUSES[word])
    if word == "done":
        completed = tuple(ItemOutcome(item.item_id, Status.COMPLETED) for item in job.items)
        return PollResult(Status.COMPLETED, completed)
    if word == "error":
        return PollResult(Status.FAILED, detail=JOB_ERROR_DETAIL)
    if word == "not_found":
        return _unknown_job(job)
    return unknown_job_status("voyado", word)


def _unknown_job(job: DueJob) -> PollResult:
    """Elevate forgot the job: send each item once more, fail an item already resent.

    The job is closed either way; the poller turns QUEUED into a new attempt.
    """
    outcomes = tuple(
        ItemOutcome(item.item_id, Status.QUEUED, UNKNOWN_JOB_RESEND_DETAIL)
        if item.attempts == 0
        else ItemOutcome(item.item_id, Status.FAILED, UNKNOWN_JOB_FAILED_DETAIL)
        for item in job.items
    )
    return PollResult(Status.COMPLETED, outcomes)


def _failure_outcomes(failures: Sequence[tuple[WorkItem, VendorError]]) -> tuple[ItemOutcome, ...]:
    """Rejected items fail; items that may pass later are sent again."""
    return tuple(
        ItemOutcome(
            item.item_id,
            Status.FAILED if isinstance(error, PermanentVendorError) else Status.QUEUED,
            str(error),
        )
        for item, error in failures
    )


def _json_object(response: requests.Response, operation: str) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise PermanentVendorError(f"voyado {operation}: answer is not a JSON object")
    return body


def _status_word(response: requests.Response, operation: str) -> str:
    status = _json_object(response, operation).get("status")
    if not isinstance(status, str):
        raise PermanentVendorError(f"voyado {operation}: job status answer without a status")
    return status.strip().lower()


VENDOR = VendorEntry(
    "voyado", VoyadoSettings, adapter=lambda settings, http, _sleep: VoyadoAdapter(settings, http)
)
