"""What the vendor tests need from each vendor, and the one rig they all build from it.

Every vendor provides one harness (`harness_<vendor>.py`, a `VendorHarness`): its sandbox,
settings pointing at it, an adapter whose in-call sleeps are recorded instead of slept,
and the vendor's expected answers. The adapter contract suite (`contract.py`) runs every
harness against the same scenarios; each vendor's own tests build a `Rig` (adapter,
sandbox, recorded sleeps) with `harness.rig(sandbox, **settings)`.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from consumer.config import VendorSettings
from consumer.ledger.records import DueJob, WorkItem
from consumer.model import Regulation, Status
from consumer.runtime.metrics import REGISTRY
from consumer.vendors.base import (
    ItemOutcome,
    PollResult,
    SubmittedJob,
    VendorAdapter,
)
from devtools.sandbox.server import Sandbox
from tests.support.waiting import wait_until

SandboxT = TypeVar("SandboxT", bound=Sandbox)
AdapterT = TypeVar("AdapterT", bound=VendorAdapter)


@dataclass
class RecordedSleeps:
    """Passed as the adapter's `sleep`: in-call waits (e.g. Retry-After) are recorded."""

    waits: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def vendor_calls(vendor: str, operation: str, outcome: str) -> float:
    """`erasure_vendor_calls_total` for one vendor, operation and outcome (0 if unseen)."""
    labels = {"vendor": vendor, "operation": operation, "outcome": outcome}
    return REGISTRY.get_sample_value("erasure_vendor_calls_total", labels) or 0.0


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
    settled: dict[int, ItemOutcome] = {}
    open_job = [job]

    def closed() -> PollResult | None:
        result = adapter.poll(open_job[0])
        settled.update((outcome.item_id, outcome) for outcome in result.outcomes)
        if result.job_status.is_terminal:
            return PollResult(result.job_status, tuple(settled.values()), result.detail)
        open_job[0] = dataclasses.replace(
            open_job[0], items=tuple(i for i in open_job[0].items if i.item_id not in settled)
        )
        return None

    return wait_until(closed, timeout, f"job {job.vendor_job_id} did not close", interval=0.01)


@dataclass(frozen=True)
class Expected:
    """The vendor's terminal statuses for an identifier it holds and one it does not."""

    existing: Status
    unknown: Status


@dataclass
class Rig(Generic[SandboxT, AdapterT]):
    """One adapter against its sandbox, with the in-call sleeps it asked for."""

    sandbox: SandboxT
    adapter: AdapterT
    sleeps: RecordedSleeps

    def count(self, path: str = "", method: str | None = None) -> int:
        """Calls the sandbox received under `path` (a prefix), of `method` if given."""
        return sum(
            1
            for call in self.sandbox.calls
            if call.path.startswith(path) and method in (None, call.method)
        )

    def submit_one_job(self, items: Sequence[WorkItem]) -> SubmittedJob:
        """Submit, expecting exactly one job and no item outcome."""
        result = self.adapter.submit(items)
        assert result.outcomes == ()
        (job,) = result.jobs
        return job

    def poll_until_done(self, job: DueJob, timeout: float = 5.0) -> PollResult:
        return poll_until_closed(self.adapter, job, timeout)


class HarnessFor(ABC, Generic[SandboxT, AdapterT]):
    """One vendor as the vendor tests see it: paths, limits, expected answers, and how to
    run, configure, seed and upset its sandbox (of type `SandboxT`) and build its adapter
    (an `AdapterT`). `VendorHarness` is any vendor's."""

    vendor: str
    identity_type: str  # what `items` erase by
    expected: Expected
    submit_path: str  # path prefix of submission calls, for fault injection and counting
    poll_path: str | None  # path prefix of status calls; None when the vendor has none
    auth_path: str  # path prefix of the token/login call
    max_ids_per_call: int  # the vendor's hard limit (the sandbox rejects more)
    has_tokens: bool = True  # False when every call carries a static key (nothing to expire)
    destination: str | None = None  # where `items` go, for vendors with several

    @abstractmethod
    def running(self) -> AbstractContextManager[SandboxT]:
        """Start the sandbox (fast clock) and stop it on exit."""

    @abstractmethod
    def settings(self, sandbox: SandboxT, **overrides: Any) -> VendorSettings:
        """Settings pointing at the sandbox (small timeouts, batch size at the vendor limit)."""

    @abstractmethod
    def adapter(self, settings: VendorSettings, sleeps: RecordedSleeps) -> AdapterT:
        """An adapter whose in-call sleeps are recorded in `sleeps`, not slept."""

    @abstractmethod
    def seed(self, sandbox: SandboxT, value: str) -> None:
        """Make `value` an identifier the vendor holds."""

    @abstractmethod
    def expire_tokens(self, sandbox: SandboxT) -> None:
        """Invalidate every token the sandbox issued, so the next call gets a 401."""

    @abstractmethod
    def refuse_credentials(self, sandbox: SandboxT) -> None:
        """Make the vendor answer 403 to our credentials from now on."""

    def items(self, values: Sequence[str]) -> list[WorkItem]:
        """Claimed items for these identifier values (unique item ids, QUEUED, attempts 0)."""
        return work_items(self.vendor, self.identity_type, values, self.destination)

    def rig(self, sandbox: SandboxT, **overrides: Any) -> Rig[SandboxT, AdapterT]:
        """An adapter built from `settings(sandbox, **overrides)`, with recorded sleeps."""
        sleeps = RecordedSleeps()
        return Rig(sandbox, self.adapter(self.settings(sandbox, **overrides), sleeps), sleeps)

    def calls(self, operation: str, outcome: str) -> float:
        """This vendor's `erasure_vendor_calls_total` for an operation and outcome."""
        return vendor_calls(self.vendor, operation, outcome)


VendorHarness = HarnessFor[Any, Any]
