"""The worker's vocabulary: requests, identities, statuses and status events.

These are plain frozen values shared by every stage (codec, ingest, ledger, dispatch,
poller, outbox) so that no stage depends on another stage's internals.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Regulation(enum.StrEnum):
    GDPR = "GDPR"
    CCPA = "CCPA"
    OTHER = "OTHER"


class Status(enum.StrEnum):
    """Contract §3 statuses, declared in their forward order."""

    RECEIVED = "RECEIVED"
    QUEUED = "QUEUED"
    SUBMITTED = "SUBMITTED"
    IN_PROGRESS = "IN_PROGRESS"
    ACCEPTED = "ACCEPTED"
    COMPLETED = "COMPLETED"
    NOT_FOUND = "NOT_FOUND"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def rank(self) -> int:
        """Position in the forward order; every terminal status ranks above every open one."""
        return _RANK[self]


TERMINAL_STATUSES = frozenset(
    {Status.ACCEPTED, Status.COMPLETED, Status.NOT_FOUND, Status.SKIPPED, Status.FAILED}
)
_RANK = {status: index for index, status in enumerate(Status)}


@dataclass(frozen=True, slots=True)
class Identity:
    type: str
    value: str

    def __repr__(self) -> str:
        # Identity values are personal data: keep them out of reprs that reach logs.
        return f"Identity(type={self.type!r}, value=<{len(self.value)} chars>)"


@dataclass(frozen=True, slots=True)
class ErasureRequest:
    """A decoded, validated `subject.erasure.requested` event."""

    request_id: str
    requested_at: datetime
    regulation: Regulation
    identities: tuple[Identity, ...]
    vendors: tuple[str, ...] | None
    source: str | None
    trace_id: str | None


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """One `erasure.status.changed` event; `vendor=None` is the request scope."""

    event_id: str
    request_id: str
    vendor: str | None
    status: Status
    previous_status: Status | None
    vendor_job_id: str | None
    changed_at: datetime
    detail: str | None
