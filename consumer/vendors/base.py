"""The seam between the worker and a vendor: submit a batch, poll a job.

Adapters hold everything vendor-specific (URLs, auth, payloads, status words). Dispatch
and the poller only see these values and exceptions:

    VendorError
     ├── RetryableVendorError   try again later (5xx, timeouts, resets); may carry
     │   │                      the vendor's Retry-After
     │   └── VendorRateLimited  429: the vendor did not take the call, so it costs no
     │                          attempt; wait for its Retry-After
     ├── PermanentVendorError   the vendor rejected the request; retrying cannot help
     └── VendorAuthError        credentials were refused (403): stop calling this vendor
                                until they are fixed; items wait, they do not fail
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from consumer.model import Status
from consumer.work import DueJob, WorkItem


class VendorError(Exception):
    """A vendor call failed; `str(error)` never contains identity values or secrets."""


class RetryableVendorError(VendorError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class VendorRateLimited(RetryableVendorError):
    pass


class PermanentVendorError(VendorError):
    pass


class VendorAuthError(VendorError):
    pass


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """What became of one item. QUEUED means "send it again later" (attempts permitting)."""

    item_id: int
    status: Status
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class SubmittedJob:
    """A job the vendor accepted for some of the batch's items."""

    vendor_job_id: str
    destination: str | None
    item_ids: tuple[int, ...]
    status: Status = Status.SUBMITTED


@dataclass(frozen=True, slots=True)
class SubmitResult:
    jobs: tuple[SubmittedJob, ...] = ()
    outcomes: tuple[ItemOutcome, ...] = ()


@dataclass(frozen=True, slots=True)
class PollResult:
    """A job's state: open (SUBMITTED / IN_PROGRESS; outcomes, if any, settle the items the
    vendor already answered for, e.g. Monetate's per-id checks), finished (COMPLETED with
    per-item outcomes), or FAILED (the job as a whole; its items are resubmitted)."""

    job_status: Status
    outcomes: tuple[ItemOutcome, ...] = ()
    detail: str | None = None


class VendorAdapter(Protocol):
    name: str

    def submit(self, items: Sequence[WorkItem]) -> SubmitResult:
        """Send one batch (at most the vendor's batch size). Blocks on HTTP; raises VendorError."""

    def poll(self, job: DueJob) -> PollResult:
        """Ask the vendor about one job. Blocks on HTTP; raises VendorError."""

    def check(self) -> None:
        """Reach the vendor's auth endpoint; raises VendorError if that fails."""

    def close(self) -> None:
        """End sessions and release connections (e.g. log out of Acquia CDP)."""
