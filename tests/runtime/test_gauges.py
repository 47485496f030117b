"""Gauges read from the ledger: items per status, deadline risk, overdue items, backlog."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from consumer.config import DeadlineSettings
from consumer.ledger import Ledger
from consumer.ledger.records import Change, NewJob
from consumer.model import ErasureRequest, Identity, Regulation, Status
from consumer.pipeline.fanout import plan_request
from consumer.runtime.gauges import LedgerGauges
from consumer.runtime.metrics import REGISTRY
from tests.support.clock import ManualClock
from tests.support.settings import MONETATE

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def record(
    ledger: Ledger,
    regulation: Regulation,
    age_days: float,
    deadlines: DeadlineSettings | None = None,
) -> None:
    request = ErasureRequest(
        str(uuid.uuid4()),
        NOW - timedelta(days=age_days),
        regulation,
        (Identity("customer_id", f"c-{uuid.uuid4()}"),),
        None,
        None,
        None,
    )
    due = (deadlines or DeadlineSettings()).deadlines()
    ledger.record_requests([plan_request(request, {"monetate": MONETATE}, due)], NOW)


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_deadline_risk_per_regulation(ledger: Ledger) -> None:
    record(ledger, Regulation.GDPR, age_days=10)  # fine
    record(ledger, Regulation.GDPR, age_days=23)  # past 75% of 30 days
    record(ledger, Regulation.GDPR, age_days=31)  # past 30 days
    record(ledger, Regulation.CCPA, age_days=31)  # 31 of 45 days: fine
    record(ledger, Regulation.CCPA, age_days=34)  # past 75% of 45 days
    deadlines = DeadlineSettings(other_days=2)
    record(ledger, Regulation.OTHER, 3, deadlines)  # past 75% of a configured 2 days, and past it
    LedgerGauges(ledger, {"monetate": MONETATE}, deadlines, ManualClock(NOW)).step()
    assert sample("erasure_requests_at_risk", regulation="GDPR") == 2
    assert sample("erasure_requests_overdue", regulation="GDPR") == 1
    assert sample("erasure_requests_at_risk", regulation="CCPA") == 1
    assert sample("erasure_requests_overdue", regulation="CCPA") == 0
    assert sample("erasure_requests_overdue", regulation="OTHER") == 1
    assert sample("erasure_items", vendor="monetate", status="QUEUED") == 6
    assert sample("erasure_items", vendor="monetate", status="COMPLETED") == 0
    assert sample("erasure_oldest_open_request_age_seconds") == 34 * 86400
    assert sample("erasure_outbox_backlog") == 6 * 2


def test_overdue_items_after_the_vendors_window(ledger: Ledger) -> None:
    record(ledger, Regulation.GDPR, age_days=0)
    record(ledger, Regulation.GDPR, age_days=0)
    items = ledger.claim_items("monetate", NOW, 10, "me", NOW + timedelta(minutes=1))
    old, fresh = items
    for item, submitted in ((old, NOW - timedelta(hours=49)), (fresh, NOW - timedelta(hours=47))):
        job = NewJob(
            "monetate", f"upload-{item.item_id}", None, (item.item_id,), Status.IN_PROGRESS, NOW
        )
        ledger.apply(Change(new_jobs=(job,)), submitted)
    LedgerGauges(ledger, {"monetate": MONETATE}, DeadlineSettings(), ManualClock(NOW)).step()
    assert sample("erasure_overdue_items", vendor="monetate") == 1
