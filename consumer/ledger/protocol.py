"""The ledger: the single source of truth for requests, items, vendor jobs, the status
history and the outbox of status events.

Every method is one transaction. A ledger object is used by one thread; each loop of the
worker opens its own (`open_ledger`). Backends raise `LedgerUnavailable` when the database
cannot be reached or is locked beyond its timeout, so callers can back off and retry
without losing work, and `LedgerRejected` when it refuses the data itself; any other
exception is a bug.

Leases (of items, jobs and named leases) run on the database's clock: callers say how long
a lease lasts (`lease_until - now`), the database says when it started and when it is over,
so replicas whose clocks disagree never hold one lease at once. Everything else (when an
item is due again, when a job is polled) follows the caller's `now`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Protocol

from consumer.errors import RejectedError, TransientError
from consumer.ledger.deadlines import Deadlines
from consumer.ledger.limit_records import CallSlot, QuotaReservation, RateBucket
from consumer.ledger.records import (
    Applied,
    ChainReport,
    Change,
    DeadlineCounts,
    DueJob,
    Extended,
    LookupHit,
    NewRequest,
    OperatorAction,
    OutboxEvent,
    ReadySummary,
    RecordResult,
    ReplayRecord,
    ReportRow,
    RequestFilter,
    RequestSummary,
    RequestTrail,
    Requeued,
    RequeueFilter,
    WorkItem,
)
from consumer.model import Status


class LedgerUnavailable(TransientError):
    """The database cannot be reached right now; the operation had no effect."""


class LedgerRejected(RejectedError):
    """The database refused the data itself (a NUL character PostgreSQL cannot store, a
    value too large for an index): retrying the same rows can never succeed, so the caller
    must isolate and reject them rather than back off. The operation had no effect."""


class Ledger(Protocol):
    def migrate(self) -> None:
        """Create or upgrade the schema; safe to call from several replicas at once."""

    def missing_migrations(self) -> list[int]:
        """Schema versions this code expects that the ledger has not applied (empty: current)."""

    def ping(self) -> None:
        """Raise LedgerUnavailable unless the database answers and would take a write
        within about a second (readiness: a ledger that only answers reads is not ready)."""

    def record_requests(self, batch: Sequence[NewRequest], now: datetime) -> RecordResult:
        """Store new requests, their items (QUEUED), skipped vendor scopes and their events.

        Idempotent on request_id: a request already stored, or repeated in the batch, is
        reported as a duplicate and changes nothing.
        """

    def ready_items(self, vendor: str, now: datetime, limit: int) -> ReadySummary:
        """Items that a claim would return now (counted up to `limit`)."""

    def claim_items(
        self, vendor: str, now: datetime, limit: int, owner: str, lease_until: datetime
    ) -> list[WorkItem]:
        """Lease up to `limit` QUEUED items whose next attempt is due, oldest first, for
        `lease_until - now` on the database's clock.

        Items leased by another owner are skipped until their lease expires, so the items
        of a worker that died are sent again after the lease.
        """

    def next_poll_due(self, vendor: str) -> datetime | None:
        """When the vendor's next open job not leased to anyone falls due for a poll (it
        may have passed), or None if no job waits: how long an idle poller may sleep."""

    def claim_due_jobs(
        self, vendor: str, now: datetime, limit: int, owner: str, lease_until: datetime
    ) -> list[DueJob]:
        """Lease open jobs whose `next_poll_at` has passed, with their open items, for
        `lease_until - now` on the database's clock."""

    def apply(self, change: Change, now: datetime) -> Applied:
        """Apply item and job updates atomically, release their leases, and record the
        status events they cause (vendor scope, then request scope). Returns the new
        statuses of the scopes that changed, for metrics.

        With `change.owner` set, rows no longer leased to that owner (another replica
        re-claimed them after the lease ran out) are left alone and counted in
        `lease_lost`; the rest of the change is applied."""

    def pending_events(self, limit: int) -> list[OutboxEvent]:
        """Unpublished status events in the order they were recorded."""

    def mark_published(self, seqs: Sequence[int], now: datetime) -> None:
        """Remove events from the outbox (they stay in the history)."""

    def try_lease(self, name: str, owner: str, now: datetime, until: datetime) -> bool:
        """Take or renew a named lease (e.g. the single outbox publisher) for
        `until - now` on the database's clock, if it is free, expired or already ours."""

    def trail(self, request_id: str) -> RequestTrail | None:
        """A request's audit trail, or None if the request is unknown."""

    def item_counts(self, open_only: bool = False) -> dict[tuple[str, Status], int]:
        """Items per (vendor, status), for the `erasure_items` gauge. `open_only` counts
        only items that can still change, through an index on those: its cost follows the
        backlog, not the whole history."""

    def oldest_open_request_at(self) -> datetime | None:
        """`requested_at` of the oldest request without a terminal request status."""

    def outbox_backlog(self) -> int:
        """Status events recorded but not yet published."""

    def quota_used(self, vendor: str, since: datetime) -> int:
        """Identifiers sent to `vendor` since `since` (reserved with `reserve_quota`)."""

    def take_call_slots(self, bucket: RateBucket, count: int) -> list[CallSlot]:
        """Take `count` calls from a rate shared by every replica on this ledger, on the
        database's clock, in one statement: the slots that many takes in a row would get,
        the furthest last. Never refuses: when the bucket is empty a slot lies ahead, and
        its call must wait `wait_seconds` before it is made."""

    def pause_bucket(self, bucket: RateBucket, seconds: float) -> None:
        """Grant no new call slot of `bucket` to any replica for `seconds` from now (the
        vendor's Retry-After); slots granted before stay granted."""

    def reserve_quota(
        self, vendor: str, wanted: int, quota: int, window: timedelta, now: datetime
    ) -> QuotaReservation:
        """Reserve up to `wanted` identifiers of `vendor`'s `quota` per rolling `window`
        ending at `now` (shared by every replica), before sending them; fewer, or none,
        when the window holds less. The reservation counts as sent at `now`."""

    def settle_quota(self, reservation: QuotaReservation, spent: int) -> None:
        """Say how many of a reservation's identifiers the vendor counted (0 when it surely
        did not take the call); the rest return to the quota."""

    def overdue_items(self, vendor: str, submitted_before: datetime) -> int:
        """Open items of `vendor` whose job was submitted before `submitted_before`."""

    # --- operator commands (consumer.ledger.operations, consumer.ledger.worklist) ---------

    def requeue(
        self, request_id: str, which: RequeueFilter, action: OperatorAction, now: datetime
    ) -> Requeued:
        """Send the request's FAILED vendor scopes that `which` picks again (contract §3):
        their FAILED items back to QUEUED with fresh attempts, due now, with no job and no
        lease; each scope emits QUEUED (previous_status FAILED, detail "requeued: <reason>")
        and gets an operator_actions row; the request is unfinished again and emits its new
        terminal status once every vendor scope is terminal again. Refused (nothing
        changed) for an unknown request or one without such a scope, so a second requeue
        is harmless."""

    def failed_request_ids(self, which: RequeueFilter, after: str | None, limit: int) -> list[str]:
        """Up to `limit` ids of requests with a FAILED vendor scope that `which` picks, in
        id order after `after` (pages for a bulk requeue)."""

    def count_failed(self, which: RequeueFilter) -> tuple[int, int]:
        """How many FAILED vendor scopes `which` picks, and of how many requests."""

    def extend(
        self,
        request_id: str,
        days: int,
        action: OperatorAction,
        deadlines: Deadlines,
        now: datetime,
    ) -> Extended:
        """Move the request's due date `days` later, recorded as an operator action;
        refused for an unknown or COMPLETED request, `days` < 1, or when the days extended
        in all would pass the regulation's maximum."""

    def list_requests(
        self,
        which: RequestFilter,
        now: datetime,
        deadlines: Deadlines,
        after: RequestSummary | None,
        limit: int,
    ) -> list[RequestSummary]:
        """Up to `limit` requests that `which` picks, by due date (then id), after `after`
        (the last one of the previous page)."""

    def deadline_counts(self, now: datetime, deadlines: Deadlines) -> DeadlineCounts:
        """Requests not COMPLETED at risk and overdue against their own due dates, and the
        requests with a FAILED vendor scope (for the gauges)."""

    def replays(
        self, topic: str, partition: int, offsets: Sequence[int]
    ) -> dict[int, ReplayRecord]:
        """Which of these dead letters (`topic`, `partition`, offsets) were replayed."""

    def record_replay(
        self, topic: str, partition: int, offset: int, action: OperatorAction, now: datetime
    ) -> bool:
        """Record that a dead letter was replayed; False if it already was."""

    # --- audit trail, report and retention (consumer.ledger.audit, .report, .retention) ---

    def verify_chain(self) -> ChainReport:
        """Walk the hash chain of events and operator actions in order, in bounded memory
        and one snapshot; the report names the first entry that does not match."""

    def report(self, start: datetime, end: datetime) -> AbstractContextManager[Iterator[ReportRow]]:
        """The requests received in [start, end) in order of receipt, streamed: consume the
        rows inside the `with` block (they come from one open read transaction)."""

    def lookup(self, identity_type: str, value: str, hash_key: bytes | None) -> list[LookupHit]:
        """The requests that carried this identity, by its raw value or, for minimised
        requests, by its keyed hash (found only with the same `hash_key`)."""

    def minimised_requests(self) -> int:
        """How many requests have their identity values replaced by keyed hashes."""

    def minimise(self, now: datetime, hash_key: bytes, after: timedelta, batch_size: int) -> int:
        """Replace the identity values of up to `batch_size` COMPLETED requests finished at
        least `after` ago with keyed hashes, in one short transaction; how many requests it
        minimised (0: none is left)."""

    def delete_expired(self, now: datetime, after: timedelta, batch_size: int) -> int:
        """Delete up to `batch_size` requests whose terminal status is at least `after` old
        (and whose events are all published) with their items, scopes, events, operator
        actions and the jobs no other item refers to, keeping the chain verifiable; how many
        requests it deleted (0: none is left)."""

    def scrub(self) -> bool:
        """Remove the bytes of values minimised or deleted from where the backend still
        keeps them (SQLite's WAL); False when it could not yet (call again later)."""

    def close(self) -> None: ...
