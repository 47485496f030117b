"""Values that cross the ledger seam: what ingest records, what dispatch and the poller
claim and settle, what the outbox publishes and what `status` shows.

Dispatch and the poller never write SQL; they describe a `Change` and the ledger applies
it in one transaction, deriving scope statuses and status events from it.
"""

from __future__ import annotations

import enum
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
    due_at: datetime  # the legal deadline, from the configured `deadlines` (`Deadlines.due_date`)


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
    due_at: datetime | None = None
    extended_days: int = 0
    actions: tuple[ActionTrail, ...] = ()


# --- operator commands (requeue, extend, list, dlq replay) ------------------------------


@dataclass(frozen=True, slots=True)
class OperatorAction:
    """Who asks for an operator action and why: both go into the audit trail."""

    actor: str
    reason: str


@dataclass(frozen=True, slots=True)
class ActionTrail:
    """An operator action recorded against a request (`vendor` None: the whole request)."""

    at: datetime
    action: str
    vendor: str | None
    actor: str
    reason: str
    detail: str | None


class Refusal(enum.Enum):
    """Why the ledger refused an operator action; nothing was changed."""

    UNKNOWN_REQUEST = "unknown_request"
    NOTHING_FAILED = "nothing_failed"  # requeue: no FAILED vendor scope (left) to send again
    COMPLETED = "completed"  # extend: the erasure is done, there is no deadline left to move
    NOT_POSITIVE = "not_positive"  # extend: days must be 1 or more
    BEYOND_MAXIMUM = "beyond_maximum"  # extend: past the regulation's extension maximum


@dataclass(frozen=True, slots=True)
class RequeueFilter:
    """Which FAILED vendor scopes to send again: one vendor's or all (`vendor` None), and
    only those that failed at or after `failed_since` (None: whenever)."""

    vendor: str | None = None
    failed_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Requeued:
    """What a requeue of one request did: the vendor scopes sent again and their items
    moved from FAILED back to QUEUED, or why it was refused."""

    request_id: str
    vendors: tuple[str, ...] = ()
    items: int = 0
    refused: Refusal | None = None


@dataclass(frozen=True, slots=True)
class Extended:
    """What an extension did (or, with `refused`, would have done): the due date before and
    after, the days extended in all so far and the regulation's maximum."""

    request_id: str
    refused: Refusal | None = None
    previous_due_at: datetime | None = None
    due_at: datetime | None = None
    extended_days: int = 0
    maximum_days: int = 0


@dataclass(frozen=True, slots=True)
class RequestFilter:
    """The work list's filters; together they narrow it (a request must match each one set).

    open: the erasure is not done (every status but COMPLETED: a FAILED request is still an
    open obligation); failed: a vendor scope is FAILED; at_risk: not done and in the last
    quarter of its deadline or past it (`Deadlines.at_risk_from`); overdue: not done and
    past its due date."""

    open: bool = False
    failed: bool = False
    at_risk: bool = False
    overdue: bool = False


@dataclass(frozen=True, slots=True)
class RequestSummary:
    """One line of the work list: a request and the vendors it still waits for."""

    request_id: str
    regulation: Regulation
    status: Status
    received_at: datetime
    due_at: datetime
    extended_days: int
    open_vendors: tuple[str, ...]
    failed_vendors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DeadlineCounts:
    """Requests not COMPLETED (FAILED ones included) in the last quarter of their deadline
    or past it (`at_risk`) and past it (`overdue`), per regulation, and the requests with a
    FAILED vendor scope: the gauges that keep a lapsing obligation visible."""

    at_risk: dict[Regulation, int]
    overdue: dict[Regulation, int]
    with_failed_scope: int


@dataclass(frozen=True, slots=True)
class ReplayRecord:
    """A dead letter that `dlq replay` published again to the input topic."""

    partition: int
    offset: int
    actor: str
    reason: str
    replayed_at: datetime


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first chain entry that does not match: an event (`ref` its event_id), an
    operator action (`ref` its action id), a retention checkpoint or the chain head."""

    kind: str
    position: int
    ref: str | None
    request_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What `verify_chain` found: entries checked, entries recorded before the chain began,
    entries deleted by retention (vouched for by checkpoints), and the newest hash, which an
    auditor can note and compare later: the chain only ever grows from it."""

    checked: int
    unchained: int
    deleted: int
    head_position: int
    head_hash: str
    broken: ChainBreak | None


@dataclass(frozen=True, slots=True)
class VendorOutcome:
    vendor: str
    status: Status
    vendor_job_ids: tuple[str, ...]
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One request in the auditor's report."""

    request_id: str
    regulation: Regulation
    received_at: datetime
    due_at: datetime | None
    extended_days: int
    status: Status
    finished_at: datetime | None
    vendors: tuple[VendorOutcome, ...]


@dataclass(frozen=True, slots=True)
class LookupHit:
    """A request that carried the identity looked up; `minimised`: matched through its
    keyed hash, the raw value being gone."""

    request_id: str
    regulation: Regulation
    received_at: datetime
    status: Status
    finished_at: datetime | None
    minimised: bool
