"""The `Ledger` methods, written once for both backends so that they cannot drift apart.

Each method runs against `Tx`, a tiny seam over one open transaction. A backend only
supplies the connection, the transaction runner with its error translation, and a few
dialect details: how an array parameter is compared, how rows are locked, how times are
stored and how rows are bulk-inserted. Which rows and events a change causes is decided by
the pure functions of `rows`.

Reads live in `queries`, the backend seam and migrations in `backend`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from consumer.ledger.audit import SqlAudit
from consumer.ledger.backend import Conflict, Tx
from consumer.ledger.limits import SqlLimits
from consumer.ledger.operations import SqlOperations
from consumer.ledger.protocol import LedgerUnavailable
from consumer.ledger.queries import SqlQueries
from consumer.ledger.records import (
    Applied,
    Change,
    DueJob,
    ItemUpdate,
    NewJob,
    NewRequest,
    ReadySummary,
    RecordResult,
    WorkItem,
)
from consumer.ledger.report import SqlReport
from consumer.ledger.retention import SqlRetention
from consumer.ledger.rows import (
    ITEM_COLUMNS,
    REQUEST_COLUMNS,
    SCOPE_COLUMNS,
    STATUS_OF,
    Row,
    plan_records,
    roll_up,
)
from consumer.ledger.worklist import SqlWorklist
from consumer.model import TERMINAL_STATUSES, Regulation, Status

_TERMINAL = ", ".join(f"'{status}'" for status in sorted(TERMINAL_STATUSES))
_WORK_ITEM_COLUMNS = (
    "i.item_id, i.request_id, i.vendor, i.identity_type, i.identity_value, i.destination,"
    " r.regulation, r.requested_at, i.attempts, i.status"
)
# Due, QUEUED and not leased by anyone (the caller included: nobody gets an item twice
# while it is in flight), longest due first. The literal status and this order match the
# partial index items_queued, so a claim walks the index instead of sorting the backlog.
# Due-ness is judged on the caller's clock (it set next_attempt_at), leases on the
# database's ({now} is `SqlLedger.db_now`).
_READY_ITEMS = (
    "FROM items i WHERE i.vendor = ? AND i.status = 'QUEUED' AND i.next_attempt_at <= ?"
    " AND (i.lease_until IS NULL OR i.lease_until <= {now})"
    " ORDER BY i.next_attempt_at, i.item_id LIMIT ?"
)
_UPDATE_ITEM = (
    "UPDATE items SET status = ?, detail = ?, attempts = COALESCE(?, attempts),"
    " next_attempt_at = COALESCE(?, next_attempt_at), job_id = COALESCE(?, job_id),"
    " lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE item_id = ?"
)
_UPDATE_JOB = (
    "UPDATE jobs SET status = ?, next_poll_at = ?, poll_failures = ?, detail = ?,"
    " lease_owner = NULL, lease_until = NULL WHERE job_id = ?"
)
_TRY_LEASE = (
    "INSERT INTO leases (name, owner, until) VALUES (?, ?, {now} + ?) ON CONFLICT (name)"
    " DO UPDATE SET owner = excluded.owner, until = excluded.until"
    " WHERE leases.owner = excluded.owner OR leases.until <= {now} RETURNING owner"
)
_CONFLICT_RETRIES = 3


def _item_ids(change: Change) -> set[int]:
    """Every item a change updates, submits or releases."""
    ids = {update.item_id for update in change.items}
    ids.update(item_id for job in change.new_jobs for item_id in job.item_ids)
    ids.update(change.released_item_ids)
    return ids


def _only(change: Change, items: set[int], jobs: set[int]) -> Change:
    """`change` narrowed to the given items and jobs. A new job keeps the items still held;
    one left with none is not recorded (the replica that re-claimed them submits them)."""
    new_jobs = (
        replace(job, item_ids=tuple(i for i in job.item_ids if i in items))
        for job in change.new_jobs
    )
    return replace(
        change,
        items=tuple(update for update in change.items if update.item_id in items),
        new_jobs=tuple(job for job in new_jobs if job.item_ids),
        jobs=tuple(job for job in change.jobs if job.job_id in jobs),
        released_item_ids=tuple(i for i in change.released_item_ids if i in items),
    )


class SqlLedger(
    SqlAudit, SqlRetention, SqlReport, SqlQueries, SqlLimits, SqlOperations, SqlWorklist
):
    """The `Ledger` write path over a backend's transactions and dialect."""

    def record_requests(self, batch: Sequence[NewRequest], now: datetime) -> RecordResult:
        first: dict[str, NewRequest] = {}
        for new in batch:
            first.setdefault(new.request.request_id, new)
        for _ in range(_CONFLICT_RETRIES):
            try:
                fresh = self._record_fresh(list(first.values()), now)
            except Conflict:
                continue  # a replica stored some of them meanwhile: they are duplicates now
            seen: set[str] = set()
            accepted: list[str] = []
            duplicates: list[str] = []
            for new in batch:
                rid = new.request.request_id
                (accepted if rid in fresh and rid not in seen else duplicates).append(rid)
                seen.add(rid)
            return RecordResult(tuple(accepted), tuple(duplicates))
        raise LedgerUnavailable("request ids kept colliding with concurrent inserts")

    def _record_fresh(self, batch: Sequence[NewRequest], now: datetime) -> set[str]:
        with self._transaction(write=True) as tx:
            stored = self._stored_request_ids(tx, [new.request.request_id for new in batch])
            fresh = [new for new in batch if new.request.request_id not in stored]
            records = plan_records(fresh, now, self._to_db)
            # Keys in one order: replicas with overlapping batches then wait, not deadlock.
            tx.insert("requests", REQUEST_COLUMNS, sorted(records.requests))
            tx.insert("vendor_scopes", SCOPE_COLUMNS, records.scopes)
            tx.insert("items", ITEM_COLUMNS, records.items)
            self._insert_events(tx, records.events)
        return {new.request.request_id for new in fresh}

    def _stored_request_ids(self, tx: Tx, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        sql = f"SELECT request_id FROM requests WHERE request_id {self.in_array}"
        return {row[0] for row in tx.rows(sql, (self._array(ids),))}

    def ready_items(self, vendor: str, now: datetime, limit: int) -> ReadySummary:
        sql = (
            "SELECT count(*), min(s.next_attempt_at)"
            f" FROM (SELECT i.next_attempt_at {self._ready_items}) s"
        )
        ((count, oldest),) = self._alone(sql, (vendor, self._to_db(now), limit), write=False)
        return ReadySummary(count, None if oldest is None else self._from_db(oldest))

    @property
    def _ready_items(self) -> str:
        return _READY_ITEMS.format(now=self.db_now)

    def claim_items(
        self, vendor: str, now: datetime, limit: int, owner: str, lease_until: datetime
    ) -> list[WorkItem]:
        sql = (
            f"SELECT {_WORK_ITEM_COLUMNS} FROM requests r JOIN ("
            f"SELECT i.* {self._ready_items}{self.skip_locked.format('i')}"
            ") i ON r.request_id = i.request_id ORDER BY i.next_attempt_at, i.item_id"
        )
        with self._transaction(write=True) as tx:
            rows = tx.rows(sql, (vendor, self._to_db(now), limit))
            ids = [row[0] for row in rows]
            self._lease(tx, "items", "item_id", ids, owner, lease_until - now)
        return [self._work_item(row) for row in rows]

    def next_poll_due(self, vendor: str) -> datetime | None:
        sql = (
            "SELECT min(next_poll_at) FROM jobs WHERE vendor = ? AND next_poll_at IS NOT NULL"
            f" AND (lease_until IS NULL OR lease_until <= {self.db_now})"
        )
        ((due,),) = self._alone(sql, (vendor,), write=False)
        return None if due is None else self._from_db(due)

    def claim_due_jobs(
        self, vendor: str, now: datetime, limit: int, owner: str, lease_until: datetime
    ) -> list[DueJob]:
        jobs_sql = (
            "SELECT j.job_id, j.vendor, j.vendor_job_id, j.destination, j.submitted_at,"
            " j.poll_failures FROM jobs j WHERE j.vendor = ? AND j.next_poll_at IS NOT NULL"
            " AND j.next_poll_at <= ?"
            f" AND (j.lease_until IS NULL OR j.lease_until <= {self.db_now})"
            f" ORDER BY j.next_poll_at, j.job_id LIMIT ?{self.skip_locked.format('j')}"
        )
        items_sql = (
            f"SELECT {_WORK_ITEM_COLUMNS}, i.job_id FROM items i JOIN requests r"
            f" ON r.request_id = i.request_id WHERE i.job_id {self.in_array}"
            # QUEUED items wait to be sent again in a new job; this one no longer answers
            # for them.
            f" AND i.status NOT IN ({_TERMINAL}, 'QUEUED') ORDER BY i.item_id"
        )
        with self._transaction(write=True) as tx:
            jobs = tx.rows(jobs_sql, (vendor, self._to_db(now), limit))
            job_ids = [row[0] for row in jobs]
            self._lease(tx, "jobs", "job_id", job_ids, owner, lease_until - now)
            items = tx.rows(items_sql, (self._array(job_ids),)) if jobs else []
        by_job: defaultdict[int, list[WorkItem]] = defaultdict(list)
        for row in items:
            by_job[row[-1]].append(self._work_item(row))
        return [
            DueJob(
                job_id,
                vendor_,
                vendor_job_id,
                destination,
                self._from_db(submitted_at),
                poll_failures,
                tuple(by_job[job_id]),
            )
            for job_id, vendor_, vendor_job_id, destination, submitted_at, poll_failures in jobs
        ]

    def _lease(
        self, tx: Tx, table: str, key: str, ids: list[int], owner: str, span: timedelta
    ) -> None:
        """Lease rows for `span` from now on the database's clock (the caller says how long,
        never until when)."""
        if ids:
            tx.many(
                f"UPDATE {table} SET lease_owner = ?, lease_until = {self.db_now} + ?"
                f" WHERE {key} {self.in_array}",
                [(owner, self._to_db_span(span), self._array(ids))],
            )

    def _work_item(self, row: Row) -> WorkItem:
        return WorkItem(
            item_id=row[0],
            request_id=row[1],
            vendor=row[2],
            identity_type=row[3],
            identity_value=row[4],
            destination=row[5],
            regulation=Regulation(row[6]),
            requested_at=self._from_db(row[7]),
            attempts=row[8],
            status=STATUS_OF[row[9]],
        )

    def apply(self, change: Change, now: datetime) -> Applied:
        at = self._to_db(now)
        touched = [update.item_id for update in change.items]
        touched += [item_id for job in change.new_jobs for item_id in job.item_ids]
        with self._transaction(write=True) as tx:
            request_status = self._lock_requests(tx, touched)
            held, lost = self._still_leased(tx, change)
            self._apply_held(tx, held, at)
            return Applied(self._recordroll_up(tx, request_status, at), lost)

    def _still_leased(self, tx: Tx, change: Change) -> tuple[Change, int]:
        """The part of `change` whose rows are still leased to its owner (locked until
        commit, so no claim can take them meanwhile), and how many items and jobs it leaves
        out. A claimed job is leased to its owner, and so are those of its items that nobody
        has claimed for a new submission. A lease that ran out but was not re-claimed is
        still held: nobody else has acted on those rows."""
        if change.owner is None:
            return change, 0
        job_ids = sorted({job.job_id for job in change.jobs})
        jobs = self._kept(
            tx,
            f"SELECT job_id FROM jobs WHERE job_id {self.in_array} AND lease_owner = ?"
            f" ORDER BY job_id{self.lock_rows}",
            job_ids,
            change.owner,
        )
        item_ids = sorted(_item_ids(change))
        items = self._kept(
            tx,
            f"SELECT item_id FROM items WHERE item_id {self.in_array} AND (lease_owner = ?"
            f" OR (lease_owner IS NULL AND job_id {self.in_array}))"
            f" ORDER BY item_id{self.lock_rows}",
            item_ids,
            change.owner,
            self._array(sorted(jobs)),
        )
        lost = len(job_ids) - len(jobs) + len(item_ids) - len(items)
        return _only(change, items, jobs), lost

    def _kept(self, tx: Tx, sql: str, ids: list[int], *params: object) -> set[int]:
        """Those of `ids` the query selects (the first parameter is `ids`); no query for none."""
        return {row[0] for row in tx.rows(sql, (self._array(ids), *params))} if ids else set()

    def _apply_held(self, tx: Tx, change: Change, at: object) -> None:
        for job in change.new_jobs:
            self._insert_job(tx, job, at)
        tx.many(_UPDATE_ITEM, [self._item_params(update, at) for update in change.items])
        tx.many(
            _UPDATE_JOB,
            [
                (
                    job.status.value,
                    self._to_db_or_none(job.next_poll_at),
                    job.poll_failures,
                    job.detail,
                    job.job_id,
                )
                for job in change.jobs
            ],
        )
        if change.released_item_ids:
            tx.many(
                "UPDATE items SET lease_owner = NULL, lease_until = NULL"
                f" WHERE item_id {self.in_array}",
                [(self._array(list(change.released_item_ids)),)],
            )

    def _lock_requests(self, tx: Tx, item_ids: list[int]) -> dict[str, Status]:
        """Lock the requests of the touched items, in key order, so that concurrent changes
        of one request are rolled up one after the other (the last sees all scopes)."""
        if not item_ids:
            return {}
        rows = tx.rows(
            "SELECT r.request_id, r.status FROM requests r WHERE r.request_id IN"
            f" (SELECT i.request_id FROM items i WHERE i.item_id {self.in_array})"
            f" ORDER BY r.request_id{self.lock_rows}",
            (self._array(item_ids),),
        )
        return {rid: STATUS_OF[status] for rid, status in rows}

    def _insert_job(self, tx: Tx, job: NewJob, at: object) -> None:
        ((job_id,),) = tx.rows(
            "INSERT INTO jobs (vendor, vendor_job_id, destination, status, submitted_at,"
            " next_poll_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING job_id",
            (
                job.vendor,
                job.vendor_job_id,
                job.destination,
                job.status.value,
                at,
                self._to_db_or_none(job.next_poll_at),
            ),
        )
        if job.item_ids:
            tx.many(
                "UPDATE items SET status = ?, job_id = ?, lease_owner = NULL, lease_until = NULL,"
                f" updated_at = ? WHERE item_id {self.in_array}",
                [(job.status.value, job_id, at, self._array(list(job.item_ids)))],
            )

    def _item_params(self, update: ItemUpdate, at: object) -> Row:
        return (
            update.status.value,
            update.detail,
            update.attempts,
            self._to_db_or_none(update.next_attempt_at),
            update.job_id,
            at,
            update.item_id,
        )

    def _recordroll_up(self, tx: Tx, request_status: dict[str, Status], at: object) -> list[Status]:
        if not request_status:
            return []
        ids = self._array(list(request_status))
        # One statement for both reads (a round trip less per change): the scopes' rows
        # come with NULL job columns and are told apart by the first column.
        rows = tx.rows(
            "SELECT 1, i.request_id, i.vendor, i.status, j.job_id, j.vendor_job_id, i.detail"
            " FROM items i LEFT JOIN jobs j ON j.job_id = i.job_id"
            f" WHERE i.request_id {self.in_array}"
            " UNION ALL SELECT 0, request_id, vendor, status, NULL, NULL, NULL"
            f" FROM vendor_scopes WHERE request_id {self.in_array}",
            (ids, ids),
        )
        items = [row[1:] for row in rows if row[0]]
        scopes = [row[1:4] for row in rows if not row[0]]
        out = roll_up(items, scopes, request_status, at)
        tx.many(
            "UPDATE vendor_scopes SET status = ?, updated_at = ? WHERE request_id = ?"
            " AND vendor = ?",
            out.scope_updates,
        )
        tx.many(
            "UPDATE requests SET status = ?, finished_at = ? WHERE request_id = ?",
            out.request_updates,
        )
        self._insert_events(tx, out.events)
        return out.statuses

    def mark_published(self, seqs: Sequence[int], now: datetime) -> None:
        if not seqs:
            return
        with self._transaction(write=True) as tx:
            tx.rows(
                f"UPDATE events SET published_at = ? WHERE seq {self.in_array}",
                (self._to_db(now), self._array(list(seqs))),
            )

    def try_lease(self, name: str, owner: str, now: datetime, until: datetime) -> bool:
        sql = _TRY_LEASE.format(now=self.db_now)
        with self._transaction(write=True) as tx:
            rows = tx.rows(sql, (name, owner, self._to_db_span(until - now)))
        return bool(rows)
