"""Acquia CDP's rolling weekly quota, enforced by dispatch through the ledger: restarts and
replicas share one count, items beyond it wait QUEUED rather than fail, and a call Acquia
did not take gives its reservation back."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from consumer.model import Status
from consumer.runtime.metrics import REGISTRY
from devtools.sandbox import acquia_cdp
from devtools.sandbox.acquia_cdp import AcquiaCdpSandbox
from devtools.sandbox.server import Fault
from tests.support.vendor_rig import VendorRig
from tests.vendors.harness_acquia_cdp import Harness

ACQUIA = Harness()
SETTINGS = {
    "weekly_quota": 5,
    "batch_size": 200,
    "flush_interval_seconds": 1,
    "rate_per_second": 100,
}


@pytest.fixture
def sandbox() -> Iterator[AcquiaCdpSandbox]:
    with ACQUIA.running() as sandbox:
        yield sandbox


def test_weekly_quota_holds_items_back_across_restarts(
    sandbox: AcquiaCdpSandbox, tmp_path: Path
) -> None:
    first = VendorRig(ACQUIA, sandbox, tmp_path / "ledger.db", SETTINGS)
    first.record(*(f"cust-{n}" for n in range(8)))
    first.clock.advance(2)
    first.dispatcher.step()
    assert first.counts() == {Status.NOT_FOUND: 5, Status.QUEUED: 3}
    assert (
        REGISTRY.get_sample_value("erasure_vendor_quota_remaining", {"vendor": "acquia_cdp"}) == 0
    )

    # A new process on the same ledger and the same clock.
    restarted = VendorRig(ACQUIA, sandbox, first.db, SETTINGS, first.clock)
    assert restarted.dispatcher.step() > 0, "quota spent: wait, don't call"
    assert first.counts() == {Status.NOT_FOUND: 5, Status.QUEUED: 3}
    assert sandbox.quota_used(acquia_cdp.DEFAULT_TENANT_ID) == 5

    first.clock.advance(7 * 86400 + 1)  # the window rolls on
    restarted.dispatcher.step()
    assert first.counts() == {Status.NOT_FOUND: 8}
    first.close()
    restarted.close()


def test_a_call_the_vendor_did_not_take_gives_its_quota_back(
    sandbox: AcquiaCdpSandbox, tmp_path: Path
) -> None:
    """Acquia counts the ids of the calls it accepted: a call that failed as a whole (here
    a 500) returns its reservation, and the items are sent again with the quota intact."""
    rig = VendorRig(ACQUIA, sandbox, tmp_path / "ledger.db", SETTINGS)
    rig.record("cust-1", "cust-2")
    sandbox.inject(Fault.status(500), path_prefix="/v2/")
    rig.clock.advance(2)
    rig.dispatcher.step()
    week_ago = rig.clock.now() - timedelta(days=7)
    assert rig.counts() == {Status.QUEUED: 2}
    assert rig.ledger.quota_used("acquia_cdp", week_ago) == 0
    rig.clock.advance(3600)
    rig.dispatcher.step()
    assert rig.counts() == {Status.NOT_FOUND: 2}
    assert rig.ledger.quota_used("acquia_cdp", week_ago) == 2
    rig.close()
