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
  second. So no two calls of a rated operation leave this process closer together than the
  vendor's interval (`1 / rate`), measured as they leave; and a thread that wakes more than
  an interval after its slot gives the slot up and takes another (at most `MAX_FORFEITS`
  times a call), since the next slot may be another replica's, whose call this process
  cannot hold back (see docs/benchmarks.md);
* for a 429: its Retry-After pauses every slot of that operation in this process and, through
  the bucket, in every replica; calls already under way finish, none starts until it passes;
* when stopping: a wait ends at once and the call is not sent (`SlotRefused`).

A gate's ledger object serves every slot of its vendor, one take at a time under a lock:
a take is one short statement, so one connection is enough where one per slot would
multiply the database's connections by `max_in_flight`.
"""

from __future__ import annotations

import logging
import threading

from consumer.clock import Clock
from consumer.config import VendorSettings
from consumer.ledger.limit_records import RateBucket
from consumer.ledger.protocol import Ledger, LedgerUnavailable
from consumer.vendors.base import VendorRateLimited

log = logging.getLogger(__name__)

PAUSE_WITHOUT_RETRY_AFTER_SECONDS = 1.0
"""How long a 429 that names no Retry-After pauses its operation."""
RATE_HEADROOM = 0.95
"""Share of a configured rate the gate hands out. Slots are spaced on the database's clock,
but each call leaves after a local sleep and crosses the network, so arrivals at the vendor
are spaced less evenly than the slots; a vendor that counts arrivals strictly (Monetate: at
most one status check per second) would see that jitter as a burst over its limit."""
LATE_LIMIT_INTERVALS = 1.0
"""How late (in vendor intervals) a thread may wake for its slot and still use it. Slots
are more than an interval apart (`RATE_HEADROOM`), so calls that each leave within an
interval of their slot never bunch beyond one early call, which a vendor that counts
strictly still allows (a burst of two); a stricter limit forfeits many slots in a busy
process (measured: half an interval cost one PostgreSQL worker 15% of Voyado's rate)."""
MAX_FORFEITS = 3
"""Slots a call gives up for waking late before it goes late anyway: a process starved
that long still makes progress (and a strict vendor's 429 then slows it)."""
LEDGER_DOWN_RETRY_SECONDS = 5.0
"""When the calls of a batch refused for want of the fleet's buckets are tried again."""


class SlotRefused(VendorRateLimited):
    """No call slot could be had (the worker is stopping, or the ledger that holds the
    fleet's buckets is unreachable): the call was not sent, so, as after a 429, it costs no
    attempt."""


class FleetBuckets:
    """The ledger's token buckets, for every call slot of this process (any thread)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._lock = threading.Lock()

    def take(self, bucket: RateBucket) -> float:
        """Seconds to wait before the call this slot is for may go."""
        with self._lock:
            return self._ledger.take_call_slot(bucket).wait_seconds

    def pause(self, bucket: RateBucket, seconds: float) -> None:
        with self._lock:
            self._ledger.pause_bucket(bucket, seconds)


class CallGate:
    """One vendor's gate, shared by all its loops (any thread)."""

    def __init__(
        self, settings: VendorSettings, fleet: FleetBuckets, clock: Clock, stop: threading.Event
    ) -> None:
        self._vendor = settings.vendor
        self._fleet = fleet
        self._clock = clock
        self._stop = stop
        rates = {"submit": settings.rate_per_second, "poll": settings.poll_rate_per_second}
        self._buckets = {
            operation: RateBucket(self._vendor, operation, rate * RATE_HEADROOM)
            for operation, rate in rates.items()
            if rate is not None
        }
        self._intervals = {operation: 1.0 / rate for operation, rate in rates.items() if rate}
        self._lock = threading.Lock()
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
                ready = self._clock.monotonic() + self._take(bucket)
                self._wait(ready - self._clock.monotonic())
                if self._woke_late(operation, ready) and forfeits < MAX_FORFEITS:
                    forfeits += 1
                    continue
                self._keep_interval(operation)
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

    def _woke_late(self, operation: str, ready: float) -> bool:
        late = self._clock.monotonic() - ready
        return late > LATE_LIMIT_INTERVALS * self._intervals[operation]

    def _keep_interval(self, operation: str) -> None:
        """Leave no sooner than the vendor's interval after this process's last call of
        `operation` left (a thread that woke late for its slot holds back the next)."""
        interval = self._intervals[operation]
        while True:
            with self._lock:
                now = self._clock.monotonic()
                last = self._left_at.get(operation)
                if last is None or now - last >= interval:
                    self._left_at[operation] = now
                    return
            self._wait(last + interval - now)

    def _pause_count(self, operation: str) -> int:
        with self._lock:
            return self._pauses.get(operation, 0)

    def _pause_left(self, operation: str) -> float:
        with self._lock:
            until = self._paused_until.get(operation)
        return 0.0 if until is None else until - self._clock.monotonic()

    def _take(self, bucket: RateBucket) -> float:
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
