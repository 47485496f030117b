"""Values that cross the ledger seam: what ingest records, what dispatch and the poller
claim and settle, what the outbox publishes and what `status` shows.

Dispatch and the poller never write SQL; they describe a `Change` and the ledger applies
it in one transaction, deriving scope statuses and status events from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from consumer.model import ErasureRequest, Regulation, Status, StatusEvent


@dataclass(frozen=True, slots=True)
class ItemPlan:
    """One identifier to erase at one vendor destination (an Acoustic database, or None)."""

    vendor: str
    identity_type: str
    identity_value: str = field(repr=False)
    destination: str | None


@dataclass(frozen=True, slots=True)
class NewRequest:
    """A request as ingest records it: its items and the vendors it skips, with why."""

    request: ErasureRequest
    items: tuple[ItemPlan, ...]
    skipped: tuple[tuple[str, str], ...]  # (vendor, detail)


@dataclass(frozen=True, slots=True)
class RecordResult:
    accepted: tuple[str, ...]
    duplicates: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A claimed item: everything an adapter needs to send it, and its attempt count."""

    item_id: int
    request_id: str
    vendor: str
    identity_type: str
    identity_value: str = field(repr=False)
    destination: str | None
    regulation: Regulation
    requested_at: datetime
    attempts: int
    status: Status


@dataclass(frozen=True, slots=True)
class DueJob:
    """A claimed vendor job whose next poll is due, with its still-open items."""

    job_id: int
    vendor: str
    vendor_job_id: str
    destination: str | None
    submitted_at: datetime
    poll_failures: int
    items: tuple[WorkItem, ...]


@dataclass(frozen=True, slots=True)
class ItemUpdate:
    """New state of one item. QUEUED means "send again from `next_attempt_at`"."""

    item_id: int
    status: Status
    detail: str | None = None
    attempts: int | None = None
    next_attempt_at: datetime | None = None
    job_id: int | None = None


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job the vendor accepted; its items take `status`; it is polled from `next_poll_at`."""

    vendor: str
    vendor_job_id: str
    destination: str | None
    item_ids: tuple[int, ...]
    status: Status
    next_poll_at: datetime | None


@dataclass(frozen=True, slots=True)
class JobUpdate:
    """A poll's effect on a job; `next_poll_at=None` closes the job."""

    job_id: int
    status: Status
    next_poll_at: datetime | None
    poll_failures: int = 0
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class VendorSend:
    """Identifiers a vendor received in one submission, counted against its quota."""

    vendor: str
    identifiers: int


@dataclass(frozen=True, slots=True)
class Change:
    """One unit of work for the ledger: applied atomically, leases released.

    `owner` is the lease owner that claimed the rows (the id given to `claim_items` or
    `claim_due_jobs`). The ledger then touches only rows still leased to it: the items it
    claimed, and the jobs it claimed with their items. A worker whose call outlived its lease
    while another replica re-claimed the rows cannot overwrite that replica's newer state;
    the rows it lost are left alone and counted in `Applied.lease_lost`. `None` skips the
    check, for changes that follow no claim (tests and tools that set up state).
    """

    items: tuple[ItemUpdate, ...] = ()
    new_jobs: tuple[NewJob, ...] = ()
    jobs: tuple[JobUpdate, ...] = ()
    released_item_ids: tuple[int, ...] = ()
    sends: tuple[VendorSend, ...] = ()
    owner: str | None = None


class Applied(list[Status]):
    """What `Ledger.apply` did: the new statuses of the scopes that changed, in order (the
    list itself, so callers that only want those need nothing else), and `lease_lost`: how
    many of the change's items and jobs were left alone because their lease had passed to
    another owner (the caller logs and counts them; another worker now answers for them)."""

    __slots__ = ("lease_lost",)

    def __init__(self, statuses: Iterable[Status] = (), lease_lost: int = 0) -> None:
        super().__init__(statuses)
        self.lease_lost = lease_lost


@dataclass(frozen=True, slots=True)
class ReadySummary:
    """How many items wait to be sent (counted up to a limit) and since when the oldest waits."""

    count: int
    oldest_ready_at: datetime | None


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    seq: int
    event: StatusEvent
    requested_at: datetime


@dataclass(frozen=True, slots=True)
class ItemTrail:
    identity_type: str
    destination: str | None
    status: Status
    vendor_job_id: str | None
    updated_at: datetime
    detail: str | None


@dataclass(frozen=True, slots=True)
class VendorTrail:
    vendor: str
    status: Status
    items: tuple[ItemTrail, ...]


@dataclass(frozen=True, slots=True)
class RequestTrail:
    request_id: str
    status: Status
    regulation: Regulation
    requested_at: datetime
    received_at: datetime
    vendors: tuple[VendorTrail, ...]
    events: tuple[StatusEvent, ...]
