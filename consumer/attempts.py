"""When an item is sent again, and when it stops being sent: shared by dispatch and the poller.

No vendor offers an idempotency key, so every resubmission is a real second submission;
attempts are therefore counted in the ledger and bounded by the vendor's `max_attempts`.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from consumer.model import Status
from consumer.work import ItemUpdate, WorkItem

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 900.0


def backoff_seconds(failures: int, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter after `failures` consecutive failures (≥ 1),
    never shorter than the vendor's Retry-After."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(failures - 1, 0))
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after or 0.0)


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
