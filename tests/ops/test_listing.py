"""`erasure-worker list`'s logic over a real ledger: every page read, a table a person can
read, one JSON array, and nothing but identifier kinds in either."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from consumer.ledger import Ledger
from consumer.ledger.deadlines import DEFAULT_DEADLINES
from consumer.ledger.records import OperatorAction, RequestFilter
from consumer.model import Regulation
from consumer.ops import listing
from consumer.ops.listing import json_chunks, requests, table_lines
from tests.ledger.test_ledger_contract import T0, new_request, record
from tests.ledger.test_operations import failed_request, with_regulation

NOW = T0 + timedelta(days=3)
ANNA = OperatorAction("anna", "complex request")


def _recorded(ledger: Ledger, due_in_days: float, regulation: Regulation = Regulation.GDPR) -> str:
    new = with_regulation(
        new_request("voyado", "acoustic"), regulation, T0 + timedelta(days=due_in_days)
    )
    record(ledger, new)
    return new.request.request_id


def test_every_page_is_read_in_due_order(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listing, "PAGE_SIZE", 2)
    ids = [_recorded(ledger, days) for days in (9, 1, 5, 3, 7)]
    listed = [row.request_id for row in requests(ledger, RequestFilter(), NOW, DEFAULT_DEADLINES)]
    assert listed == [ids[1], ids[3], ids[2], ids[4], ids[0]]


def test_the_table_shows_what_is_left_and_how_long(ledger: Ledger) -> None:
    late = _recorded(ledger, 2, Regulation.CCPA)
    failed = failed_request(ledger, "voyado", "monetate", failing=["voyado"])
    ledger.extend(failed, 7, ANNA, DEFAULT_DEADLINES, T0)
    rows = requests(ledger, RequestFilter(open=True), NOW, DEFAULT_DEADLINES)

    header, first, second = table_lines(rows, NOW)

    assert header.split() == [
        "REQUEST", "REGULATION", "STATUS", "RECEIVED", "DUE", "EXT", "DAYS",
        "LEFT", "OPEN", "VENDORS", "FAILED", "VENDORS",
    ]  # fmt: skip
    assert first.split() == [
        late, "CCPA", "RECEIVED", "2024-05-01", "12:00", "2024-05-03", "12:00", "-", "-1.0",
        "acoustic,voyado", "-",
    ]  # fmt: skip
    assert second.split() == [
        failed, "GDPR", "FAILED", "2024-05-01", "12:00", "2024-06-07", "12:00", "+7", "34.0",
        "-", "voyado",
    ]  # fmt: skip
    assert list(table_lines(iter(()), NOW)) == [header, "(no requests)"]


def test_json_is_one_array_of_requests(ledger: Ledger) -> None:
    rid = _recorded(ledger, 1)
    text = "".join(json_chunks(requests(ledger, RequestFilter(), NOW, DEFAULT_DEADLINES), NOW))
    assert json.loads(text) == [
        {
            "request_id": rid,
            "regulation": "GDPR",
            "status": "RECEIVED",
            "received_at": "2024-05-01T12:00:00.000Z",
            "due_at": "2024-05-02T12:00:00.000Z",
            "extended_days": 0,
            "days_left": -2.0,
            "open_vendors": ["acoustic", "voyado"],
            "failed_vendors": [],
        }
    ]
    assert "secret-" not in text
    assert json.loads("".join(json_chunks(iter(()), NOW))) == []
