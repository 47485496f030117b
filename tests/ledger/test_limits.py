"""Fleet-wide vendor limits in the ledger, on both backends: call rates (token buckets) and
rolling quotas that several replicas share without ever exceeding them.

A bucket's time is the database's clock, which a test cannot move, so the rate tests check
what the ledger granted rather than when calls happened: each slot says on the database's
clock when its call may go, and those times must fit the bucket whatever the timing of the
race (no tolerance beyond rounding, so nothing here can flake on a slow machine). Two
replicas that read the same level and both wrote it back would hand out one slot twice and
break the bound.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest

from consumer.ledger import Ledger
from consumer.ledger.limit_records import CallSlot, QuotaReservation, RateBucket

T = TypeVar("T")
REPLICAS = 4
# Slots and times are exact up to microsecond rounding of stored times.
ROUNDING = timedelta(microseconds=5)
WEEK = timedelta(days=7)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def race(open_ledgers: Callable[[], Ledger], work: Callable[[Ledger], T]) -> list[T]:
    """Run `work` on REPLICAS ledger objects (one per thread, as replicas have), started
    together; their results in replica order."""
    replicas = [open_ledgers() for _ in range(REPLICAS)]
    start = threading.Barrier(REPLICAS)

    def run(ledger: Ledger) -> T:
        start.wait(10)
        return work(ledger)

    with ThreadPoolExecutor(REPLICAS) as pool:
        return list(pool.map(run, replicas))


def take(ledger: Ledger, bucket: RateBucket, count: int, batch: int = 1) -> list[CallSlot]:
    """`count` slots, taken `batch` at a time."""
    slots: list[CallSlot] = []
    while len(slots) < count:
        slots += ledger.take_call_slots(bucket, min(batch, count - len(slots)))
    return slots


def most_calls_in_any_window(ready: list[datetime], seconds: float) -> int:
    """The largest number of calls whose ready times fall within `seconds` of each other."""
    ready = sorted(ready)
    span = timedelta(seconds=seconds) - ROUNDING
    first = 0
    most = 0
    for last, moment in enumerate(ready):
        while moment - ready[first] > span:
            first += 1
        most = max(most, last - first + 1)
    return most


# --- call rates ---------------------------------------------------------------------------


@pytest.mark.parametrize(("capacity", "batch"), [(1.0, 1), (4.0, 1), (1.0, 6)])
def test_replicas_racing_for_one_bucket_never_exceed_it(
    ledger: Ledger, open_ledgers: Callable[[], Ledger], capacity: float, batch: int
) -> None:
    """Within any window of T seconds the granted calls number at most capacity + rate * T:
    checked for windows of one call interval up to the whole run, for replicas taking a
    slot at a time and several at a time."""
    bucket = RateBucket("monetate", "status", rate_per_second=50.0, capacity=capacity)
    slots = [s for got in race(open_ledgers, lambda lg: take(lg, bucket, 25, batch)) for s in got]
    ready = [slot.ready_at for slot in slots]
    assert len(ready) == REPLICAS * 25
    for seconds in (0.02, 0.1, 0.5, 1.0, 2.0):
        allowed = capacity + bucket.rate_per_second * seconds
        assert most_calls_in_any_window(ready, seconds) <= allowed, seconds


def test_replicas_racing_for_one_bucket_get_all_of_its_rate(
    ledger: Ledger, open_ledgers: Callable[[], Ledger]
) -> None:
    """No call is held back longer than the rate needs: taken in order of `taken_at`, call
    k of n may go at the latest when the calls from any earlier take at the full rate would,
    after the burst (the bound of an exact token bucket)."""
    bucket = RateBucket("voyado", "submit", rate_per_second=40.0, capacity=3.0)
    slots = [s for got in race(open_ledgers, lambda lg: take(lg, bucket, 20)) for s in got]
    taken = sorted(slot.taken_at for slot in slots)
    n = len(taken)
    interval = 1.0 / bucket.rate_per_second
    latest_due = max(
        [taken[-1]]
        + [
            moment + timedelta(seconds=(n - k - bucket.capacity) * interval)
            for k, moment in enumerate(taken)
        ]
    )
    assert max(slot.ready_at for slot in slots) <= latest_due + ROUNDING


def test_a_fresh_bucket_grants_its_burst_at_once_then_spaces_calls(ledger: Ledger) -> None:
    bucket = RateBucket("acoustic", "submit", rate_per_second=0.1, capacity=3.0)
    waits = [slot.wait_seconds for slot in take(ledger, bucket, 5)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    # 10 s per call: the next two wait about 10 and 20 s (less what the test took).
    assert 5.0 < waits[3] <= 10.0 < waits[4] <= 20.0


def test_a_take_of_several_slots_spaces_them_as_takes_one_after_the_other(
    ledger: Ledger,
) -> None:
    bucket = RateBucket("voyado", "submit", rate_per_second=10.0, capacity=2.0)
    waits = [slot.wait_seconds for slot in ledger.take_call_slots(bucket, 5)]
    assert waits == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3], abs=1e-6)
    (next_one,) = ledger.take_call_slots(bucket, 1)
    assert 0.3 < next_one.wait_seconds <= 0.4  # after the five, less what the test took
    with pytest.raises(ValueError):
        ledger.take_call_slots(bucket, 0)


def test_buckets_of_other_vendors_and_operations_are_separate(ledger: Ledger) -> None:
    slow = 0.01
    take(ledger, RateBucket("monetate", "status", slow), 1)
    assert take(ledger, RateBucket("monetate", "submit", slow), 1)[0].wait_seconds == 0.0
    assert take(ledger, RateBucket("voyado", "status", slow), 1)[0].wait_seconds == 0.0
    assert take(ledger, RateBucket("monetate", "status", slow), 1)[0].wait_seconds > 50.0


def test_a_pause_holds_every_replica_until_it_passes(
    ledger: Ledger, open_ledgers: Callable[[], Ledger]
) -> None:
    bucket = RateBucket("voyado", "submit", rate_per_second=100.0, capacity=5.0)
    other = open_ledgers()
    take(other, bucket, 1)
    ledger.pause_bucket(bucket, 30.0)
    first, second = take(other, bucket, 2)
    assert 20.0 < first.wait_seconds <= 30.0
    assert second.ready_at - first.ready_at == pytest.approx(timedelta(seconds=0.01), abs=ROUNDING)


def test_a_pause_never_brings_granted_calls_forward(ledger: Ledger) -> None:
    bucket = RateBucket("monetate", "status", rate_per_second=1.0)
    queued = take(ledger, bucket, 20)
    ledger.pause_bucket(bucket, 5.0)
    (after,) = take(ledger, bucket, 1)
    assert after.ready_at - queued[-1].ready_at == pytest.approx(timedelta(seconds=1), abs=ROUNDING)


def test_a_bucket_needs_a_rate_and_room_for_a_call() -> None:
    with pytest.raises(ValueError):
        RateBucket("voyado", "submit", rate_per_second=0.0)
    with pytest.raises(ValueError):
        RateBucket("voyado", "submit", rate_per_second=1.0, capacity=0.5)


# --- rolling quotas -----------------------------------------------------------------------


def reserve_until_empty(ledger: Ledger, quota: int) -> list[QuotaReservation]:
    """Reserve 1 to 7 identifiers at a time until the quota says none are left."""
    got: list[QuotaReservation] = []
    for wanted in range(1, 1000):
        reservation = ledger.reserve_quota("acquia_cdp", wanted % 7 + 1, quota, WEEK, T0)
        if reservation.identifiers == 0:
            return got
        got.append(reservation)
    raise AssertionError("the quota never ran out")


def test_replicas_racing_for_a_quota_reserve_exactly_all_of_it(
    ledger: Ledger, open_ledgers: Callable[[], Ledger]
) -> None:
    quota = 150
    got = [r for rs in race(open_ledgers, lambda lg: reserve_until_empty(lg, quota)) for r in rs]
    assert sum(r.identifiers for r in got) == quota
    assert len({r.send_id for r in got}) == len(got)
    assert min(r.left for r in got) == 0
    assert ledger.quota_used("acquia_cdp", T0 - timedelta(days=1)) == quota


def test_a_reservation_is_cut_to_what_the_window_holds(ledger: Ledger) -> None:
    first = ledger.reserve_quota("acquia_cdp", 7, 10, WEEK, T0)
    assert (first.identifiers, first.left) == (7, 3)
    second = ledger.reserve_quota("acquia_cdp", 7, 10, WEEK, T0)
    assert (second.identifiers, second.left) == (3, 0)
    empty = ledger.reserve_quota("acquia_cdp", 7, 10, WEEK, T0)
    assert (empty.send_id, empty.identifiers, empty.left) == (None, 0, 0)
    assert ledger.reserve_quota("voyado", 7, 10, WEEK, T0).identifiers == 7  # its own quota


def test_identifiers_given_back_return_to_the_quota(ledger: Ledger) -> None:
    reservation = ledger.reserve_quota("acquia_cdp", 10, 10, WEEK, T0)
    ledger.settle_quota(reservation, 4)  # the vendor counted 4 of them
    ledger.settle_quota(reservation, 4)  # saying it twice changes nothing
    assert ledger.reserve_quota("acquia_cdp", 10, 10, WEEK, T0).identifiers == 6
    with pytest.raises(ValueError):
        ledger.settle_quota(reservation, 11)
    ledger.settle_quota(QuotaReservation("acquia_cdp", None, 0, 0), 0)  # nothing reserved


def test_reservations_leave_the_window_after_it(ledger: Ledger) -> None:
    """A reservation counts for one window after the time it was made at (the caller's
    clock, as for every due time the caller sets), then frees its identifiers."""
    ledger.reserve_quota("acquia_cdp", 5, 5, WEEK, T0)
    just_before = T0 + WEEK - timedelta(microseconds=1)
    assert ledger.reserve_quota("acquia_cdp", 5, 5, WEEK, just_before).identifiers == 0
    assert ledger.reserve_quota("acquia_cdp", 5, 5, WEEK, T0 + WEEK).identifiers == 5
