"""HTTP behaviour shared by every vendor adapter: one session, metrics, retries, tokens.

Adapters describe *what* to send; `VendorHttp` decides, once for all vendors, whether and
when to send again (`consumer.vendors.http_retry`), and which `VendorError` a final
failure becomes, with a message that names the status code and the vendor's error code
but never identity values or secrets (`consumer.vendors.http_answers`).

`TokenAuth` caches a bearer-style token for any adapter; `VendorHttp.call` refreshes it
once when the vendor answers 401; `token_answer` is the one rule for reading a token
endpoint's answer.

Every exchange is bounded in time and size, whatever the vendor does: `timeout_seconds`
covers the whole exchange (connect, send, headers, body; see
`consumer.vendors.http_deadline`), and a body over `MAX_RESPONSE_BYTES` is refused without
being read into memory.

This module is the adapters' one import for HTTP: it re-exports the names of its helper
modules that adapters and their tests use.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Collection, Mapping
from importlib.metadata import version
from typing import Literal, Protocol, Self, TypeGuard

import requests
import requests.auth

from consumer.backoff import Random
from consumer.clock import SYSTEM_CLOCK
from consumer.runtime.metrics import VENDOR_CALL_DURATION, VENDOR_CALLS
from consumer.vendors.base import (
    PermanentVendorError,
    RetryableVendorError,
    VendorAuthError,
    VendorError,
    VendorRateLimited,
)
from consumer.vendors.http_answers import (
    MAX_RESPONSE_BYTES,
    ResponseTooLarge,
    read_body,
    token_answer,
    vendor_error_summary,
)
from consumer.vendors.http_deadline import CallDeadlineExceeded, call_deadline
from consumer.vendors.http_retry import (
    IDEMPOTENT_METHODS,
    Result,
    RetryPolicy,
    is_retryable,
    never_processed,
    retry_after_seconds,
    retry_delay,
)
from consumer.vendors.http_session import VendorSession

__all__ = [
    "MAX_RESPONSE_BYTES",
    "CallGate",
    "Clock",
    "RetryPolicy",
    "Sleep",
    "TokenAuth",
    "VendorHttp",
    "call_outcome",
    "is_retryable",
    "never_processed",
    "retry_after_seconds",
    "retry_delay",
    "token_answer",
    "vendor_error_summary",
]

log = logging.getLogger(__name__)

Operation = Literal["submit", "poll", "auth"]
Outcome = Literal[
    "ok", "client_error", "server_error", "rate_limited", "timeout", "connection_error"
]
Sleep = Callable[[float], object]  # e.g. time.sleep, or threading.Event.wait at shutdown
Clock = Callable[[], float]
"""A monotonic reading in seconds, e.g. `SYSTEM_CLOCK.monotonic` (`consumer.clock`)."""

USER_AGENT = f"erasure-worker/{version('erasure-worker')} python-requests/{requests.__version__}"


class CallGate(Protocol):
    """What every exchange passes first (`consumer.pipeline.call_gate`): the fleet's rate
    and a 429's pause, shared by all the sessions of a vendor."""

    def enter(self, operation: Operation) -> None:
        """Block until a call of `operation` may go; raise a VendorError if it must not."""

    def rate_limited(self, operation: Operation, retry_after: float | None) -> None:
        """The vendor answered 429 to a call of `operation`."""


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
        clock: Clock = SYSTEM_CLOCK.monotonic,
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
        rand: Random = random.random,
        user_agent: str = USER_AGENT,
        clock: Clock = SYSTEM_CLOCK.monotonic,
        gate: CallGate | None = None,
    ) -> None:
        """`sleep` waits between in-call retries, `rand` draws their jitter, `clock`
        times each exchange for `erasure_vendor_call_duration_seconds`, and `gate` (if
        any) holds back every exchange, retries included."""
        self.vendor = vendor
        self._timeout = timeout_seconds
        self._policy = policy if policy is not None else RetryPolicy()
        self._sleep = sleep
        self._rand = rand
        self._clock = clock
        self._gate = gate
        self._session = VendorSession(user_agent)

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
            if self._gate is not None:
                self._gate.enter(operation)
            result = self._send(operation, method, url, auth, params, data, json, headers)
            if self._gate is not None and _is_rate_limited(result):
                self._gate.rate_limited(operation, retry_after_seconds(result))
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
        started = self._clock()
        result: Result
        with call_deadline(self._timeout) as deadline:
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
                result = read_body(response)
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
        elapsed = self._clock() - started
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


def _is_rate_limited(result: Result) -> TypeGuard[requests.Response]:
    return isinstance(result, requests.Response) and result.status_code == 429


def _is_unauthorized(result: Result) -> bool:
    return isinstance(result, requests.Response) and result.status_code == 401
