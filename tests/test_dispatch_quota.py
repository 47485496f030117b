"""Acquia CDP's rolling weekly quota, enforced by dispatch through the ledger: restarts and
replicas share one count, and items beyond it wait QUEUED rather than fail."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from consumer.config import AcquiaCdpSettings
from consumer.dispatch import Dispatcher
from consumer.fanout import plan_request
from consumer.ledger import Ledger, open_ledger
from consumer.metrics import REGISTRY
from consumer.model import ErasureRequest, Identity, Regulation, Status
from consumer.sandbox import acquia_cdp
from consumer.sandbox.acquia_cdp import AcquiaCdpSandbox
from consumer.vendor_health import VendorHealth
from consumer.vendor_loop import VendorLoopParts
from consumer.vendors.acquia_cdp import AcquiaCdpAdapter

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def sandbox() -> Iterator[AcquiaCdpSandbox]:
    with AcquiaCdpSandbox() as sandbox:
        yield sandbox


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def dispatcher(sandbox: AcquiaCdpSandbox, ledger: Ledger, now: list[datetime]) -> Dispatcher:
    settings = AcquiaCdpSettings(
        base_url=sandbox.base_url,
        auth_url=sandbox.base_url,
        tenant_id=acquia_cdp.DEFAULT_TENANT_ID,
        username=acquia_cdp.DEFAULT_USERNAME,
        password=SecretStr(acquia_cdp.DEFAULT_PASSWORD),
        weekly_quota=5,
        batch_size=200,
        flush_interval_seconds=1,
        rate_per_second=100,
    )
    parts = VendorLoopParts(
        settings,
        ledger,
        AcquiaCdpAdapter(settings),
        "me",
        lambda: now[0],
        VendorHealth("acquia_cdp"),
        threading.Event(),
    )
    return Dispatcher(parts)


def record(ledger: Ledger, settings: AcquiaCdpSettings, count: int, now: datetime) -> None:
    requests = [
        ErasureRequest(
            str(uuid.uuid4()),
            now,
            Regulation.CCPA,
            (Identity("customer_id", f"cust-{uuid.uuid4().hex[:8]}"),),
            None,
            None,
            None,
        )
        for _ in range(count)
    ]
    ledger.record_requests([plan_request(r, {"acquia_cdp": settings}) for r in requests], now)


def statuses(ledger: Ledger) -> dict[Status, int]:
    return {status: n for (_, status), n in ledger.item_counts().items()}


def test_weekly_quota_holds_items_back_across_restarts(
    sandbox: AcquiaCdpSandbox, ledger_url: str
) -> None:
    now = [T0]
    ledger = open_ledger(ledger_url)
    ledger.migrate()
    first = dispatcher(sandbox, ledger, now)
    record(ledger, first._settings, 8, T0)  # type: ignore[arg-type]
    now[0] += timedelta(seconds=2)
    first.step()
    assert statuses(ledger) == {Status.NOT_FOUND: 5, Status.QUEUED: 3}
    assert (
        REGISTRY.get_sample_value("erasure_vendor_quota_remaining", {"vendor": "acquia_cdp"}) == 0
    )

    restarted = dispatcher(sandbox, open_ledger(ledger_url), now)  # a new process, same ledger
    assert restarted.step() > 0, "quota spent: wait, don't call"
    assert statuses(ledger) == {Status.NOT_FOUND: 5, Status.QUEUED: 3}
    assert sandbox.quota_used(acquia_cdp.DEFAULT_TENANT_ID) == 5

    now[0] += timedelta(days=7, seconds=1)  # the window rolls on
    restarted.step()
    assert statuses(ledger) == {Status.NOT_FOUND: 8}
