"""Acquia CDP data-erasure adapter (VENDOR-FACTS §3).

Acquia CDP has sessions: HTTP Basic login returns a bearer token (in the configurable
`token_field`), and every session must be logged out when done. The adapter keeps one
session while it works, logs out a session it drops (after a 401, before logging in
again; a 401 on that logout just means it was already gone) and logs out in `close()`.

One erasure call takes up to 200 distinct customer ids, with one `reason` (the distinct
regulations of the call's items, sorted, joined with "/") and one `requestedDate` (their
earliest `requested_at`). Acquia has no status API, so every answer is final at submit
time: ready or pending ids are ACCEPTED, not-found ids NOT_FOUND, ids it failed to accept
are sent again (QUEUED). A 400 rejects the whole call, so the adapter bisects the batch
until the rejected ids stand alone and fails only them; the extra calls are bounded by
`MAX_CALLS_PER_SUBMIT`, and each passes the fleet-wide `CallGate` (in `VendorHttp`) like
the first. `failOnNotFound=false` is sent so a batch of unknown ids gets a
per-id answer; a 404 carrying Acquia's error body still means "none of these ids exist",
while a bare 404 (a wrong base URL or path) is a configuration error, not NOT_FOUND.
"""

from __future__ import annotations

import base64
import logging
import math
import re
from collections import deque
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import UTC
from typing import Any, ClassVar

import requests
from pydantic import Field, SecretStr, field_validator

from consumer.config import VendorSettings, https_unless_loopback
from consumer.ledger.records import DueJob, WorkItem
from consumer.model import Status
from consumer.vendors.base import (
    ItemOutcome,
    PermanentVendorError,
    PollResult,
    RetryableVendorError,
    SubmitResult,
    VendorAuthError,
    VendorError,
    unexpected,
)
from consumer.vendors.http import TokenAuth, VendorHttp, token_answer, vendor_error_summary
from consumer.vendors.registry import VendorEntry

log = logging.getLogger(__name__)

MAX_IDS_PER_CALL = 200
MAX_CALLS_PER_SUBMIT = 32
"""Calls one batch may make while it bisects a rejected (400) batch: isolating one
rejected id in a full batch takes 17 calls, two take about 31."""
REQUEST_ORIGIN = "Data Erasure"
# Answer lists in increasing precedence: an id Acquia lists twice takes the later list.
_ANSWER_LISTS: tuple[tuple[str, Status], ...] = (
    ("failedToAccept", Status.QUEUED),
    ("notFound", Status.NOT_FOUND),
    ("pendingForDataErasure", Status.ACCEPTED),
    ("readyForDataErasure", Status.ACCEPTED),
)
_SAFE_EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}")

Verdict = tuple[Status, str | None]


class AcquiaCdpSettings(VendorSettings):
    """`vendors.acquia_cdp`: sessions, 200 ids a call and a rolling weekly quota."""

    vendor: ClassVar[str] = "acquia_cdp"
    hard_batch_limit: ClassVar[int | None] = MAX_IDS_PER_CALL

    auth_url: str
    tenant_id: int = Field(ge=1)
    username: str = Field(min_length=1)
    password: SecretStr
    token_field: str = "access_token"  # noqa: S105 (a field name, not a secret)
    weekly_quota: int = Field(default=9990, ge=1)
    batch_size: int = Field(default=MAX_IDS_PER_CALL, ge=1)
    max_in_flight: int = Field(default=2, ge=1, le=64)

    @field_validator("auth_url")
    @classmethod
    def _auth_url_https(cls, url: str) -> str:
        return https_unless_loopback(url)

    @property
    def rolling_quota(self) -> tuple[int, float] | None:
        return self.weekly_quota, 7 * 86400.0

    @property
    def calls_per_submit(self) -> int:
        return MAX_CALLS_PER_SUBMIT


class AcquiaCdpAdapter:
    """`VendorAdapter` for Acquia CDP; one instance per worker loop (not thread-safe)."""

    name = "acquia_cdp"

    def __init__(self, settings: AcquiaCdpSettings, http: VendorHttp | None = None) -> None:
        self._settings = settings
        self._http = http or VendorHttp(self.name, timeout_seconds=settings.timeout_seconds)
        self._erasure_url = f"{settings.base_url}/v2/{settings.tenant_id}/dw/dataerasure"
        self._session_url = f"{settings.auth_url}/authentication"
        self._session: str | None = None
        # Session lifetime is unpublished: keep the session until Acquia refuses it (401).
        self._auth = TokenAuth(self._renew_session)

    def submit(self, items: Sequence[WorkItem]) -> SubmitResult:
        """Erase the batch's customer ids; every id gets its answer, each call at most 200.

        If a call fails after others were answered, the answered ids keep their outcome
        and the rest follow the error: resent (retryable), failed (rejected) or left for
        the dispatcher to release (credentials refused). If none was answered, the error
        is raised for the whole batch.
        """
        groups, unsendable = self._groups(items)
        verdicts: dict[str, Verdict] = {}
        try:
            self._erase_all(groups, verdicts)
        except Exception as error:
            if not verdicts:
                raise
            failure = error if isinstance(error, VendorError) else unexpected("acquia_cdp", error)
            verdicts.update(_leftover_verdicts(failure, groups.keys() - verdicts.keys()))
        outcomes = [
            ItemOutcome(item.item_id, *verdicts[customer_id])
            for customer_id, members in groups.items()
            if customer_id in verdicts
            for item in members
        ]
        return SubmitResult(outcomes=(*unsendable, *outcomes))

    def poll(self, job: DueJob) -> PollResult:
        """Never called: `submit` creates no jobs, because Acquia has no status API, so
        its entry says `polls=False` and the worker starts no poll loops for it."""
        raise PermanentVendorError("acquia_cdp: no job status API; there is nothing to poll")

    def check(self) -> None:
        """Log in and out with a session of its own: proves URL, user and password."""
        self._logout(self._login())

    def close(self) -> None:
        """Log out the working session (Acquia asks callers to), then drop connections.

        Never raises: the worker is stopping, and a session left open expires on its own.
        """
        self._auth.invalidate()
        self._end_session()
        self._http.close()

    # ----------------------------------------------------------------- sessions

    def _renew_session(self) -> tuple[str, float]:
        """`TokenAuth`'s fetch: a new session replaces (and logs out) the current one."""
        self._end_session()
        self._session = self._login()
        return self._session, math.inf

    def _end_session(self) -> None:
        """Log out the working session, if any; failing only warns (it expires on its own)."""
        token, self._session = self._session, None
        if token is None:
            return
        try:
            self._logout(token)
        except VendorError as error:
            log.warning("acquia_cdp: could not log out a session (it will expire): %s", error)

    def _login(self) -> str:
        password = self._settings.password.get_secret_value()
        try:
            authorization = basic_authorization(self._settings.username, password)
        except ValueError as error:
            raise VendorAuthError(f"acquia_cdp auth: {error}") from None
        response = self._http.call(
            "auth",
            "POST",
            self._session_url,
            params={"action": "login"},
            headers={"Authorization": authorization},
            redact=(password, authorization),
        )
        token = token_answer(response, self.name).get(self._settings.token_field)
        if not isinstance(token, str) or not token:
            field = self._settings.token_field
            raise VendorAuthError(f"acquia_cdp auth: login answer has no {field!r} (token_field)")
        return token

    def _logout(self, token: str) -> None:
        """End a session; a 401 (INVALID_TOKEN) means it had already ended."""
        response = self._http.call(
            "auth",
            "POST",
            self._session_url,
            params={"action": "logout"},
            headers={"Authorization": f"Bearer {token}"},
            handled_statuses=(401,),
            redact=(token,),
        )
        if response.status_code == 401:
            log.debug("acquia_cdp: the session to log out had already ended")

    # ----------------------------------------------------------------- erasure

    def _groups(
        self, items: Sequence[WorkItem]
    ) -> tuple[dict[str, list[WorkItem]], list[ItemOutcome]]:
        """Items by customer id (an id named twice is sent once), and items with none."""
        groups: dict[str, list[WorkItem]] = {}
        unsendable: list[ItemOutcome] = []
        for item in items:
            if item.identity_type == self._settings.identity_type:
                groups.setdefault(item.identity_value, []).append(item)
            else:
                detail = f"not an Acquia CDP customer id: identity type {item.identity_type!r}"
                unsendable.append(ItemOutcome(item.item_id, Status.FAILED, detail))
        return groups, unsendable

    def _erase_all(
        self, groups: Mapping[str, list[WorkItem]], verdicts: dict[str, Verdict]
    ) -> None:
        """Send every id, splitting a rejected call in halves (breadth first, so a 400 that
        is about the request rather than an id runs out of calls before failing anyone)."""
        pending = deque(_chunks(list(groups), MAX_IDS_PER_CALL))
        first_calls, calls, rejected = len(pending), 0, 0
        while pending:
            ids = pending.popleft()
            if calls >= MAX_CALLS_PER_SUBMIT:
                detail = f"rejected in a group not narrowed down within {calls} calls; resending"
                verdicts.update(dict.fromkeys(ids, (Status.QUEUED, detail)))
                continue
            calls += 1
            problem = self._erase(ids, groups, verdicts)
            if problem is None:
                continue
            if len(ids) == 1:
                verdicts[ids[0]] = (Status.FAILED, problem)
                rejected += 1
            else:
                middle = (len(ids) + 1) // 2
                pending.extend((ids[:middle], ids[middle:]))
        if calls > first_calls:
            log.info(
                "acquia_cdp: a rejected batch took %d calls; %d customer ids rejected",
                calls,
                rejected,
            )

    def _erase(
        self, ids: Sequence[str], groups: Mapping[str, list[WorkItem]], verdicts: dict[str, Verdict]
    ) -> str | None:
        """One erasure call: record its verdicts, or return the detail of its 400."""
        body = erasure_body(
            ids, [item for i in ids for item in groups[i]], self._settings.tenant_id
        )
        response = self._http.call(
            "submit",
            "POST",
            self._erasure_url,
            auth=self._auth,
            params={"failOnNotFound": "false"},
            json=body,
            handled_statuses=(400, 404),
            redact=ids,
        )
        status = response.status_code
        if status == 400:
            summary = vendor_error_summary(response, ids)
            return "acquia_cdp submit: HTTP 400" + (f" ({summary})" if summary else "")
        if status == 404 and _is_acquia_error(response):
            verdicts.update(dict.fromkeys(ids, (Status.NOT_FOUND, None)))
        elif status == 404:
            raise PermanentVendorError(
                "acquia_cdp submit: HTTP 404 not from Acquia; check base_url"
            )
        elif status != 200:
            raise RetryableVendorError(f"acquia_cdp submit: unexpected HTTP {status}")
        else:
            answer = _json_object(response)
            if answer is None:
                # Acquia has acted on a 200: sending again only finds the ids pending.
                raise RetryableVendorError("acquia_cdp submit: the answer is not a JSON object")
            verdicts.update(answer_verdicts(answer, ids))
        return None


def basic_authorization(username: str, password: str) -> str:
    """`Basic base64(username:password)` in UTF-8 (RFC 7617); a colon cannot be in a user-id."""
    if ":" in username:
        raise ValueError("the username must not contain ':' (HTTP Basic)")
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def erasure_body(ids: Sequence[str], items: Sequence[WorkItem], tenant_id: int) -> dict[str, Any]:
    """The erasure call's JSON: one reason and one requestedDate for all of `items`."""
    if not ids or len(ids) > MAX_IDS_PER_CALL:
        raise ValueError(f"an erasure call takes 1 to {MAX_IDS_PER_CALL} customer ids")
    earliest = min(item.requested_at for item in items).astimezone(UTC).replace(tzinfo=None)
    return {
        "customerIds": list(ids),
        "requestedDate": earliest.isoformat(sep=" ", timespec="seconds") + " UTC",
        "reason": "/".join(sorted({item.regulation.value for item in items})),
        "requestOrigin": REQUEST_ORIGIN,
        "tenantId": tenant_id,
    }


def answer_verdicts(body: Mapping[str, Any], ids: Sequence[str]) -> dict[str, Verdict]:
    """Each sent id's verdict from a 200 answer; an id the answer omits is sent again."""
    event = _event_id(body.get("eventId"))
    details = {
        "readyForDataErasure": f"queued for erasure{event}",
        "pendingForDataErasure": f"already queued for erasure by an earlier request{event}",
        "failedToAccept": "Acquia CDP failed to accept the id; sending again",
    }
    sent = set(ids)
    missing: Verdict = (Status.QUEUED, "missing from Acquia CDP's answer; sending again")
    verdicts = dict.fromkeys(ids, missing)
    for key, status in _ANSWER_LISTS:
        for customer_id in _id_list(body, key):
            if customer_id in sent:
                verdicts[customer_id] = (status, details.get(key))
    return verdicts


def _leftover_verdicts(error: VendorError, ids: Collection[str]) -> dict[str, Verdict]:
    """What becomes of ids a failed call left unanswered (see `submit`)."""
    if isinstance(error, VendorAuthError):
        return {}
    status = Status.FAILED if isinstance(error, PermanentVendorError) else Status.QUEUED
    return dict.fromkeys(ids, (status, str(error)))


def _chunks(ids: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _id_list(body: Mapping[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RetryableVendorError(f"acquia_cdp submit: {key} in the answer is not a list of ids")
    return value


def _event_id(value: object) -> str:
    """` (Acquia CDP eventId X)` for a detail, or "" if there is no safe event id."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and _SAFE_EVENT_ID.fullmatch(value):
        return f" (Acquia CDP eventId {value})"
    return ""


def _is_acquia_error(response: requests.Response) -> bool:
    """Whether a body is Acquia's `{errorCode, userMessage, developerMessage}` error."""
    body = _json_object(response)
    return body is not None and "errorCode" in body


def _json_object(response: requests.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


VENDOR = VendorEntry(
    "acquia_cdp",
    AcquiaCdpSettings,
    adapter=lambda settings, http, _sleep: AcquiaCdpAdapter(settings, http),
    polls=False,
)
