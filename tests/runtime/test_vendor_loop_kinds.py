"""Which loops a vendor's call slots run: a poll loop only where there are jobs to poll.

Acquia CDP answers every id at submit (it has no status API), so poll loops for it would
claim nothing forever while holding ledger connections and heartbeats; every other
built-in vendor follows jobs and needs them.
"""

from __future__ import annotations

import pytest

from consumer.runtime.worker import vendor_loop_kinds
from tests.support.settings import ALL_VENDORS

POLLING = {"voyado", "monetate", "acoustic"}


@pytest.mark.parametrize("vendor", sorted(ALL_VENDORS))
def test_poll_loops_run_only_for_vendors_whose_adapter_creates_jobs(vendor: str) -> None:
    kinds = [kind for kind, _ in vendor_loop_kinds(ALL_VENDORS[vendor])]
    assert kinds == (["dispatch", "poll"] if vendor in POLLING else ["dispatch"])
