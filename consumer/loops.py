"""Background loops (dispatch, poll, outbox, housekeeping) and the liveness they report.

Each loop runs `step()` until asked to stop. A step returns how long to wait before the
next one; the wait is on the stop event, so shutdown never waits out a sleep. A ledger
outage or an unexpected error is logged and retried after a backoff: a loop never dies
silently, and /healthz turns red if one stops stepping.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from consumer.attempts import backoff_seconds
from consumer.ledger.base import LedgerUnavailable
from consumer.metrics import LEDGER_ERRORS

log = logging.getLogger(__name__)

Step = Callable[[], float]


@dataclass
class Heartbeats:
    """Last time each loop completed a step (monotonic seconds)."""

    beats: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def beat(self, name: str) -> None:
        with self.lock:
            self.beats[name] = time.monotonic()

    def stale(self, max_age: float) -> list[str]:
        now = time.monotonic()
        with self.lock:
            return sorted(name for name, at in self.beats.items() if now - at > max_age)


class LoopThread(threading.Thread):
    def __init__(
        self,
        name: str,
        step: Step,
        stop: threading.Event,
        heartbeats: Heartbeats,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._step = step
        self._stop_event = stop
        self._heartbeats = heartbeats
        self._on_exit = on_exit
        self._failures = 0

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                self._heartbeats.beat(self.name)
                self._stop_event.wait(self._guarded_step())
        finally:
            if self._on_exit is not None:
                self._on_exit()

    def _guarded_step(self) -> float:
        try:
            wait = self._step()
        except LedgerUnavailable as error:
            self._failures += 1
            LEDGER_ERRORS.labels(loop=self.name).inc()
            log.warning("ledger unavailable in %s: %s", self.name, error)
            return min(backoff_seconds(self._failures), 30.0)
        except Exception:
            self._failures += 1
            log.exception("unexpected error in %s; retrying", self.name)
            return min(backoff_seconds(self._failures), 60.0)
        self._failures = 0
        return wait
