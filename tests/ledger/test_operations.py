"""The operator commands' ledger side (issue 9), on both backends: requeue (contract §3's
one way back from a terminal status), due dates and extensions, the work list, the
deadline counts behind the gauges, and the record of replayed dead letters.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from consumer.ledger import Ledger
from consumer.ledger.deadlines import DEFAULT_DEADLINES, Deadlines
from consumer.ledger.records import (
    Change,
    ItemUpdate,
    NewRequest,
    OperatorAction,
    Refusal,
    RequestFilter,
    RequestSummary,
    RequestTrail,
    RequeueFilter,
)
from consumer.ledger.rollup import request_is_open
from consumer.model import Regulation, Status, StatusEvent
from tests.ledger.test_ledger_contract import T0, at, claim, history, new_request, record, settle

S = Status
ANNA = OperatorAction("anna", "vendor outage fixed")
ALL = RequeueFilter()
FAILED_AT = at(10)


def failed_request(
    ledger: Ledger, *vendors: str, failing: Sequence[str] = (), when: datetime = FAILED_AT
) -> str:
    """A recorded request whose `failing` vendors FAILED `when` and the others COMPLETED."""
    new = new_request(*vendors)
    record(ledger, new)
    rid = new.request.request_id
    for vendor in vendors:
        claimed = claim(ledger, vendor)
        items = [item for item in claimed if item.request_id == rid]
        others = tuple(item.item_id for item in claimed if item.request_id != rid)
        ledger.apply(Change(released_item_ids=others), when)
        status = S.FAILED if vendor in failing else S.COMPLETED
        settle(ledger, items, status, when, detail="HTTP 400" if status is S.FAILED else None)
    return rid


def trail_of(ledger: Ledger, rid: str) -> RequestTrail:
    trail = ledger.trail(rid)
    assert trail is not None
    return trail


def events(ledger: Ledger, rid: str) -> list[StatusEvent]:
    return list(trail_of(ledger, rid).events)


def assert_well_formed_with_requeues(history_: Sequence[StatusEvent]) -> None:
    """Contract §3 with its one way back: per scope, previous_status chains and statuses
    move forward, except a FAILED vendor scope requeued to QUEUED and a FAILED request
    scope emitting its new terminal status after a requeue."""
    last: dict[tuple[str, str | None], Status] = {}
    for event in history_:
        scope = (event.request_id, event.vendor)
        previous = last.get(scope)
        assert event.previous_status == previous
        if previous is S.FAILED and event.vendor is not None:
            assert event.status is S.QUEUED and (event.detail or "").startswith("requeued: ")
        elif previous is S.FAILED:
            assert event.status in (S.COMPLETED, S.FAILED)
        elif previous is not None:
            assert not previous.is_terminal and event.status.rank > previous.rank
        last[scope] = event.status


# --- requeue -----------------------------------------------------------------------------


def test_requeue_sends_a_failed_scope_again_and_the_request_completes(ledger: Ledger) -> None:
    rid = failed_request(ledger, "monetate", "voyado", failing=["voyado"])
    assert trail_of(ledger, rid).status is S.FAILED

    result = ledger.requeue(rid, ALL, ANNA, at(100))

    assert (result.vendors, result.items, result.refused) == (("voyado",), 1, None)
    (requeued,) = claim(ledger, "voyado", now=at(100))
    assert (requeued.attempts, requeued.status) == (0, S.QUEUED)
    settle(ledger, [requeued], S.COMPLETED, at(200))
    trail = trail_of(ledger, rid)
    assert trail.status is S.COMPLETED
    assert history(ledger, rid)[-4:] == [
        (None, S.FAILED, S.RECEIVED),
        ("voyado", S.QUEUED, S.FAILED),
        ("voyado", S.COMPLETED, S.QUEUED),
        (None, S.COMPLETED, S.FAILED),
    ]
    assert events(ledger, rid)[-3].detail == "requeued: vendor outage fixed"
    assert_well_formed_with_requeues(events(ledger, rid))
    (action,) = trail.actions
    assert (action.action, action.vendor, action.actor, action.reason, action.at) == (
        "requeue",
        "voyado",
        "anna",
        "vendor outage fixed",
        at(100),
    )


def test_a_requeued_scope_that_fails_again_fails_the_request_again(ledger: Ledger) -> None:
    rid = failed_request(ledger, "voyado", "acoustic", failing=["voyado", "acoustic"])

    assert ledger.requeue(rid, RequeueFilter("voyado"), ANNA, at(100)).vendors == ("voyado",)
    assert ledger.deadline_counts(at(100), DEFAULT_DEADLINES).with_failed_scope == 1
    settle(ledger, claim(ledger, "voyado", now=at(100)), S.FAILED, at(200), detail="HTTP 500")

    last = events(ledger, rid)[-1]
    assert (last.vendor, last.status, last.previous_status) == (None, S.FAILED, S.FAILED)
    assert last.detail == "failed at: acoustic, voyado"
    assert_well_formed_with_requeues(events(ledger, rid))
    assert trail_of(ledger, rid).vendors[1].items[0].detail == "HTTP 500"


def test_requeue_is_refused_without_a_failed_scope_and_twice_is_harmless(ledger: Ledger) -> None:
    rid = failed_request(ledger, "voyado", failing=["voyado"])
    open_one = new_request("voyado")
    record(ledger, open_one)

    assert ledger.requeue(rid, ALL, ANNA, at(100)).refused is None
    before = events(ledger, rid)
    again = ledger.requeue(rid, ALL, ANNA, at(101))
    assert (again.refused, again.vendors) == (Refusal.NOTHING_FAILED, ())
    assert events(ledger, rid) == before
    assert ledger.requeue(open_one.request.request_id, ALL, ANNA, T0).refused is (
        Refusal.NOTHING_FAILED
    )
    unknown = ledger.requeue(str(uuid.uuid4()), ALL, ANNA, T0)
    assert unknown.refused is Refusal.UNKNOWN_REQUEST
    other_vendor = failed_request(ledger, "voyado", "monetate", failing=["voyado"])
    refused = ledger.requeue(other_vendor, RequeueFilter("monetate"), ANNA, T0)
    assert refused.refused is Refusal.NOTHING_FAILED


def test_only_failed_items_of_a_scope_go_back_and_a_request_still_open_stays_so(
    ledger: Ledger,
) -> None:
    new = new_request("acoustic", "voyado", per_vendor=2)
    record(ledger, new)
    rid = new.request.request_id
    first, second = claim(ledger, "acoustic")
    settle(ledger, [first], S.COMPLETED, at(1))
    settle(ledger, [second], S.FAILED, at(2), detail="found and not deleted")
    assert history(ledger, rid)[-1] == ("acoustic", S.FAILED, S.IN_PROGRESS)

    assert ledger.requeue(rid, ALL, ANNA, at(3)).items == 1

    trail = trail_of(ledger, rid)
    assert trail.status is S.RECEIVED
    assert [item.status for item in trail.vendors[0].items] == [S.COMPLETED, S.QUEUED]
    assert [i.item_id for i in claim(ledger, "acoustic", now=at(3))] == [second.item_id]
    settle(ledger, claim(ledger, "voyado", now=at(4)), S.COMPLETED, at(4))
    settle(ledger, [second], S.NOT_FOUND, at(5))
    assert history(ledger, rid)[-2:] == [
        ("acoustic", S.COMPLETED, S.IN_PROGRESS),
        (None, S.COMPLETED, S.RECEIVED),
    ]
    assert_well_formed_with_requeues(events(ledger, rid))


def test_a_worker_that_lost_the_failed_item_cannot_touch_it_after_requeue(
    ledger: Ledger,
) -> None:
    rid = failed_request(ledger, "voyado", failing=["voyado"])
    ledger.requeue(rid, ALL, ANNA, at(100))
    (claimed,) = claim(ledger, "voyado", now=at(100), owner="new")

    late = Change(items=(ItemUpdate(claimed.item_id, S.FAILED, "stale"),), owner="w1")
    assert ledger.apply(late, at(101)).lease_lost == 1
    assert trail_of(ledger, rid).vendors[0].items[0].status is S.QUEUED


def test_replicas_requeueing_one_request_at_once_requeue_it_once(
    ledger: Ledger, open_ledgers: Callable[[], Ledger]
) -> None:
    rid = failed_request(ledger, "voyado", "monetate", failing=["voyado", "monetate"])
    replicas = [open_ledgers() for _ in range(3)]
    start = threading.Barrier(len(replicas))
    results = []

    def requeue(replica: Ledger) -> None:
        start.wait()
        results.append(replica.requeue(rid, ALL, ANNA, at(100)))

    threads = [threading.Thread(target=requeue, args=(replica,)) for replica in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(len(result.vendors) for result in results) == [0, 0, 2]
    assert [e.status for e in events(ledger, rid)].count(S.QUEUED) == 4  # 2 recorded, 2 requeued
    assert len(trail_of(ledger, rid).actions) == 2


def test_failed_requests_are_found_in_pages_by_vendor_and_time(ledger: Ledger) -> None:
    both = failed_request(ledger, "voyado", "monetate", failing=["voyado", "monetate"])
    later = sorted(failed_request(ledger, "voyado", failing=["voyado"], when=at(50)) for _ in "abc")
    failed_request(ledger, "voyado")  # completed: never found

    assert ledger.count_failed(ALL) == (5, 4)
    assert ledger.count_failed(RequeueFilter("voyado")) == (4, 4)
    assert ledger.count_failed(RequeueFilter(failed_since=at(50))) == (3, 3)
    assert ledger.count_failed(RequeueFilter("monetate", at(11))) == (0, 0)
    every = sorted([*later, both])
    assert _pages(ledger, RequeueFilter("voyado"), 2) == [every[:2], every[2:]]
    assert _pages(ledger, RequeueFilter(failed_since=at(50)), 2) == [later[:2], later[2:]]


def _pages(ledger: Ledger, which: RequeueFilter, size: int) -> list[list[str]]:
    pages, after = [], None
    while page := ledger.failed_request_ids(which, after, size):
        pages.append(page)
        after = page[-1]
    return pages


def test_the_one_way_back_is_for_a_failed_request_with_an_open_scope_only() -> None:
    assert request_is_open(S.RECEIVED, vendor_scope_open=False)
    assert request_is_open(S.FAILED, vendor_scope_open=True)
    assert not request_is_open(S.FAILED, vendor_scope_open=False)
    assert not request_is_open(S.COMPLETED, vendor_scope_open=True)


# --- due dates and extensions ------------------------------------------------------------


def with_regulation(
    new: NewRequest, regulation: Regulation, due_at: datetime | None = None
) -> NewRequest:
    """`new` under another regulation, due when given or else when that regulation says."""
    due = due_at or DEFAULT_DEADLINES.due_date(regulation, new.request.requested_at)
    return replace(new, request=replace(new.request, regulation=regulation), due_at=due)


def test_the_due_date_is_stored_with_the_request(ledger: Ledger) -> None:
    given = with_regulation(new_request("voyado"), Regulation.CCPA, due_at=at(86_400))
    default = with_regulation(new_request("voyado"), Regulation.CCPA)
    record(ledger, given, default)

    assert trail_of(ledger, given.request.request_id).due_at == at(86_400)
    trail = trail_of(ledger, default.request.request_id)
    assert trail.due_at == T0 + timedelta(days=45)
    assert trail.extended_days == 0 and trail.actions == ()


def test_extend_moves_the_due_date_up_to_the_regulations_maximum(ledger: Ledger) -> None:
    deadlines = Deadlines(gdpr_days=30, gdpr_extension_days=60)
    new = new_request("voyado")
    record(ledger, replace(new, due_at=deadlines.due_date(Regulation.GDPR, T0)))
    rid = new.request.request_id
    due = T0 + timedelta(days=30)

    first = ledger.extend(rid, 40, ANNA, deadlines, at(5))
    assert (first.refused, first.previous_due_at, first.due_at) == (None, due, due + timedelta(40))
    beyond = ledger.extend(rid, 21, ANNA, deadlines, at(6))
    assert (beyond.refused, beyond.extended_days, beyond.maximum_days) == (
        Refusal.BEYOND_MAXIMUM,
        40,
        60,
    )
    assert ledger.extend(rid, 0, ANNA, deadlines, at(6)).refused is Refusal.NOT_POSITIVE
    assert ledger.extend(rid, -3, ANNA, deadlines, at(6)).refused is Refusal.NOT_POSITIVE
    assert ledger.extend(rid, 20, OperatorAction("ben", "art. 12(3)"), deadlines, at(7)).due_at == (
        due + timedelta(days=60)
    )

    trail = trail_of(ledger, rid)
    assert (trail.due_at, trail.extended_days) == (due + timedelta(60), 60)
    assert [(a.action, a.actor, a.reason, a.vendor) for a in trail.actions] == [
        ("extend", "anna", "vendor outage fixed", None),
        ("extend", "ben", "art. 12(3)", None),
    ]
    assert trail.actions[0].detail == (
        "+40 days (40 of 60 used): due 2024-05-31T12:00:00Z -> 2024-07-10T12:00:00Z"
    )


def test_extend_is_refused_for_unknown_and_completed_requests(ledger: Ledger) -> None:
    done = failed_request(ledger, "voyado")
    assert ledger.extend(done, 5, ANNA, DEFAULT_DEADLINES, T0).refused is Refusal.COMPLETED
    unknown = ledger.extend(str(uuid.uuid4()), 5, ANNA, DEFAULT_DEADLINES, T0)
    assert unknown.refused is Refusal.UNKNOWN_REQUEST
    assert trail_of(ledger, done).actions == ()


# --- the work list and the deadline counts -----------------------------------------------


def _due_in(ledger: Ledger, days: float, regulation: Regulation = Regulation.GDPR) -> str:
    new = with_regulation(new_request("voyado"), regulation, due_at=T0 + timedelta(days=days))
    record(ledger, new)
    return new.request.request_id


def _listed(ledger: Ledger, which: RequestFilter, limit: int = 100) -> list[RequestSummary]:
    rows: list[RequestSummary] = []
    while page := ledger.list_requests(
        which, T0, DEFAULT_DEADLINES, rows[-1] if rows else None, limit
    ):
        rows += page
    return rows


def test_the_work_list_filters_and_sorts_by_due_date(ledger: Ledger) -> None:
    relaxed = _due_in(ledger, 20)  # GDPR at risk from 7.5 days before its due date
    risky = _due_in(ledger, 7)
    overdue = _due_in(ledger, -1)
    ccpa_risky = _due_in(ledger, 11, Regulation.CCPA)  # CCPA: from 11.25 days before
    failed = failed_request(ledger, "voyado", "monetate", failing=["voyado"])  # due in 30 days
    completed = failed_request(ledger, "voyado")

    every = [row.request_id for row in _listed(ledger, RequestFilter(), limit=2)]
    assert every[:4] == [overdue, risky, ccpa_risky, relaxed]
    assert sorted(every[4:]) == sorted([failed, completed])
    assert {r.request_id for r in _listed(ledger, RequestFilter(open=True))} == {
        relaxed,
        risky,
        overdue,
        ccpa_risky,
        failed,
    }
    assert [r.request_id for r in _listed(ledger, RequestFilter(at_risk=True))] == [
        overdue,
        risky,
        ccpa_risky,
    ]
    assert [r.request_id for r in _listed(ledger, RequestFilter(overdue=True))] == [overdue]
    (row,) = _listed(ledger, RequestFilter(failed=True))
    assert (row.request_id, row.status, row.failed_vendors, row.open_vendors) == (
        failed,
        S.FAILED,
        ("voyado",),
        (),
    )
    assert _listed(ledger, RequestFilter(failed=True, overdue=True)) == []
    (first,) = _listed(ledger, RequestFilter(overdue=True))
    assert (first.regulation, first.status, first.open_vendors, first.received_at) == (
        Regulation.GDPR,
        S.RECEIVED,
        ("voyado",),
        T0,
    )


def test_deadline_counts_include_failed_requests_against_their_own_due_date(
    ledger: Ledger,
) -> None:
    _due_in(ledger, 5)  # at risk
    _due_in(ledger, -2)  # overdue
    _due_in(ledger, 10, Regulation.CCPA)  # at risk (CCPA window 11.25 days)
    extended = _due_in(ledger, -1)
    failed = failed_request(ledger, "voyado", failing=["voyado"])  # due at T0 + 30 days
    failed_request(ledger, "voyado")  # completed: never counted

    later = T0 + timedelta(days=31)
    counts = ledger.deadline_counts(T0, DEFAULT_DEADLINES)
    assert counts.at_risk == {Regulation.GDPR: 3, Regulation.CCPA: 1, Regulation.OTHER: 0}
    assert counts.overdue == {Regulation.GDPR: 2, Regulation.CCPA: 0, Regulation.OTHER: 0}
    assert counts.with_failed_scope == 1
    ledger.extend(extended, 10, ANNA, DEFAULT_DEADLINES, T0)
    assert ledger.deadline_counts(T0, DEFAULT_DEADLINES).overdue[Regulation.GDPR] == 1
    assert ledger.deadline_counts(later, DEFAULT_DEADLINES).overdue[Regulation.GDPR] == 4
    at_risk = _listed_at(ledger, RequestFilter(at_risk=True), T0)
    assert len(at_risk) == sum(counts.at_risk.values()) - 1  # the extended one left the window
    ledger.requeue(failed, ALL, ANNA, T0)
    assert ledger.deadline_counts(T0, DEFAULT_DEADLINES).with_failed_scope == 0


def _listed_at(ledger: Ledger, which: RequestFilter, now: datetime) -> list[RequestSummary]:
    return ledger.list_requests(which, now, DEFAULT_DEADLINES, None, 1000)


# --- replayed dead letters ---------------------------------------------------------------


def test_a_dead_letter_replay_is_recorded_once(ledger: Ledger) -> None:
    assert ledger.record_replay("dlq", 0, 7, ANNA, at(1))
    assert not ledger.record_replay("dlq", 0, 7, OperatorAction("ben", "again"), at(2))
    assert ledger.record_replay("dlq", 1, 7, ANNA, at(3))
    assert ledger.record_replay("other-dlq", 0, 7, ANNA, at(3))

    found = ledger.replays("dlq", 0, [6, 7, 8])
    assert list(found) == [7]
    assert (found[7].actor, found[7].reason, found[7].replayed_at) == ("anna", ANNA.reason, at(1))
    assert ledger.replays("dlq", 2, []) == {}
