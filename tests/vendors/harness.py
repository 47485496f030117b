"""What the adapter contract suite (`test_contract.py`) needs from each vendor.

Every vendor provides one harness (`harness_<vendor>.py`): its sandbox, settings pointing
at it, an adapter whose in-call sleeps are recorded instead of slept, and the vendor's
expected answers. The same contract tests then run every adapter against its sandbox.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from consumer.config import VendorSettings
from consumer.model import Regulation, Status
from consumer.sandbox.server import Sandbox
from consumer.vendors.base import ItemOutcome, PollResult, SubmittedJob, VendorAdapter
from consumer.work import DueJob, WorkItem


@dataclass
class RecordedSleeps:
    """Passed as the adapter's `sleep`: in-call waits (e.g. Retry-After) are recorded."""

    waits: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


_item_ids = itertools.count(1)


def work_items(
    vendor: str, identity_type: str, values: Sequence[str], destination: str | None = None
) -> list[WorkItem]:
    """Claimed items (unique ids, QUEUED, no attempt yet) for these identifier values."""
    now = datetime.now(UTC)
    return [
        WorkItem(
            item_id=next(_item_ids),
            request_id=str(uuid.uuid4()),
            vendor=vendor,
            identity_type=identity_type,
            identity_value=value,
            destination=destination,
            regulation=Regulation.GDPR,
            requested_at=now,
            attempts=0,
            status=Status.QUEUED,
        )
        for value in values
    ]


_job_ids = itertools.count(1)


def due_job(job: SubmittedJob, items: Sequence[WorkItem], job_id: int | None = None) -> DueJob:
    """The job as the poller would claim it: due now, with these open items."""
    return DueJob(
        job_id=next(_job_ids) if job_id is None else job_id,
        vendor=items[0].vendor,
        vendor_job_id=job.vendor_job_id,
        destination=job.destination,
        submitted_at=datetime.now(UTC),
        poll_failures=0,
        items=tuple(items),
    )


def poll_until_closed(adapter: VendorAdapter, job: DueJob, timeout: float = 5.0) -> PollResult:
    """Poll as the poller does (items the vendor settled leave the job) until the vendor
    closes the job; the result carries every outcome seen. A deadline, not a fixed wait:
    the sandboxes' fast clocks run in real time between polls."""
    deadline = time.monotonic() + timeout
    settled: dict[int, ItemOutcome] = {}
    while True:
        result = adapter.poll(job)
        settled.update((outcome.item_id, outcome) for outcome in result.outcomes)
        if result.job_status.is_terminal:
            return PollResult(result.job_status, tuple(settled.values()), result.detail)
        job = dataclasses.replace(
            job, items=tuple(i for i in job.items if i.item_id not in settled)
        )
        assert time.monotonic() < deadline, f"job {job.vendor_job_id} did not close in {timeout}s"
        time.sleep(0.01)


@dataclass(frozen=True)
class Expected:
    """The vendor's terminal statuses for an identifier it holds and one it does not."""

    existing: Status
    unknown: Status


class VendorHarness(Protocol):
    vendor: str
    expected: Expected
    submit_path: str  # path prefix of submission calls, for fault injection and counting
    poll_path: str | None  # path prefix of status calls; None when the vendor has none
    auth_path: str  # path prefix of the token/login call
    max_ids_per_call: int  # the vendor's hard limit (the sandbox rejects more)
    has_tokens: bool  # False when every call carries a static key (nothing to expire)

    def running(self) -> AbstractContextManager[Sandbox]:
        """Start the sandbox (fast clock) and stop it on exit."""

    def settings(self, sandbox: Sandbox, **overrides: object) -> VendorSettings:
        """Settings pointing at the sandbox (small timeouts, batch size at the vendor limit)."""

    def adapter(self, settings: VendorSettings, sleeps: RecordedSleeps) -> VendorAdapter: ...

    def seed(self, sandbox: Sandbox, value: str) -> None:
        """Make `value` an identifier the vendor holds."""

    def items(self, values: Sequence[str]) -> list[WorkItem]:
        """Claimed items for these identifier values (unique item ids, QUEUED, attempts 0)."""

    def expire_tokens(self, sandbox: Sandbox) -> None:
        """Invalidate every token the sandbox issued, so the next call gets a 401."""

    def refuse_credentials(self, sandbox: Sandbox) -> None:
        """Make the vendor answer 403 to our credentials from now on."""
