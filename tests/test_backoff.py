"""The one backoff rule (consumer/backoff.py) and the policies each caller gives it."""

from __future__ import annotations

import doctest
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import consumer.backoff
from consumer.backoff import BackoffPolicy, Jitter, backoff_delay
from consumer.pipeline.attempts import BACKOFF_CAP_SECONDS, ITEM_BACKOFF
from consumer.pipeline.ingest import IngestTuning
from consumer.pipeline.outbox import OutboxTuning
from consumer.runtime.loops import TRANSIENT_BACKOFF, UNEXPECTED_BACKOFF
from consumer.vendors.http import RetryPolicy


def test_the_module_examples_hold() -> None:
    assert doctest.testmod(consumer.backoff).failed == 0


def test_the_ceiling_doubles_from_the_base_up_to_the_cap() -> None:
    policy = BackoffPolicy(base_seconds=0.5, cap_seconds=10.0, jitter="full")
    ceilings = [backoff_delay(policy, failures, rand=lambda: 1.0) for failures in range(1, 8)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


@pytest.mark.parametrize(
    ("jitter", "draw", "expected"),
    [("full", 0.0, 0.0), ("full", 0.5, 2.0), ("equal", 0.0, 2.0), ("equal", 0.5, 3.0)],
)
def test_jitter_spreads_the_wait_below_the_ceiling(
    jitter: Jitter, draw: float, expected: float
) -> None:
    policy = BackoffPolicy(base_seconds=1.0, cap_seconds=60.0, jitter=jitter)
    assert backoff_delay(policy, 3, rand=lambda: draw) == expected  # ceiling 4 s


def test_without_jitter_the_wait_is_exact_whatever_the_draw() -> None:
    policy = BackoffPolicy(base_seconds=1.0, cap_seconds=60.0, jitter="none")
    assert backoff_delay(policy, 3, rand=lambda: 0.0) == 4.0


def test_retry_after_is_a_floor_up_to_the_cap_unless_the_policy_honours_more() -> None:
    capped = BackoffPolicy(base_seconds=1.0, cap_seconds=10.0, jitter="full")
    assert backoff_delay(capped, 1, retry_after=3.0, rand=lambda: 0.0) == 3.0
    assert backoff_delay(capped, 1, retry_after=600.0, rand=lambda: 0.0) == 10.0
    scheduled = BackoffPolicy(1.0, 10.0, "full", max_retry_after_seconds=math.inf)
    assert backoff_delay(scheduled, 1, retry_after=600.0, rand=lambda: 0.0) == 600.0


def test_a_long_outage_never_overflows_the_exponent() -> None:
    # 2.0 ** 1024 raises OverflowError: a loop retrying every 10 s would die after ~3 hours.
    policy = BackoffPolicy(base_seconds=0.5, cap_seconds=10.0, jitter="none")
    assert backoff_delay(policy, 100_000) == 10.0


@given(
    failures=st.integers(min_value=1, max_value=5000),
    retry_after=st.none() | st.floats(min_value=0, max_value=1e6),
    base=st.floats(min_value=0.001, max_value=60),
    cap=st.floats(min_value=0.001, max_value=900),
    jitter=st.sampled_from(["full", "equal", "none"]),
    draw=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_a_wait_is_never_above_the_cap_nor_below_an_honoured_retry_after(
    failures: int, retry_after: float | None, base: float, cap: float, jitter: Jitter, draw: float
) -> None:
    policy = BackoffPolicy(base, cap, jitter)
    delay = backoff_delay(policy, failures, retry_after, rand=lambda: draw)
    assert 0.0 <= delay <= cap
    assert delay >= min(retry_after or 0.0, cap)


def test_ingest_and_the_outbox_retry_without_jitter() -> None:
    ingest = IngestTuning(retry_initial=0.5, retry_max=10.0).retry_backoff
    assert [backoff_delay(ingest, n, rand=lambda: 0.0) for n in (1, 2, 5, 6)] == [0.5, 1, 8, 10]
    outbox = OutboxTuning(retry_initial=0.5, retry_max=30.0).retry_backoff
    assert backoff_delay(outbox, 7, rand=lambda: 0.0) == 30.0


def test_in_call_vendor_retries_use_full_jitter_within_the_policy() -> None:
    backoff = RetryPolicy(attempts=3, base_seconds=0.5, cap_seconds=10.0).backoff
    assert backoff == BackoffPolicy(0.5, 10.0, jitter="full")


def test_item_retries_honour_any_retry_after_and_loops_cap_theirs() -> None:
    assert ITEM_BACKOFF.jitter == "equal" and ITEM_BACKOFF.cap_seconds == BACKOFF_CAP_SECONDS
    assert backoff_delay(ITEM_BACKOFF, 1, retry_after=86400.0) == 86400.0
    assert backoff_delay(TRANSIENT_BACKOFF, 50, rand=lambda: 0.999) <= 30.0
    assert backoff_delay(UNEXPECTED_BACKOFF, 50, rand=lambda: 0.999) <= 60.0
