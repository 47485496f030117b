"""Every vendor call's way out: the fleet-wide rate, a 429's pause, and stopping.

A vendor's submissions and its status polls each run in `max_in_flight` loops at once (each
with its own HTTP session, see `consumer.runtime.worker`), so at most that many calls of an
operation are under way in one process. Every HTTP exchange of those
loops, in-call retries included, first passes the vendor's `CallGate` (`VendorHttp` calls
it), which holds it back:

* for the rate: an operation with a configured rate (`rate_per_second` for submissions,
  the vendor's `poll_rate_per_second` for status calls) takes a call slot from the ledger's
  token bucket for (vendor, operation), which every replica on the ledger shares, and waits
  until the slot's time (`consumer.ledger.limits`);
* for spacing: the bucket spaces the slots, but a thread can wake for its slot tens of
  milliseconds late (measured: p99 9 ms, at worst 42 ms, with 60 threads on 2 cores), and
  leave just before the next slot's thread: a pair that a vendor counting strictly
  (Monetate's status checks) refuses with 429, each 429 pausing the operation for a
  second. So the calls of a rated operation leave this process in turns the slots'
  interval apart (`1 / (rate * rate_headroom)`): threads that catch up after a stall
  leave at the bucket's pace, not back to back at the vendor's limit, where any jitter on
  the way makes a strict vendor's count overflow (measured: 1-3 refused checks a run in
  one PostgreSQL process); a call that leaves late holds the next one back to the
  vendor's interval only, and the turns after it catch up (adding each delay to the
  interval lost it from the rate for good); and a thread that wakes more than
  an interval after its slot gives the slot up and takes another (at most `MAX_FORFEITS`
  times a call), since the next slot may be another replica's, whose call this process
  cannot hold back (see docs/benchmarks.md);
* for a 429: its Retry-After pauses every slot of that operation in this process and, through
  the bucket, in every replica; calls already under way finish, none starts until it passes;
* when stopping: a wait ends at once and the call is not sent (`SlotRefused`).

A gate's ledger object serves every slot of its vendor, one statement at a time, the takes
that queue behind a statement made together in the next (`FleetBuckets`): one connection is
enough where one per slot would multiply the database's connections by `max_in_flight`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from consumer.clock import SYSTEM_CLOCK, Clock
from consumer.config import VendorSettings
from consumer.ledger.limit_records import RateBucket
from consumer.ledger.protocol import Ledger, LedgerUnavailable
from consumer.vendors.base import VendorRateLimited

log = logging.getLogger(__name__)

PAUSE_WITHOUT_RETRY_AFTER_SECONDS = 1.0
"""How long a 429 that names no Retry-After pauses its operation."""
RATE_HEADROOM = 0.98
"""Share of a configured rate the gate hands out, when the rate is a budget per second (no
vendor refuses a call for coming early: Voyado documents no limit). Slots are spaced on the
database's clock, but calls leave after a local sleep, late ones catching up at the rate's
interval, so a second can hold a call or two more than its slots: at the whole rate one
SQLite worker's busiest second had 101-103 Voyado calls of 100 (docs/benchmarks.md)."""
STRICT_RATE_HEADROOM = 0.95
"""Share of a configured rate the gate hands out when the vendor counts every call against
it (`VendorSettings.rate_counted_per_call`; Monetate's status checks): arrivals are spaced
less evenly than the slots, and a vendor counting strictly sees that jitter as a burst over
its limit."""
LATE_LIMIT_INTERVALS = 1.0
"""How late (in slot intervals) a thread may wake for its slot and still use it. Slots
are more than the vendor's interval apart (`rate_headroom`), so calls that each leave within an
interval of their slot never bunch beyond one early call, which a vendor that counts
strictly still allows (a burst of two); a stricter limit forfeits many slots in a busy
process (measured: half an interval cost one PostgreSQL worker 15% of Voyado's rate)."""
MAX_FORFEITS = 3
"""Slots a call gives up for waking late before it goes late anyway: a process starved
that long still makes progress (and a strict vendor's 429 then slows it)."""
LEDGER_DOWN_RETRY_SECONDS = 5.0
"""When the calls of a batch refused for want of the fleet's buckets are tried again."""


def rate_headroom(settings: VendorSettings, operation: str) -> float:
    """The share of `operation`'s configured rate that its bucket hands out."""
    if settings.rate_counted_per_call(operation):
        return STRICT_RATE_HEADROOM
    return RATE_HEADROOM


class SlotRefused(VendorRateLimited):
    """No call slot could be had (the worker is stopping, or the ledger that holds the
    fleet's buckets is unreachable): the call was not sent, so, as after a 429, it costs no
    attempt."""


@dataclass
class _Take:
    """One thread's wait for a slot: filled in by whichever thread's statement took it."""

    ready: float | None = None  # when its call may go, on this process's monotonic clock
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.ready is not None or self.error is not None

    def result(self) -> float:
        if self.error is not None:
            raise self.error
        assert self.ready is not None
        return self.ready


class FleetBuckets:
    """The ledger's token buckets, for every call slot of this process (any thread).

    One statement at a time goes to the ledger (one connection serves every slot). The
    takes of a bucket that come while a statement is under way wait together, and the next
    statement takes a slot for each of them (`Ledger.take_call_slots`): a take costs a
    thread one statement's wait however many are queued, where one statement per take made
    the takes of a busy PostgreSQL worker a queue (measured: 16% of Voyado's dispatch
    threads' time, 2 to 8 of them waiting there, docs/benchmarks.md).
    """

    def __init__(self, ledger: Ledger, clock: Clock = SYSTEM_CLOCK) -> None:
        self._ledger = ledger
        self._clock = clock
        self._turns = threading.Condition()  # guards `_busy` and `_waiting`
        self._busy = False  # a statement is under way
        self._waiting: dict[RateBucket, list[_Take]] = {}

    def take(self, bucket: RateBucket) -> float:
        """When (on `clock.monotonic()`) the call this slot is for may go."""
        mine = _Take()
        takes: list[_Take] = []
        with self._turns:
            self._waiting.setdefault(bucket, []).append(mine)
            self._turns.wait_for(lambda: mine.done or not self._busy)
            if not mine.done:  # nobody took it: this thread sends the next statement
                self._busy = True
                takes = self._waiting.pop(bucket)
        if takes:
            try:
                self._take_for(bucket, takes)
            finally:
                self._end_statement()
        return mine.result()

    def pause(self, bucket: RateBucket, seconds: float) -> None:
        with self._turns:
            self._turns.wait_for(lambda: not self._busy)
            self._busy = True
        try:
            self._ledger.pause_bucket(bucket, seconds)
        finally:
            self._end_statement()

    def _take_for(self, bucket: RateBucket, takes: list[_Take]) -> None:
        """One statement for `takes`; what it raised, each of them raises."""
        try:
            slots = self._ledger.take_call_slots(bucket, len(takes))
        except BaseException as error:
            for take in takes:
                take.error = error
            return
        now = self._clock.monotonic()
        for take, slot in zip(takes, slots, strict=True):
            take.ready = now + slot.wait_seconds

    def _end_statement(self) -> None:
        with self._turns:
            self._busy = False
            self._turns.notify_all()


class CallGate:
    """One vendor's gate, shared by all its loops (any thread)."""

    def __init__(
        self, settings: VendorSettings, fleet: FleetBuckets, clock: Clock, stop: threading.Event
    ) -> None:
        self._vendor = settings.vendor
        self._fleet = fleet
        self._clock = clock
        self._stop = stop
        given = {"submit": settings.rate_per_second, "poll": settings.poll_rate_per_second}
        rates = {operation: rate for operation, rate in given.items() if rate is not None}
        self._buckets = {
            operation: RateBucket(
                self._vendor, operation, rate * rate_headroom(settings, operation)
            )
            for operation, rate in rates.items()
        }
        self._vendor_intervals = {operation: 1.0 / rate for operation, rate in rates.items()}
        self._lock = threading.Lock()
        self._next_turn: dict[str, float] = {}  # the next call's turn, per operation
        self._left_at: dict[str, float] = {}  # when the last call of an operation left
        self._paused_until: dict[str, float] = {}
        self._pauses: dict[str, int] = {}  # 429s seen per operation

    def enter(self, operation: str) -> None:
        """Block until a call of `operation` may go; SlotRefused if it must not be sent."""
        forfeits = 0
        while True:
            pauses = self._pause_count(operation)
            self._wait(self._pause_left(operation))
            bucket = self._buckets.get(operation)
            if bucket is not None:
                ready = self._take(bucket)
                self._wait(ready - self._clock.monotonic())
                if self._woke_late(bucket, ready) and forfeits < MAX_FORFEITS:
                    forfeits += 1
                    continue
                self._keep_interval(bucket)
            if self._pause_count(operation) == pauses:
                return
            # A 429 came while this call waited for its slot: the slot is forfeit.

    def rate_limited(self, operation: str, retry_after: float | None) -> None:
        """The vendor answered 429: no call of `operation` starts until Retry-After passed."""
        seconds = PAUSE_WITHOUT_RETRY_AFTER_SECONDS if retry_after is None else retry_after
        with self._lock:
            until = self._clock.monotonic() + seconds
            self._paused_until[operation] = max(self._paused_until.get(operation, until), until)
            self._pauses[operation] = self._pauses.get(operation, 0) + 1
        log.warning("%s answered 429: %s calls paused for %.1f s", self._vendor, operation, seconds)
        bucket = self._buckets.get(operation)
        if bucket is None:
            return
        try:
            self._fleet.pause(bucket, seconds)
        except LedgerUnavailable as error:  # this process still holds back; replicas may not
            log.warning("could not pause %s %s for the fleet: %s", self._vendor, operation, error)

    def _woke_late(self, bucket: RateBucket, ready: float) -> bool:
        late = self._clock.monotonic() - ready
        return late > LATE_LIMIT_INTERVALS / bucket.rate_per_second

    def _keep_interval(self, bucket: RateBucket) -> None:
        """Leave at this call's turn, and no sooner than the vendor's interval after the
        process's last call of the operation actually left. Turns are the slots' interval
        apart (the bucket's, a little over the vendor's: `rate_headroom`), counted from
        the turn before, not from when that call left: counting from the departure added
        every thread's wake-up delay to the interval and lost that share of the rate for
        good (measured: 88-93 Voyado calls/s of the bucket's 95 in one SQLite worker).
        A call that leaves late still holds the next one back to the vendor's interval
        (one PostgreSQL worker had 5 refused Monetate checks in a run without that), and
        the turns after it catch up."""
        operation = bucket.operation
        interval = 1.0 / bucket.rate_per_second
        vendor_interval = self._vendor_intervals[operation]
        with self._lock:
            now = self._clock.monotonic()
            turn = max(now, self._next_turn.get(operation, now))
            self._next_turn[operation] = turn + interval
        while True:
            with self._lock:
                now = self._clock.monotonic()
                last = self._left_at.get(operation)
                ready = turn if last is None else max(turn, last + vendor_interval)
                if now >= ready:
                    self._left_at[operation] = now
                    return
            self._wait(ready - now)

    def _pause_count(self, operation: str) -> int:
        with self._lock:
            return self._pauses.get(operation, 0)

    def _pause_left(self, operation: str) -> float:
        with self._lock:
            until = self._paused_until.get(operation)
        return 0.0 if until is None else until - self._clock.monotonic()

    def _take(self, bucket: RateBucket) -> float:
        """When the call of a slot of `bucket` may go (monotonic)."""
        try:
            return self._fleet.take(bucket)
        except LedgerUnavailable as error:
            raise SlotRefused(
                f"{self._vendor} {bucket.operation}: no call slot, the ledger is unavailable"
                f" ({error}); call not sent",
                retry_after=LEDGER_DOWN_RETRY_SECONDS,
            ) from error

    def _wait(self, seconds: float) -> None:
        if seconds > 0 and self._stop.wait(seconds):
            raise SlotRefused(f"{self._vendor}: stopping; call not sent")
