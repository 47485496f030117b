"""The Monetate adapter: uploads, per-id status checks and the JWT token exchange (see the
package docstring for how Monetate works and why)."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote

from consumer.backoff import Random
from consumer.clock import SYSTEM_CLOCK
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
    shown_status_word,
)
from consumer.vendors.http import Sleep, TokenAuth, VendorHttp, token_answer
from consumer.vendors.monetate.settings import STATUS_CHECKS_PER_POLL, MonetateSettings
from consumer.vendors.monetate.wire import (
    TOKEN_TTL_SECONDS,
    as_utc,
    envelope_data,
    error_messages,
    first_error,
    load_signing_key,
    schema_rows,
    signed_jwt,
    token_lifetime,
    upload_job_id,
)

PRIVACY_SCHEMA_TYPE = "customer_data_privacy"
_OPEN_WORDS = frozenset({"PENDING", "FOUND"})
_GONE_WORD = "NOT_FOUND"
_EXISTS_WORD = "exist"  # in the 400 error that refuses a duplicate dataset name

AgeKey = tuple[datetime, int]


class MonetateAdapter:
    """`VendorAdapter` for Monetate; one instance per worker loop (not thread-safe).

    `sleep` backs off in-call retries when no `http` is given; `rand` picks where each poll
    starts among its job's ids. Status checks keep to `status_rate_per_second` through the
    worker's call gate on `http` (`consumer.pipeline.call_gate`), which every loop and
    replica shares.
    """

    name = "monetate"

    def __init__(
        self,
        settings: MonetateSettings,
        http: VendorHttp | None = None,
        *,
        sleep: Sleep = time.sleep,
        rand: Random = random.random,
        status_checks_per_poll: int = STATUS_CHECKS_PER_POLL,
    ) -> None:
        if status_checks_per_poll < 1:
            raise ValueError("status_checks_per_poll must be at least 1")
        self._settings = settings
        self._http = http or VendorHttp(
            self.name, timeout_seconds=settings.timeout_seconds, sleep=sleep
        )
        self._auth = TokenAuth(self._fetch_token, scheme="Token")
        self._rand = rand
        self._checks_per_poll = status_checks_per_poll
        shortname = quote(settings.shortname, safe="")
        dataset = quote(settings.dataset, safe="")
        account = f"{settings.base_url}/api/data/v1/{shortname}/production"
        self._refresh_url = f"{settings.base_url}/api/auth/v0/refresh/"
        self._schema_url = f"{account}/schema/"
        self._data_url = f"{account}/data/{dataset}/"
        self._status_url = settings.base_url + settings.status_path.replace(
            "{shortname}", shortname
        )

    # ----------------------------------------------------------------- setup

    def create_dataset(self) -> bool:
        """Create the `customer_data_privacy` dataset; True if created, False if it was
        already there.

        Monetate documents no call that reads a dataset back, so the answer to the create
        call is the only evidence: a duplicate name is a 400 whose error says the schema
        exists (wording unverified: any error mentioning "exist" counts), and every other
        400 is a refusal reported with its reason.
        """
        body = {"type": PRIVACY_SCHEMA_TYPE, "name": self._settings.dataset, "fields": {}}
        response = self._http.call(
            "submit", "POST", self._schema_url, auth=self._auth, json=body, handled_statuses=(400,)
        )
        if response.status_code in (200, 201):
            return True
        if response.status_code == 400:
            if any(_EXISTS_WORD in message.lower() for message in error_messages(response)):
                return False
            reason = first_error(response)
            raise PermanentVendorError(
                f"monetate setup: creating dataset {self._settings.dataset!r} was refused "
                f"(HTTP 400{': ' + reason if reason else ''})"
            )
        raise PermanentVendorError(f"monetate setup: unexpected HTTP {response.status_code}")

    # ----------------------------------------------------------------- submit

    def submit(self, items: Sequence[WorkItem]) -> SubmitResult:
        """Upload the batch as one call; items Monetate would reject fail without a call.

        The upload is followed as jobs of at most `status_checks_per_poll` customer ids
        (Monetate has no job of its own to follow): one poll checks one such job, so the
        worker's poll slots check different parts of a big upload at once."""
        problems = {item.item_id: self._problem(item) for item in items}
        sendable = [item for item in items if problems[item.item_id] is None]
        unsendable = tuple(
            ItemOutcome(item_id, Status.FAILED, problem)
            for item_id, problem in problems.items()
            if problem is not None
        )
        if not sendable:
            return SubmitResult(outcomes=unsendable)
        response = self._http.call(
            "submit",
            "POST",
            self._data_url,
            auth=self._auth,
            json={"schema_rows": schema_rows(sendable)},
            handled_statuses=(404,),
            redact=[item.identity_value for item in sendable],
        )
        if response.status_code == 404:
            raise VendorAuthError(
                f"monetate submit: dataset {self._settings.dataset} does not exist: "
                "run `erasure-worker setup`"
            )
        if response.status_code not in (200, 201):
            raise PermanentVendorError(f"monetate submit: unexpected HTTP {response.status_code}")
        return SubmitResult(jobs=self._status_jobs(sendable), outcomes=unsendable)

    def _status_jobs(self, sendable: Sequence[WorkItem]) -> tuple[SubmittedJob, ...]:
        """Jobs of at most `status_checks_per_poll` customer ids, an id's items together."""
        by_id: dict[str, list[int]] = {}
        for item in sendable:
            by_id.setdefault(item.identity_value, []).append(item.item_id)
        groups = list(by_id.values())
        size = self._checks_per_poll
        return tuple(
            SubmittedJob(upload_job_id(), None, tuple(i for group in chunk for i in group))
            for chunk in (groups[start : start + size] for start in range(0, len(groups), size))
        )

    def _problem(self, item: WorkItem) -> str | None:
        """Why Monetate cannot take this item (no value in the text), or None."""
        if item.identity_type != self._settings.identity_type:
            return f"Monetate erases by {self._settings.identity_type}, not {item.identity_type}"
        if not item.identity_value or item.identity_value != item.identity_value.strip():
            return "customer id is empty or has surrounding whitespace, which Monetate rejects"
        return None

    # ----------------------------------------------------------------- poll

    def poll(self, job: DueJob) -> PollResult:
        """Check the job's customer ids, at most `status_checks_per_poll`, in age order from
        a random one on, until one is still open: COMPLETED once every item is gone, else
        IN_PROGRESS with outcomes for the ids found gone.

        Monetate deletes an upload's ids in one nightly run, so an open answer means the rest
        most likely wait too: a pending upload costs one check per poll, and the poller
        backs off (`MonetateSettings.next_poll_seconds`); once it is deleted, each id costs
        one check. The random start keeps a few ids that never go away from hiding the rest.
        """
        outcomes: list[ItemOutcome] = []
        for items in self._next_checks(job):
            try:
                gone = self._is_gone(items[0].identity_value)
            except RetryableVendorError as error:
                if not outcomes:
                    raise
                # Keep what this poll learnt; the rest is checked next time.
                return PollResult(Status.IN_PROGRESS, tuple(outcomes), detail=str(error))
            if not gone:
                break
            outcomes.extend(ItemOutcome(item.item_id, Status.COMPLETED) for item in items)
        if len(outcomes) == len(job.items):
            return PollResult(Status.COMPLETED, tuple(outcomes))
        return PollResult(Status.IN_PROGRESS, tuple(outcomes))

    def _next_checks(self, job: DueJob) -> list[list[WorkItem]]:
        """The job's items grouped by customer id (one check each), oldest first, turned
        round to start at a random group, and cut to the checks one poll makes."""
        groups: dict[str, list[WorkItem]] = {}
        for item in sorted(job.items, key=_age_key):
            groups.setdefault(item.identity_value, []).append(item)
        ordered = list(groups.values())
        start = min(int(self._rand() * len(ordered)), max(0, len(ordered) - 1))
        return (ordered[start:] + ordered[:start])[: self._checks_per_poll]

    def _is_gone(self, customer_id: str) -> bool:
        """One status check: True for NOT_FOUND, False for PENDING / FOUND."""
        response = self._http.call(
            "poll",
            "GET",
            self._status_url,
            auth=self._auth,
            params={"customer_id": customer_id},
            handled_statuses=(404,),
            redact=(customer_id,),
        )
        if response.status_code == 404:
            raise VendorAuthError(
                "monetate poll: the status endpoint answered 404: check status_path, and run "
                f"`erasure-worker setup` if dataset {self._settings.dataset} does not exist"
            )
        if response.status_code != 200:
            raise PermanentVendorError(f"monetate poll: unexpected HTTP {response.status_code}")
        word = envelope_data(response, "poll").get("status")
        if word == _GONE_WORD:
            return True
        if word not in _OPEN_WORDS:
            shown_status_word(self.name, word)  # unknown: still open, until max_job_age
        return False

    # ----------------------------------------------------------------- auth

    def check(self) -> None:
        """Fetch a fresh token: proves the URL, the API user and the private key work (not
        that the dataset exists: no documented call says so without writing to it)."""
        self._auth.invalidate()
        self._auth.token()

    def close(self) -> None:
        self._http.close()

    def _fetch_token(self) -> tuple[str, float]:
        assertion = signed_jwt(
            load_signing_key(self._settings.private_key.get_secret_value()),
            self._settings.api_username,
            SYSTEM_CLOCK.now().timestamp(),
        )
        response = self._http.call(
            "auth",
            "GET",
            self._refresh_url,
            params={"ttl": str(TOKEN_TTL_SECONDS)},
            headers={"Authorization": f"JWT {assertion}"},
            redact=(assertion,),
        )
        # A garbled token answer must not fail the items of the call that needed the token.
        data = token_answer(response, self.name).get("data")
        if not isinstance(data, dict):
            raise VendorAuthError("monetate auth: answer without a data object")
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise VendorAuthError("monetate auth: refresh answer without a token")
        return token, token_lifetime(data)


def _age_key(item: WorkItem) -> AgeKey:
    return as_utc(item.requested_at), item.item_id
