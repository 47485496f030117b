"""The one loop runner (consumer/runtime/loops.py): failures back off, wake and stop cut a
wait, heartbeats show a loop that stopped stepping."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from consumer.backoff import BackoffPolicy
from consumer.kafka.client import KafkaFailure
from consumer.ledger.protocol import LedgerUnavailable
from consumer.runtime.loops import Heartbeats, LoopThread
from consumer.runtime.metrics import REGISTRY
from tests.support.clock import ManualClock
from tests.support.waiting import wait_until

QUICK = BackoffPolicy(base_seconds=0.01, cap_seconds=0.02, jitter="none")
LONG_WAIT = 60.0


class Steps:
    """A loop's step that fails as scripted (one exception or None per call), then
    returns `LONG_WAIT`; counts its calls."""

    def __init__(self, *failures: Exception | None) -> None:
        self._failures = list(failures)
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        if self._failures:
            failure = self._failures.pop(0)
            if failure is not None:
                raise failure
        return LONG_WAIT


@contextmanager
def running(
    name: str, step: Callable[[], float], on_exit: Callable[[], None] | None = None
) -> Iterator[LoopThread]:
    stop = threading.Event()
    loop = LoopThread(
        name, step, stop, Heartbeats(), transient=QUICK, unexpected=QUICK, on_exit=on_exit
    )
    loop.start()
    try:
        yield loop
    finally:
        stop.set()
        loop.wake()
        loop.join(5)
    assert not loop.is_alive(), "stop and wake end the loop without waiting out its pause"


def ledger_errors(loop: str) -> float:
    return REGISTRY.get_sample_value("erasure_ledger_unavailable_total", {"loop": loop}) or 0.0


def test_transient_failures_back_off_and_the_loop_goes_on() -> None:
    steps = Steps(LedgerUnavailable("db down"), KafkaFailure("gone", code="_TRANSPORT"), None)
    before = ledger_errors("test-transient")
    with running("test-transient", steps) as loop:
        wait_until(lambda: steps.calls == 3 and loop.last_step_ended, 5, "a third, good step")
        assert loop.is_alive()
    assert ledger_errors("test-transient") - before == 1, "only the ledger's outage is counted"


def test_an_unexpected_error_is_logged_with_its_traceback_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    steps = Steps(RuntimeError("bug"), None)
    with caplog.at_level(logging.ERROR), running("test-unexpected", steps):
        wait_until(lambda: steps.calls == 2, 5, "the step tried again")
    (record,) = [r for r in caplog.records if "test-unexpected" in r.getMessage()]
    assert record.exc_info is not None


def test_wake_cuts_the_wait_between_steps() -> None:
    steps = Steps()
    with running("test-wake", steps) as loop:
        wait_until(lambda: loop.last_step_ended, 5, "a first step")
        loop.wake()
        wait_until(lambda: steps.calls == 2, 5, f"a second step well before {LONG_WAIT:g} s")


def test_the_exit_callback_runs_on_the_loop_as_it_ends() -> None:
    ended: list[str] = []

    def on_exit() -> None:
        ended.append(threading.current_thread().name)

    with running("test-exit", Steps(), on_exit) as loop:
        wait_until(lambda: loop.last_step_ended, 5, "a first step")
        assert ended == []
    assert ended == ["test-exit"]


def test_heartbeats_name_the_loops_that_stopped_stepping() -> None:
    clock = ManualClock()
    heartbeats = Heartbeats(clock)
    heartbeats.beat("dispatch-acoustic")
    clock.advance(90)
    heartbeats.beat("outbox")
    assert heartbeats.stale(60) == ["dispatch-acoustic"]
    assert heartbeats.stale(120) == []
