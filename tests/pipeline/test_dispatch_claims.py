"""What a dispatch step asks of the ledger: one-item claims (Voyado, one job per customer
key) go without counting the ready items first, since the claim itself tells whether one
is ready; batches still wait for their flush interval. Over a real SQLite ledger and the
Voyado and Acoustic sandboxes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from consumer.ledger import Ledger
from consumer.ledger.records import ReadySummary
from consumer.model import Status
from consumer.pipeline.dispatch import IDLE_WAIT_SECONDS, Dispatcher
from consumer.pipeline.shared_ledger import SharedLedger
from consumer.pipeline.vendor_loop import VendorLoopParts
from tests.support.vendor_rig import ACOUSTIC_RIG_SETTINGS, VendorRig, acoustic_sandbox
from tests.vendors.harness_acoustic import Harness as AcousticHarness
from tests.vendors.harness_voyado import Harness as VoyadoHarness

VOYADO = VoyadoHarness()


class CountedLedger(SharedLedger):
    """The rig's ledger, counting the ready-item checks made through it."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__([ledger])
        self.ready_checks = 0

    def ready_items(self, vendor: str, now: datetime, limit: int) -> ReadySummary:
        self.ready_checks += 1
        return super().ready_items(vendor, now, limit)


def counted_dispatcher(rig: VendorRig) -> tuple[Dispatcher, CountedLedger]:
    ledger = CountedLedger(rig.ledger)
    parts = VendorLoopParts(
        rig.settings, ledger, rig.adapter, "me", rig.clock, rig.health, rig.stop
    )
    return Dispatcher(parts), ledger


@pytest.fixture
def voyado_rig(tmp_path: Path) -> Iterator[VendorRig]:
    with VOYADO.running() as sandbox:
        rig = VendorRig(VOYADO, sandbox, tmp_path / "ledger.db", {"rate_per_second": 1000})
        yield rig
        rig.close()


def test_one_item_claims_go_without_a_ready_check(voyado_rig: VendorRig) -> None:
    dispatcher, ledger = counted_dispatcher(voyado_rig)
    voyado_rig.record("key-1", "key-2")
    assert dispatcher.step() == 0.0
    assert dispatcher.step() == 0.0
    assert dispatcher.step() == IDLE_WAIT_SECONDS, "nothing left to claim"
    assert voyado_rig.counts() == {Status.SUBMITTED: 2}
    assert ledger.ready_checks == 0


def test_batches_still_wait_for_their_flush_interval(tmp_path: Path) -> None:
    with acoustic_sandbox() as sandbox:
        rig = VendorRig(AcousticHarness(), sandbox, tmp_path / "ledger.db", ACOUSTIC_RIG_SETTINGS)
        try:
            dispatcher, ledger = counted_dispatcher(rig)
            rig.record("someone@example.com")
            assert dispatcher.step() > 0, "a partial batch younger than the flush interval"
            assert ledger.ready_checks == 1
            assert rig.counts() == {Status.QUEUED: 1}
        finally:
            rig.close()
