"""The deadline gauges count every request not COMPLETED, FAILED ones included, against its
own (possibly extended) due date, and the requests left with a FAILED vendor scope."""

from __future__ import annotations

from datetime import timedelta

from consumer.config import DeadlineSettings
from consumer.ledger import Ledger
from consumer.ledger.records import OperatorAction, RequeueFilter
from consumer.model import Regulation
from consumer.runtime.gauges import LedgerGauges
from consumer.runtime.metrics import REGISTRY
from tests.ledger.test_ledger_contract import T0
from tests.ledger.test_operations import failed_request
from tests.support.clock import ManualClock
from tests.support.settings import MONETATE

ANNA = OperatorAction("anna", "vendor fixed")


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def step(ledger: Ledger, days_later: float) -> None:
    clock = ManualClock(T0 + timedelta(days=days_later))
    LedgerGauges(ledger, {"monetate": MONETATE}, DeadlineSettings(), clock).step()


def test_failed_requests_stay_in_the_deadline_gauges_until_requeued(ledger: Ledger) -> None:
    failed = failed_request(ledger, "voyado", "acoustic", failing=["acoustic"])  # due T0 + 30d
    failed_request(ledger, "voyado")  # COMPLETED: never counted

    step(ledger, 1)
    assert sample("erasure_requests_with_failed_scope") == 1
    assert sample("erasure_requests_at_risk", regulation="GDPR") == 0

    step(ledger, 23)  # 7 days left: in the last quarter of 30 days
    assert sample("erasure_requests_at_risk", regulation="GDPR") == 1
    assert sample("erasure_requests_overdue", regulation="GDPR") == 0

    step(ledger, 31)
    assert sample("erasure_requests_overdue", regulation="GDPR") == 1

    ledger.extend(failed, 5, ANNA, DeadlineSettings().deadlines(), T0)  # due T0 + 35 days
    step(ledger, 31)
    assert sample("erasure_requests_overdue", regulation="GDPR") == 0
    assert sample("erasure_requests_at_risk", regulation="GDPR") == 1

    ledger.requeue(failed, RequeueFilter(), ANNA, T0)
    step(ledger, 31)
    assert sample("erasure_requests_with_failed_scope") == 0
    assert sample("erasure_requests_at_risk", regulation="GDPR") == 1  # still not COMPLETED
    assert sample("erasure_requests_overdue", regulation=Regulation.CCPA.value) == 0
