"""The one fake clock: wall and monotonic time that move only when a test moves them.

Batch age, backoff, next poll, gauge refresh periods and rate limits all hang on time;
a test that waited for them in real time would be slow and flaky, so it hands the code
under test this clock and calls `advance()` instead. Wall and monotonic time move together,
as they do in a running process.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

START = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
# Any value will do: code under test only ever subtracts monotonic readings.
MONOTONIC_START = 1000.0


class ManualClock:
    """A `consumer.clock.Clock` for the code under test; only `advance(seconds)` moves it."""

    def __init__(self, wall: datetime = START, monotonic: float = MONOTONIC_START) -> None:
        self._wall = wall
        self._monotonic = monotonic

    def now(self) -> datetime:
        """The wall time, an aware UTC datetime."""
        return self._wall

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps, for code that measures intervals."""
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._wall += timedelta(seconds=seconds)
        self._monotonic += seconds
