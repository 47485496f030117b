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
once when the vendor answers 401.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Literal, Self

import requests
import requests.auth
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
_EMAIL_LIKE = re.compile(r"\S+@\S+")
_MAX_MESSAGE_CHARS = 160


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
    never followed: a 3xx is returned for the adapter to judge, so a bearer token never
    travels to a host the adapter did not check.
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
        """Send one request with in-call retries; return a 2xx/3xx response or one whose
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
                result.status_code < 400 or result.status_code in handled_statuses
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
        """One HTTP exchange, timed and counted whatever happens."""
        started = time.perf_counter()
        result: Result
        try:
            result = self._session.request(
                method,
                url,
                params=params,
                data=data,
                json=json,
                headers=headers,
                auth=auth,
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.RequestException as error:
            result = error
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
        if status in (401, 403) or operation == "auth":
            return VendorAuthError(message)
        return PermanentVendorError(message)


def vendor_error_summary(response: requests.Response, redact: Collection[str] = ()) -> str | None:
    """`code: message` from the known error fields of a JSON error body, scrubbed.

    Only named fields are read (OAuth `error`/`error_description`, Acquia
    `errorCode`/`userMessage`, `meta.generalErrors`/`meta.errors` lists), because error
    bodies may echo personal data; `redact` values and anything e-mail-like are masked.
    """
    try:
        body = response.json()
    except ValueError:
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
