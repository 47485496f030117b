"""Per-vendor submission: claim queued items from the ledger, send them in batches, record
what the vendor said.

A batch is sent when it is full (`batch_size`) or when its oldest item has waited
`flush_interval_seconds`, and calls never exceed `rate_per_second` (every submission call
an adapter makes goes through the rate limiter, see `Pace`). Claims are leases sized for
every call a batch may make, so the items of a worker that died mid-call are sent again
once the lease expires. Whatever a submission raises ends as a recorded, counted attempt:
the same ids are never resent unrecorded. This runs on its own thread: the Kafka loop
never waits on a vendor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from consumer.backoff import BackoffPolicy, backoff_delay
from consumer.clock import SYSTEM_CLOCK, Clock
from consumer.ledger.protocol import LedgerUnavailable
from consumer.ledger.records import Change, ItemUpdate, NewJob, VendorSend, WorkItem
from consumer.model import Status
from consumer.pipeline.attempts import backoff_seconds, retry_or_fail, settle
from consumer.pipeline.vendor_loop import VendorLoop, VendorLoopParts, lease_seconds
from consumer.runtime.metrics import VENDOR_BATCH_SIZE, VENDOR_QUOTA_REMAINING
from consumer.vendors.base import (
    PermanentVendorError,
    RetryableVendorError,
    SubmitResult,
    SubmittedJob,
    VendorAuthError,
    VendorRateLimited,
)

IDLE_WAIT_SECONDS = 1.0
QUOTA_EXHAUSTED_WAIT_SECONDS = 60.0
MAX_JOB_ID_CHARS = 200
"""Longest vendor job id recorded. Ids travel in the ledger and in every status event, so
an absurd one (a vendor echoing a body) is refused rather than stored."""
RECORD_BACKOFF = BackoffPolicy(base_seconds=2.0, cap_seconds=10.0, jitter="equal")
"""Between attempts to record what a vendor answered: short, since until it is recorded
the items stay leased (and would be sent again once the lease runs out)."""


class RateLimiter:
    """Spaces calls `1 / rate` seconds apart (on the clock's monotonic time)."""

    def __init__(self, rate_per_second: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self._interval = 1.0 / rate_per_second
        self._clock = clock
        self._next_allowed = 0.0

    def wait_seconds(self) -> float:
        return max(0.0, self._next_allowed - self._clock.monotonic())

    def spend(self, calls: int) -> None:
        start = max(self._next_allowed, self._clock.monotonic())
        self._next_allowed = start + calls * self._interval


class Dispatcher(VendorLoop):
    def __init__(self, parts: VendorLoopParts) -> None:
        super().__init__(parts)
        self._limiter = RateLimiter(parts.settings.rate_per_second, parts.clock)

    def step(self) -> float:
        """Send at most one batch; return how long to wait before the next step."""
        self._health.hold_back_while_down(self._stop)
        wait = self._limiter.wait_seconds()
        if wait > 0:
            return wait
        now = self._clock.now()
        batch_size = min(self._settings.batch_size, self._quota_left(now))
        if batch_size <= 0:
            return QUOTA_EXHAUSTED_WAIT_SECONDS
        wait = self._seconds_until_batch_due(now, batch_size)
        if wait > 0:
            return wait
        lease = lease_seconds(
            self._settings, self._settings.calls_per_submit, 1.0 / self._settings.rate_per_second
        )
        items = self._ledger.claim_items(
            self.vendor, now, batch_size, self._owner, now + timedelta(seconds=lease)
        )
        if not items:
            return IDLE_WAIT_SECONDS
        self._send(items)
        if self._settings.rolling_quota is not None:
            self._quota_left(self._clock.now())  # keep the remaining-quota gauge current
        return 0.0

    def _quota_left(self, now: datetime) -> int:
        """Identifiers the vendor still takes in its rolling window (shared through the
        ledger by restarts and replicas); items beyond it wait QUEUED, they do not fail."""
        quota = self._settings.rolling_quota
        if quota is None:
            return self._settings.batch_size
        limit, window = quota
        left = max(0, limit - self._ledger.quota_used(self.vendor, now - timedelta(seconds=window)))
        VENDOR_QUOTA_REMAINING.labels(vendor=self.vendor).set(left)
        return left

    def _seconds_until_batch_due(self, now: datetime, batch_size: int) -> float:
        ready = self._ledger.ready_items(self.vendor, now, batch_size)
        if ready.count == 0 or ready.oldest_ready_at is None:
            return IDLE_WAIT_SECONDS
        if ready.count >= batch_size:
            return 0.0
        due_at = ready.oldest_ready_at + timedelta(seconds=self._settings.flush_interval_seconds)
        return min(max(0.0, (due_at - now).total_seconds()), IDLE_WAIT_SECONDS)

    def _pace(self) -> None:
        """The adapter's `Pace`: wait for the rate limit, then count one call."""
        wait = self._limiter.wait_seconds()
        if wait > 0 and self._stop.wait(wait):
            raise RetryableVendorError(f"{self.vendor} submit: stopping; call not sent")
        self._limiter.spend(1)

    def _send(self, items: Sequence[WorkItem]) -> None:
        """Submit and record the outcome; if that record is refused, record a counted
        retry instead (the vendor may have acted: the ids must not go out unrecorded)."""
        VENDOR_BATCH_SIZE.labels(vendor=self.vendor).observe(len(items))
        change = self._submit(items)
        try:
            self._record(change)
        except LedgerUnavailable:
            raise
        except Exception as error:
            detail = self._unexpected("submit (recording the answer)", error)
            self._record(self._retry_all(items, detail, None))

    def _submit(self, items: Sequence[WorkItem]) -> Change:
        """What the ledger must record of one submission, whatever happened."""
        try:
            result = self._adapter.submit(items, self._pace)
        except VendorAuthError as error:
            self._log.error(
                "%s unusable until an operator acts; items wait: %s", self.vendor, error
            )
            self._health.mark_down(str(error))
            return Change(released_item_ids=tuple(item.item_id for item in items))
        except VendorRateLimited as error:
            self._log.warning("%s is rate limiting us; the batch waits: %s", self.vendor, error)
            return self._wait_all(items, error.retry_after)
        except RetryableVendorError as error:
            self._log.warning("%s submission failed, will retry: %s", self.vendor, error)
            return self._retry_all(items, str(error), error.retry_after)
        except PermanentVendorError as error:
            self._log.error("%s rejected a batch of %d: %s", self.vendor, len(items), error)
            return replace(self._fail_all(items, str(error)), sends=self._sends(items))
        except Exception as error:
            # Its outcome is unknown, as after a timeout: a counted attempt.
            return self._retry_all(items, self._unexpected("submit", error), None)
        self._health.mark_up()
        return replace(self.change_for(items, result, self._clock.now()), sends=self._sends(items))

    def _sends(self, items: Sequence[WorkItem]) -> tuple[VendorSend, ...]:
        """What the vendor counts against its quota: the distinct identifiers it answered."""
        if self._settings.rolling_quota is None:
            return ()
        return (VendorSend(self.vendor, len({item.identity_value for item in items})),)

    def change_for(self, items: Sequence[WorkItem], result: SubmitResult, now: datetime) -> Change:
        """Jobs to poll, items settled at once, items to send again (also those of a job
        whose id cannot be recorded); anything the adapter did not mention is released for
        another try rather than lost."""
        by_id = {item.item_id: item for item in items}
        first_poll = now + timedelta(seconds=self._settings.first_poll_after_seconds)
        usable = [job for job in result.jobs if usable_job_id(job.vendor_job_id)]
        jobs = tuple(
            NewJob(
                self.vendor,
                job.vendor_job_id,
                job.destination,
                job.item_ids,
                job.status,
                first_poll,
            )
            for job in usable
        )
        max_attempts = self._settings.max_attempts
        updates = tuple(
            settle(by_id[outcome.item_id], outcome.status, outcome.detail, now, max_attempts)
            for outcome in result.outcomes
            if outcome.item_id in by_id
        ) + self._resend_unusable(result.jobs, by_id, now)
        mentioned = {item_id for job in jobs for item_id in job.item_ids}
        mentioned.update(update.item_id for update in updates)
        unmentioned = tuple(item_id for item_id in by_id if item_id not in mentioned)
        return Change(items=updates, new_jobs=jobs, released_item_ids=unmentioned)

    def _resend_unusable(
        self, jobs: Sequence[SubmittedJob], by_id: dict[int, WorkItem], now: datetime
    ) -> tuple[ItemUpdate, ...]:
        """Counted retries for the items of jobs whose id is unusable: without an id the
        job cannot be followed, so sending again is the only way on."""
        detail = f"{self.vendor} submit: the vendor's job id is unusable; sending again"
        return tuple(
            retry_or_fail(by_id[item_id], detail, now, self._settings.max_attempts)
            for job in jobs
            if not usable_job_id(job.vendor_job_id)
            for item_id in job.item_ids
            if item_id in by_id
        )

    def _retry_all(
        self, items: Sequence[WorkItem], detail: str, retry_after: float | None
    ) -> Change:
        now = self._clock.now()
        max_attempts = self._settings.max_attempts
        return Change(
            items=tuple(
                retry_or_fail(item, detail, now, max_attempts, retry_after) for item in items
            )
        )

    def _wait_all(self, items: Sequence[WorkItem], retry_after: float | None) -> Change:
        """Send again after the vendor's Retry-After, without spending an attempt: a 429
        means the vendor did not take the call."""
        resume = self._clock.now() + timedelta(seconds=backoff_seconds(1, retry_after))
        return Change(
            items=tuple(
                ItemUpdate(
                    item.item_id,
                    Status.QUEUED,
                    detail="rate limited by the vendor",
                    next_attempt_at=resume,
                )
                for item in items
            )
        )

    @staticmethod
    def _fail_all(items: Sequence[WorkItem], detail: str) -> Change:
        return Change(
            items=tuple(ItemUpdate(item.item_id, Status.FAILED, detail=detail) for item in items)
        )

    def _record(self, change: Change) -> None:
        """The vendor has acted: keep trying to record it, or a restart would resend."""
        failures = 0
        while True:
            try:
                self._apply(change)
                return
            except LedgerUnavailable as error:
                failures += 1
                if self._stop.is_set() and failures > 3:
                    self._log.error(
                        "could not record a %s submission before stopping: %s", self.vendor, error
                    )
                    raise
                self._log.warning(
                    "ledger unavailable recording a %s submission: %s", self.vendor, error
                )
                self._stop.wait(backoff_delay(RECORD_BACKOFF, failures))


def usable_job_id(vendor_job_id: str) -> bool:
    """Whether a job id can be recorded, polled and published: printable text (no control
    characters, no lone surrogates, which UTF-8 cannot encode) of 1 to `MAX_JOB_ID_CHARS`."""
    return 0 < len(vendor_job_id) <= MAX_JOB_ID_CHARS and vendor_job_id.isprintable()
