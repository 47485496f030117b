"""The `Ledger`'s reads, written once for both backends: the outbox's pending events, a
request's audit trail, and the counts behind the gauges.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from consumer.ledger.backend import SqlBackend
from consumer.ledger.records import (
    ActionTrail,
    ItemTrail,
    OutboxEvent,
    RequestTrail,
    VendorTrail,
)
from consumer.ledger.rows import STATUS_OF, Row
from consumer.model import Regulation, Status, StatusEvent

_EVENT_SELECT = (
    "e.event_id, e.request_id, e.vendor, e.status, e.previous_status, e.vendor_job_id,"
    " e.changed_at, e.detail"
)
# Item statuses that can still change, spelt exactly as the partial index items_open says
# (SQLite uses a partial index only for a query that repeats its condition word for word).
_OPEN_ITEM = "status IN ('IN_PROGRESS', 'QUEUED', 'SUBMITTED')"


class SqlQueries(SqlBackend):
    """The `Ledger`'s reads: the outbox, the audit trail and the gauges' counts."""

    def pending_events(self, limit: int) -> list[OutboxEvent]:
        with self._transaction(write=False) as tx:
            rows = tx.rows(
                f"SELECT e.seq, r.requested_at, {_EVENT_SELECT} FROM events e JOIN requests r"
                " ON r.request_id = e.request_id WHERE e.published_at IS NULL"
                " ORDER BY e.seq LIMIT ?",
                (limit,),
            )
        return [
            OutboxEvent(row[0], self._status_event(row[2:]), self._from_db(row[1])) for row in rows
        ]

    def _status_event(self, row: Row) -> StatusEvent:
        event_id, rid, vendor, status, previous, vendor_job_id, changed_at, detail = row
        return StatusEvent(
            event_id,
            rid,
            vendor,
            STATUS_OF[status],
            None if previous is None else STATUS_OF[previous],
            vendor_job_id,
            self._from_db(changed_at),
            detail,
        )

    def trail(self, request_id: str) -> RequestTrail | None:
        with self._transaction(write=False) as tx:
            found = tx.rows(
                "SELECT status, regulation, requested_at, received_at, due_at, extended_days"
                " FROM requests WHERE request_id = ?",
                (request_id,),
            )
            if not found:
                return None
            scopes = tx.rows(
                "SELECT vendor, status FROM vendor_scopes WHERE request_id = ? ORDER BY vendor",
                (request_id,),
            )
            items = tx.rows(
                "SELECT i.vendor, i.identity_type, i.destination, i.status, j.vendor_job_id,"
                " i.updated_at, i.detail FROM items i LEFT JOIN jobs j ON j.job_id = i.job_id"
                " WHERE i.request_id = ? ORDER BY i.item_id",
                (request_id,),
            )
            events = tx.rows(
                f"SELECT {_EVENT_SELECT} FROM events e WHERE e.request_id = ? ORDER BY e.seq",
                (request_id,),
            )
            actions = tx.rows(
                "SELECT at, action, vendor, actor, reason, detail FROM operator_actions"
                " WHERE request_id = ? ORDER BY action_id",
                (request_id,),
            )
        by_vendor: defaultdict[str, list[ItemTrail]] = defaultdict(list)
        for vendor, kind, destination, status, job_ref, updated_at, detail in items:
            by_vendor[vendor].append(
                ItemTrail(
                    kind, destination, Status(status), job_ref, self._from_db(updated_at), detail
                )
            )
        ((status, regulation, requested_at, received_at, due_at, extended_days),) = found
        return RequestTrail(
            request_id,
            Status(status),
            Regulation(regulation),
            self._from_db(requested_at),
            self._from_db(received_at),
            tuple(VendorTrail(vendor, Status(s), tuple(by_vendor[vendor])) for vendor, s in scopes),
            tuple(self._status_event(row) for row in events),
            None if due_at is None else self._from_db(due_at),
            extended_days,
            tuple(ActionTrail(self._from_db(row[0]), *row[1:]) for row in actions),
        )

    def item_counts(self, open_only: bool = False) -> dict[tuple[str, Status], int]:
        where = f" WHERE {_OPEN_ITEM}" if open_only else ""
        with self._transaction(write=False) as tx:
            rows = tx.rows(
                f"SELECT vendor, status, count(*) FROM items{where} GROUP BY vendor, status"
            )
        return {(vendor, Status(status)): count for vendor, status, count in rows}

    def oldest_open_request_at(self) -> datetime | None:
        with self._transaction(write=False) as tx:
            ((oldest,),) = tx.rows(
                "SELECT min(requested_at) FROM requests WHERE status = 'RECEIVED'"
            )
        return None if oldest is None else self._from_db(oldest)

    def outbox_backlog(self) -> int:
        with self._transaction(write=False) as tx:
            ((count,),) = tx.rows("SELECT count(*) FROM events WHERE published_at IS NULL")
        return int(count)

    def quota_used(self, vendor: str, since: datetime) -> int:
        with self._transaction(write=False) as tx:
            ((used,),) = tx.rows(
                "SELECT coalesce(sum(identifiers), 0) FROM vendor_sends"
                " WHERE vendor = ? AND sent_at >= ?",
                (vendor, self._to_db(since)),
            )
        return int(used)

    def overdue_items(self, vendor: str, submitted_before: datetime) -> int:
        with self._transaction(write=False) as tx:
            ((count,),) = tx.rows(
                "SELECT count(*) FROM items i JOIN jobs j ON j.job_id = i.job_id"
                f" WHERE i.vendor = ? AND i.{_OPEN_ITEM} AND i.status <> 'QUEUED'"
                " AND j.submitted_at < ?",
                (vendor, self._to_db(submitted_before)),
            )
        return int(count)
