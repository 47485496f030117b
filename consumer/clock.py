"""The one clock the worker reads: wall time and monotonic time, injected everywhere.

Every loop and pipeline stage takes a `Clock` (default `SYSTEM_CLOCK`) instead of calling
`time.monotonic()` or `datetime.now()` itself, so a test can move time by hand (a manual
clock only needs these two methods) and no stage can disagree with another about "now".
This module is the only place in `consumer/` that reads the system's clocks.

The two readings answer different questions and are never mixed:

* `now()` is wall time as an aware UTC datetime: what the ledger records (when an item is
  due again, when a request was recorded) and what events carry. It can jump when the
  host's clock is corrected.
* `monotonic()` is seconds from an arbitrary start that never goes back: for measuring
  durations and scheduling waits inside this process (backoffs, heartbeats, deadlines).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Final, Protocol


class Clock(Protocol):
    """What a stage may ask about time."""

    def now(self) -> datetime:
        """Wall time, timezone-aware, in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never decreasing; only differences mean anything."""
        ...


class SystemClock:
    """The host's clocks."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Final[Clock] = SystemClock()
