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

Any other exception out of an adapter is a bug or an answer nobody foresaw (absurdly deep
JSON, a malformed Location): dispatch and the poller count it as a failed attempt like a
retryable error (`unexpected`), so it can never resend the same ids unrecorded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from consumer.errors import ErasureError, FatalError, RejectedError, TransientError
from consumer.ledger.records import DueJob, WorkItem
from consumer.model import Status

log = logging.getLogger(__name__)

_MAX_REPORTED_WORDS = 1000
_reported_words: set[tuple[str, str]] = set()
_reported_lock = threading.Lock()


class VendorError(ErasureError):
    """A vendor call failed; `str(error)` never contains identity values or secrets."""


class RetryableVendorError(VendorError, TransientError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class VendorRateLimited(RetryableVendorError):
    pass


class PermanentVendorError(VendorError, RejectedError):
    pass


class VendorAuthError(VendorError, FatalError):
    pass


def unexpected(where: str, error: BaseException) -> RetryableVendorError:
    """A retryable error standing for an unexpected exception. It names only the class:
    the exception's message may quote a vendor's answer or an identifier."""
    return RetryableVendorError(f"{where}: unexpected {type(error).__name__}")


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


def shown_status_word(vendor: str, word: object) -> str:
    """A status word a vendor answered that we do not know, safe to show: letters, `_` and
    spaces, at most 32 (else "?", since it could be an echoed identifier). Logged at
    WARNING the first time each vendor uses it, so an API change is noticed but a job
    polled for weeks does not flood the log."""
    text = word if isinstance(word, str) else ""
    shown = text[:32] if text.replace("_", "").replace(" ", "").isalpha() else "?"
    with _reported_lock:
        first = (vendor, shown) not in _reported_words
        first = first and len(_reported_words) < _MAX_REPORTED_WORDS
        if first:
            _reported_words.add((vendor, shown))
    if first:
        log.warning("%s answered an unknown status %r; treating it as still open", vendor, shown)
    return shown


def unknown_job_status(vendor: str, word: object) -> PollResult:
    """A job status word we do not know: the job stays open and is polled again (until its
    `max_job_age_seconds`), rather than failed and its ids sent again."""
    shown = shown_status_word(vendor, word)
    return PollResult(Status.SUBMITTED, detail=f"unknown job status {shown!r}; polling again")


class VendorAdapter(Protocol):
    name: str

    def submit(self, items: Sequence[WorkItem]) -> SubmitResult:
        """Send one batch (at most the vendor's batch size). Blocks on HTTP (each call
        passes the fleet-wide `CallGate`, so the adapter does no pacing); raises VendorError."""

    def poll(self, job: DueJob) -> PollResult:
        """Ask the vendor about one job. Blocks on HTTP; raises VendorError."""

    def check(self) -> None:
        """Reach the vendor's auth endpoint; raises VendorError if that fails."""

    def close(self) -> None:
        """End sessions and release connections (e.g. log out of Acquia CDP)."""
