"""When an item is sent again, and when it stops being sent: shared by dispatch and the poller.

No vendor offers an idempotency key, so every resubmission is a real second submission;
attempts are therefore counted in the ledger and bounded by the vendor's `max_attempts`.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from consumer.backoff import BackoffPolicy, backoff_delay
from consumer.ledger.records import ItemUpdate, WorkItem
from consumer.model import Status

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 900.0
ITEM_BACKOFF = BackoffPolicy(
    BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS, jitter="equal", max_retry_after_seconds=math.inf
)
"""Equal jitter: never near zero, yet items failed together do not return together. Any
Retry-After is honoured: the wait is scheduled in the ledger, not slept."""


def backoff_seconds(failures: int, retry_after: float | None = None) -> float:
    """When an item or a job poll is tried again after `failures` consecutive failures
    (≥ 1): `ITEM_BACKOFF`, never shorter than the vendor's Retry-After."""
    return backoff_delay(ITEM_BACKOFF, failures, retry_after)


def retry_or_fail(
    item: WorkItem,
    detail: str,
    now: datetime,
    max_attempts: int,
    retry_after: float | None = None,
) -> ItemUpdate:
    """Queue the item for another attempt, or fail it once its attempts are spent."""
    attempts = item.attempts + 1
    if attempts >= max_attempts:
        return ItemUpdate(
            item.item_id,
            Status.FAILED,
            detail=f"gave up after {attempts} attempts: {detail}",
            attempts=attempts,
        )
    delay = backoff_seconds(attempts, retry_after)
    return ItemUpdate(
        item.item_id,
        Status.QUEUED,
        detail=detail,
        attempts=attempts,
        next_attempt_at=now + timedelta(seconds=delay),
    )


def settle(
    item: WorkItem, status: Status, detail: str | None, now: datetime, max_attempts: int
) -> ItemUpdate:
    """The ledger update for a vendor's verdict on one item; QUEUED means "send again"."""
    if status is Status.QUEUED:
        return retry_or_fail(
            item, detail or "the vendor asked for another attempt", now, max_attempts
        )
    return ItemUpdate(item.item_id, status, detail=detail)
