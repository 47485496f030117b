"""Resubmission bounds and backoff shared by dispatch and the poller."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from consumer.ledger.records import WorkItem
from consumer.model import Regulation, Status
from consumer.pipeline.attempts import BACKOFF_CAP_SECONDS, backoff_seconds, retry_or_fail, settle

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def item(attempts: int) -> WorkItem:
    return WorkItem(
        1,
        "r",
        "acoustic",
        "email",
        "a@example.com",
        "1",
        Regulation.GDPR,
        NOW,
        attempts,
        Status.QUEUED,
    )


@given(st.integers(min_value=1, max_value=60), st.none() | st.floats(0, 3600))
def test_backoff_within_bounds_and_honours_retry_after(
    failures: int, retry_after: float | None
) -> None:
    delay = backoff_seconds(failures, retry_after)
    assert delay <= max(BACKOFF_CAP_SECONDS, retry_after or 0)
    assert delay >= (retry_after or 0)
    assert delay > 0


def test_requeue_until_attempts_are_spent() -> None:
    first = retry_or_fail(item(0), "500 from vendor", NOW, max_attempts=3)
    assert first.status is Status.QUEUED and first.attempts == 1
    assert first.next_attempt_at is not None and first.next_attempt_at > NOW
    last = retry_or_fail(item(2), "500 from vendor", NOW, max_attempts=3)
    assert last.status is Status.FAILED and last.attempts == 3
    assert last.detail == "gave up after 3 attempts: 500 from vendor"


def test_requeue_waits_at_least_retry_after() -> None:
    update = retry_or_fail(item(0), "429", NOW, max_attempts=5, retry_after=120)
    assert update.next_attempt_at is not None
    assert update.next_attempt_at >= NOW + timedelta(seconds=120)


def test_settle_passes_terminal_verdicts_through() -> None:
    update = settle(item(0), Status.NOT_FOUND, None, NOW, max_attempts=1)
    assert update.status is Status.NOT_FOUND and update.attempts is None
    assert settle(item(0), Status.QUEUED, None, NOW, max_attempts=1).status is Status.FAILED
