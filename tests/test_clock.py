"""The one injected clock (consumer/clock.py), and that nothing else reads the host's clocks."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from consumer.clock import SYSTEM_CLOCK, Clock
from tests.support.clock import ManualClock

PACKAGE = Path(__file__).resolve().parents[1] / "consumer"
DIRECT_READS = re.compile(
    r"\btime\.(monotonic|time|perf_counter|monotonic_ns|time_ns)\b|\bdatetime\.(now|utcnow)\("
)


def test_wall_time_is_aware_utc_now() -> None:
    before = datetime.now(UTC)
    now = SYSTEM_CLOCK.now()
    assert now.tzinfo is UTC
    assert before <= now <= datetime.now(UTC)


def test_monotonic_time_never_goes_back() -> None:
    readings = [SYSTEM_CLOCK.monotonic() for _ in range(1000)]
    assert readings == sorted(readings)
    assert abs(readings[-1] - time.monotonic()) < 1.0


def test_the_tests_manual_clock_is_a_clock_and_moves_both_readings_together() -> None:
    clock: Clock = ManualClock()
    wall, monotonic = clock.now(), clock.monotonic()
    assert isinstance(clock, ManualClock)
    clock.advance(90)
    assert clock.now() - wall == timedelta(seconds=90)
    assert clock.monotonic() - monotonic == 90


def test_only_the_clock_module_reads_the_host_clocks() -> None:
    """Every stage takes the injected clock, so a test can move time for all of them."""
    readers = sorted(
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "clock.py" or path.parent != PACKAGE
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if DIRECT_READS.search(line) and not line.lstrip().startswith(("#", "`"))
    )
    assert readers == []
