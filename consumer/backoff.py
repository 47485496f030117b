"""How long to wait before trying again: one rule for every retry in the worker.

`backoff_delay` is exponential (`base_seconds` doubling with each consecutive failure),
capped at `cap_seconds`, jittered as the policy says, and never shorter than a vendor's
Retry-After (up to `max_retry_after_seconds`, by default the cap). Only the policy
differs between callers:

* `full` jitter (a uniform draw between 0 and the exponential ceiling) where many
  callers retry one shared resource at once, so their retries spread out: in-call vendor
  retries (`consumer.vendors.http`).
* `equal` jitter (between half the ceiling and the ceiling) where a wait must not be
  near zero but callers should still not move in lockstep: item resubmissions and job
  polls (`consumer.pipeline.attempts`), the background loops (`consumer.runtime.loops`).
* `none` where one loop per process retries one resource, so there is no herd to spread
  and exact, predictable waits help operators: ingest and the outbox publisher.

>>> policy = BackoffPolicy(base_seconds=0.5, cap_seconds=10.0, jitter="none")
>>> [backoff_delay(policy, failures) for failures in range(1, 7)]
[0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
>>> backoff_delay(policy, 1, retry_after=3.0)
3.0
>>> backoff_delay(policy, 1, retry_after=60.0)
10.0
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

Jitter = Literal["full", "equal", "none"]
Random = Callable[[], float]
"""A uniform draw in [0, 1), e.g. `random.random`; tests inject a fixed value."""

_MAX_DOUBLINGS: Final = 1000
"""Beyond this many doublings every ceiling is the cap already; and `2.0 ** 1024` would
raise OverflowError, ending a loop after ~1,000 failures in a row (hours of an outage)."""


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """The parameters of one kind of retry.

    `base_seconds` is the ceiling after the first failure, doubled after each further
    one, never above `cap_seconds`. A Retry-After is honoured as a floor up to
    `max_retry_after_seconds` (None: the cap); `math.inf` honours any, for waits that are
    scheduled (in the ledger) rather than slept.
    """

    base_seconds: float
    cap_seconds: float
    jitter: Jitter = "full"
    max_retry_after_seconds: float | None = None

    @property
    def retry_after_limit(self) -> float:
        """The longest Retry-After honoured."""
        if self.max_retry_after_seconds is None:
            return self.cap_seconds
        return self.max_retry_after_seconds


def backoff_delay(
    policy: BackoffPolicy,
    failures: int,
    retry_after: float | None = None,
    rand: Random = random.random,
) -> float:
    """Seconds to wait after `failures` (>= 1) consecutive failures under `policy`."""
    doublings = min(max(failures - 1, 0), _MAX_DOUBLINGS)
    ceiling = min(policy.cap_seconds, policy.base_seconds * 2.0**doublings)
    if policy.jitter == "full":
        delay = rand() * ceiling
    elif policy.jitter == "equal":
        delay = ceiling / 2 + rand() * ceiling / 2
    else:
        delay = ceiling
    return max(delay, min(retry_after or 0.0, policy.retry_after_limit))
