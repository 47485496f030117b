"""Monetate (Kibo) consumer data privacy adapter (VENDOR-FACTS §2).

Auth: a JWT `{"username", "iat"}` signed RS256 with the API user's private key buys a token
from the Auth API; `TokenAuth` sends it as `Authorization: Token <token>` until shortly
before it expires and fetches a new one once on a 401. A 403 means the key was revoked.

Submission: one upload of `schema_rows` (`customer_id`, `delete_request_time`) to the
configured `customer_data_privacy` dataset per batch. Monetate has no job id, so each
upload becomes one synthetic job (`upload-<12 hex>`, no personal data) holding all its
items; rows are upserted by customer id, so sending one again is harmless.

Completion: Monetate deletes in nightly batches (24-48 h) and only answers per customer
id, through a status endpoint limited to about one request a second for all our work:
`NOT_FOUND` after submission means the id is gone (erased, or never held) -> COMPLETED;
`PENDING` / `FOUND` -> still IN_PROGRESS. A poll checks at most `status_checks_per_poll`
ids of its job, oldest request first, resuming where the previous poll of that job
stopped, so a few ids that never go away cannot starve the rest.

The dataset is created once by `erasure-worker setup` (`create_dataset`, idempotent: the
documented 400 "exists" answer means it is there). Only documented endpoints are called,
and none of them reads a dataset back, so nothing short of a write can tell whether it
exists: `check` proves the credentials only. Until the dataset exists every upload gets
404, which makes Monetate unusable but is no fault of the items: it is raised as
`VendorAuthError` (calls stop, items wait) with a message saying what to run.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeGuard
from urllib.parse import quote

import jwt
import requests
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from consumer.config import MONETATE_STATUS_CHECKS_PER_POLL, MonetateSettings
from consumer.model import Status
from consumer.vendors.base import (
    ItemOutcome,
    Pace,
    PermanentVendorError,
    PollResult,
    RetryableVendorError,
    SubmitResult,
    SubmittedJob,
    VendorAuthError,
    shown_status_word,
    unpaced,
)
from consumer.vendors.http import Clock, Sleep, TokenAuth, VendorHttp, token_answer
from consumer.work import DueJob, WorkItem

TOKEN_TTL_SECONDS = 3600
STATUS_CHECKS_PER_POLL = MONETATE_STATUS_CHECKS_PER_POLL
PRIVACY_SCHEMA_TYPE = "customer_data_privacy"
_OPEN_WORDS = frozenset({"PENDING", "FOUND"})
_GONE_WORD = "NOT_FOUND"
_EXISTS_WORD = "exist"  # in the 400 error that refuses a duplicate dataset name
# A pacing sleep that ends this much early was cut short (shutdown), not rounded.
_WAKE_TOLERANCE_SECONDS = 0.001

AgeKey = tuple[datetime, int]


class StatusPacer:
    """Spaces rate-limited calls `1 / rate` seconds apart, from the end of one call to the
    start of the next: every call then also *arrives* at least that far apart, whatever the
    network did. Use as `with pacer: <one call>`.

    A `sleep` that returns early (a stop event's `wait` at shutdown) raises
    `RetryableVendorError` rather than letting a call through too soon.
    """

    def __init__(self, rate_per_second: float, clock: Clock, sleep: Sleep) -> None:
        self._interval = 1.0 / rate_per_second
        self._clock = clock
        self._sleep = sleep
        self._next_at = float("-inf")

    def __enter__(self) -> None:
        wait = self._next_at - self._clock()
        if wait > 0:
            self._sleep(wait)
            if self._next_at - self._clock() > _WAKE_TOLERANCE_SECONDS:
                raise RetryableVendorError("monetate: stopped while pacing rate-limited calls")

    def __exit__(self, *exc_info: object) -> None:
        self._next_at = self._clock() + self._interval


class MonetateAdapter:
    """`VendorAdapter` for Monetate; one instance per worker loop (not thread-safe).

    `sleep` paces status checks (pass the stop event's `wait` so shutdown cuts it short)
    and, when no `http` is given, backs off in-call retries; `clock` is the pacer's clock.
    """

    name = "monetate"

    def __init__(
        self,
        settings: MonetateSettings,
        http: VendorHttp | None = None,
        *,
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
        status_checks_per_poll: int = STATUS_CHECKS_PER_POLL,
    ) -> None:
        if status_checks_per_poll < 1:
            raise ValueError("status_checks_per_poll must be at least 1")
        self._settings = settings
        self._http = http or VendorHttp(
            self.name, timeout_seconds=settings.timeout_seconds, sleep=sleep
        )
        self._auth = TokenAuth(self._fetch_token, scheme="Token")
        self._signing_key: RSAPrivateKey | None = None
        self._pacer = StatusPacer(settings.status_rate_per_second, clock, sleep)
        self._checks_per_poll = status_checks_per_poll
        self._cursors: dict[int, AgeKey] = {}  # job id -> last id checked, for big jobs
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
            if any(_EXISTS_WORD in message.lower() for message in _error_messages(response)):
                return False
            reason = _first_error(response)
            raise PermanentVendorError(
                f"monetate setup: creating dataset {self._settings.dataset!r} was refused "
                f"(HTTP 400{': ' + reason if reason else ''})"
            )
        raise PermanentVendorError(f"monetate setup: unexpected HTTP {response.status_code}")

    # ----------------------------------------------------------------- submit

    def submit(self, items: Sequence[WorkItem], pace: Pace = unpaced) -> SubmitResult:
        """Upload the batch as one call; items Monetate would reject fail without a call."""
        problems = {item.item_id: self._problem(item) for item in items}
        sendable = [item for item in items if problems[item.item_id] is None]
        unsendable = tuple(
            ItemOutcome(item_id, Status.FAILED, problem)
            for item_id, problem in problems.items()
            if problem is not None
        )
        if not sendable:
            return SubmitResult(outcomes=unsendable)
        pace()
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
        job = SubmittedJob(upload_job_id(), None, tuple(item.item_id for item in sendable))
        return SubmitResult(jobs=(job,), outcomes=unsendable)

    def _problem(self, item: WorkItem) -> str | None:
        """Why Monetate cannot take this item (no value in the text), or None."""
        if item.identity_type != self._settings.identity_type:
            return f"Monetate erases by {self._settings.identity_type}, not {item.identity_type}"
        if not item.identity_value or item.identity_value != item.identity_value.strip():
            return "customer id is empty or has surrounding whitespace, which Monetate rejects"
        return None

    # ----------------------------------------------------------------- poll

    def poll(self, job: DueJob) -> PollResult:
        """Check up to `status_checks_per_poll` of the job's customer ids; COMPLETED once
        every item is gone, else IN_PROGRESS with outcomes for the ids found gone."""
        outcomes: list[ItemOutcome] = []
        checks, rotating = self._next_checks(job)
        for items in checks:
            try:
                gone = self._is_gone(items[0].identity_value)
            except RetryableVendorError as error:
                if not outcomes:
                    raise
                # Keep what this poll learnt; the rest is checked next time.
                return PollResult(Status.IN_PROGRESS, tuple(outcomes), detail=str(error))
            if rotating:
                self._cursors[job.job_id] = _age_key(items[0])
            if gone:
                outcomes.extend(ItemOutcome(item.item_id, Status.COMPLETED) for item in items)
        if len(outcomes) == len(job.items):
            return PollResult(Status.COMPLETED, tuple(outcomes))
        return PollResult(Status.IN_PROGRESS, tuple(outcomes))

    def _next_checks(self, job: DueJob) -> tuple[list[list[WorkItem]], bool]:
        """The job's items grouped by customer id, oldest first, and whether there are more
        groups than one poll checks. Then the groups start after the one the previous poll
        of this job checked last (a cursor kept only for such big jobs)."""
        groups: dict[str, list[WorkItem]] = {}
        for item in sorted(job.items, key=_age_key):
            groups.setdefault(item.identity_value, []).append(item)
        ordered = list(groups.values())
        if len(ordered) <= self._checks_per_poll:
            self._cursors.pop(job.job_id, None)
            return ordered, False
        cursor = self._cursors.get(job.job_id)
        if cursor is not None:
            start = next((i for i, g in enumerate(ordered) if _age_key(g[0]) > cursor), 0)
            ordered = ordered[start:] + ordered[:start]
        return ordered[: self._checks_per_poll], True

    def _is_gone(self, customer_id: str) -> bool:
        """One paced status check: True for NOT_FOUND, False for PENDING / FOUND."""
        with self._pacer:
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
        word = _data(response, "poll").get("status")
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
        if self._signing_key is None:  # parsed once: loading an RSA key takes ~50 ms
            self._signing_key = load_signing_key(self._settings.private_key.get_secret_value())
        assertion = signed_jwt(self._signing_key, self._settings.api_username, time.time())
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


def load_signing_key(private_key_pem: str) -> RSAPrivateKey:
    """The API user's RSA key; a key we cannot use is an auth problem (calls stop)."""
    try:
        key = load_pem_private_key(private_key_pem.encode("utf-8"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, RSAPrivateKey):
        raise VendorAuthError("monetate auth: private_key is not an unencrypted RSA PEM key")
    return key


def signed_jwt(key: RSAPrivateKey, username: str, now: float) -> str:
    """The Auth API's credential: `{"username", "iat"}` signed RS256 with the API key."""
    return jwt.encode({"username": username, "iat": int(now)}, key, algorithm="RS256")


def token_lifetime(data: dict[str, Any]) -> float:
    """Seconds the token lives: `expires_at - issued_at` (the vendor's own clock, so our
    clock's skew does not matter), else `expires_in`, else the ttl we asked for."""
    issued_at, expires_at = data.get("issued_at"), data.get("expires_at")
    if _is_number(issued_at) and _is_number(expires_at):
        return float(expires_at - issued_at)
    expires_in = data.get("expires_in")
    return float(expires_in) if _is_number(expires_in) else float(TOKEN_TTL_SECONDS)


def schema_rows(items: Iterable[WorkItem]) -> list[dict[str, str]]:
    """One row per customer id (a repeated id keeps its earliest request time)."""
    earliest: dict[str, datetime] = {}
    for item in items:
        requested = _as_utc(item.requested_at)
        if item.identity_value not in earliest or requested < earliest[item.identity_value]:
            earliest[item.identity_value] = requested
    return [
        {"customer_id": customer_id, "delete_request_time": iso_utc(requested)}
        for customer_id, requested in earliest.items()
    ]


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds (requests carry millisecond timestamps)."""
    return _as_utc(moment).isoformat(timespec="milliseconds")


def upload_job_id() -> str:
    """A synthetic job id for one upload; random, so it carries no personal data."""
    return f"upload-{uuid.uuid4().hex[:12]}"


def _as_utc(moment: datetime) -> datetime:
    """Aware datetimes converted to UTC; naive ones are taken to be UTC already."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _age_key(item: WorkItem) -> AgeKey:
    return _as_utc(item.requested_at), item.item_id


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _data(response: requests.Response, operation: str) -> dict[str, Any]:
    """The `data` object of a Monetate envelope (PermanentVendorError if there is none)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise PermanentVendorError(f"monetate {operation}: answer without a data object")
    return data


def _first_error(response: requests.Response) -> str | None:
    """The first `meta.errors` message, printable and short.

    Only used for schema calls, whose errors concern the dataset, never a customer id.
    """
    messages = _error_messages(response)
    if not messages:
        return None
    return "".join(char if char.isprintable() else " " for char in messages[0])[:160]


def _error_messages(response: requests.Response) -> list[str]:
    """Every `meta.errors` message (each given as text or as `{"message"}`)."""
    try:
        body = response.json()
    except ValueError:
        return []
    meta = body.get("meta") if isinstance(body, dict) else None
    errors = meta.get("errors") if isinstance(meta, dict) else None
    if not isinstance(errors, list):
        return []
    messages = (error.get("message") if isinstance(error, dict) else error for error in errors)
    return [message for message in messages if isinstance(message, str)]
