"""One thread per process that fires the deadlines of every vendor call.

Each vendor exchange has a whole-call deadline (`consumer.vendors.http_deadline`). A timer
thread per call cost a thread start per exchange, a large share of a worker's CPU at
100 calls/s (docs/benchmarks.md, "Vendor throughput"). Here every deadline is an `Alarm`
in one heap ordered by when it is due, and one daemon thread sleeps on a condition
variable until the earliest is due: scheduling is O(log n), cancelling is amortised O(1)
(a cancelled alarm is only marked, and dropped when it reaches the top or when cancelled
ones make up most of the heap), and no call starts a thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
from collections.abc import Callable

from consumer.clock import SYSTEM_CLOCK

log = logging.getLogger(__name__)

Action = Callable[[], object]

_COMPACT_AT_LEAST = 64
"""Cancelled alarms tolerated in the heap before it is rebuilt without them (when they are
also most of it): bounds its memory when calls end long before their deadlines."""


class Alarm:
    """One scheduled action; `Watchdog.cancel` stops it if it has not fired yet."""

    __slots__ = ("action", "cancelled")

    def __init__(self, action: Action) -> None:
        self.action = action
        self.cancelled = False


class Watchdog:
    """Runs each scheduled action once, when its time is up, on one shared thread.

    The thread starts with the first alarm and then lives as long as the process (it is a
    daemon, idle on its condition variable when no alarm is pending). Actions run outside
    the lock, one after another, so they must be short (shutting a socket is).
    """

    def __init__(self, clock: Callable[[], float] = SYSTEM_CLOCK.monotonic) -> None:
        """`clock` must be the system's monotonic clock, or one that moves with it: the
        thread waits on a condition variable, which counts real seconds."""
        self._clock = clock
        self._reset()

    def _reset(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()  # equal due times: first scheduled fires first
        self._cancelled = 0
        self._thread: threading.Thread | None = None

    def schedule(self, seconds: float, action: Action) -> Alarm:
        """Run `action` on the watchdog's thread in `seconds` unless cancelled first."""
        alarm = Alarm(action)
        entry = (self._clock() + seconds, next(self._order), alarm)
        with self._condition:
            if self._thread is None:
                self._start()
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:  # due before whatever the thread is waiting for
                self._condition.notify()
        return alarm

    def cancel(self, alarm: Alarm) -> None:
        """Make sure `alarm` does not fire later; one already taken off the heap to fire
        may still be running, so its action must tolerate a late call."""
        with self._condition:
            if alarm.cancelled:
                return
            alarm.cancelled = True
            self._cancelled += 1
            if self._cancelled >= _COMPACT_AT_LEAST and 2 * self._cancelled > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def pending(self) -> int:
        """Alarms scheduled and neither fired nor cancelled."""
        with self._condition:
            return len(self._heap) - self._cancelled

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vendor-call-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            for action in self._wait_for_due():
                try:
                    action()
                except Exception:  # one failed action must not end every later deadline
                    log.exception("vendor call watchdog: an expiry action failed")

    def _wait_for_due(self) -> list[Action]:
        """Block until at least one alarm is due; take the due ones off the heap."""
        with self._condition:
            while True:
                due = self._take_due()
                if due:
                    return due
                timeout = self._heap[0][0] - self._clock() if self._heap else None
                self._condition.wait(timeout)

    def _take_due(self) -> list[Action]:
        now = self._clock()
        due: list[Action] = []
        while self._heap and (self._heap[0][2].cancelled or self._heap[0][0] <= now):
            _, _, alarm = heapq.heappop(self._heap)
            if alarm.cancelled:
                self._cancelled -= 1
            else:
                alarm.cancelled = True  # fired: a later `cancel` has nothing to stop
                due.append(alarm.action)
        return due


WATCHDOG = Watchdog()
"""The process's one watchdog for vendor call deadlines."""

# A child forked while the thread held the lock would wait on it forever, and would have
# no watchdog thread at all: it starts afresh with an empty heap instead.
os.register_at_fork(after_in_child=WATCHDOG._reset)
