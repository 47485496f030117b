"""The auditor's report rows on both ledgers: the requests received in [from, to), in
order of receipt, with each vendor's outcome, streamed in bounded memory."""

from __future__ import annotations

import tracemalloc
from datetime import timedelta

from consumer.ledger import Ledger
from consumer.ledger.backend import SqlBackend
from consumer.ledger.records import ReportRow, VendorOutcome
from consumer.model import Regulation, Status
from tests.ledger.test_audit_chain import finish, sql
from tests.ledger.test_ledger_contract import T0, new_request, record

S = Status
HOUR = timedelta(hours=1)
DUE = T0 + timedelta(days=30)  # the contract's GDPR days, from requested_at


def test_the_report_holds_the_requests_received_in_the_window_in_order(ledger: Ledger) -> None:
    finish(ledger, new_request("voyado"), now=T0 - HOUR)
    done = new_request("voyado", "acoustic", per_vendor=2)
    finish(ledger, done, now=T0)
    waiting = new_request("voyado", skipped=[("acoustic", "not enabled")])
    record(ledger, waiting, now=T0 + HOUR)
    record(ledger, new_request("voyado"), now=T0 + 2 * HOUR)
    rid = done.request.request_id
    with ledger.report(T0, T0 + 2 * HOUR) as rows:
        report = list(rows)
    assert report == [
        ReportRow(
            rid,
            Regulation.GDPR,
            T0,
            DUE,
            0,
            S.COMPLETED,
            T0,
            (
                VendorOutcome("acoustic", S.COMPLETED, (f"job-{rid[:8]}-acoustic",), T0),
                VendorOutcome("voyado", S.COMPLETED, (f"job-{rid[:8]}-voyado",), T0),
            ),
        ),
        ReportRow(
            waiting.request.request_id,
            Regulation.GDPR,
            T0 + HOUR,
            DUE,
            0,
            S.RECEIVED,
            None,
            (
                VendorOutcome("acoustic", S.SKIPPED, (), T0 + HOUR),
                VendorOutcome("voyado", S.QUEUED, (), None),
            ),
        ),
    ]


def test_a_vendor_scope_lists_every_job_that_holds_its_items(ledger: Ledger) -> None:
    new = new_request("acoustic", per_vendor=2)
    rid = finish(ledger, new)
    sql(
        ledger,
        "INSERT INTO jobs (vendor, vendor_job_id, status, submitted_at) SELECT vendor,"
        " 'second', status, submitted_at FROM jobs",
    )
    sql(
        ledger,
        "UPDATE items SET job_id = (SELECT max(job_id) FROM jobs)"
        " WHERE item_id = (SELECT max(item_id) FROM items)",
    )
    with ledger.report(T0, T0 + HOUR) as rows:
        ((vendor,),) = [row.vendors for row in rows]
    assert vendor.vendor_job_ids == ("job-" + rid[:8] + "-acoustic", "second")


_GENERATE = {
    "sqlite": (
        "INSERT INTO requests (request_id, regulation, requested_at, received_at, status,"
        " due_at, finished_at) WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1"
        " FROM n WHERE i + 1 < ?) SELECT printf('%08d-0000-4000-8000-000000000000', i),"
        " 'GDPR', ?, ? + i * 1000000, 'COMPLETED', ?, ? FROM n"
    ),
    "postgres": (
        "INSERT INTO requests (request_id, regulation, requested_at, received_at, status,"
        " due_at, finished_at) SELECT lpad(i::text, 8, '0') || '-0000-4000-8000-000000000000',"
        " 'GDPR', ?::timestamptz, ?::timestamptz + i * interval '1 second', 'COMPLETED',"
        " ?::timestamptz, ?::timestamptz FROM generate_series(0, ? - 1) AS i"
    ),
}


def generate(ledger: Ledger, count: int) -> None:
    """`count` finished requests with two vendor scopes each, one a second apart from T0,
    made by SQL in the database (recording them one by one would take minutes)."""
    assert isinstance(ledger, SqlBackend)
    at = ledger._to_db(T0)
    params: tuple[object, ...] = (count, at, at, at, at)
    if ledger.dialect == "postgres":
        params = (at, at, at, at, count)
    with ledger._transaction(write=True) as tx:
        tx.rows(_GENERATE[ledger.dialect], params)
        for vendor in ("voyado", "acoustic"):
            tx.rows(
                "INSERT INTO vendor_scopes (request_id, vendor, status, updated_at)"
                " SELECT request_id, ?, 'COMPLETED', finished_at FROM requests",
                (vendor,),
            )


def test_the_report_streams_any_window_in_bounded_memory(ledger: Ledger) -> None:
    """20,000 requests (40,000 result rows, ~25 MB as Python objects if fetched at once)
    pass through in a few hundred kilobytes, in order of receipt."""
    generate(ledger, 20_000)
    tracemalloc.start()
    try:
        count, last = 0, T0 - HOUR
        with ledger.report(T0, T0 + timedelta(days=1)) as rows:
            for row in rows:
                assert row.received_at > last and len(row.vendors) == 2
                count, last = count + 1, row.received_at
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < 3_000_000
