"""The auditor's report (contract §5 `report`): every request received in a window with its
deadline, its outcome and each vendor's answer, in order of receipt.

One query, streamed (a server-side cursor on PostgreSQL, `fetchmany` on SQLite) in one
snapshot, and grouped per request as it goes: memory stays that of one request however
many the window holds. A request comes back once per item (an Acoustic scope has one per
identifier and database), which is what lets one pass gather its vendor job ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from itertools import groupby
from operator import itemgetter
from typing import Any

from consumer.ledger.backend import SqlBackend
from consumer.ledger.records import ReportRow, VendorOutcome
from consumer.ledger.rows import Row
from consumer.model import Regulation, Status

# Ordered as the index requests_received, so the rows come out of it without a sort.
_REPORT = (
    "SELECT r.request_id, r.regulation, r.received_at, r.due_at, r.extended_days, r.status,"
    " r.finished_at, s.vendor, s.status, s.updated_at, j.vendor_job_id FROM requests r"
    " LEFT JOIN vendor_scopes s ON s.request_id = r.request_id"
    " LEFT JOIN items i ON i.request_id = s.request_id AND i.vendor = s.vendor"
    " LEFT JOIN jobs j ON j.job_id = i.job_id"
    " WHERE r.received_at >= ? AND r.received_at < ? ORDER BY r.received_at, r.request_id"
)


class SqlReport(SqlBackend):
    """The report's rows, streamed."""

    @contextmanager
    def report(self, start: datetime, end: datetime) -> Iterator[Iterator[ReportRow]]:
        with self._transaction(write=False) as tx:
            if self.snapshot:
                tx.rows(self.snapshot)
            rows = tx.stream(_REPORT, (self._to_db(start), self._to_db(end)))
            yield (self._report_row(group) for _, group in groupby(rows, key=itemgetter(0)))

    def _report_row(self, rows: Iterable[Row]) -> ReportRow:
        """One request from its rows (one per item, or one for a request without any)."""
        first: Row = ()
        scopes: dict[str, tuple[Status, Any, set[str]]] = {}
        for row in rows:
            first = first or row
            vendor, status, updated_at, vendor_job_id = row[7:]
            if vendor is None:
                continue
            scope = scopes.setdefault(vendor, (Status(status), updated_at, set()))
            if vendor_job_id is not None:
                scope[2].add(vendor_job_id)
        request_id, regulation, received_at, due_at, extended_days, status, finished_at = first[:7]
        return ReportRow(
            request_id,
            Regulation(regulation),
            self._from_db(received_at),
            self._or_none(due_at),
            extended_days,
            Status(status),
            self._or_none(finished_at),
            tuple(
                VendorOutcome(
                    vendor,
                    scope_status,
                    tuple(sorted(jobs)),
                    self._from_db(updated_at) if scope_status.is_terminal else None,
                )
                for vendor, (scope_status, updated_at, jobs) in sorted(scopes.items())
            ),
        )

    def _or_none(self, value: Any) -> datetime | None:
        return None if value is None else self._from_db(value)
