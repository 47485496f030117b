"""The retention loop over both ledgers: a batch of each kind of work per step with a short
pause while a backlog lasts, then a round's wait; counted in erasure_retention_rows_total;
done by one replica at a time."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import SecretStr

from consumer.config import RetentionSettings
from consumer.ledger import Ledger
from consumer.ledger.retention import identity_hash
from consumer.model import Status
from consumer.runtime.metrics import REGISTRY
from consumer.runtime.retention import PAUSE_SECONDS, RetentionLoop
from tests.ledger.test_audit_chain import finish
from tests.ledger.test_ledger_contract import new_request, record
from tests.ledger.test_retention import KEY, publish_all, values_of
from tests.support.clock import ManualClock

ROUND = 30.0


@pytest.fixture
def ledger_url(any_ledger_url: str) -> str:
    return any_ledger_url


def rows(action: str) -> float:
    value = REGISTRY.get_sample_value("erasure_retention_rows_total", {"action": action})
    return value or 0.0


def loop(ledger: Ledger, owner: str = "w1", **settings: object) -> RetentionLoop:
    retention = RetentionSettings.model_validate(settings)
    return RetentionLoop(ledger, retention, owner, ManualClock(), round_seconds=ROUND, batch_size=2)


def test_a_backlog_goes_a_batch_per_step_then_the_loop_waits_a_round(ledger: Ledger) -> None:
    """The test clock reads 2026; the requests finished in 2024."""
    done = [finish(ledger, new_request("voyado")) for _ in range(3)]
    failed = finish(ledger, new_request("monetate"), Status.FAILED)
    open_ = new_request("voyado")
    record(ledger, open_)
    kept = values_of(ledger, failed)
    raw = {rid: values_of(ledger, rid) for rid in done}
    minimise = loop(ledger, hash_key=SecretStr(KEY.decode()), identifiers_after_days=30)
    before = rows("minimised")
    assert [minimise.step() for _ in range(4)] == [PAUSE_SECONDS, PAUSE_SECONDS, ROUND, ROUND]
    assert rows("minimised") - before == 3
    for rid in done:
        assert values_of(ledger, rid) == [identity_hash(KEY, "email", v) for v in raw[rid]]
    assert values_of(ledger, failed) == kept
    publish_all(ledger)
    expire = loop(ledger, requests_days=365)
    before = rows("deleted")
    assert [expire.step() for _ in range(3)] == [PAUSE_SECONDS, PAUSE_SECONDS, ROUND]
    assert rows("deleted") - before == 4
    assert [
        hit.request_id for hit in ledger.lookup("email", open_.items[0].identity_value, None)
    ] == [open_.request.request_id]
    assert ledger.verify_chain().broken is None


def test_one_replica_does_the_work(ledger: Ledger, open_ledgers: Callable[[], Ledger]) -> None:
    finish(ledger, new_request("voyado"))
    publish_all(ledger)
    first, second = (loop(open_ledgers(), owner, requests_days=365) for owner in ("a", "b"))
    before = rows("deleted")
    assert second.step() == PAUSE_SECONDS
    finish(ledger, new_request("voyado"))
    publish_all(ledger)
    assert first.step() == ROUND  # b holds the lease
    assert rows("deleted") - before == 1
    assert second.step() == PAUSE_SECONDS and second.step() == ROUND
    assert rows("deleted") - before == 2
