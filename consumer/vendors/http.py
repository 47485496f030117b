"""HTTP behaviour shared by every vendor adapter: one session, metrics, retries, tokens.

Adapters describe *what* to send; this module decides, once for all vendors:

* whether a failure is worth retrying at all (`is_retryable`),
* whether a request may be resent inside the same call (`never_processed`: no vendor
  offers an idempotency key, so a POST is only resent when the vendor certainly did not
  act on it; anything else goes back to the dispatcher, whose attempts are bounded),
* how long to wait before doing so (`retry_delay`: capped full-jitter backoff that
  honours Retry-After),
* and which `VendorError` a final failure becomes, with a message that names the status
  code and the vendor's error code but never identity values or secrets.

`TokenAuth` caches a bearer-style token for any adapter; `VendorHttp.call` refreshes it
once when the vendor answers 401; `token_answer` is the one rule for reading a token
endpoint's answer.

Every exchange is bounded in time and size, whatever the vendor does: `timeout_seconds`
covers the whole exchange (connect, send, headers, body; see `_CallDeadline`), and a body
over `MAX_RESPONSE_BYTES` is refused without being read into memory.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self

import requests
import requests.adapters
import requests.auth
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import InvalidHeader, NewConnectionError
from urllib3.util.retry import Retry

from consumer.metrics import VENDOR_CALL_DURATION, VENDOR_CALLS
from consumer.vendors.base import (
    PermanentVendorError,
    RetryableVendorError,
    VendorAuthError,
    VendorError,
    VendorRateLimited,
)

log = logging.getLogger(__name__)

Operation = Literal["submit", "poll", "auth"]
Outcome = Literal[
    "ok", "client_error", "server_error", "rate_limited", "timeout", "connection_error"
]
Result = requests.Response | requests.RequestException
Sleep = Callable[[float], object]  # e.g. time.sleep, or threading.Event.wait at shutdown
Clock = Callable[[], float]

USER_AGENT = f"erasure-worker/0.1.0 python-requests/{requests.__version__}"
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Answers that say the vendor did not act on the request, so even a POST may be resent.
NOT_PROCESSED_STATUSES = frozenset({429, 503})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

_TRANSIENT_TRANSPORT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
_RETRY_AFTER_PARSER = Retry(total=0)
_SAFE_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")
_SAFE_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9.+\-]{0,40}/[a-z0-9][a-z0-9.+\-]{0,60}")
_EMAIL_LIKE = re.compile(r"\S+@\S+")
_MAX_MESSAGE_CHARS = 160

MAX_RESPONSE_BYTES = 10 * 1024 * 1024
"""Largest answer body read from a vendor (counted after decompression). A larger one is
refused unread when its Content-Length says so, else as soon as the count passes the
bound: one odd answer must not take the worker past its memory limit (the chart's is
512 MiB; a 512 MiB body read whole took the RSS past 1 GiB). The largest answer expected
is Acoustic's job response for a full batch of 5,000 addresses: with 254-character
addresses (the longest an address can be) it is 1.7 MB as compact JSON and 2.5 MB
indented by 4, so the bound leaves room for about four times that."""
_READ_CHUNK_BYTES = 64 * 1024


class ResponseTooLarge(requests.RequestException):
    """The answer's body is over `MAX_RESPONSE_BYTES`; it was not read (see `_read_body`)."""


class CallDeadlineExceeded(requests.ReadTimeout):
    """The exchange was still going when `timeout_seconds` had passed (see `_CallDeadline`)."""


class _CallDeadline:
    """Ends one HTTP exchange when its time is up, in whatever phase it is.

    A socket timeout bounds each read, not the exchange: a vendor dripping a byte a second
    keeps every read short and the exchange alive for as long as it likes (one poll took
    42 s with a 2 s timeout; an endless drip never ended). So the connections the exchange
    uses hand their sockets to this deadline (see `_DeadlineConnection`), and a timer
    shuts them when the time is up: the blocked read returns at once, the exchange fails,
    and `VendorHttp` reports a timeout. A shut connection is never reused (urllib3 checks
    a pooled connection before reusing it). Only connecting itself (TCP and the TLS
    handshake) is bounded by the socket's connect timeout instead, which is no longer.
    """

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    @property
    def expired(self) -> bool:
        with self._lock:
            return self._expired

    def watch(self, sock: object) -> None:
        """Shut `sock` when the deadline passes (at once if it already has)."""
        if not isinstance(sock, socket.socket):
            return  # e.g. urllib3's TLS-in-TLS transport: bounded per read only
        with self._lock:
            expired = self._expired
            if not expired:
                self._sockets.append(sock)
        if expired:
            _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    """Shut the OS socket under any wrapper (an `ssl.SSLSocket`'s own `shutdown` would
    also drop its TLS state under the thread reading from it)."""
    with contextlib.suppress(OSError):  # already closed: nothing is waiting on it
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_CURRENT_DEADLINE: contextvars.ContextVar[_CallDeadline | None] = contextvars.ContextVar(
    "vendor_call_deadline", default=None
)


def _watch(sock: object) -> None:
    deadline = _CURRENT_DEADLINE.get()
    if deadline is not None and sock is not None:
        deadline.watch(sock)


class _DeadlineConnection(HTTPConnection):
    """A urllib3 connection that hands its socket to the current exchange's deadline: when
    it connects, and when it is reused for another request."""

    def connect(self) -> None:
        super().connect()
        _watch(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)  # None on a new connection: `connect` will watch it
        super().request(*args, **kwargs)


class _DeadlineHTTPSConnection(_DeadlineConnection, HTTPSConnection):
    pass


class _DeadlineHTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineConnection


class _DeadlineHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


_DEADLINE_POOLS = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}


class _DeadlineAdapter(requests.adapters.HTTPAdapter):
    """requests' transport, with connections that honour `_CallDeadline`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _DEADLINE_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools have their own classes
            manager.pool_classes_by_scheme = _DEADLINE_POOLS
        return manager


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """In-call retries; kept short because the dispatcher's lease covers one whole call.

    >>> RetryPolicy(attempts=3, base_seconds=0.5, cap_seconds=10.0)
    RetryPolicy(attempts=3, base_seconds=0.5, cap_seconds=10.0)

    `cap_seconds` bounds every wait, and a Retry-After longer than it is not waited out
    in-call: the error goes to the dispatcher with `retry_after` instead.
    """

    attempts: int = 3
    base_seconds: float = 0.5
    cap_seconds: float = 10.0


def is_retryable(result: Result) -> bool:
    """The one "should this be retried?" decision: 429, 5xx gateway/server errors and
    transport failures may succeed later; other 4xx will not (401 is the auth layer's)."""
    if isinstance(result, requests.Response):
        return result.status_code in RETRYABLE_STATUSES
    return isinstance(result, _TRANSIENT_TRANSPORT_ERRORS)


def never_processed(result: Result) -> bool:
    """Whether the vendor certainly did not act on the request (so resending is no
    duplicate): a 429/503 answer, or a connection that could not even be established.

    A reset or read timeout after the request left us is *not* such a case: the vendor
    may have created the job, so a POST is handed back to the dispatcher instead.
    """
    if isinstance(result, requests.Response):
        return result.status_code in NOT_PROCESSED_STATUSES
    if isinstance(result, requests.ConnectTimeout):
        return True
    if isinstance(result, requests.ConnectionError) and result.args:
        return isinstance(getattr(result.args[0], "reason", None), NewConnectionError)
    return False


def retry_after_seconds(response: requests.Response) -> float | None:
    """The Retry-After header (delta-seconds or HTTP-date) in seconds; None if absent or bad."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return float(_RETRY_AFTER_PARSER.parse_retry_after(value))
    except InvalidHeader:
        return None


def retry_delay(
    retry: int, retry_after: float | None, policy: RetryPolicy, rand: Callable[[], float]
) -> float:
    """Wait before retry number `retry` (0-based): full jitter over an exponential ceiling,
    never below the vendor's Retry-After, never above the policy's cap."""
    ceiling = min(policy.cap_seconds, policy.base_seconds * 2.0**retry)
    jittered = rand() * ceiling
    return min(policy.cap_seconds, max(jittered, retry_after or 0.0))


def call_outcome(result: Result) -> Outcome:
    """The `outcome` label of `erasure_vendor_calls_total` for one HTTP exchange."""
    if isinstance(result, ResponseTooLarge) and result.response is not None:
        return call_outcome(result.response)  # the vendor answered: label its status
    if isinstance(result, requests.Timeout):
        return "timeout"
    if isinstance(result, requests.RequestException):
        return "connection_error"
    if result.status_code == 429:
        return "rate_limited"
    if result.status_code >= 500:
        return "server_error"
    if result.status_code >= 400:
        return "client_error"
    return "ok"


class TokenAuth(requests.auth.AuthBase):
    """A cached access token sent as `Authorization: <scheme> <token>`.

    `fetch` returns `(token, expires_in_seconds)`; the token is reused until
    `refresh_margin_seconds` (at most half its lifetime) before it expires, by `clock`.
    `VendorHttp.call` calls `invalidate` on a 401 and tries once more.
    """

    def __init__(
        self,
        fetch: Callable[[], tuple[str, float]],
        *,
        scheme: str = "Bearer",
        clock: Clock = time.monotonic,
        refresh_margin_seconds: float = 60.0,
    ) -> None:
        self._fetch = fetch
        self._scheme = scheme
        self._clock = clock
        self._margin = refresh_margin_seconds
        self._token: str | None = None
        self._refresh_at = 0.0

    def token(self) -> str:
        """The cached token, fetching a new one when there is none or it is about to expire."""
        now = self._clock()
        if self._token is None or now >= self._refresh_at:
            token, expires_in = self._fetch()
            lifetime = max(0.0, expires_in)
            self._token = token
            self._refresh_at = now + lifetime - min(self._margin, lifetime / 2)
        return self._token

    def invalidate(self) -> None:
        """Forget the token (the vendor refused it); the next request fetches a new one."""
        self._token = None

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"{self._scheme} {self.token()}"
        return request


class VendorHttp:
    """One vendor's `requests.Session` with timeouts, metrics and the retry policy.

    Used by one thread at a time (each worker loop builds its own adapter). Redirects are
    never followed, so a bearer token never travels to a host the adapter did not check:
    a 3xx the adapter names in `handled_statuses` is returned for it to judge (Acoustic's
    303 to a job's response), any other is a retryable failure.

    `timeout_seconds` bounds each exchange as a whole, connect to last body byte.
    """

    def __init__(
        self,
        vendor: str,
        *,
        timeout_seconds: float,
        policy: RetryPolicy | None = None,
        sleep: Sleep = time.sleep,
        rand: Callable[[], float] = random.random,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.vendor = vendor
        self._timeout = timeout_seconds
        self._policy = policy if policy is not None else RetryPolicy()
        self._sleep = sleep
        self._rand = rand
        self._session = requests.Session()
        self._session.headers["User-Agent"] = user_agent
        for prefix in ("http://", "https://"):
            self._session.mount(prefix, _DeadlineAdapter())

    def call(
        self,
        operation: Operation,
        method: str,
        url: str,
        *,
        auth: TokenAuth | None = None,
        params: Mapping[str, str] | None = None,
        data: bytes | Mapping[str, str] | None = None,
        json: object = None,
        headers: Mapping[str, str] | None = None,
        handled_statuses: Collection[int] = (),
        redact: Collection[str] = (),
    ) -> requests.Response:
        """Send one request with in-call retries; return a 2xx response or one whose
        status is in `handled_statuses`, else raise the matching `VendorError`.

        `redact` lists values (identifiers, secrets) that must never appear in an error
        message even if the vendor echoes them in its error body.
        """
        idempotent = method.upper() in IDEMPOTENT_METHODS
        retry = 0
        refreshed = False
        while True:
            if auth is not None:
                auth.token()  # any token fetch is its own "auth" call, outside this one's timing
            result = self._send(operation, method, url, auth, params, data, json, headers)
            if _is_unauthorized(result) and auth is not None and not refreshed:
                log.debug("%s %s: token refused, fetching a new one", self.vendor, operation)
                auth.invalidate()
                refreshed = True
                continue
            if isinstance(result, requests.Response) and (
                result.status_code < 300 or result.status_code in handled_statuses
            ):
                return result
            delay = self._delay_before_retry(result, retry, idempotent)
            if delay is None:
                raise self._failure(operation, result, redact)
            log.debug("%s %s: retry %d in %.2fs", self.vendor, operation, retry + 1, delay)
            self._sleep(delay)
            retry += 1

    def close(self) -> None:
        """Release pooled connections."""
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(
        self,
        operation: Operation,
        method: str,
        url: str,
        auth: TokenAuth | None,
        params: Mapping[str, str] | None,
        data: bytes | Mapping[str, str] | None,
        json: object,
        headers: Mapping[str, str] | None,
    ) -> Result:
        """One HTTP exchange within `timeout_seconds`, body read, timed and counted
        whatever happens."""
        started = time.perf_counter()
        deadline = _CallDeadline(self._timeout)
        context = _CURRENT_DEADLINE.set(deadline)
        result: Result
        try:
            response = self._session.request(
                method,
                url,
                params=params,
                data=data,
                json=json,
                headers=headers,
                auth=auth,
                timeout=self._timeout,
                allow_redirects=False,
                stream=True,
            )
            result = _read_body(response)
            if deadline.expired:  # a body without a length just ends when its socket shuts
                result = CallDeadlineExceeded()
        except Exception as error:
            # A shut socket surfaces as whatever the interrupted phase raises.
            if deadline.expired:
                result = CallDeadlineExceeded()
            elif isinstance(error, requests.RequestException):
                result = error
            else:
                raise
        finally:
            deadline.cancel()
            _CURRENT_DEADLINE.reset(context)
        elapsed = time.perf_counter() - started
        VENDOR_CALL_DURATION.labels(vendor=self.vendor, operation=operation).observe(elapsed)
        VENDOR_CALLS.labels(
            vendor=self.vendor, operation=operation, outcome=call_outcome(result)
        ).inc()
        return result

    def _delay_before_retry(self, result: Result, retry: int, idempotent: bool) -> float | None:
        """How long to wait before sending again in this call, or None to give up now."""
        if retry + 1 >= self._policy.attempts or not is_retryable(result):
            return None
        if not idempotent and not never_processed(result):
            return None
        retry_after = retry_after_seconds(result) if isinstance(result, requests.Response) else None
        if retry_after is not None and retry_after > self._policy.cap_seconds:
            return None
        return retry_delay(retry, retry_after, self._policy, self._rand)

    def _failure(
        self, operation: Operation, result: Result, redact: Collection[str]
    ) -> VendorError:
        """The error a final failure becomes; see `consumer.vendors.base` for their meaning."""
        where = f"{self.vendor} {operation}"
        if isinstance(result, requests.Timeout):
            return RetryableVendorError(f"{where}: no answer within {self._timeout:g}s")
        if isinstance(result, ResponseTooLarge):
            # Not retried in-call (the next answer is likely as big), but maybe later.
            limit = MAX_RESPONSE_BYTES // (1024 * 1024)
            return RetryableVendorError(f"{where}: answer over {limit} MiB refused unread")
        if isinstance(result, requests.RequestException):
            kind = "connection failed" if is_retryable(result) else "request not sent"
            error_type = RetryableVendorError if is_retryable(result) else PermanentVendorError
            return error_type(f"{where}: {kind} ({type(result).__name__})")
        status = result.status_code
        summary = vendor_error_summary(result, redact)
        message = f"{where}: HTTP {status}" + (f" ({summary})" if summary else "")
        if status == 429:
            return VendorRateLimited(message, retry_after=retry_after_seconds(result))
        if is_retryable(result):
            return RetryableVendorError(message, retry_after=retry_after_seconds(result))
        if 300 <= status < 400:
            # An unexpected redirect (a moved endpoint, a proxy's login page) says nothing
            # about the items; what the vendor did is unknown, so it costs an attempt.
            return RetryableVendorError(f"{message}: redirect not followed")
        if status in (401, 403) or operation == "auth":
            return VendorAuthError(message)
        return PermanentVendorError(message)


def _read_body(response: requests.Response) -> requests.Response:
    """Read a streamed answer's body into the response (so `.json()` and `.content` work),
    refusing one over `MAX_RESPONSE_BYTES` before reading it when its Content-Length
    says so, else as soon as it passes the bound; a refused answer is closed."""
    declared = response.headers.get("Content-Length", "").strip()
    try:
        if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise ResponseTooLarge(response=response)
        body = bytearray()
        for chunk in response.iter_content(_READ_CHUNK_BYTES):
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                raise ResponseTooLarge(response=response)
    except BaseException:
        response.close()  # drops the connection: the rest of the body is never read
        raise
    response._content = bytes(body)
    return response


def token_answer(response: requests.Response, vendor: str) -> dict[str, Any]:
    """The JSON object of a token endpoint's 2xx answer: the one rule every adapter's
    token fetch follows.

    Anything else (an HTML maintenance page, a proxy's login form, a truncated body) says
    nothing about our credentials: it is transient trouble on the vendor's side, so it is
    retryable (the items of the call that needed the token spend an attempt and are sent
    again later), not an auth error that would stop every call to the vendor.
    """
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        shown = media_type if _SAFE_MEDIA_TYPE.fullmatch(media_type) else "unknown type"
        raise RetryableVendorError(
            f"{vendor} auth: token answer is not a JSON object ({shown}); trying again later"
        )
    return body


def vendor_error_summary(response: requests.Response, redact: Collection[str] = ()) -> str | None:
    """`code: message` from the known error fields of a JSON error body, scrubbed.

    Only named fields are read (OAuth `error`/`error_description`, Acquia
    `errorCode`/`userMessage`, `meta.generalErrors`/`meta.errors` lists), because error
    bodies may echo personal data; `redact` values and anything e-mail-like are masked.
    """
    try:
        body = response.json()
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None
    if not isinstance(body, dict):
        return None
    code = next(
        (value for key in ("error", "errorCode", "code") if _is_code(value := body.get(key))), None
    )
    message = _first_text(body)
    parts = [_scrub(part, redact) for part in (code, message) if isinstance(part, str)]
    return ": ".join(parts) or None


def _is_code(value: object) -> bool:
    return isinstance(value, str) and _SAFE_CODE.fullmatch(value) is not None


def _first_text(body: dict[str, object]) -> str | None:
    for key in ("error_description", "userMessage", "message"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    meta = body.get("meta")
    if isinstance(meta, dict):
        for key in ("generalErrors", "errors"):
            values = meta.get(key)
            if isinstance(values, list) and values:
                first = values[0]
                # Some vendors list plain strings, others objects with a "message".
                if isinstance(first, dict):
                    first = first.get("message")
                if isinstance(first, str) and first:
                    return first
    return None


def _scrub(text: str, redact: Collection[str]) -> str:
    for value in redact:
        if value:
            text = re.sub(re.escape(value), "<redacted>", text, flags=re.IGNORECASE)
    text = _EMAIL_LIKE.sub("<redacted>", text)
    text = "".join(char if char.isprintable() else " " for char in text)
    return text[:_MAX_MESSAGE_CHARS]


def _is_unauthorized(result: Result) -> bool:
    return isinstance(result, requests.Response) and result.status_code == 401
