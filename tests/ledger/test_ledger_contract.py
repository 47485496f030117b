"""The `Ledger` contract, pinned once and run against both backends.

Each test describes behaviour the worker relies on (contract §3: one event per change, a
scope never moves backwards, nothing after a terminal status; leases that let replicas
share work; an outbox that survives restarts), so a backend that passes can replace the
other without the rest of the worker noticing.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.ledger import Ledger, LedgerUnavailable, open_ledger, sqlite
from consumer.ledger.deadlines import DEFAULT_DEADLINES
from consumer.ledger.migrations import migrations
from consumer.ledger.records import (
    Change,
    ItemPlan,
    ItemUpdate,
    JobUpdate,
    NewJob,
    NewRequest,
    WorkItem,
)
from consumer.ledger.rollup import is_forward, request_scope_status, vendor_scope_status
from consumer.model import ErasureRequest, Identity, Regulation, Status, StatusEvent
from tests.ledger.test_migrations import applied_versions
from tests.support import pg
from tests.support.waiting import wait_until

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
S = Status
# A lease short enough for a test to wait out (leases run on the database's clock).
BLINK_SECONDS = 0.2


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def due(request: ErasureRequest) -> datetime:
    return DEFAULT_DEADLINES.due_date(request.regulation, request.requested_at)


def new_request(
    *vendors: str,
    per_vendor: int = 1,
    skipped: Sequence[tuple[str, str]] = (),
    request_id: str | None = None,
    requested_at: datetime = T0,
) -> NewRequest:
    rid = request_id or str(uuid.uuid4())
    items = tuple(
        ItemPlan(
            vendor,
            "email",
            f"secret-{rid}-{vendor}-{n}@example.com",
            "10091" if vendor == "acoustic" else None,
        )
        for vendor in vendors
        for n in range(per_vendor)
    )
    request = ErasureRequest(
        rid,
        requested_at,
        Regulation.GDPR,
        tuple(Identity(item.identity_type, item.identity_value) for item in items),
        None,
        "test",
        None,
    )
    return NewRequest(request, items, tuple(skipped), due(request))


def record(ledger: Ledger, *requests: NewRequest, now: datetime = T0) -> None:
    result = ledger.record_requests(requests, now)
    assert result.accepted == tuple(new.request.request_id for new in requests)


def claim(
    ledger: Ledger,
    vendor: str,
    now: datetime = T0,
    limit: int = 100,
    owner: str = "w1",
    lease_until: datetime | None = None,
) -> list[WorkItem]:
    return ledger.claim_items(vendor, now, limit, owner, lease_until or now + timedelta(seconds=60))


def history(ledger: Ledger, rid: str) -> list[tuple[str | None, Status, Status | None]]:
    trail = ledger.trail(rid)
    assert trail is not None
    return [(e.vendor, e.status, e.previous_status) for e in trail.events]


def submit(
    ledger: Ledger, items: Sequence[WorkItem], job: str = "job-1", now: datetime = T0
) -> list[Status]:
    new_job = NewJob(
        items[0].vendor,
        job,
        items[0].destination,
        tuple(i.item_id for i in items),
        S.SUBMITTED,
        now + timedelta(seconds=30),
    )
    return ledger.apply(Change(new_jobs=(new_job,)), now)


def settle(
    ledger: Ledger,
    items: Sequence[WorkItem],
    status: Status,
    now: datetime = T0,
    detail: str | None = None,
) -> list[Status]:
    updates = tuple(ItemUpdate(i.item_id, status, detail) for i in items)
    return ledger.apply(Change(items=updates), now)


def assert_well_formed(events: Sequence[StatusEvent]) -> None:
    """Contract §3 for any history: previous_status chains, strictly forward, and nothing
    after a terminal status, per scope; event ids unique."""
    assert len({e.event_id for e in events}) == len(events)
    last: dict[tuple[str, str | None], Status] = {}
    for event in events:
        scope = (event.request_id, event.vendor)
        previous = last.get(scope)
        assert event.previous_status == previous
        assert previous is None or (not previous.is_terminal and event.status.rank > previous.rank)
        last[scope] = event.status


# --- recording ---------------------------------------------------------------------------


def test_record_creates_queued_scopes_items_and_events(ledger: Ledger) -> None:
    new = new_request("voyado", "acoustic", per_vendor=2)
    record(ledger, new, now=at(5).astimezone(timezone(timedelta(hours=2))))
    rid = new.request.request_id
    assert history(ledger, rid) == [
        (None, S.RECEIVED, None),
        ("voyado", S.QUEUED, None),
        ("acoustic", S.QUEUED, None),
    ]
    events = [o.event for o in ledger.pending_events(10)]
    assert all(e.changed_at == at(5) and e.request_id == rid for e in events)
    assert {e.changed_at.utcoffset() for e in events} == {timedelta(0)}
    assert all(uuid.UUID(e.event_id).version == 4 for e in events)
    assert ledger.item_counts() == {("voyado", S.QUEUED): 2, ("acoustic", S.QUEUED): 2}
    assert ledger.oldest_open_request_at() == T0
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.record_requests([new_request("voyado")], datetime(2024, 5, 1))
    assert ledger.outbox_backlog() == 3


def test_duplicates_in_store_and_in_batch_change_nothing(ledger: Ledger) -> None:
    stored, repeated = new_request("voyado"), new_request("voyado")
    record(ledger, stored)
    again = new_request("monetate", request_id=stored.request.request_id)
    second = new_request("acoustic", request_id=repeated.request.request_id)
    result = ledger.record_requests([again, repeated, second], at(1))
    assert result.accepted == (repeated.request.request_id,)
    assert result.duplicates == (stored.request.request_id, repeated.request.request_id)
    assert history(ledger, stored.request.request_id) == [
        (None, S.RECEIVED, None),
        ("voyado", S.QUEUED, None),
    ]
    trail = ledger.trail(repeated.request.request_id)
    assert trail is not None and [v.vendor for v in trail.vendors] == ["voyado"]
    assert ledger.item_counts() == {("voyado", S.QUEUED): 2}
    assert ledger.record_requests([], T0).accepted == ()


def test_skipped_vendor_gets_its_event_and_request_stays_open(ledger: Ledger) -> None:
    new = new_request("voyado", skipped=[("acoustic", "no identity of type email")])
    record(ledger, new)
    rid = new.request.request_id
    assert history(ledger, rid) == [
        (None, S.RECEIVED, None),
        ("voyado", S.QUEUED, None),
        ("acoustic", S.SKIPPED, None),
    ]
    skipped = [o.event for o in ledger.pending_events(10) if o.event.status is S.SKIPPED]
    assert [e.detail for e in skipped] == ["no identity of type email"]
    assert ledger.oldest_open_request_at() == T0


@pytest.mark.parametrize("skipped", [[("acoustic", "not enabled"), ("voyado", "no key")], []])
def test_request_without_open_vendor_scope_completes_at_once(
    ledger: Ledger, skipped: list[tuple[str, str]]
) -> None:
    new = new_request(skipped=skipped)
    record(ledger, new)
    events = history(ledger, new.request.request_id)
    assert events[0] == (None, S.RECEIVED, None)
    assert events[-1] == (None, S.COMPLETED, S.RECEIVED)
    assert len(events) == len(skipped) + 2
    assert ledger.oldest_open_request_at() is None


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(picks=st.lists(st.integers(0, 5), min_size=1, max_size=12), split=st.integers(0, 12))
def test_each_request_id_is_accepted_once(ledger: Ledger, picks: list[int], split: int) -> None:
    """Over any two batches, a request id is accepted at its first occurrence only and
    every other occurrence is reported as a duplicate."""
    ids = [str(uuid.uuid4()) for _ in range(6)]
    results = [
        ledger.record_requests([new_request("voyado", request_id=ids[i]) for i in part], T0)
        for part in (picks[:split], picks[split:])
    ]
    first_seen = list(dict.fromkeys(ids[i] for i in picks))
    assert [rid for r in results for rid in r.accepted] == first_seen
    assert sum(len(r.accepted) + len(r.duplicates) for r in results) == len(picks)
    for rid in first_seen:
        trail = ledger.trail(rid)
        assert trail is not None and len(trail.events) == 2
        assert [len(v.items) for v in trail.vendors] == [1]


def test_replicas_recording_the_same_requests_accept_each_once(
    ledger: Ledger, open_ledgers: Callable[[], Ledger]
) -> None:
    batch = [new_request("voyado", "monetate") for _ in range(300)]
    replicas = [open_ledgers() for _ in range(2)]
    start = threading.Barrier(len(replicas))
    accepted: list[tuple[str, ...]] = []

    def ingest(replica: Ledger) -> None:
        start.wait()
        accepted.append(replica.record_requests(batch, T0).accepted)

    threads = [threading.Thread(target=ingest, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(rid for ids in accepted for rid in ids) == sorted(
        new.request.request_id for new in batch
    )
    assert ledger.outbox_backlog() == 3 * len(batch)


# --- claims and leases -------------------------------------------------------------------


def test_claimed_items_are_leased_until_expiry(ledger: Ledger) -> None:
    new = new_request("voyado", per_vendor=3, requested_at=at(-3600))
    record(ledger, new, new_request("monetate"))
    first = claim(ledger, "voyado", limit=2, owner="a", lease_until=at(60))
    assert [i.identity_value for i in first] == [p.identity_value for p in new.items[:2]]
    assert first[0].regulation is Regulation.GDPR and first[0].requested_at == at(-3600)
    assert (first[0].attempts, first[0].status, first[0].vendor) == (0, S.QUEUED, "voyado")
    second = claim(ledger, "voyado", owner="b", lease_until=at(30))
    assert [i.identity_value for i in second] == [new.items[2].identity_value]
    assert claim(ledger, "voyado", now=at(29), owner="a") == []
    # Leases run on the database's clock: only real time ends them.
    brief = claim(ledger, "monetate", owner="a", lease_until=at(BLINK_SECONDS))
    again = wait_until(lambda: claim(ledger, "monetate", owner="c"), 10, "the lease to end")
    assert [i.item_id for i in again] == [i.item_id for i in brief]


def test_items_wait_for_their_next_attempt(ledger: Ledger) -> None:
    record(ledger, new_request("voyado", per_vendor=3))
    items = claim(ledger, "voyado", lease_until=at(1000))
    retry = ItemUpdate(items[0].item_id, S.QUEUED, "HTTP 503", attempts=1, next_attempt_at=at(120))
    assert ledger.apply(Change(items=(retry,), released_item_ids=(items[1].item_id,)), at(1)) == []
    summary = ledger.ready_items("voyado", at(2), 10)
    assert (summary.count, summary.oldest_ready_at) == (1, T0)
    claimed = claim(ledger, "voyado", now=at(2), lease_until=at(1000))
    assert [i.item_id for i in claimed] == [items[1].item_id]
    assert ledger.ready_items("voyado", at(119), 10).count == 0
    again = claim(ledger, "voyado", now=at(120))
    assert [(i.item_id, i.attempts) for i in again] == [(items[0].item_id, 1)]
    assert ledger.ready_items("monetate", at(500), 10).oldest_ready_at is None


def test_ready_items_counts_up_to_limit_and_claims_oldest_due_first(ledger: Ledger) -> None:
    later, earlier = new_request("voyado", per_vendor=2), new_request("voyado")
    record(ledger, later, now=at(10))
    record(ledger, earlier, now=at(5))
    summary = ledger.ready_items("voyado", at(10), 2)
    assert (summary.count, summary.oldest_ready_at) == (2, at(5))
    assert ledger.ready_items("voyado", at(9), 10).count == 1
    claimed = claim(ledger, "voyado", now=at(10))
    assert [i.request_id for i in claimed] == [earlier.request.request_id] + [
        later.request.request_id
    ] * 2
    assert claimed[1].item_id < claimed[2].item_id


def test_concurrent_claims_never_share_an_item(
    ledger: Ledger, open_ledgers: Callable[[], Ledger]
) -> None:
    record(ledger, *(new_request("voyado", per_vendor=4) for _ in range(150)))
    replicas = [open_ledgers() for _ in range(3)]
    start = threading.Barrier(len(replicas))
    claimed: list[list[int]] = [[] for _ in replicas]

    def drain(index: int) -> None:
        start.wait()
        while batch := claim(replicas[index], "voyado", limit=25, owner=f"r{index}"):
            claimed[index].extend(i.item_id for i in batch)

    threads = [threading.Thread(target=drain, args=(n,)) for n in range(len(replicas))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [item_id for ids in claimed for item_id in ids]
    assert len(every) == len(set(every)) == 600


# --- applying changes --------------------------------------------------------------------


def test_submission_creates_a_job_polled_when_due(ledger: Ledger) -> None:
    new = new_request("voyado", per_vendor=2)
    record(ledger, new)
    items = claim(ledger, "voyado")
    assert submit(ledger, items, "job-1", now=at(1)) == [S.SUBMITTED]
    assert history(ledger, new.request.request_id)[-1] == ("voyado", S.SUBMITTED, S.QUEUED)
    assert ledger.pending_events(10)[-1].event.vendor_job_id == "job-1"
    assert ledger.claim_due_jobs("voyado", at(30), 10, "p1", at(90)) == []
    (due,) = ledger.claim_due_jobs("voyado", at(31), 10, "p1", at(90))
    assert (due.vendor_job_id, due.vendor, due.submitted_at, due.poll_failures) == (
        "job-1",
        "voyado",
        at(1),
        0,
    )
    assert [i.item_id for i in due.items] == [i.item_id for i in items]
    assert {i.status for i in due.items} == {S.SUBMITTED}
    assert ledger.claim_due_jobs("voyado", at(89), 10, "p2", at(150)) == []
    assert ledger.item_counts() == {("voyado", S.SUBMITTED): 2}


def test_the_next_poll_due_is_the_earliest_unleased_open_job(ledger: Ledger) -> None:
    assert ledger.next_poll_due("voyado") is None
    first, second = new_request("voyado"), new_request("voyado")
    record(ledger, first, second)
    one, two = claim(ledger, "voyado")
    submit(ledger, [one], "job-1", now=at(5))  # due at(35)
    submit(ledger, [two], "job-2", now=at(1))  # due at(31)
    assert ledger.next_poll_due("voyado") == at(31)
    assert ledger.next_poll_due("acoustic") is None
    (due,) = ledger.claim_due_jobs("voyado", at(31), 1, "p1", at(90))
    assert due.vendor_job_id == "job-2"
    assert ledger.next_poll_due("voyado") == at(35)  # job-2 is leased: not for another poller
    ledger.apply(Change(jobs=(JobUpdate(due.job_id, S.COMPLETED, None),)), at(32))
    (due,) = ledger.claim_due_jobs("voyado", at(35), 1, "p1", at(90))
    assert ledger.next_poll_due("voyado") is None


def test_polls_move_items_and_complete_the_request(ledger: Ledger) -> None:
    new = new_request("voyado", per_vendor=2, skipped=[("acoustic", "not enabled")])
    record(ledger, new)
    items = claim(ledger, "voyado")
    submit(ledger, items)
    (due,) = ledger.claim_due_jobs("voyado", at(30), 10, "p", at(90))
    poll = Change(
        items=(ItemUpdate(items[0].item_id, S.COMPLETED),),
        jobs=(JobUpdate(due.job_id, S.IN_PROGRESS, at(60), poll_failures=1),),
    )
    assert ledger.apply(poll, at(31)) == [S.IN_PROGRESS]
    (due,) = ledger.claim_due_jobs("voyado", at(60), 10, "p", at(90))
    assert (due.poll_failures, [i.item_id for i in due.items]) == (1, [items[1].item_id])
    done = Change(
        items=(ItemUpdate(items[1].item_id, S.COMPLETED),),
        jobs=(JobUpdate(due.job_id, S.COMPLETED, None),),
    )
    assert ledger.apply(done, at(61)) == [S.COMPLETED, S.COMPLETED]
    assert history(ledger, new.request.request_id)[-3:] == [
        ("voyado", S.IN_PROGRESS, S.SUBMITTED),
        ("voyado", S.COMPLETED, S.IN_PROGRESS),
        (None, S.COMPLETED, S.RECEIVED),
    ]
    assert ledger.claim_due_jobs("voyado", at(10_000), 10, "p", at(20_000)) == []
    assert ledger.oldest_open_request_at() is None


def test_a_requeued_item_never_moves_its_scope_back(ledger: Ledger) -> None:
    new = new_request("voyado")
    record(ledger, new)
    items = claim(ledger, "voyado")
    submit(ledger, items, "job-1")
    requeue = ItemUpdate(items[0].item_id, S.QUEUED, "job lost", attempts=1, next_attempt_at=at(5))
    assert ledger.apply(Change(items=(requeue,)), at(1)) == []
    again = claim(ledger, "voyado", now=at(5))
    assert submit(ledger, again, "job-2", now=at(6)) == []
    assert settle(ledger, again, S.COMPLETED, at(7)) == [S.COMPLETED, S.COMPLETED]
    assert history(ledger, new.request.request_id) == [
        (None, S.RECEIVED, None),
        ("voyado", S.QUEUED, None),
        ("voyado", S.SUBMITTED, S.QUEUED),
        ("voyado", S.COMPLETED, S.SUBMITTED),
        (None, S.COMPLETED, S.RECEIVED),
    ]
    assert ledger.pending_events(10)[-2].event.vendor_job_id == "job-2"


def test_failed_vendor_fails_the_request_and_nothing_follows(ledger: Ledger) -> None:
    new = new_request("voyado", "acoustic", "monetate", per_vendor=2)
    record(ledger, new)
    voyado, acoustic, monetate = (claim(ledger, v) for v in ("voyado", "acoustic", "monetate"))
    assert settle(ledger, voyado[:1], S.COMPLETED) == [S.IN_PROGRESS]
    assert settle(ledger, voyado[1:], S.NOT_FOUND) == [S.COMPLETED]
    assert settle(ledger, monetate, S.NOT_FOUND) == [S.NOT_FOUND]
    assert settle(ledger, acoustic, S.FAILED, detail="HTTP 400") == [S.FAILED, S.FAILED]
    trail = ledger.trail(new.request.request_id)
    assert trail is not None and trail.status is S.FAILED
    assert trail.events[-1].detail == "failed at: acoustic"
    assert [i.detail for i in trail.vendors[0].items] == ["HTTP 400"] * 2
    assert settle(ledger, acoustic, S.QUEUED) == []
    assert settle(ledger, acoustic, S.COMPLETED) == []
    assert_well_formed(trail.events)
    assert len(history(ledger, new.request.request_id)) == len(trail.events)


def test_concurrent_changes_of_one_request_complete_it_once(
    ledger: Ledger, open_ledgers: Callable[[], Ledger]
) -> None:
    requests = [new_request("voyado", "monetate") for _ in range(100)]
    record(ledger, *requests)
    work = {v: claim(ledger, v, limit=1000) for v in ("voyado", "monetate")}
    replicas = {v: open_ledgers() for v in work}
    in_step = threading.Barrier(len(work))

    def complete(vendor: str) -> None:
        for item in work[vendor]:
            in_step.wait()  # both replicas finish the same request at the same moment
            settle(replicas[vendor], [item], S.COMPLETED)

    threads = [threading.Thread(target=complete, args=(v,)) for v in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for new in requests:
        assert history(ledger, new.request.request_id)[-1] == (None, S.COMPLETED, S.RECEIVED)
    assert ledger.oldest_open_request_at() is None


_ITEM_STATUSES = [s for s in Status if s not in (S.RECEIVED, S.SKIPPED)]
_VENDORS = ("voyado", "monetate", "acoustic")


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shape=st.lists(st.integers(1, 3), min_size=1, max_size=len(_VENDORS)),
    steps=st.lists(st.tuples(st.integers(0, 8), st.sampled_from(_ITEM_STATUSES)), max_size=10),
)
def test_roll_up_follows_the_status_rules_through_any_changes(
    ledger: Ledger, shape: list[int], steps: list[tuple[int, Status]]
) -> None:
    """Whatever items do, the history is what the rules of consumer.ledger.rollup derive, one
    change at a time, and well formed. (Examples share the database: new ids each.)"""
    vendors = _VENDORS[: len(shape)]
    plans = tuple(
        ItemPlan(v, "email", f"{v}-{n}", None)
        for v, count in zip(vendors, shape, strict=True)
        for n in range(count)
    )
    request = new_request().request
    new = NewRequest(request, plans, (), due(request))
    record(ledger, new)
    rid = new.request.request_id
    items = [i for v in vendors for i in claim(ledger, v, limit=10_000) if i.request_id == rid]
    current = {i.item_id: S.QUEUED for i in items}
    emitted = dict.fromkeys(vendors, S.QUEUED)
    expected: list[tuple[str | None, Status, Status | None]] = [(None, S.RECEIVED, None)]
    expected += [(v, S.QUEUED, None) for v in vendors]
    for index, status in steps:
        item = items[index % len(items)]
        current[item.item_id] = status
        ledger.apply(Change(items=(ItemUpdate(item.item_id, status),)), T0)
        scope = vendor_scope_status([current[i.item_id] for i in items if i.vendor == item.vendor])
        if is_forward(emitted[item.vendor], scope):
            expected.append((item.vendor, scope, emitted[item.vendor]))
            emitted[item.vendor] = scope
            final = request_scope_status(emitted)
            if final is not None:
                expected.append((None, final[0], S.RECEIVED))
    assert history(ledger, rid) == expected
    trail = ledger.trail(rid)
    assert trail is not None
    assert_well_formed(trail.events)
    assert {v.vendor: v.status for v in trail.vendors} == emitted


# --- outbox, leases, trail, gauges -------------------------------------------------------


def test_outbox_hands_out_events_in_order_until_published(ledger: Ledger) -> None:
    first, second = new_request("voyado", requested_at=at(-60)), new_request("monetate")
    record(ledger, first, second)
    assert ledger.outbox_backlog() == 4
    head = ledger.pending_events(3)
    assert [o.seq for o in head] == sorted(o.seq for o in head)
    assert [(o.event.request_id, o.requested_at) for o in head[:2]] == [
        (first.request.request_id, at(-60))
    ] * 2
    ledger.mark_published([o.seq for o in head[:2]], at(1))
    ledger.mark_published([], at(1))
    assert ledger.outbox_backlog() == 2
    rest = ledger.pending_events(10)
    assert rest[0] == head[2] and rest[0].seq < rest[1].seq
    assert {o.event.request_id for o in rest} == {second.request.request_id}
    assert len(history(ledger, first.request.request_id)) == 2  # published stays in history


def test_named_lease_is_held_by_one_owner_at_a_time(ledger: Ledger) -> None:
    assert ledger.try_lease("outbox", "a", T0, at(10))
    assert not ledger.try_lease("outbox", "b", at(9), at(19))
    assert ledger.try_lease("outbox", "a", at(9), at(9 + BLINK_SECONDS))  # renewed, briefly
    wait_until(lambda: ledger.try_lease("outbox", "b", at(20), at(30)), 10, "a's lease to end")
    assert not ledger.try_lease("outbox", "a", at(21), at(31))
    assert ledger.try_lease("other", "a", at(21), at(31))


def test_trail_shows_every_scope_and_item_but_no_identity_value(ledger: Ledger) -> None:
    new = new_request(
        "voyado", "acoustic", skipped=[("monetate", "not enabled")], requested_at=at(-5)
    )
    record(ledger, new, now=at(1))
    submit(ledger, claim(ledger, "acoustic", now=at(1)), "job-7", now=at(2))
    trail = ledger.trail(new.request.request_id)
    assert trail is not None
    assert (trail.status, trail.regulation, trail.requested_at, trail.received_at) == (
        S.RECEIVED,
        Regulation.GDPR,
        at(-5),
        at(1),
    )
    assert [(v.vendor, v.status) for v in trail.vendors] == [
        ("acoustic", S.SUBMITTED),
        ("monetate", S.SKIPPED),
        ("voyado", S.QUEUED),
    ]
    (acoustic,) = trail.vendors[0].items
    assert (acoustic.identity_type, acoustic.destination, acoustic.status) == (
        "email",
        "10091",
        S.SUBMITTED,
    )
    assert (acoustic.vendor_job_id, acoustic.updated_at, acoustic.detail) == ("job-7", at(2), None)
    assert trail.vendors[1].items == ()
    assert trail.vendors[2].items[0].vendor_job_id is None
    assert [e.status for e in trail.events] == [
        S.RECEIVED,
        S.QUEUED,
        S.QUEUED,
        S.SKIPPED,
        S.SUBMITTED,
    ]
    for plan in new.items:
        assert plan.identity_value not in repr(trail)
    assert ledger.trail(str(uuid.uuid4())) is None


def test_gauges_count_items_and_find_the_oldest_open_request(ledger: Ledger) -> None:
    assert (ledger.item_counts(), ledger.oldest_open_request_at(), ledger.outbox_backlog()) == (
        {},
        None,
        0,
    )
    old, young = new_request("voyado", requested_at=at(-100)), new_request("voyado", "monetate")
    record(ledger, old, young)
    assert ledger.oldest_open_request_at() == at(-100)
    items = claim(ledger, "voyado")
    settle(ledger, [i for i in items if i.request_id == old.request.request_id], S.NOT_FOUND)
    assert ledger.oldest_open_request_at() == T0
    assert ledger.item_counts() == {
        ("voyado", S.NOT_FOUND): 1,
        ("voyado", S.QUEUED): 1,
        ("monetate", S.QUEUED): 1,
    }


# --- durability and failures -------------------------------------------------------------


def test_a_new_ledger_object_sees_everything_committed(
    ledger: Ledger, open_ledgers: Callable[[], Ledger]
) -> None:
    new = new_request("voyado", "monetate")
    record(ledger, new)
    submit(ledger, claim(ledger, "voyado"), "job-1")
    before = ledger.trail(new.request.request_id)
    ledger.close()
    reopened = open_ledgers()
    reopened.migrate()  # a restart migrates again: must be harmless
    assert reopened.trail(new.request.request_id) == before
    assert len(reopened.pending_events(100)) == 4
    assert [i.vendor for i in claim(reopened, "monetate")] == ["monetate"]


def test_concurrent_migrations_do_not_collide(open_ledgers: Callable[[], Ledger]) -> None:
    replicas = [open_ledgers() for _ in range(4)]
    start = threading.Barrier(len(replicas))
    errors: list[BaseException] = []

    def migrate(replica: Ledger) -> None:
        start.wait()
        try:
            replica.migrate()
        except BaseException as exc:  # reported below, with the thread's traceback
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    versions = applied_versions(replicas[0])
    assert len(versions) == len(set(versions)) == len(migrations(replicas[0].dialect))  # type: ignore[attr-defined]
    record(replicas[0], new_request("voyado"))


@pytest.fixture(params=["sqlite-dir-is-a-file", "sqlite-path-is-a-dir", "postgres-closed-port"])
def unreachable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite-dir-is-a-file":
        (tmp_path / "file").write_text("")
        return f"sqlite:///{tmp_path}/file/ledger.db"
    if request.param == "sqlite-path-is-a-dir":
        return f"sqlite:///{tmp_path}"
    with socket.socket() as sock:  # a port nobody listens on: bound but not listening
        sock.bind(("127.0.0.1", 0))
        return f"postgresql://postgres@127.0.0.1:{sock.getsockname()[1]}/postgres"


def test_unreachable_database_raises_ledger_unavailable(unreachable_url: str) -> None:
    ledger = open_ledger(unreachable_url)
    try:
        for call in (ledger.ping, ledger.migrate, ledger.outbox_backlog):
            with pytest.raises(LedgerUnavailable):
                call()
    finally:
        ledger.close()


def test_sqlite_write_lock_held_too_long_raises_ledger_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "BUSY_TIMEOUT_SECONDS", 0.05)
    ledger = open_ledger(f"sqlite:///{tmp_path}/ledger.db")
    ledger.migrate()
    blocker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(LedgerUnavailable, match="locked"):
            ledger.record_requests([new_request("voyado")], T0)
        blocker.execute("ROLLBACK")
        record(ledger, new_request("voyado"))
    finally:
        blocker.close()
        ledger.close()


def test_postgres_reconnects_after_losing_its_connection(postgres_dsn: str) -> None:
    with pg.fresh_database(postgres_dsn) as dsn:
        ledger = open_ledger(dsn)
        try:
            ledger.migrate()
            record(ledger, new_request("voyado"))
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            with pytest.raises(LedgerUnavailable):
                ledger.outbox_backlog()
            assert ledger.outbox_backlog() == 2
        finally:
            ledger.close()


# --- quota, overdue items, deadline risk -------------------------------------------------


def test_quota_counts_sends_in_the_window(ledger: Ledger) -> None:
    week = timedelta(days=7)
    ledger.reserve_quota("acquia_cdp", 200, 9990, week, at(0))
    ledger.reserve_quota("acquia_cdp", 150, 9990, week, at(100))
    ledger.reserve_quota("voyado", 1, 9990, week, at(100))
    assert ledger.quota_used("acquia_cdp", at(0)) == 350
    assert ledger.quota_used("acquia_cdp", at(50)) == 150, "sends before the window don't count"
    assert ledger.quota_used("voyado", at(0)) == 1
    assert ledger.quota_used("monetate", at(0)) == 0


def test_overdue_items_are_open_items_of_old_jobs(ledger: Ledger) -> None:
    old, fresh = new_request("monetate", per_vendor=2), new_request("monetate")
    record(ledger, old, fresh)
    items = claim(ledger, "monetate")
    submit(ledger, items[:2], job="old", now=at(0))
    submit(ledger, items[2:], job="fresh", now=at(1000))
    assert ledger.overdue_items("monetate", submitted_before=at(500)) == 2
    settle(ledger, items[:1], S.COMPLETED, now=at(1500))
    assert ledger.overdue_items("monetate", submitted_before=at(500)) == 1
    assert ledger.overdue_items("monetate", submitted_before=at(2000)) == 2
    assert ledger.overdue_items("acoustic", submitted_before=at(2000)) == 0


def test_terminal_vendor_events_say_why(ledger: Ledger) -> None:
    new = new_request("acoustic", per_vendor=2)
    record(ledger, new)
    items = claim(ledger, "acoustic")
    settle(ledger, items[:1], S.FAILED, detail="contact found but not deleted", now=at(1))
    settle(ledger, items[1:], S.COMPLETED, now=at(2))
    trail = ledger.trail(new.request.request_id)
    assert trail is not None
    failed = [e for e in trail.events if e.vendor == "acoustic" and e.status is S.FAILED]
    assert [e.detail for e in failed] == ["contact found but not deleted"]
    (final,) = [e for e in trail.events if e.vendor is None and e.status is S.FAILED]
    assert final.detail == "failed at: acoustic"
