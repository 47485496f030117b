"""A vendor's calls in flight: `max_in_flight` call slots per operation, every HTTP exchange
behind the vendor's `CallGate` (fleet-wide rate, a 429's pause, stopping), against real
sandboxes answering after a real latency, over a real SQLite ledger.

The sandboxes log each call when they answer it, `LATENCY` after it arrived; intervals and
pauses below are measured on those logs, with margins wider than a loaded machine's jitter
in the direction that cannot hide a failure.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.clock import SYSTEM_CLOCK
from consumer.ledger import open_ledger
from consumer.model import Status
from consumer.pipeline.call_gate import CallGate, FleetBuckets, SlotRefused
from consumer.vendors.acquia_cdp import AcquiaCdpAdapter
from consumer.vendors.http import VendorHttp
from devtools.sandbox.acquia_cdp import DEFAULT_TENANT_ID, AcquiaCdpSandbox
from devtools.sandbox.server import Fault
from devtools.sandbox.voyado import VoyadoSandbox
from tests.support.call_slots import Replica, calls_to, record_requests
from tests.support.waiting import wait_until
from tests.vendors.harness import work_items
from tests.vendors.harness_acquia_cdp import Harness as AcquiaHarness
from tests.vendors.harness_voyado import Harness as VoyadoHarness

VOYADO = VoyadoHarness()
SUBMIT = "create-remove-customer-job"
LATENCY = 0.05
FAST = {"rate_per_second": 1000.0, "flush_interval_seconds": 0.01, "first_poll_after_seconds": 3600}


@pytest.fixture
def voyado() -> Iterator[VoyadoSandbox]:
    with VOYADO.running() as sandbox:
        sandbox.set_latency(LATENCY)
        yield sandbox


def submissions(sandbox: VoyadoSandbox) -> list[float]:
    return [call.timestamp for call in calls_to(sandbox.calls, SUBMIT)]


def test_a_429_stops_every_call_slot_of_the_operation_until_retry_after(
    voyado: VoyadoSandbox, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    settings = VOYADO.settings(voyado, max_in_flight=4, **FAST)
    record_requests(url, settings, [f"key-{n}" for n in range(400)])
    replica = Replica(settings, url)
    replica.start()
    try:
        wait_until(lambda: len(submissions(voyado)) >= 12, 20, "calls from every slot")
        voyado.inject(Fault.rate_limited(retry_after=2), path_prefix="/api")
        wait_until(voyado.faults_served, 20, "the 429")
        limited = max(c.timestamp for c in calls_to(voyado.calls, SUBMIT) if c.status == 429)
        wait_until(lambda: max(submissions(voyado)) > limited + 2.5, 30, "calls after it")
    finally:
        replica.close()
    # Calls that left before the 429 came back land up to LATENCY after it; then none
    # may arrive until Retry-After has passed since the client saw it.
    quiet = [t for t in submissions(voyado) if limited + LATENCY + 0.5 < t < limited + 2.0]
    assert quiet == [], f"{len(quiet)} calls during the pause"
    assert sum(1 for t in submissions(voyado) if t < limited) >= 12


def test_each_operation_has_max_in_flight_calls_under_way(
    voyado: VoyadoSandbox, tmp_path: Path
) -> None:
    """Four slots: four calls at once, never five (a call's time at the sandbox is the
    latency before its logged answer, so the overlap counted is never more than real)."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    voyado.set_latency(0.2)
    settings = VOYADO.settings(voyado, max_in_flight=4, **FAST)
    record_requests(url, settings, [f"key-{n}" for n in range(16)])
    replica = Replica(settings, url)
    replica.start()
    try:
        wait_until(lambda: len(submissions(voyado)) == 16, 30, "every call")
    finally:
        replica.close()
    answered = sorted(submissions(voyado))
    under_way = max(sum(1 for t in answered if t - 0.2 < end <= t) for end in answered)
    assert 2 <= under_way <= 4
    assert answered[-1] - answered[0] < 16 * 0.2 / 2, "at least twice as fast as one slot"


def test_every_exchange_keeps_to_the_rate_acquias_bisection_included(tmp_path: Path) -> None:
    rate = 20.0
    harness = AcquiaHarness()
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.migrate()
    stop = threading.Event()
    with AcquiaCdpSandbox() as sandbox:
        settings = harness.settings(sandbox, rate_per_second=rate)
        gate = CallGate(settings, FleetBuckets(ledger), SYSTEM_CLOCK, stop)
        http = VendorHttp("acquia_cdp", timeout_seconds=2.0, gate=gate)
        adapter = AcquiaCdpAdapter(settings, http)
        for n in range(8):
            sandbox.add_customer(DEFAULT_TENANT_ID, f"c-{n}")
        sandbox.reject("c-5")
        try:
            adapter.submit(work_items("acquia_cdp", "customer_id", [f"c-{n}" for n in range(8)]))
        finally:
            adapter.close()
            ledger.close()
    erasures = [call.timestamp for call in calls_to(sandbox.calls, "/dataerasure")]
    assert len(erasures) == 7, "8 ids, one rejected: 1 + 2 + 2 + 2 calls"
    span = erasures[-1] - erasures[0]
    assert span >= 0.9 * (len(erasures) - 1) / rate, f"7 calls within {span:.3f} s"


def test_a_stopping_worker_sends_no_call_that_waits_for_its_slot(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.migrate()
    stop = threading.Event()
    with VoyadoSandbox() as sandbox:
        settings = VOYADO.settings(sandbox, rate_per_second=0.01)  # one call per 100 s
        gate = CallGate(settings, FleetBuckets(ledger), SYSTEM_CLOCK, stop)
        gate.enter("submit")
        threading.Timer(0.2, stop.set).start()
        started = time.monotonic()
        with pytest.raises(SlotRefused, match="stopping"):
            gate.enter("submit")
    ledger.close()
    assert time.monotonic() - started < 10


class LateWaker(threading.Event):
    """A stop event whose waits, in the thread named "late", oversleep by `LATE` seconds
    (the first `oversleeps` of them, or all): a thread that the OS or the GIL woke late for
    its call slot."""

    LATE = 0.15

    def __init__(self, oversleeps: int | None = None) -> None:
        super().__init__()
        self.late_is_waiting = threading.Event()
        self._oversleeps = itertools.count() if oversleeps is None else iter(range(oversleeps))

    def wait(self, timeout: float | None = None) -> bool:
        if threading.current_thread().name == "late" and timeout is not None:
            self.late_is_waiting.set()
            if next(self._oversleeps, None) is not None:
                timeout += self.LATE
        return super().wait(timeout)


def test_a_thread_late_for_its_slot_never_leaves_right_behind_the_next(
    tmp_path: Path,
) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.migrate()
    stop = LateWaker()
    with VoyadoSandbox() as sandbox:
        settings = VOYADO.settings(sandbox, rate_per_second=10.0)  # slots 105 ms apart
        gate = CallGate(settings, FleetBuckets(ledger), SYSTEM_CLOCK, stop)
        left: list[float] = []

        def call() -> None:
            gate.enter("submit")
            left.append(time.monotonic())

        call()  # the first slot is now; the late thread's is next, the on-time one after
        late = threading.Thread(target=call, name="late")
        late.start()
        stop.late_is_waiting.wait(5)
        on_time = threading.Thread(target=call)
        on_time.start()
        late.join(5)
        on_time.join(5)
    ledger.close()
    gaps = [b - a for a, b in itertools.pairwise(left)]
    # Without the interval kept as calls leave, the late one leaves ~45 ms after the next;
    # with it, 100 ms or more (the margin: a thread noting its time a little after leaving).
    assert len(left) == 3 and min(gaps) >= 0.075, gaps


def test_a_replica_late_for_its_slot_gives_it_up_rather_than_crowd_another_replicas_call(
    tmp_path: Path,
) -> None:
    """Two replicas on one ledger: one wakes 150 ms late for its slot, just after the other
    replica's call left on time. Going anyway would put two calls 45 ms apart at a vendor
    allowing one per 100 ms; it takes the next slot instead."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledgers = [open_ledger(url), open_ledger(url)]
    ledgers[0].migrate()
    stop = LateWaker(oversleeps=1)
    with VoyadoSandbox() as sandbox:
        settings = VOYADO.settings(sandbox, rate_per_second=10.0)  # slots 105 ms apart
        late_replica = CallGate(settings, FleetBuckets(ledgers[0]), SYSTEM_CLOCK, stop)
        other = CallGate(settings, FleetBuckets(ledgers[1]), SYSTEM_CLOCK, threading.Event())
        left: list[float] = []

        def call(gate: CallGate) -> None:
            gate.enter("submit")
            left.append(time.monotonic())

        call(late_replica)  # the first slot is now; the late thread's is next
        late = threading.Thread(target=call, args=(late_replica,), name="late")
        late.start()
        stop.late_is_waiting.wait(5)
        on_time = threading.Thread(target=call, args=(other,))
        on_time.start()
        late.join(5)
        on_time.join(5)
    for ledger in ledgers:
        ledger.close()
    gaps = [b - a for a, b in itertools.pairwise(sorted(left))]
    assert len(left) == 3 and min(gaps) >= 0.075, gaps


def test_a_vendor_without_a_status_rate_polls_unpaced_but_paused_by_a_429(
    voyado: VoyadoSandbox, tmp_path: Path
) -> None:
    """Voyado publishes no status rate: polls are not paced, yet a 429 to one pauses the
    rest; submissions are not held back by it."""
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.migrate()
    stop = threading.Event()
    settings = VOYADO.settings(voyado, rate_per_second=1000.0)
    gate = CallGate(settings, FleetBuckets(ledger), SYSTEM_CLOCK, stop)
    started = time.monotonic()
    for _ in range(20):
        gate.enter("poll")
    assert time.monotonic() - started < 1.0
    gate.rate_limited("poll", 0.5)
    gate.enter("submit")
    assert time.monotonic() - started < 1.0
    gate.enter("poll")
    assert time.monotonic() - started >= 0.5
    ledger.close()


def test_queued_items_are_recorded_once_sent(voyado: VoyadoSandbox, tmp_path: Path) -> None:
    """Four slots send every item once and record each (no item claimed by two slots)."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    settings = VOYADO.settings(voyado, max_in_flight=4, **FAST)
    record_requests(url, settings, [f"key-{n}" for n in range(40)])
    replica = Replica(settings, url)
    ledger = open_ledger(url)
    replica.start()
    try:
        wait_until(
            lambda: ledger.item_counts().get(("voyado", Status.SUBMITTED)) == 40, 30, "all sent"
        )
    finally:
        replica.close()
        ledger.close()
    assert len(submissions(voyado)) == 40
