"""Per-vendor submission: claim queued items from the ledger, send them in batches, record
what the vendor said.

A batch is sent when it is full (`batch_size` for each destination) or when its oldest
item has waited `flush_interval_seconds`. A worker runs `max_in_flight` dispatchers per
vendor (each with its own HTTP session and ledger connection), so that many batches are
under way at once; their calls keep to the vendor's rate for the whole fleet through the
vendor's `CallGate` (`consumer.pipeline.call_gate`). Claims are leases sized for every call
a batch may make, so the items of a worker that died mid-call are sent again once the
lease expires. Whatever a submission raises ends as a recorded, counted attempt: the same
ids are never resent unrecorded. This runs on its own threads: the Kafka loop never waits
on a vendor.

A vendor with a rolling quota (Acquia CDP) has the batch's distinct identifiers reserved
in the ledger before the call, atomically for every replica (`Ledger.reserve_quota`); items
beyond what the window holds wait QUEUED. Acquia counts the identifiers of the calls it
accepted, so the reservation stands when the vendor answered about the batch (or when
nobody knows what happened: an exception nobody foresaw), and is given back when the call
failed as a whole with a vendor error: refused (4xx, 429, credentials) or not processed
(5xx, no answer). A vendor outage then costs no quota for the week; should Acquia have
counted a call that got no answer, its own 429 holds the worker back until the window
frees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from consumer.ledger.limit_records import QuotaReservation
from consumer.ledger.protocol import LedgerUnavailable
from consumer.ledger.records import Change, ItemUpdate, NewJob, WorkItem
from consumer.model import Status
from consumer.pipeline.attempts import backoff_seconds, retry_or_fail, settle
from consumer.pipeline.vendor_loop import VendorLoop, lease_seconds
from consumer.runtime.metrics import VENDOR_BATCH_SIZE, VENDOR_QUOTA_REMAINING
from consumer.vendors.base import (
    PermanentVendorError,
    RetryableVendorError,
    SubmitResult,
    SubmittedJob,
    VendorAuthError,
    VendorError,
    VendorRateLimited,
)

IDLE_WAIT_SECONDS = 1.0
QUOTA_EXHAUSTED_WAIT_SECONDS = 60.0
MAX_JOB_ID_CHARS = 200
"""Longest vendor job id recorded. Ids travel in the ledger and in every status event, so
an absurd one (a vendor echoing a body) is refused rather than stored."""


class Dispatcher(VendorLoop):
    def step(self) -> float:
        """Send at most one batch; return how long to wait before the next step."""
        self._health.hold_back_while_down(self._stop)
        now = self._clock.now()
        claim_size = self._settings.items_per_claim
        wait = self._seconds_until_batch_due(now, claim_size)
        if wait > 0:
            self._refresh_quota_gauge(now)
            return wait
        lease = lease_seconds(
            self._settings, self._settings.calls_per_submit, 1.0 / self._settings.rate_per_second
        )
        items = self._ledger.claim_items(
            self.vendor, now, claim_size, self._owner, now + timedelta(seconds=lease)
        )
        if not items:
            self._refresh_quota_gauge(now)
            return IDLE_WAIT_SECONDS
        reservation, held = self._reserve_quota(items)
        if not held:
            return QUOTA_EXHAUSTED_WAIT_SECONDS
        self._send(held, reservation)
        return 0.0

    def _reserve_quota(
        self, items: Sequence[WorkItem]
    ) -> tuple[QuotaReservation | None, Sequence[WorkItem]]:
        """Reserve the batch's distinct identifiers in the vendor's rolling quota (shared
        by restarts and replicas through the ledger); the items it cannot hold now are
        released to wait QUEUED, they do not fail. The items to send, with the reservation."""
        quota = self._settings.rolling_quota
        if quota is None:
            return None, items
        limit, window = quota
        values = list(dict.fromkeys(item.identity_value for item in items))
        reservation = self._ledger.reserve_quota(
            self.vendor, len(values), limit, timedelta(seconds=window), self._clock.now()
        )
        VENDOR_QUOTA_REMAINING.labels(vendor=self.vendor).set(reservation.left)
        held = set(values[: reservation.identifiers])
        waiting = tuple(item.item_id for item in items if item.identity_value not in held)
        if waiting:
            self._record(Change(released_item_ids=waiting))
        return reservation, [item for item in items if item.identity_value in held]

    def _refresh_quota_gauge(self, now: datetime) -> None:
        """Keep the remaining-quota gauge current while nothing is sent: the window rolls on."""
        quota = self._settings.rolling_quota
        if quota is not None:
            limit, window = quota
            used = self._ledger.quota_used(self.vendor, now - timedelta(seconds=window))
            VENDOR_QUOTA_REMAINING.labels(vendor=self.vendor).set(max(0, limit - used))

    def _seconds_until_batch_due(self, now: datetime, batch_size: int) -> float:
        if batch_size == 1:
            return 0.0  # due whenever an item is ready: the claim itself tells, no count first
        ready = self._ledger.ready_items(self.vendor, now, batch_size)
        if ready.count == 0 or ready.oldest_ready_at is None:
            return IDLE_WAIT_SECONDS
        if ready.count >= batch_size:
            return 0.0
        due_at = ready.oldest_ready_at + timedelta(seconds=self._settings.flush_interval_seconds)
        return min(max(0.0, (due_at - now).total_seconds()), IDLE_WAIT_SECONDS)

    def _send(self, items: Sequence[WorkItem], reservation: QuotaReservation | None) -> None:
        """Submit and record the outcome; if that record is refused, record a counted
        retry instead (the vendor may have acted: the ids must not go out unrecorded)."""
        VENDOR_BATCH_SIZE.labels(vendor=self.vendor).observe(len(items))
        change, refused = self._submit(items)
        if reservation is not None and refused:
            self._give_back(reservation)
        try:
            self._record(change)
        except LedgerUnavailable:
            raise
        except Exception as error:
            detail = self._unexpected("submit (recording the answer)", error)
            self._record(self._retry_all(items, detail, None))

    def _give_back(self, reservation: QuotaReservation) -> None:
        """Return a refused call's identifiers to the quota; if the ledger is away they stay
        counted, which under-uses the quota until the window passes but never overruns it."""
        try:
            self._ledger.settle_quota(reservation, 0)
        except LedgerUnavailable as error:
            self._log.warning("%s quota: could not give back a reservation: %s", self.vendor, error)

    def _submit(self, items: Sequence[WorkItem]) -> tuple[Change, bool]:
        """What the ledger must record of one submission, whatever happened, and whether
        the call failed as a whole with a vendor error (the vendor did not take the batch)."""
        try:
            result = self._adapter.submit(items)
        except VendorError as error:
            return self._after_error(items, error), True
        except Exception as error:
            # Its outcome is unknown, as after a timeout: a counted attempt.
            return self._retry_all(items, self._unexpected("submit", error), None), False
        self._health.mark_up()
        return self.change_for(items, result, self._clock.now()), False

    def _after_error(self, items: Sequence[WorkItem], error: VendorError) -> Change:
        if isinstance(error, VendorAuthError):
            self._log.error(
                "%s unusable until an operator acts; items wait: %s", self.vendor, error
            )
            self._health.mark_down(str(error))
            return Change(released_item_ids=tuple(item.item_id for item in items))
        if isinstance(error, VendorRateLimited):
            self._log.warning("%s is rate limiting us; the batch waits: %s", self.vendor, error)
            return self._wait_all(items, error.retry_after)
        if isinstance(error, PermanentVendorError):
            self._log.error("%s rejected a batch of %d: %s", self.vendor, len(items), error)
            return self._fail_all(items, str(error))
        self._log.warning("%s submission failed, will retry: %s", self.vendor, error)
        retry_after = error.retry_after if isinstance(error, RetryableVendorError) else None
        return self._retry_all(items, str(error), retry_after)

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


def usable_job_id(vendor_job_id: str) -> bool:
    """Whether a job id can be recorded, polled and published: printable text (no control
    characters, no lone surrogates, which UTF-8 cannot encode) of 1 to `MAX_JOB_ID_CHARS`."""
    return 0 < len(vendor_job_id) <= MAX_JOB_ID_CHARS and vendor_job_id.isprintable()
