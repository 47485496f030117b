"""Per-vendor job polling: ask the vendor about jobs whose `next_poll_at` has come, and record
the answer in the ledger.

Cadence is per vendor (`poll_interval_seconds`, or the vendor's own `next_poll_seconds`:
Monetate goes on at once after a poll that found ids gone and backs off while its upload
is pending); a worker runs `max_in_flight` pollers per vendor, so that many polls are under
way at once, each call within the vendor's fleet-wide rate (see `call_gate`). A failed
poll backs off without touching the items, and counts in the job's `poll_failures`; a job
the vendor reports FAILED sends its items again, attempts permitting. An exception nobody
foresaw is a failed poll too, and after `max_attempts` of them in a row the job is FAILED
with the reason. A job still open `max_job_age_seconds` after submission is FAILED with
its open items: a vendor job that never ends must not hold its request open forever.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from consumer.ledger.protocol import LedgerUnavailable
from consumer.ledger.records import Change, DueJob, ItemUpdate, JobUpdate
from consumer.model import Status
from consumer.pipeline.attempts import backoff_seconds, retry_or_fail, settle
from consumer.pipeline.vendor_loop import VendorLoop, VendorLoopParts, lease_seconds
from consumer.runtime.metrics import VENDOR_JOBS_EXPIRED
from consumer.runtime.vendor_health import PROBE_INTERVAL_SECONDS
from consumer.vendors.base import (
    PermanentVendorError,
    PollResult,
    RetryableVendorError,
    VendorAuthError,
)

IDLE_WAIT_SECONDS = 1.0
"""Longest an idle poller sleeps: other replicas' new jobs are noticed within it."""
SOON_SECONDS = 0.05
"""Least an idle poller sleeps, when the next job is due already (another slot is about to
claim it): no loop of empty claims."""


class Poller(VendorLoop):
    def __init__(self, parts: VendorLoopParts) -> None:
        super().__init__(parts)
        VENDOR_JOBS_EXPIRED.labels(vendor=self.vendor)  # the series exists from 0

    def step(self) -> float:
        """Poll one job that is due now; return how long to wait before looking again.

        One job per claim, leased for that job's poll only: a worker that dies mid-poll
        strands one job for one lease, and no claimed job waits behind others' polls."""
        self._health.hold_back_while_down(self._stop)
        now = self._clock.now()
        lease = timedelta(seconds=lease_seconds(self._settings, self._settings.calls_per_poll))
        jobs = self._ledger.claim_due_jobs(self.vendor, now, 1, self._owner, now + lease)
        if not jobs:
            return self._until_next_due(now)
        job = jobs[0]
        change = self._poll(job)
        now = self._clock.now()
        expired = self._too_old(job, now) and _leaves_open(change)
        if expired:
            change = self._expire(job, change)
        self._record_poll(job, change)
        if expired:
            VENDOR_JOBS_EXPIRED.labels(vendor=self.vendor).inc()
        return 0.0

    def _until_next_due(self, now: datetime) -> float:
        """Sleep until the next job falls due, not a fixed second: a job submitted with
        `first_poll_after_seconds` of 1 would otherwise wait up to twice that."""
        due = self._ledger.next_poll_due(self.vendor)
        if due is None:
            return IDLE_WAIT_SECONDS
        return min(max((due - now).total_seconds(), SOON_SECONDS), IDLE_WAIT_SECONDS)

    def _poll(self, job: DueJob) -> Change:
        try:
            result = self._adapter.poll(job)
        except VendorAuthError as error:
            self._log.error("%s unusable until an operator acts (polling): %s", self.vendor, error)
            self._health.mark_down(str(error))
            return Change(jobs=(self._unchanged(job, self._clock.now(), PROBE_INTERVAL_SECONDS),))
        except RetryableVendorError as error:
            failures = job.poll_failures + 1
            self._log.warning("%s poll failed (%d in a row): %s", self.vendor, failures, error)
            delay = backoff_seconds(failures, error.retry_after)
            return Change(
                jobs=(self._unchanged(job, self._clock.now(), delay, failures, str(error)),)
            )
        except PermanentVendorError as error:
            result = PollResult(Status.FAILED, detail=str(error))
        except Exception as error:
            return self._failed_poll(job, self._unexpected("poll", error))
        self._health.mark_up()
        return self.change_for(job, result, self._clock.now())

    def _failed_poll(self, job: DueJob, detail: str) -> Change:
        """A counted failed poll: poll again after a backoff, or, once `max_attempts` polls
        in a row have failed so, fail the job (its items are sent again, attempts
        permitting)."""
        failures = job.poll_failures + 1
        now = self._clock.now()
        if failures >= self._settings.max_attempts:
            failed = PollResult(Status.FAILED, detail=f"{detail} ({failures} polls in a row)")
            return self.change_for(job, failed, now)
        delay = backoff_seconds(failures)
        return Change(jobs=(self._unchanged(job, now, delay, failures, detail),))

    def _record_poll(self, job: DueJob, change: Change) -> None:
        """Record the poll's change (retrying while the ledger is away); if the ledger
        refuses it, record a counted failed poll instead, so the job cannot stay claimed
        unrecorded."""
        try:
            self._record(change)
        except LedgerUnavailable:
            raise
        except Exception as error:
            detail = self._unexpected("poll (recording the answer)", error)
            self._record(self._failed_poll(job, detail))

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
        # applied; the rest follow the job's progress, which never goes back (an unknown
        # status word keeps the job where it was).
        settled_ids = {update.item_id for update in settled}
        moved = tuple(
            ItemUpdate(item.item_id, result.job_status)
            for item in job.items
            if item.item_id not in settled_ids and item.status.rank < result.job_status.rank
        )
        status = max(result.job_status, _progress(job), key=lambda s: s.rank)
        age = (now - job.submitted_at).total_seconds()
        delay = self._settings.next_poll_seconds(age, settled_some=bool(settled))
        next_poll = now + timedelta(seconds=delay)
        update = JobUpdate(job.job_id, status, next_poll, detail=result.detail)
        return Change(items=settled + moved, jobs=(update,))

    def _too_old(self, job: DueJob, now: datetime) -> bool:
        age = (now - job.submitted_at).total_seconds()
        return age > self._settings.max_job_age_seconds

    def _expire(self, job: DueJob, change: Change) -> Change:
        """Fail a job still open past `max_job_age_seconds`, and the items of it this poll
        did not settle: sending them again would not make the vendor finish."""
        detail = f"vendor job still open after {_duration(self._settings.max_job_age_seconds)}"
        self._log.warning("%s job %d: %s; failing it", self.vendor, job.job_id, detail)
        settled = tuple(update for update in change.items if update.status.is_terminal)
        settled_ids = {update.item_id for update in settled}
        failed = tuple(
            ItemUpdate(item.item_id, Status.FAILED, detail=detail)
            for item in job.items
            if item.item_id not in settled_ids
        )
        return Change(
            items=settled + failed,
            jobs=(JobUpdate(job.job_id, Status.FAILED, None, detail=detail),),
        )

    @staticmethod
    def _unchanged(
        job: DueJob, now: datetime, delay: float, failures: int = 0, detail: str | None = None
    ) -> JobUpdate:
        """Poll again after `delay`, leaving the job's status as its items show it."""
        return JobUpdate(
            job.job_id, _progress(job), now + timedelta(seconds=delay), failures, detail
        )


def _progress(job: DueJob) -> Status:
    """The job's status as its open items show it."""
    return max((item.status for item in job.items), key=lambda s: s.rank, default=Status.SUBMITTED)


def _leaves_open(change: Change) -> bool:
    return any(update.next_poll_at is not None for update in change.jobs)


def _duration(seconds: float) -> str:
    """`30 days`, `6 hours` or `90 s`: a limit as an operator reads it in a detail."""
    if seconds >= 86400:
        return f"{seconds / 86400:g} days"
    if seconds >= 3600:
        return f"{seconds / 3600:g} hours"
    return f"{seconds:g} s"
