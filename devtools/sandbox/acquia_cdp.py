"""Strict sandbox of the Acquia CDP data-erasure API and its session endpoints.

It follows the vendor page (shared/vendor-docs/acquia-cdp-data-erasure-response.txt)
and VENDOR-FACTS section 3, and is deliberately stricter wherever the docs leave
room, so that a client that passes here is correct against the vendor:

* ``POST /authentication?action=login`` with HTTP Basic ``username:password``
  answers ``{<token_field>: <token>}`` (the field name is unverified, so it is a
  constructor argument). Wrong or missing credentials are 401; a disabled API
  user (``refuse_credentials()``) is 403 and loses its sessions.
* ``POST /authentication?action=logout`` with ``Authorization: Bearer <token>``
  ends the session (200); an unknown, expired or ended session is 401
  ``INVALID_TOKEN``.
* ``POST /v2/{tenantId}/dw/dataerasure[?failOnNotFound=true|false]`` needs a live
  session (401), a tenant the API user belongs to (403), ``application/json``
  (415), and a body of exactly ``customerIds`` (1 to 200 non-empty strings),
  ``requestedDate`` (``YYYY-MM-DD HH:MM:SS UTC``), ``reason`` (non-blank text),
  ``requestOrigin`` (``"Data Erasure"``) and ``tenantId`` (the path's, as a JSON
  integer); anything else, an unknown field or query parameter included, is 400.
  A batch holding a ``reject()``-ed id is 400 as a whole, as Acquia's is.
* Quota: at most ``weekly_quota`` customer ids per tenant per rolling
  ``quota_window_seconds``. Acquia does not document its answer; the sandbox
  answers **429 with Retry-After** (whole seconds until enough of the window has
  passed), the usual shape of a rate or quota limit, so a client backs off
  instead of failing work. A single call larger than the whole quota is 400.
* 200 lists each distinct id once: ``failedToAccept`` (``fail_to_accept()``),
  ``notFound`` (not in the tenant), ``pendingForDataErasure`` (already queued and
  not yet erased) or ``readyForDataErasure`` (now queued). Queued ids are erased
  ``erasure_seconds`` later, after which they are ``notFound``. When every id is
  ``notFound`` the answer is 404 unless ``failOnNotFound=false``.

Time advances lazily from the clock (no background thread). Error bodies use
Acquia's ``{errorCode, userMessage, developerMessage}`` shape; the error codes
are the sandbox's own (Acquia's are unpublished) and messages never echo ids,
credentials or tokens.
"""

from __future__ import annotations

import itertools
import math
import secrets
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Literal

from devtools.sandbox.acquia_cdp_wire import (
    ErasureBody,
    ErasureBodyError,
    basic_credentials,
    bearer_token,
    error_answer,
    fail_on_not_found,
    invalid_token,
    json_content_type_problem,
    parse_erasure_body,
    same_secret,
    single_query,
)
from devtools.sandbox.server import (
    JsonValue,
    Request,
    Response,
    Router,
    Sandbox,
    json_response,
)

DEFAULT_USERNAME = "sandbox-api-user"
DEFAULT_PASSWORD = "sandbox-password"
DEFAULT_TENANT_ID = 1234
DEFAULT_TOKEN_FIELD = "access_token"
DEFAULT_WEEKLY_QUOTA = 9990
WEEK_SECONDS = 7 * 24 * 3600.0

AuthAction = Literal["login", "logout"]


@dataclass(frozen=True)
class SessionEvent:
    """One login or logout as the sandbox saw it; ``session`` numbers sessions 1, 2, ...

    Holds no token, so a test may print it. ``session`` is None when the call
    named no live session (failed login, logout of an ended session).
    """

    action: AuthAction
    status: int
    session: int | None


@dataclass(frozen=True)
class ErasureRecord:
    """An erasure call answered 200, for assertions. Holds customer ids: never log it."""

    event_id: str
    tenant_id: int
    customer_ids: tuple[str, ...]
    reason: str
    requested_date: str


@dataclass
class _Session:
    number: int
    expires_at: float


class AcquiaCdpSandbox(Sandbox):
    """In-process Acquia CDP data-erasure API with a fast, configurable clock.

    All durations are real seconds: ``session_ttl_seconds`` is how long a session
    lives, ``erasure_seconds`` how long a queued id waits before it is erased,
    and ``weekly_quota`` ids per tenant are allowed per ``quota_window_seconds``.
    The API user belongs to ``tenant_id`` only.
    """

    def __init__(
        self,
        *,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        tenant_id: int = DEFAULT_TENANT_ID,
        token_field: str = DEFAULT_TOKEN_FIELD,
        session_ttl_seconds: float = 3600.0,
        erasure_seconds: float = 1.5,
        weekly_quota: int = DEFAULT_WEEKLY_QUOTA,
        quota_window_seconds: float = WEEK_SECONDS,
    ) -> None:
        if session_ttl_seconds <= 0 or quota_window_seconds <= 0 or erasure_seconds < 0:
            raise ValueError("durations must be positive (erasure_seconds may be 0)")
        if weekly_quota < 1 or ":" in username or not token_field:
            raise ValueError("need a quota of at least 1, a username without ':', a token field")
        super().__init__(self._routes())
        self._username, self._password = username, password
        self._tenant_id = tenant_id
        self._token_field = token_field
        self._session_ttl = session_ttl_seconds
        self._erasure_seconds = erasure_seconds
        self._quota, self._quota_window = weekly_quota, quota_window_seconds
        self._lock = threading.RLock()
        self._refused = False
        self._sessions: dict[str, _Session] = {}
        self._session_numbers = itertools.count(1)
        self._session_log: list[SessionEvent] = []
        self._customers: dict[int, set[str]] = {}
        self._queued: dict[tuple[int, str], float] = {}
        self._fail_to_accept: dict[str, int] = {}
        self._rejected: set[str] = set()
        self._quota_log: dict[int, deque[tuple[float, int]]] = {}
        self._erasures: list[ErasureRecord] = []

    def _routes(self) -> Router:
        router = Router()
        router.add("POST", "/authentication", self._handle_authentication)
        router.add("POST", "/v2/{tenant_id:int}/dw/dataerasure", self._handle_erasure)
        return router

    # ----------------------------------------------------------------- test setup

    def add_customer(self, tenant_id: int, customer_id: str) -> None:
        """Make ``customer_id`` a customer of ``tenant_id`` (found by erasure)."""
        if not customer_id:
            raise ValueError("a customer id must not be empty")
        with self._lock:
            self._customers.setdefault(tenant_id, set()).add(customer_id)

    def customer_exists(self, tenant_id: int, customer_id: str) -> bool:
        """Whether the customer is still held (not yet erased), after due erasures ran."""
        with self._lock:
            self._advance()
            return customer_id in self._customers.get(tenant_id, set())

    def is_queued(self, tenant_id: int, customer_id: str) -> bool:
        """Whether the customer is queued for erasure and not erased yet."""
        with self._lock:
            self._advance()
            return (tenant_id, customer_id) in self._queued

    def fail_to_accept(self, customer_id: str, times: int = 1) -> None:
        """The next ``times`` erasure calls naming ``customer_id`` list it in failedToAccept."""
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._fail_to_accept[customer_id] = self._fail_to_accept.get(customer_id, 0) + times

    def reject(self, customer_id: str) -> None:
        """Every erasure call naming ``customer_id`` is answered 400 as a whole."""
        with self._lock:
            self._rejected.add(customer_id)

    def expire_tokens(self) -> None:
        """End every session, as if each had timed out; logging in again works."""
        with self._lock:
            self._sessions.clear()

    def refuse_credentials(self) -> None:
        """Disable the API user: its sessions end and login answers 403."""
        with self._lock:
            self._refused = True
            self._sessions.clear()

    def restore_credentials(self) -> None:
        """Enable the API user again."""
        with self._lock:
            self._refused = False

    def session_log(self) -> list[SessionEvent]:
        """Every login and logout call, oldest first."""
        with self._lock:
            return list(self._session_log)

    def open_sessions(self) -> int:
        """How many sessions are live (logged in, not logged out, expired or revoked)."""
        with self._lock:
            now = self.clock.now()
            return sum(1 for session in self._sessions.values() if now < session.expires_at)

    def erasures(self) -> list[ErasureRecord]:
        """Every erasure call answered 200, oldest first."""
        with self._lock:
            return list(self._erasures)

    def quota_used(self, tenant_id: int) -> int:
        """Customer ids counted against the tenant's quota in the current window."""
        with self._lock:
            return sum(count for _, count in self._window(tenant_id, self.clock.now()))

    # ----------------------------------------------------------------- sessions

    def _handle_authentication(self, request: Request) -> Response:
        query = single_query(request)
        if isinstance(query, Response):
            return query
        action = query.pop("action", None)
        if query or action not in ("login", "logout"):
            return error_answer(400, "INVALID_REQUEST", "action must be login or logout, alone")
        kind: AuthAction = "login" if action == "login" else "logout"
        with self._lock:
            response, number = self._login(request) if kind == "login" else self._logout(request)
            self._session_log.append(SessionEvent(kind, response.status, number))
        return response

    def _login(self, request: Request) -> tuple[Response, int | None]:
        credentials = basic_credentials(request.header("authorization"))
        if credentials is None or not (
            same_secret(credentials[0], self._username)
            and same_secret(credentials[1], self._password)
        ):
            challenge = (("WWW-Authenticate", 'Basic realm="CDP"'),)
            message = "the username or password is wrong"
            return error_answer(401, "INVALID_CREDENTIALS", message, challenge), None
        if self._refused:
            return error_answer(403, "USER_DISABLED", "this API user is disabled"), None
        token = secrets.token_urlsafe(32)
        number = next(self._session_numbers)
        self._sessions[token] = _Session(number, self.clock.now() + self._session_ttl)
        return json_response(200, {self._token_field: token}), number

    def _logout(self, request: Request) -> tuple[Response, int | None]:
        token = bearer_token(request)
        session = self._live_session(token)
        if token is None or session is None:
            return invalid_token(), None
        del self._sessions[token]
        return json_response(200, {}), session.number

    def _live_session(self, token: str | None) -> _Session | None:
        session = self._sessions.get(token) if token is not None else None
        if session is not None and self.clock.now() >= session.expires_at:
            return None
        return session

    # ----------------------------------------------------------------- erasure

    def _handle_erasure(self, request: Request) -> Response:
        with self._lock:
            if self._live_session(bearer_token(request)) is None:
                return invalid_token()
        tenant_id = int(request.params["tenant_id"])
        if tenant_id != self._tenant_id:
            return error_answer(403, "ACCESS_DENIED", "this API user has no access to that tenant")
        fails_on_not_found = fail_on_not_found(request)
        if isinstance(fails_on_not_found, Response):
            return fails_on_not_found
        problem = json_content_type_problem(request.header("content-type"))
        if problem is not None:
            return problem
        try:
            body = parse_erasure_body(request.body, tenant_id)
        except ErasureBodyError as error:
            return error_answer(400, "INVALID_REQUEST", str(error))
        with self._lock:
            return self._erase(body, fails_on_not_found)

    def _erase(self, body: ErasureBody, fail_on_not_found: bool) -> Response:
        """Quota, then each distinct id's fate; runs under the lock."""
        ids = tuple(dict.fromkeys(body.customer_ids))
        if any(customer_id in self._rejected for customer_id in ids):
            return error_answer(
                400, "INVALID_CUSTOMER_ID", "a customer id in the request is invalid"
            )
        over_quota = self._spend_quota(body.tenant_id, len(ids))
        if over_quota is not None:
            return over_quota
        self._advance()
        lists: dict[str, list[JsonValue]] = {
            "readyForDataErasure": [],
            "notFound": [],
            "pendingForDataErasure": [],
            "failedToAccept": [],
        }
        for customer_id in ids:
            lists[self._fate(body.tenant_id, customer_id)].append(customer_id)
        if fail_on_not_found and len(lists["notFound"]) == len(ids):
            return error_answer(404, "NO_VALID_CUSTOMER_ID", "no valid customer id found")
        event_id = str(uuid.uuid4())
        self._erasures.append(
            ErasureRecord(event_id, body.tenant_id, ids, body.reason, body.requested_date)
        )
        return json_response(200, {"eventId": event_id, **lists})

    def _fate(self, tenant_id: int, customer_id: str) -> str:
        """Which answer list one id lands in; queues it for erasure when it is ready."""
        if self._fail_to_accept.get(customer_id, 0) > 0:
            self._fail_to_accept[customer_id] -= 1
            return "failedToAccept"
        if customer_id not in self._customers.get(tenant_id, set()):
            return "notFound"
        if (tenant_id, customer_id) in self._queued:
            return "pendingForDataErasure"
        self._queued[(tenant_id, customer_id)] = self.clock.now() + self._erasure_seconds
        return "readyForDataErasure"

    def _advance(self) -> None:
        """Erase every queued id whose time has come."""
        now = self.clock.now()
        for key, erase_at in list(self._queued.items()):
            if now >= erase_at:
                tenant_id, customer_id = key
                self._customers.get(tenant_id, set()).discard(customer_id)
                del self._queued[key]

    def _window(self, tenant_id: int, now: float) -> deque[tuple[float, int]]:
        """The tenant's quota entries still inside the rolling window, oldest first."""
        entries = self._quota_log.setdefault(tenant_id, deque())
        while entries and entries[0][0] <= now - self._quota_window:
            entries.popleft()
        return entries

    def _spend_quota(self, tenant_id: int, count: int) -> Response | None:
        """Count ``count`` ids against the quota, or answer why they cannot be."""
        if count > self._quota:
            return error_answer(400, "QUOTA_EXCEEDED", "more customer ids than the weekly quota")
        now = self.clock.now()
        entries = self._window(tenant_id, now)
        excess = sum(used for _, used in entries) + count - self._quota
        if excess <= 0:
            entries.append((now, count))
            return None
        wait = max(1, math.ceil(_frees_at(entries, excess) + self._quota_window - now))
        message = "the weekly data erasure quota is used up"
        return error_answer(429, "QUOTA_EXCEEDED", message, (("Retry-After", str(wait)),))


def _frees_at(entries: deque[tuple[float, int]], excess: int) -> float:
    """When the entry whose expiry frees ``excess`` ids was counted (entries oldest first)."""
    for at, used in entries:
        excess -= used
        if excess <= 0:
            return at
    raise ValueError("the window holds fewer ids than the excess")  # count > quota is 400
