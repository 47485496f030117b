"""What is left to do, against each request's own due date: the work list of
`erasure-worker list` and the deadline gauges. Reads, written once for both backends.

Every condition keeps to requests not COMPLETED through the partial index requests_due
(spelt `status <> 'COMPLETED'` as the index says, for SQLite to use it), so its cost
follows the open obligations, not years of history; FAILED requests stay in it (their
obligation is still open). The list is read in pages by (due_at, request_id), never
whole.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from consumer.ledger.backend import SqlBackend
from consumer.ledger.deadlines import Deadlines
from consumer.ledger.records import DeadlineCounts, RequestFilter, RequestSummary
from consumer.ledger.rows import Row
from consumer.model import TERMINAL_STATUSES, Regulation, Status

_NOT_DONE = "r.status <> 'COMPLETED'"
_HAS_FAILED_SCOPE = (
    "EXISTS (SELECT 1 FROM vendor_scopes s WHERE s.request_id = r.request_id"
    " AND s.status = 'FAILED')"
)
_FINISHED_SCOPES = ", ".join(
    f"'{status}'" for status in sorted(TERMINAL_STATUSES - {Status.FAILED})
)


class SqlWorklist(SqlBackend):
    """The work list and the deadline counts behind the gauges."""

    def list_requests(
        self,
        which: RequestFilter,
        now: datetime,
        deadlines: Deadlines,
        after: RequestSummary | None,
        limit: int,
    ) -> list[RequestSummary]:
        conditions, params = self._conditions(which, now, deadlines)
        if after is not None:
            conditions.append("(r.due_at, r.request_id) > (?, ?)")
            params += [self._to_db(after.due_at), after.request_id]
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._transaction(write=False) as tx:
            rows = tx.rows(
                "SELECT r.request_id, r.regulation, r.status, r.received_at, r.due_at,"
                f" r.extended_days FROM requests r{where}"
                " ORDER BY r.due_at, r.request_id LIMIT ?",
                (*params, limit),
            )
            scopes = tx.rows(
                "SELECT request_id, vendor, status FROM vendor_scopes WHERE request_id"
                f" {self.in_array} AND status NOT IN ({_FINISHED_SCOPES}) ORDER BY vendor",
                (self._array([row[0] for row in rows]),),
            )
        return self._summaries(rows, scopes)

    def _conditions(
        self, which: RequestFilter, now: datetime, deadlines: Deadlines
    ) -> tuple[list[str], list[object]]:
        conditions: list[str] = []
        params: list[object] = []
        if which.open or which.failed or which.at_risk or which.overdue:
            conditions.append(_NOT_DONE)  # a request with a FAILED scope is not COMPLETED
        if which.failed:
            conditions.append(_HAS_FAILED_SCOPE)
        if which.overdue:
            conditions.append("r.due_at <= ?")
            params.append(self._to_db(now))
        if which.at_risk:
            at_risk, at_risk_params = self._at_risk(now, deadlines)
            conditions.append(at_risk)
            params += at_risk_params
        return conditions, params

    def _at_risk(self, now: datetime, deadlines: Deadlines) -> tuple[str, list[object]]:
        """Due within its regulation's at-risk window from now, or already past due."""
        params: list[object] = []
        for regulation in Regulation:
            params += [regulation.value, self._to_db(now + deadlines.at_risk_window(regulation))]
        terms = " OR ".join(["(r.regulation = ? AND r.due_at <= ?)"] * len(Regulation))
        return f"({terms})", params

    def _summaries(self, rows: list[Row], scopes: list[Row]) -> list[RequestSummary]:
        open_vendors: defaultdict[str, list[str]] = defaultdict(list)
        failed_vendors: defaultdict[str, list[str]] = defaultdict(list)
        for request_id, vendor, status in scopes:
            waiting = failed_vendors if status == Status.FAILED else open_vendors
            waiting[request_id].append(vendor)
        return [
            RequestSummary(
                request_id,
                Regulation(regulation),
                Status(status),
                self._from_db(received_at),
                self._from_db(due_at),
                extended_days,
                tuple(open_vendors[request_id]),
                tuple(failed_vendors[request_id]),
            )
            for request_id, regulation, status, received_at, due_at, extended_days in rows
        ]

    def deadline_counts(self, now: datetime, deadlines: Deadlines) -> DeadlineCounts:
        at_risk: dict[Regulation, int] = {}
        overdue: dict[Regulation, int] = {}
        with self._transaction(write=False) as tx:
            for regulation in Regulation:
                ((risky, late),) = tx.rows(
                    "SELECT count(*), coalesce(sum(CASE WHEN r.due_at <= ? THEN 1 ELSE 0 END), 0)"
                    f" FROM requests r WHERE {_NOT_DONE} AND r.regulation = ? AND r.due_at <= ?",
                    (
                        self._to_db(now),
                        regulation.value,
                        self._to_db(now + deadlines.at_risk_window(regulation)),
                    ),
                )
                at_risk[regulation], overdue[regulation] = int(risky), int(late)
            ((failed,),) = tx.rows(
                "SELECT count(DISTINCT request_id) FROM vendor_scopes WHERE status = 'FAILED'"
            )
        return DeadlineCounts(at_risk, overdue, int(failed))
