"""Minimisation never takes what a requeue needs: a request that FAILED keeps its identity
values while the one that COMPLETED beside it is minimised, and once requeued it reaches
the vendor (the real Acoustic adapter and sandbox, over HTTP) with the right value."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from consumer.ledger.records import OperatorAction, RequeueFilter
from consumer.model import Status
from devtools.sandbox.acoustic import AcousticSandbox
from devtools.sandbox.server import Fault
from tests.support.vendor_rig import ACOUSTIC_RIG_SETTINGS, VendorRig, acoustic_sandbox
from tests.vendors.harness_acoustic import DATABASE as DB
from tests.vendors.harness_acoustic import Harness

KEY = b"retention hash key for the test"
SETTINGS = ACOUSTIC_RIG_SETTINGS | {"max_attempts": 1}


@pytest.fixture
def sandbox() -> Iterator[AcousticSandbox]:
    with acoustic_sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def rig(sandbox: AcousticSandbox, tmp_path: Path) -> Iterator[VendorRig]:
    rig = VendorRig(Harness(), sandbox, tmp_path / "ledger.db", SETTINGS)
    yield rig
    rig.close()


def test_a_failed_request_keeps_its_value_and_a_requeue_sends_it(
    sandbox: AcousticSandbox, rig: VendorRig
) -> None:
    sandbox.add_contact(DB, {"EMAIL": "done@example.com"})
    sandbox.add_contact(DB, {"EMAIL": "kept@example.com"})
    (done,) = rig.record("done@example.com")
    rig.dispatch()
    rig.poll_until_settled()
    (failed,) = rig.record("kept@example.com")
    sandbox.inject(Fault.status(400), path_prefix="/rest/databases", times=1)
    rig.dispatch()
    statuses = {rid: rig.ledger.trail(rid).status for rid in (done, failed)}  # type: ignore[union-attr]
    assert statuses == {done: Status.COMPLETED, failed: Status.FAILED}

    later = rig.clock.now() + timedelta(days=1)
    assert rig.ledger.minimise(later, KEY, timedelta(0), 10) == 1
    assert rig.ledger.lookup("email", "done@example.com", None) == []  # the value is gone
    assert [hit.minimised for hit in rig.ledger.lookup("email", "done@example.com", KEY)] == [True]
    assert [hit.minimised for hit in rig.ledger.lookup("email", "kept@example.com", None)] == [
        False
    ]

    anna = OperatorAction("anna", "the vendor fixed its API")
    assert rig.ledger.requeue(failed, RequeueFilter(), anna, rig.clock.now()).refused is None
    sent_before = len(sandbox.received_bodies(DB))
    rig.dispatch()
    rig.poll_until_settled()
    (body,) = sandbox.received_bodies(DB)[sent_before:]
    assert "kept@example.com" in body and "done@example.com" not in body
    assert rig.ledger.trail(failed).status is Status.COMPLETED  # type: ignore[union-attr]
    assert not sandbox.contact_exists(DB, "EMAIL", "kept@example.com")
    assert rig.ledger.verify_chain().broken is None
