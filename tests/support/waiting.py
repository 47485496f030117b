"""The one way a test waits: poll a condition until it holds or a deadline passes.

Tests never sleep a fixed time (too short on a loaded machine, wasted time on an idle
one); they wait for the state they need, and on a timeout say what they waited for and
what they saw last, so a failure on a slow CI runner explains itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_INTERVAL_SECONDS = 0.02


def wait_until(
    condition: Callable[[], T | None],
    timeout: float,
    message: str = "",
    interval: float = POLL_INTERVAL_SECONDS,
) -> T:
    """Call `condition` until it returns something truthy, and return that; fail after
    `timeout` seconds with `message` and the last value it returned. An exception from
    `condition` ends the wait at once (e.g. the worker under test exited)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message or getattr(condition, "__name__", repr(condition))
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what} (last seen: {value!r})"
            )
        time.sleep(interval)
