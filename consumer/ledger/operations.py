"""The operator commands' writes: requeue FAILED vendor scopes, extend a due date, and
remember which dead letters were replayed. Written once for both backends.

Each action on a request is one transaction that locks the request row first, as
`SqlLedger.apply` does, so a requeue and a worker settling items of the same request run
one after the other on PostgreSQL with several replicas (SQLite serialises every writer).
Every action leaves an `operator_actions` row: who, when, why.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from consumer.ledger.backend import SqlBackend, Tx
from consumer.ledger.deadlines import Deadlines
from consumer.ledger.records import (
    Extended,
    OperatorAction,
    Refusal,
    ReplayRecord,
    Requeued,
    RequeueFilter,
)
from consumer.ledger.rows import Row, requeued_event
from consumer.model import Regulation, Status

REQUEUE = "requeue"
EXTEND = "extend"
# Back to the start: fresh attempts, due at once, no job, no lease, no old failure.
_REQUEUE_ITEMS = (
    "UPDATE items SET status = 'QUEUED', attempts = 0, next_attempt_at = ?, job_id = NULL,"
    " lease_owner = NULL, lease_until = NULL, detail = NULL, updated_at = ?"
    " WHERE item_id {in_array}"
)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SqlOperations(SqlBackend):
    """Requeue, extend and dead-letter replays, over a backend's transactions."""

    @abstractmethod
    def _insert_events(self, tx: Tx, events: Sequence[Row]) -> None:
        """Record status events: `SqlLedger._insert_events`, the trail's one way in."""

    @abstractmethod
    def _insert_actions(self, tx: Tx, actions: Sequence[Row]) -> None:
        """Record operator actions (request_id, vendor, action, actor, reason, detail, at)
        in the audit chain: `SqlAudit._insert_actions`, their one way in."""

    def _failed_scopes_sql(self, which: RequeueFilter) -> tuple[str, list[object]]:
        """The condition on vendor_scopes `s` that picks the FAILED scopes `which` names
        (spelt as the partial index vendor_scopes_failed says, for SQLite to use it)."""
        sql = "s.status = 'FAILED'"
        params: list[object] = []
        if which.vendor is not None:
            sql += " AND s.vendor = ?"
            params.append(which.vendor)
        if which.failed_since is not None:
            sql += " AND s.updated_at >= ?"
            params.append(self._to_db(which.failed_since))
        return sql, params

    def failed_request_ids(self, which: RequeueFilter, after: str | None, limit: int) -> list[str]:
        where, params = self._failed_scopes_sql(which)
        if after is not None:
            where += " AND s.request_id > ?"
            params.append(after)
        with self._transaction(write=False) as tx:
            rows = tx.rows(
                f"SELECT DISTINCT s.request_id FROM vendor_scopes s WHERE {where}"
                " ORDER BY s.request_id LIMIT ?",
                (*params, limit),
            )
        return [row[0] for row in rows]

    def count_failed(self, which: RequeueFilter) -> tuple[int, int]:
        where, params = self._failed_scopes_sql(which)
        with self._transaction(write=False) as tx:
            ((scopes, requests),) = tx.rows(
                f"SELECT count(*), count(DISTINCT s.request_id) FROM vendor_scopes s WHERE {where}",
                params,
            )
        return int(scopes), int(requests)

    def requeue(
        self, request_id: str, which: RequeueFilter, action: OperatorAction, now: datetime
    ) -> Requeued:
        at = self._to_db(now)
        with self._transaction(write=True) as tx:
            if not self._lock_request(tx, request_id):
                return Requeued(request_id, refused=Refusal.UNKNOWN_REQUEST)
            where, params = self._failed_scopes_sql(which)
            scopes = tx.rows(
                f"SELECT s.vendor FROM vendor_scopes s WHERE s.request_id = ? AND {where}"
                f" ORDER BY s.vendor{self.lock_rows}",
                (request_id, *params),
            )
            vendors = [vendor for (vendor,) in scopes]
            if not vendors:
                return Requeued(request_id, refused=Refusal.NOTHING_FAILED)
            items = tx.rows(
                "SELECT item_id, vendor FROM items WHERE request_id = ? AND status = 'FAILED'"
                f" AND vendor {self.in_array} ORDER BY item_id{self.lock_rows}",
                (request_id, self._array(vendors)),
            )
            tx.rows(
                _REQUEUE_ITEMS.format(in_array=self.in_array),
                (at, at, self._array([item_id for item_id, _ in items])),
            )
            self._reopen(tx, request_id, vendors, action, at)
            per_vendor = Counter(vendor for _, vendor in items)
            self._insert_actions(
                tx,
                [
                    (
                        request_id,
                        vendor,
                        REQUEUE,
                        action.actor,
                        action.reason,
                        f"{per_vendor[vendor]} FAILED item(s) back to QUEUED",
                        at,
                    )
                    for vendor in vendors
                ],
            )
        return Requeued(request_id, tuple(vendors), len(items))

    def _lock_request(self, tx: Tx, request_id: str) -> bool:
        """Lock the request row (before its scopes and items, in `apply`'s order); False
        for an unknown request."""
        sql = f"SELECT 1 FROM requests WHERE request_id = ?{self.lock_rows}"
        return bool(tx.rows(sql, (request_id,)))

    def _reopen(
        self, tx: Tx, request_id: str, vendors: list[str], action: OperatorAction, at: object
    ) -> None:
        """The scopes back to QUEUED with their events, and the request unfinished: its
        FAILED status stays the last one emitted until its new terminal status follows
        (`rollup.request_is_open`)."""
        tx.many(
            "UPDATE vendor_scopes SET status = 'QUEUED', updated_at = ?"
            " WHERE request_id = ? AND vendor = ?",
            [(at, request_id, vendor) for vendor in vendors],
        )
        tx.rows("UPDATE requests SET finished_at = NULL WHERE request_id = ?", (request_id,))
        self._insert_events(
            tx, [requeued_event(request_id, vendor, action.reason, at) for vendor in vendors]
        )

    def extend(
        self,
        request_id: str,
        days: int,
        action: OperatorAction,
        deadlines: Deadlines,
        now: datetime,
    ) -> Extended:
        with self._transaction(write=True) as tx:
            found = tx.rows(
                "SELECT status, regulation, requested_at, due_at, extended_days FROM requests"
                f" WHERE request_id = ?{self.lock_rows}",
                (request_id,),
            )
            if not found:
                return Extended(request_id, Refusal.UNKNOWN_REQUEST)
            ((status, regulation, requested_at, due_at, extended_days),) = found
            regulation = Regulation(regulation)
            due = (
                deadlines.due_date(regulation, self._from_db(requested_at))
                if due_at is None
                else self._from_db(due_at)
            )
            maximum = deadlines.extension_days(regulation)
            refused = _extension_refusal(Status(status), days, extended_days, maximum)
            if refused is not None:
                return Extended(request_id, refused, due, due, extended_days, maximum)
            new_due = due + timedelta(days=days)
            tx.rows(
                "UPDATE requests SET due_at = ?, extended_days = ? WHERE request_id = ?",
                (self._to_db(new_due), extended_days + days, request_id),
            )
            detail = (
                f"+{days} days ({extended_days + days} of {maximum} used):"
                f" due {_stamp(due)} -> {_stamp(new_due)}"
            )
            self._insert_actions(
                tx,
                [(request_id, None, EXTEND, action.actor, action.reason, detail, self._to_db(now))],
            )
        return Extended(request_id, None, due, new_due, extended_days + days, maximum)

    def replays(
        self, topic: str, partition: int, offsets: Sequence[int]
    ) -> dict[int, ReplayRecord]:
        with self._transaction(write=False) as tx:
            rows = tx.rows(
                "SELECT dlq_offset, actor, reason, replayed_at FROM dlq_replays"
                f" WHERE dlq_topic = ? AND dlq_partition = ? AND dlq_offset {self.in_array}",
                (topic, partition, self._array(list(offsets))),
            )
        return {
            offset: ReplayRecord(partition, offset, actor, reason, self._from_db(at))
            for offset, actor, reason, at in rows
        }

    def record_replay(
        self, topic: str, partition: int, offset: int, action: OperatorAction, now: datetime
    ) -> bool:
        with self._transaction(write=True) as tx:
            rows = tx.rows(
                "INSERT INTO dlq_replays (dlq_topic, dlq_partition, dlq_offset, actor, reason,"
                " replayed_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
                " RETURNING dlq_offset",
                (topic, partition, offset, action.actor, action.reason, self._to_db(now)),
            )
        return bool(rows)


def _extension_refusal(
    status: Status, days: int, extended_days: int, maximum: int
) -> Refusal | None:
    """Why an extension by `days` cannot be recorded, or None if it can."""
    if status is Status.COMPLETED:
        return Refusal.COMPLETED
    if days <= 0:
        return Refusal.NOT_POSITIVE
    if extended_days + days > maximum:
        return Refusal.BEYOND_MAXIMUM
    return None
