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

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from consumer.model import Regulation, Status
from consumer.work import (
    Applied,
    Change,
    DueJob,
    NewRequest,
    OutboxEvent,
    ReadySummary,
    RecordResult,
    RequestTrail,
    WorkItem,
)


class LedgerUnavailable(Exception):
    """The database cannot be reached right now; the operation had no effect."""


class LedgerRejected(Exception):
    """The database refused the data itself (a NUL character PostgreSQL cannot store, a
    value too large for an index): retrying the same rows can never succeed, so the caller
    must isolate and reject them rather than back off. The operation had no effect."""


class Ledger(Protocol):
    def migrate(self) -> None:
        """Create or upgrade the schema; safe to call from several replicas at once."""

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
        """Identifiers sent to `vendor` since `since` (recorded through `Change.sends`)."""

    def overdue_items(self, vendor: str, submitted_before: datetime) -> int:
        """Open items of `vendor` whose job was submitted before `submitted_before`."""

    def open_requests_before(self, cutoffs: Mapping[Regulation, datetime]) -> dict[Regulation, int]:
        """Open requests per regulation whose `requested_at` is before that regulation's
        cutoff (for legal-deadline risk)."""

    def close(self) -> None: ...
