"""Per-vendor job polling: ask the vendor about jobs whose `next_poll_at` has come, and record
the answer in the ledger.

Cadence is per vendor (`poll_interval_seconds`); a failed poll backs off without touching
the items; a job the vendor reports FAILED sends its items again, attempts permitting.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from consumer.attempts import backoff_seconds, retry_or_fail, settle
from consumer.model import Status
from consumer.vendor_health import PROBE_INTERVAL_SECONDS
from consumer.vendor_loop import VendorLoop, lease_seconds
from consumer.vendors.base import (
    PermanentVendorError,
    PollResult,
    RetryableVendorError,
    VendorAuthError,
)
from consumer.work import Change, DueJob, ItemUpdate, JobUpdate

IDLE_WAIT_SECONDS = 1.0


class Poller(VendorLoop):
    def step(self) -> float:
        """Poll one job that is due now; return how long to wait before looking again.

        One job per claim, leased for that job's poll only: a worker that dies mid-poll
        strands one job for one lease, and no claimed job waits behind others' polls."""
        self._health.hold_back_while_down(self._stop)
        now = self._clock()
        lease = timedelta(seconds=lease_seconds(self._settings, self._settings.calls_per_poll))
        jobs = self._ledger.claim_due_jobs(self.vendor, now, 1, self._owner, now + lease)
        if not jobs:
            return IDLE_WAIT_SECONDS
        self._ledger.apply(self._poll(jobs[0]), self._clock())
        return 0.0

    def _poll(self, job: DueJob) -> Change:
        try:
            result = self._adapter.poll(job)
        except VendorAuthError as error:
            self._log.error("%s unusable until an operator acts (polling): %s", self.vendor, error)
            self._health.mark_down(str(error))
            return Change(jobs=(self._unchanged(job, self._clock(), PROBE_INTERVAL_SECONDS),))
        except RetryableVendorError as error:
            failures = job.poll_failures + 1
            self._log.warning("%s poll failed (%d in a row): %s", self.vendor, failures, error)
            delay = backoff_seconds(failures, error.retry_after)
            return Change(jobs=(self._unchanged(job, self._clock(), delay, failures, str(error)),))
        except PermanentVendorError as error:
            result = PollResult(Status.FAILED, detail=str(error))
        self._health.mark_up()
        return self.change_for(job, result, self._clock())

    def change_for(self, job: DueJob, result: PollResult, now: datetime) -> Change:
        if result.job_status is Status.FAILED:
            detail = f"vendor job {job.vendor_job_id} failed: {result.detail or 'no detail'}"
            retries = tuple(
                retry_or_fail(item, detail, now, self._settings.max_attempts) for item in job.items
            )
            return Change(
                items=retries, jobs=(JobUpdate(job.job_id, Status.FAILED, None, detail=detail),)
            )
        max_attempts = self._settings.max_attempts
        by_id = {item.item_id: item for item in job.items}
        settled = tuple(
            settle(by_id[outcome.item_id], outcome.status, outcome.detail, now, max_attempts)
            for outcome in result.outcomes
            if outcome.item_id in by_id
        )
        if result.job_status.is_terminal:
            return Change(items=settled, jobs=(JobUpdate(job.job_id, result.job_status, None),))
        # Still open: items the vendor already settled (e.g. Monetate answers per id) are
        # applied; the rest follow the job's progress.
        settled_ids = {update.item_id for update in settled}
        moved = tuple(
            ItemUpdate(item.item_id, result.job_status)
            for item in job.items
            if item.item_id not in settled_ids and item.status.rank < result.job_status.rank
        )
        next_poll = now + timedelta(seconds=self._settings.poll_interval_seconds)
        return Change(
            items=settled + moved, jobs=(JobUpdate(job.job_id, result.job_status, next_poll),)
        )

    @staticmethod
    def _unchanged(
        job: DueJob, now: datetime, delay: float, failures: int = 0, detail: str | None = None
    ) -> JobUpdate:
        """Poll again after `delay`, leaving the job's status as its items show it."""
        status = max(
            (item.status for item in job.items), key=lambda s: s.rank, default=Status.SUBMITTED
        )
        return JobUpdate(job.job_id, status, now + timedelta(seconds=delay), failures, detail)
