"""Whether, and when, a failed vendor exchange is sent again inside the same call.

* whether a failure is worth retrying at all (`is_retryable`),
* whether a request may be resent (`never_processed`: no vendor offers an idempotency
  key, so a POST is only resent when the vendor certainly did not act on it; anything
  else goes back to the dispatcher, whose attempts are bounded),
* and how long to wait before doing so (`retry_delay`: the worker's one backoff rule,
  `consumer.backoff`, with full jitter, honouring Retry-After up to the cap).
"""

from __future__ import annotations

from dataclasses import dataclass

import requests
from urllib3.exceptions import InvalidHeader, NewConnectionError
from urllib3.util.retry import Retry

from consumer.backoff import BackoffPolicy, Random, backoff_delay

Result = requests.Response | requests.RequestException

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

    @property
    def backoff(self) -> BackoffPolicy:
        """Full jitter: many loops may retry one vendor at once, so their retries spread."""
        return BackoffPolicy(self.base_seconds, self.cap_seconds, jitter="full")


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


def retry_delay(retry: int, retry_after: float | None, policy: RetryPolicy, rand: Random) -> float:
    """Wait before in-call retry number `retry` (0-based, so after `retry + 1` failures)."""
    return backoff_delay(policy.backoff, retry + 1, retry_after, rand)
