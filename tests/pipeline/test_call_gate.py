"""The fleet's buckets as one process's call slots share them (`FleetBuckets`): takes that
queue behind a statement are made together in the next one, over a real SQLite ledger
whose first statement the test holds; and the gate's spacing of one process's departures
(`CallGate`), on the test's clock."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr

from consumer.config import VendorSettings
from consumer.ledger import LedgerUnavailable
from consumer.ledger.limit_records import CallSlot, RateBucket
from consumer.ledger.sqlite import SqliteLedger
from consumer.pipeline.call_gate import (
    RATE_HEADROOM,
    STRICT_RATE_HEADROOM,
    CallGate,
    FleetBuckets,
)
from consumer.vendors.voyado import VoyadoSettings
from tests.support.clock import START, ManualClock
from tests.support.settings import MONETATE, VOYADO
from tests.support.waiting import wait_until

WAIT = 10.0
BUCKET = RateBucket("voyado", "submit", rate_per_second=10.0)


class HeldLedger(SqliteLedger):
    """A SQLite ledger that holds its first take inside the statement until `go`, and
    refuses its second if asked to; it counts the slots each statement took."""

    def __init__(self, path: Path, refuse_second: bool = False) -> None:
        super().__init__(str(path))
        self.counts: list[int] = []
        self.inside, self.go = threading.Event(), threading.Event()
        self._refuse_second = refuse_second

    def take_call_slots(self, bucket: RateBucket, count: int) -> list[CallSlot]:
        self.counts.append(count)
        if len(self.counts) == 1:
            self.inside.set()
            self.go.wait(WAIT)
        if len(self.counts) == 2 and self._refuse_second:
            raise LedgerUnavailable("the ledger went away")
        return super().take_call_slots(bucket, count)


def take_behind_a_held_statement(
    ledger: HeldLedger, queued: int
) -> dict[int, float | BaseException]:
    """One take held in its statement, `queued` more behind it; what each got."""
    ledger.migrate()
    fleet = FleetBuckets(ledger)
    got: dict[int, float | BaseException] = {}

    def take(n: int) -> None:
        try:
            got[n] = fleet.take(BUCKET)
        except LedgerUnavailable as error:
            got[n] = error

    threads = [threading.Thread(target=take, args=(0,))]
    threads[0].start()
    assert ledger.inside.wait(WAIT)
    for n in range(1, queued + 1):
        threads.append(threading.Thread(target=take, args=(n,)))
        threads[-1].start()
    wait_until(lambda: len(fleet._waiting.get(BUCKET, [])) == queued, timeout=WAIT)
    ledger.go.set()
    for thread in threads:
        thread.join(WAIT)
    return got


def test_takes_queued_behind_a_statement_are_made_together_in_the_next(tmp_path: Path) -> None:
    ledger = HeldLedger(tmp_path / "ledger.db")
    got = take_behind_a_held_statement(ledger, queued=4)
    assert ledger.counts == [1, 4]
    ready = sorted(value for n, value in got.items() if n > 0 and isinstance(value, float))
    gaps = [later - earlier for earlier, later in itertools.pairwise(ready)]
    assert gaps == pytest.approx([0.1] * 3, abs=1e-6)  # spaced as four takes in a row
    ledger.close()


def test_every_take_of_a_refused_statement_is_refused_and_the_next_is_made(
    tmp_path: Path,
) -> None:
    ledger = HeldLedger(tmp_path / "ledger.db", refuse_second=True)
    got = take_behind_a_held_statement(ledger, queued=3)
    assert isinstance(got[0], float)
    assert all(isinstance(got[n], LedgerUnavailable) for n in (1, 2, 3))
    assert isinstance(FleetBuckets(ledger).take(BUCKET), float)
    assert ledger.counts == [1, 3, 1]
    ledger.close()


class FullBucketLedger(SqliteLedger):
    """A SQLite ledger whose bucket always has the slots asked for: the gate's own spacing
    of departures is then all that holds calls back."""

    def take_call_slots(self, bucket: RateBucket, count: int) -> list[CallSlot]:
        return [CallSlot(0.0, START)] * count


class BucketRecordingLedger(FullBucketLedger):
    """Records each bucket a slot was taken from."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.buckets: list[RateBucket] = []

    def take_call_slots(self, bucket: RateBucket, count: int) -> list[CallSlot]:
        self.buckets.append(bucket)
        return super().take_call_slots(bucket, count)


@pytest.mark.parametrize(
    ("settings", "operation", "headroom"),
    [
        # Monetate refuses a status check that comes early: the jitter needs more room.
        (
            MONETATE.model_copy(update={"status_rate_per_second": 40.0}),
            "poll",
            STRICT_RATE_HEADROOM,
        ),
        (MONETATE.model_copy(update={"rate_per_second": 2.0}), "submit", RATE_HEADROOM),
        (VOYADO.model_copy(update={"rate_per_second": 100.0}), "submit", RATE_HEADROOM),
    ],
)
def test_a_rate_the_vendor_counts_call_by_call_gets_more_headroom_than_a_budget(
    tmp_path: Path, settings: VendorSettings, operation: str, headroom: float
) -> None:
    rate = settings.poll_rate_per_second if operation == "poll" else settings.rate_per_second
    assert rate is not None
    ledger = BucketRecordingLedger(str(tmp_path / "ledger.db"))
    clock = ManualClock()
    gate = CallGate(settings, FleetBuckets(ledger, clock), clock, threading.Event())
    gate.enter(operation)
    assert [bucket.rate_per_second for bucket in ledger.buckets] == [rate * headroom]
    assert STRICT_RATE_HEADROOM < RATE_HEADROOM < 1
    ledger.close()


class LateWaking(threading.Event):
    """A stop event whose waits move the test's clock, each waking as late as `late` says
    (in turn; then as late as the last)."""

    def __init__(self, clock: ManualClock, *late: float) -> None:
        super().__init__()
        self._clock, self._late = clock, list(late)

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        late = self._late.pop(0) if len(self._late) > 1 else self._late[0]
        self._clock.advance(timeout + late)
        return False


def departures(tmp_path: Path, *late: float) -> list[float]:
    """When ten calls of one thread left a gate at 10 calls/s whose waits wake `late`."""
    clock = ManualClock()
    settings = VoyadoSettings(
        base_url="http://127.0.0.1:9", api_key=SecretStr("key"), rate_per_second=10
    )
    ledger = FullBucketLedger(str(tmp_path / "ledger.db"))
    gate = CallGate(settings, FleetBuckets(ledger, clock), clock, LateWaking(clock, *late))
    left = []
    for _ in range(10):
        gate.enter("submit")
        left.append(clock.monotonic())
    ledger.close()
    return left


INTERVAL = 1 / (10 * RATE_HEADROOM)  # the slots' interval at 10 calls/s


def test_departures_keep_their_turns_when_threads_wake_late(tmp_path: Path) -> None:
    """Every wait wakes 2 ms late: each call leaves at its turn plus those 2 ms, turns an
    interval apart, so the delays do not add up."""
    left = departures(tmp_path, 0.002)
    gaps = [later - earlier for earlier, later in itertools.pairwise(left)]
    assert min(gaps) >= INTERVAL - 1e-9
    assert left[-1] - left[0] == pytest.approx(9 * INTERVAL + 0.002)


def test_a_late_call_holds_the_next_to_the_vendors_interval_then_turns_catch_up(
    tmp_path: Path,
) -> None:
    """The first wait wakes 10 ms late, the others on time: the next call still leaves a
    vendor's interval (0.1 s) after the late one, and the turns after catch up (by the
    headroom, 2 ms a turn)."""
    left = departures(tmp_path, 0.01, 0.0)
    gaps = [later - earlier for earlier, later in itertools.pairwise(left)]
    assert min(gaps) >= 0.1 - 1e-9
    assert left[-1] - left[0] == pytest.approx(9 * INTERVAL)
