"""`erasure-worker extend`'s lines, and how the extension shows in `status`."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import timedelta

from consumer.ledger import Ledger
from consumer.ledger.deadlines import Deadlines
from consumer.ledger.records import OperatorAction, RequeueFilter
from consumer.model import Regulation
from consumer.ops.extend import result_line
from consumer.ops.trail import trail_json, trail_text
from tests.ledger.test_ledger_contract import T0, at, new_request, record
from tests.ledger.test_operations import failed_request, trail_of, with_regulation

ANNA = OperatorAction("anna", "complex request, subject told on day 20")
CCPA = Deadlines(ccpa_days=45, ccpa_extension_days=45)


def test_each_outcome_is_one_line(ledger: Ledger) -> None:
    new = with_regulation(new_request("voyado"), Regulation.CCPA, T0 + timedelta(days=45))
    record(ledger, new)
    rid = new.request.request_id
    done = failed_request(ledger, "voyado")

    def line(request_id: str, days: int) -> str:
        return result_line(ledger.extend(request_id, days, ANNA, CCPA, at(60)), days)

    assert line(rid, 30) == (
        f"extended {rid} by 30 days: due 2024-07-15 12:00 UTC (was 2024-06-15 12:00);"
        " 30 of 45 extension days used"
    )
    assert line(rid, 16) == (
        "refused: 16 more days would pass the maximum"
        " (30 of 45 extension days used; at most 15 more)"
    )
    assert line(rid, 0) == "refused: --days must be 1 or more (got 0)"
    assert line(done, 5) == f"request {done} is COMPLETED: there is no deadline left to extend"
    unknown = str(uuid.uuid4())
    assert line(unknown, 5) == f"no request {unknown} in the ledger"


def test_status_shows_the_due_date_and_every_operator_action(ledger: Ledger) -> None:
    rid = failed_request(ledger, "voyado", failing=["voyado"])
    ledger.extend(rid, 10, ANNA, Deadlines(), at(20))
    ledger.requeue(rid, RequeueFilter(), replace(ANNA, reason="key fixed"), at(30))
    trail = trail_of(ledger, rid)

    document = json.loads(json.dumps(trail_json(trail)))
    assert document["due_at"] == "2024-06-10T12:00:00.000Z"
    assert document["extended_days"] == 10
    assert [(a["action"], a["vendor"], a["actor"], a["reason"]) for a in document["actions"]] == [
        ("extend", None, "anna", ANNA.reason),
        ("requeue", "voyado", "anna", "key fixed"),
    ]
    text = trail_text(trail)
    assert "due       2024-06-10T12:00:00.000Z, extended by 10 days" in text
    assert "voyado      requeue  by anna: key fixed (1 FAILED item(s) back to QUEUED)" in text
    assert "status    FAILED (requeued: under way again" in text
    assert any(
        "voyado" in line and "FAILED -> QUEUED" in line and line.endswith("requeued: key fixed")
        for line in text.splitlines()
    )
    assert "secret-" not in text and "secret-" not in json.dumps(document)
