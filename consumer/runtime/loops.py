"""The one runner of every background loop (dispatch, poll, outbox, gauges) and the
liveness the loops report.

A loop is a `step()` that returns how long to wait before the next one. `LoopThread` runs
it until the stop event is set, beating its heartbeat before each step, so /healthz turns
red when a step hangs or the thread dies. The wait between steps ends early on `wake()`
(the outbox is woken when events were recorded) and on stop, so shutdown never waits out
a sleep.

A step that fails never ends its loop: a `TransientError` (the ledger or Kafka is away,
the broker did not confirm) is logged in one line and the step is retried after a backoff
(`consumer.backoff`); anything else is a bug, logged with its traceback, and retried
after a longer backoff. Both reset after a step succeeds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

from consumer.backoff import BackoffPolicy, backoff_delay
from consumer.clock import SYSTEM_CLOCK, Clock
from consumer.errors import TransientError
from consumer.ledger.protocol import LedgerUnavailable
from consumer.runtime.metrics import LEDGER_ERRORS

log = logging.getLogger(__name__)

Step = Callable[[], float]

TRANSIENT_BACKOFF: Final = BackoffPolicy(base_seconds=2.0, cap_seconds=30.0, jitter="equal")
"""After a transient failure: back soon once the ledger or broker returns, and the loops
of a pod (and of its replicas) do not retry in lockstep."""
UNEXPECTED_BACKOFF: Final = BackoffPolicy(base_seconds=2.0, cap_seconds=60.0, jitter="equal")
"""After a bug or an answer nobody foresaw: slower, so a step failing every time does not
flood the log."""


class Heartbeats:
    """When each loop last began a step (monotonic seconds of `clock`). Any thread."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._beats: dict[str, float] = {}
        self._lock = threading.Lock()

    def beat(self, name: str) -> None:
        with self._lock:
            self._beats[name] = self.clock.monotonic()

    def stale(self, max_age: float) -> list[str]:
        """The loops whose last beat is older than `max_age` seconds."""
        now = self.clock.monotonic()
        with self._lock:
            return sorted(name for name, at in self._beats.items() if now - at > max_age)


class LoopThread(threading.Thread):
    """Runs `step` on a daemon thread until `stop` is set.

    `transient` and `unexpected` are the backoffs after a failed step; `on_exit` runs on
    the thread as it ends (e.g. the outbox flushes its producer). `last_step_ended` is
    the monotonic time at which the last step, failed or not, returned.
    """

    def __init__(
        self,
        name: str,
        step: Step,
        stop: threading.Event,
        heartbeats: Heartbeats,
        *,
        transient: BackoffPolicy = TRANSIENT_BACKOFF,
        unexpected: BackoffPolicy = UNEXPECTED_BACKOFF,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._step = step
        self._stop_event = stop
        self._heartbeats = heartbeats
        self._transient = transient
        self._unexpected = unexpected
        self._on_exit = on_exit
        self._wake = threading.Event()
        self._failures = 0
        self.last_step_ended: float | None = None

    def wake(self) -> None:
        """End the current wait between steps now (a step in progress first finishes).
        Any thread; also how the loop learns at once that `stop` was set."""
        self._wake.set()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                self._heartbeats.beat(self.name)
                self._wake.clear()  # a wake() during the step cuts the wait after it
                wait = self._guarded_step()
                self.last_step_ended = self._heartbeats.clock.monotonic()
                if self._stop_event.is_set():
                    break
                self._wake.wait(wait)
        finally:
            if self._on_exit is not None:
                self._on_exit()

    def _guarded_step(self) -> float:
        """One step; a failure becomes the backoff to wait before the next."""
        try:
            wait = self._step()
        except TransientError as error:
            self._failures += 1
            if isinstance(error, LedgerUnavailable):
                LEDGER_ERRORS.labels(loop=self.name).inc()
            delay = backoff_delay(self._transient, self._failures)
            log.warning(
                "%s: %s: %s; retrying in %.1f s", self.name, type(error).__name__, error, delay
            )
            return delay
        except Exception:
            self._failures += 1
            delay = backoff_delay(self._unexpected, self._failures)
            log.exception("unexpected error in %s; retrying in %.1f s", self.name, delay)
            return delay
        self._failures = 0
        return wait
