"""`erasure-worker requeue`'s logic over a real ledger: by id, in bulk, dry run, and the
lines it prints."""

from __future__ import annotations

import uuid

import pytest

from consumer.ledger import Ledger
from consumer.ledger.records import OperatorAction, RequeueFilter
from consumer.model import Status
from consumer.ops import requeue
from consumer.ops.requeue import (
    refusal_line,
    requeue_failed,
    requeue_requests,
    summary_line,
)
from tests.ledger.test_ledger_contract import T0, at, new_request, record
from tests.ledger.test_operations import failed_request, trail_of

ANNA = OperatorAction("anna", "voyado key rotated")


def test_requeue_by_id_counts_scopes_and_refuses_the_rest(ledger: Ledger) -> None:
    both = failed_request(ledger, "voyado", "monetate", failing=["voyado", "monetate"])
    one = failed_request(ledger, "voyado", "monetate", failing=["monetate"])
    fine = new_request("voyado")
    record(ledger, fine)
    unknown = str(uuid.uuid4())
    ids = [both, one, one, fine.request.request_id, unknown]

    report = requeue_requests(ledger, ids, RequeueFilter(), ANNA, at(100))

    assert summary_line(report) == "requeued 3 vendor scope(s) of 2 request(s)"
    assert [refusal_line(result, RequeueFilter()) for result in report.refused] == [
        f"request {fine.request.request_id} has no FAILED vendor scope: nothing to requeue",
        f"no request {unknown} in the ledger",
    ]
    assert [v.status for v in trail_of(ledger, both).vendors] == [Status.QUEUED] * 2


def test_requeue_of_one_vendor_names_it_when_refused(ledger: Ledger) -> None:
    rid = failed_request(ledger, "voyado", "monetate", failing=["monetate"])
    which = RequeueFilter("voyado")
    report = requeue_requests(ledger, [rid], which, ANNA, T0)
    (refused,) = report.refused
    assert refusal_line(refused, which) == (
        f"request {rid} has no FAILED voyado vendor scope: nothing to requeue"
    )


def test_bulk_requeue_walks_every_page_and_a_second_run_finds_nothing(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(requeue, "PAGE_SIZE", 2)
    failed = [failed_request(ledger, "voyado", failing=["voyado"]) for _ in range(5)]
    other = failed_request(ledger, "monetate", failing=["monetate"])
    which = RequeueFilter("voyado")

    dry = requeue_failed(ledger, which, ANNA, at(100), dry_run=True)
    assert (
        summary_line(dry)
        == "would requeue 5 vendor scope(s) of 5 request(s) (dry run: nothing changed)"
    )
    assert all(trail_of(ledger, rid).status is Status.FAILED for rid in failed)

    report = requeue_failed(ledger, which, ANNA, at(100))
    assert (report.scopes, report.requests, report.refused) == (5, 5, [])
    assert all(trail_of(ledger, rid).vendors[0].status is Status.QUEUED for rid in failed)
    assert trail_of(ledger, other).vendors[0].status is Status.FAILED
    assert summary_line(requeue_failed(ledger, which, ANNA, at(101))) == (
        "requeued 0 vendor scope(s) of 0 request(s)"
    )


def test_bulk_requeue_since_a_date_leaves_older_failures(ledger: Ledger) -> None:
    old = failed_request(ledger, "voyado", failing=["voyado"], when=at(10))
    new = failed_request(ledger, "voyado", failing=["voyado"], when=at(3600))
    report = requeue_failed(ledger, RequeueFilter(failed_since=at(3600)), ANNA, at(4000))
    assert (report.scopes, report.requests) == (1, 1)
    assert trail_of(ledger, old).vendors[0].status is Status.FAILED
    assert trail_of(ledger, new).vendors[0].status is Status.QUEUED
