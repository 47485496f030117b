"""The ledger's guards, on both backends: lease-guarded writes, leases on the database's
clock, data the database refuses, a readiness ping that needs the write lock, and gauges
that read open rows only.

Leases run on the database's clock, so these tests end a lease by waiting out a short one
(`BLINK_SECONDS`), never by moving the caller's clock: a caller's clock is exactly what
must not be able to end one.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consumer.config import DeadlineSettings
from consumer.ledger import Ledger, LedgerRejected, LedgerUnavailable, open_ledger
from consumer.ledger.postgres import PostgresLedger
from consumer.ledger.records import Change, ItemUpdate, JobUpdate, NewJob, NewRequest, WorkItem
from consumer.ledger.sqlite import PING_WAIT_SECONDS
from consumer.runtime.gauges import OUTCOMES_REFRESH_SECONDS, REFRESH_SECONDS, LedgerGauges
from consumer.runtime.metrics import REGISTRY
from tests.ledger.test_ledger_contract import (
    BLINK_SECONDS,
    T0,
    S,
    at,
    claim,
    new_request,
    record,
    submit,
)
from tests.support.clock import ManualClock
from tests.support.settings import MONETATE
from tests.support.waiting import wait_until

LONG = timedelta(minutes=5)


def real_now() -> datetime:
    return datetime.now(UTC)


def job_for(items: list[WorkItem], name: str = "job-1") -> NewJob:
    return NewJob(items[0].vendor, name, None, tuple(i.item_id for i in items), S.SUBMITTED, at(30))


def reclaimed(ledger: Ledger, vendor: str, owner: str) -> list[WorkItem]:
    """What `owner` claims once a blink lease on those items has run out."""
    return wait_until(lambda: claim(ledger, vendor, owner=owner), 10, "a lease to run out")


# --- lease-guarded writes ----------------------------------------------------------------


def test_a_stale_owners_apply_is_refused_and_counted(ledger: Ledger) -> None:
    record(ledger, new_request("voyado", per_vendor=2, requested_at=at(-60)))
    kept = claim(ledger, "voyado", limit=1, owner="a", lease_until=T0 + LONG)
    lost = claim(ledger, "voyado", limit=1, owner="a", lease_until=at(BLINK_SECONDS))
    successor = reclaimed(ledger, "voyado", "b")
    assert [i.item_id for i in successor] == [i.item_id for i in lost]

    late = Change(new_jobs=(job_for(kept + lost, "late-job"),), owner="a")
    applied = ledger.apply(late, at(1))
    assert (list(applied), applied.lease_lost) == ([S.SUBMITTED], 1)
    assert ledger.item_counts() == {("voyado", S.SUBMITTED): 1, ("voyado", S.QUEUED): 1}
    assert claim(ledger, "voyado", owner="c") == []  # b's lease stands

    failed = Change(items=(ItemUpdate(lost[0].item_id, S.FAILED, "late"),), owner="a")
    assert ledger.apply(failed, at(2)).lease_lost == 1
    done = ledger.apply(Change(new_jobs=(job_for(successor, "job-2"),), owner="b"), at(3))
    assert done.lease_lost == 0
    assert ledger.item_counts() == {("voyado", S.SUBMITTED): 2}


def test_a_stale_pollers_apply_is_refused(ledger: Ledger) -> None:
    record(ledger, new_request("voyado", per_vendor=2))
    submit(ledger, claim(ledger, "voyado"))
    (stale,) = ledger.claim_due_jobs("voyado", at(30), 1, "p1", at(30 + BLINK_SECONDS))
    (fresh,) = wait_until(
        lambda: ledger.claim_due_jobs("voyado", at(30), 1, "p2", at(90)), 10, "p1's lease to end"
    )
    assert fresh.job_id == stale.job_id

    late = Change(
        items=tuple(ItemUpdate(i.item_id, S.COMPLETED) for i in stale.items),
        jobs=(JobUpdate(stale.job_id, S.COMPLETED, None),),
        owner="p1",
    )
    applied = ledger.apply(late, at(31))
    assert (list(applied), applied.lease_lost) == ([], 3)
    assert ledger.item_counts() == {("voyado", S.SUBMITTED): 2}

    progress = Change(
        items=tuple(ItemUpdate(i.item_id, S.IN_PROGRESS) for i in fresh.items),
        jobs=(JobUpdate(fresh.job_id, S.IN_PROGRESS, at(60)),),
        owner="p2",
    )
    assert ledger.apply(progress, at(32)) == [S.IN_PROGRESS]
    assert ledger.item_counts() == {("voyado", S.IN_PROGRESS): 2}


def test_a_lease_that_ran_out_unclaimed_still_applies(ledger: Ledger) -> None:
    record(ledger, new_request("voyado"))
    (item,) = claim(ledger, "voyado", owner="a", lease_until=at(BLINK_SECONDS))
    wait_until(lambda: ledger.ready_items("voyado", T0, 10).count, 10, "the lease to run out")
    applied = ledger.apply(Change(new_jobs=(job_for([item]),), owner="a"), at(1))
    assert (list(applied), applied.lease_lost) == ([S.SUBMITTED], 0)


# --- leases on the database's clock ------------------------------------------------------


def test_a_skewed_caller_clock_cannot_steal_a_live_lease(ledger: Ledger) -> None:
    record(ledger, new_request("voyado", per_vendor=2), new_request("monetate"))
    now = real_now()
    ahead, behind = now + timedelta(days=1), now - timedelta(days=1)
    (first, _) = claim(ledger, "voyado", now=now, owner="a", lease_until=now + LONG)
    assert ledger.ready_items("voyado", ahead, 10).count == 0
    assert claim(ledger, "voyado", now=ahead, owner="fast") == []

    # A clock a day behind still leases for the time it asks, not for "already over".
    assert claim(ledger, "monetate", now=behind, owner="slow", lease_until=behind + LONG)
    assert claim(ledger, "monetate", now=now, owner="b") == []

    submit(ledger, [first], now=now - timedelta(minutes=1))
    assert ledger.claim_due_jobs("voyado", now, 1, "p1", now + LONG)
    assert ledger.claim_due_jobs("voyado", ahead, 1, "fast", ahead + LONG) == []

    assert ledger.try_lease("outbox", "a", now, now + LONG)
    assert not ledger.try_lease("outbox", "fast", ahead, ahead + LONG)


def test_job_leases_run_out_on_the_database_clock(ledger: Ledger) -> None:
    record(ledger, new_request("voyado"))
    submit(ledger, claim(ledger, "voyado"))
    (due,) = ledger.claim_due_jobs("voyado", at(30), 1, "p1", at(30 + BLINK_SECONDS))
    again = wait_until(
        lambda: ledger.claim_due_jobs("voyado", at(30), 1, "p2", at(90)), 10, "the lease to end"
    )
    assert [job.job_id for job in again] == [due.job_id]


# --- data the database refuses -----------------------------------------------------------


def with_source(new: NewRequest, source: str) -> NewRequest:
    return replace(new, request=replace(new.request, source=source))


def test_a_nul_character_is_rejected_by_postgresql_and_stored_by_sqlite(ledger: Ledger) -> None:
    nul = with_source(new_request("voyado"), "web\x00form")
    if isinstance(ledger, PostgresLedger):
        with pytest.raises(LedgerRejected, match="NUL"):
            ledger.record_requests([nul], T0)
        assert ledger.trail(nul.request.request_id) is None  # rolled back, nothing stored
    else:
        record(ledger, nul)  # SQLite stores any string; the codec decides what is valid
    record(ledger, new_request("voyado"))  # the connection is still usable


def test_a_key_too_large_for_its_index_is_rejected_by_postgresql(ledger: Ledger) -> None:
    # Random text: PostgreSQL compresses an index key first, so repeated text would fit.
    vendor = f"v-{secrets.token_hex(1400)}"
    if isinstance(ledger, PostgresLedger):
        with pytest.raises(LedgerRejected, match="index row size"):
            record(ledger, new_request(vendor))
    else:
        record(ledger, new_request(vendor))  # SQLite has no such limit
    record(ledger, new_request("voyado"))


def test_text_that_is_not_unicode_is_rejected_without_quoting_it(ledger: Ledger) -> None:
    new = new_request("voyado")
    bad = replace(new, items=(replace(new.items[0], identity_value="secret\ud800@example.com"),))
    with pytest.raises(LedgerRejected) as refused:
        ledger.record_requests([bad], T0)
    assert "secret" not in str(refused.value)
    assert "surrogates not allowed" in str(refused.value)
    assert ledger.trail(new.request.request_id) is None
    record(ledger, new_request("voyado"))


def test_a_vendor_answer_the_database_cannot_store_is_rejected_whole(ledger: Ledger) -> None:
    record(ledger, new_request("voyado"))
    items = claim(ledger, "voyado", owner="w1")
    odd = replace(job_for(items), vendor_job_id="job-\ud800")
    with pytest.raises(LedgerRejected, match="not valid Unicode"):
        ledger.apply(Change(new_jobs=(odd,), owner="w1"), at(1))
    assert ledger.item_counts() == {("voyado", S.QUEUED): 1}  # rolled back, still leased
    assert ledger.apply(Change(new_jobs=(job_for(items),), owner="w1"), at(2)) == [S.SUBMITTED]


# --- readiness ping -----------------------------------------------------------------------


def test_ping_fails_fast_while_another_process_holds_the_sqlite_write_lock(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    ledger.migrate()
    other = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        assert ledger.trail("any") is None  # reads still work: that is not readiness
        started = time.monotonic()
        with pytest.raises(LedgerUnavailable, match="locked"):
            ledger.ping()
        assert time.monotonic() - started < PING_WAIT_SECONDS + 1.0
        other.execute("ROLLBACK")
        ledger.ping()
    finally:
        other.close()
        ledger.close()


# --- gauges -------------------------------------------------------------------------------


def test_open_item_counts_leave_out_finished_items(ledger: Ledger) -> None:
    record(ledger, new_request("voyado", per_vendor=3), new_request("monetate"))
    first, second, _ = claim(ledger, "voyado")
    submit(ledger, [first, second])
    ledger.apply(Change(items=(ItemUpdate(first.item_id, S.COMPLETED),)), at(1))
    assert ledger.item_counts(open_only=True) == {
        ("voyado", S.QUEUED): 1,
        ("voyado", S.SUBMITTED): 1,
        ("monetate", S.QUEUED): 1,
    }
    assert ledger.item_counts()[("voyado", S.COMPLETED)] == 1


def test_gauges_count_outcomes_less_often_than_open_items(ledger: Ledger) -> None:
    clock = ManualClock(T0)
    gauges = LedgerGauges(ledger, {"monetate": MONETATE}, DeadlineSettings(), clock)

    def items(status: S) -> float | None:
        labels = {"vendor": "monetate", "status": status.value}
        return REGISTRY.get_sample_value("erasure_items", labels)

    record(ledger, new_request("monetate", per_vendor=2))
    assert gauges.step() == REFRESH_SECONDS
    assert (items(S.QUEUED), items(S.COMPLETED)) == (2, 0)
    done = claim(ledger, "monetate", limit=1)
    ledger.apply(Change(items=(ItemUpdate(done[0].item_id, S.COMPLETED),)), at(1))
    clock.advance(REFRESH_SECONDS)
    gauges.step()
    assert (items(S.QUEUED), items(S.COMPLETED)) == (1, 0)  # outcomes wait their turn
    clock.advance(OUTCOMES_REFRESH_SECONDS)
    gauges.step()
    assert (items(S.QUEUED), items(S.COMPLETED)) == (1, 1)
