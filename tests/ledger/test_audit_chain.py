"""The tamper-evident audit trail on both ledgers: every event and operator action is
chained, `verify_chain` names the first entry edited, deleted or added behind the ledger's
back, and replicas writing at once keep one linear chain."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from datetime import datetime

import pytest

from consumer.ledger import Ledger
from consumer.ledger.audit import ACTION_COLUMNS, SqlAudit
from consumer.ledger.backend import SqlBackend
from consumer.ledger.deadlines import DEFAULT_DEADLINES
from consumer.ledger.migrations import migrations
from consumer.ledger.records import (
    ChainReport,
    Change,
    ItemUpdate,
    NewRequest,
    OperatorAction,
    RequeueFilter,
)
from consumer.ledger.rows import Row
from consumer.model import Status
from tests.ledger.test_ledger_contract import T0, at, claim, new_request, record, settle, submit
from tests.ledger.test_operations import failed_request

S = Status


def sql(ledger: Ledger, statement: str, params: Sequence[object] = ()) -> list[Row]:
    """Run one statement behind the ledger's back (a tamperer, or a test looking)."""
    assert isinstance(ledger, SqlBackend)
    with ledger._transaction(write=True) as tx:
        return tx.rows(statement, params)


def finish(
    ledger: Ledger, new: NewRequest, status: Status = S.COMPLETED, now: datetime = T0
) -> str:
    """Record `new` at `now` and take each of its vendor scopes through one job to
    `status`, all at `now` (so the request finishes then)."""
    record(ledger, new, now=now)
    rid = new.request.request_id
    for vendor in dict.fromkeys(item.vendor for item in new.items):
        claimed = claim(ledger, vendor, now=now, limit=1000)
        mine = [item for item in claimed if item.request_id == rid]
        others = tuple(item.item_id for item in claimed if item.request_id != rid)
        ledger.apply(Change(released_item_ids=others), now)
        submit(ledger, mine, job=f"job-{rid[:8]}-{vendor}", now=now)
        settle(ledger, mine, status, now)
    return rid


def record_action(ledger: Ledger, request_id: str, reason: str = "checked") -> None:
    """An operator action, recorded the one way the ledger records them."""
    assert isinstance(ledger, SqlAudit)
    row = (request_id, None, "extend", "anna", reason, "+5 days", ledger._to_db(T0))
    assert len(row) == len(ACTION_COLUMNS)
    with ledger._transaction(write=True) as tx:
        ledger._insert_actions(tx, [row])


def intact(report: ChainReport) -> ChainReport:
    assert report.broken is None, report.broken
    return report


def events_in(ledger: Ledger) -> list[tuple[int, str, str]]:
    return [
        (s, e, r)
        for s, e, r in sql(ledger, "SELECT seq, event_id, request_id FROM events ORDER BY seq")
    ]


def test_every_event_is_chained_and_a_fresh_ledger_verifies(ledger: Ledger) -> None:
    assert intact(ledger.verify_chain()).checked == 0
    finish(ledger, new_request("voyado", "acoustic", per_vendor=2))
    finish(ledger, new_request("monetate"), S.FAILED, at(5))
    record(ledger, new_request("voyado"))
    record_action(ledger, events_in(ledger)[0][2])
    hashes = sql(ledger, "SELECT seq, hash FROM events ORDER BY seq")
    assert all(re.fullmatch("[0-9a-f]{64}", h) for _, h in hashes)
    report = intact(ledger.verify_chain())
    assert (report.checked, report.unchained, report.deleted) == (len(hashes) + 1, 0, 0)
    assert report.head_position == len(hashes) + 1  # one sequence, no holes
    assert report.head_hash != hashes[-1][1]  # the action came last


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        ("UPDATE events SET detail = 'all fine' WHERE seq = ?", 0),
        ("UPDATE events SET status = 'FAILED' WHERE seq = ?", 0),
        ("UPDATE events SET changed_at = (SELECT max(changed_at) FROM events) WHERE seq = ?", 0),
        ("UPDATE events SET hash = upper(hash) WHERE seq = ?", 0),
        ("DELETE FROM events WHERE seq = ?", 1),
    ],
    ids=["detail", "status", "time", "hash", "deleted"],
)
def test_verify_names_the_first_event_edited_with_sql(
    ledger: Ledger, tamper: str, named: int
) -> None:
    """`named`: the event verify names is the edited one, or for a deletion the next."""
    for n in range(3):
        finish(ledger, new_request("voyado", "monetate"), now=at(n))
    rows = events_in(ledger)
    target = len(rows) // 2  # an event of the second request, recorded at(1)
    sql(ledger, tamper, (rows[target][0],))
    broken = ledger.verify_chain().broken
    seq, event_id, request_id = rows[target + named]
    assert broken is not None
    assert (broken.kind, broken.position, broken.ref, broken.request_id) == (
        "event",
        seq,
        event_id,
        request_id,
    )


def test_verify_finds_the_newest_events_missing_and_an_event_added(ledger: Ledger) -> None:
    finish(ledger, new_request("voyado"))
    ((newest, *_),) = sql(ledger, "SELECT max(seq) FROM events")
    saved = sql(ledger, "SELECT * FROM events WHERE seq = ?", (newest,))
    sql(ledger, "DELETE FROM events WHERE seq = ?", (newest,))
    broken = ledger.verify_chain().broken
    assert broken is not None and broken.kind == "head"
    marks = ", ".join("?" * len(saved[0]))
    sql(ledger, f"INSERT INTO events VALUES ({marks})", saved[0])
    intact(ledger.verify_chain())
    sql(
        ledger,
        "INSERT INTO events (seq, event_id, request_id, status, changed_at, hash)"
        " SELECT seq + 1, event_id, request_id, status, changed_at, hash FROM events WHERE seq = ?",
        (newest,),
    )
    broken = ledger.verify_chain().broken
    assert broken is not None and (broken.kind, broken.position) == ("event", newest + 1)


def test_operator_actions_are_in_the_same_chain(ledger: Ledger) -> None:
    rid = finish(ledger, new_request("voyado"))
    record_action(ledger, rid, "due date moved for a reason")
    record(ledger, new_request("monetate"))
    intact(ledger.verify_chain())
    sql(ledger, "UPDATE operator_actions SET reason = 'no reason'")
    broken = ledger.verify_chain().broken
    assert broken is not None and (broken.kind, broken.request_id) == ("action", rid)
    sql(ledger, "UPDATE operator_actions SET reason = 'due date moved for a reason'")
    intact(ledger.verify_chain())
    sql(
        ledger,
        "INSERT INTO operator_actions (request_id, action, actor, reason, at)"
        " SELECT request_id, action, actor, reason, at FROM operator_actions",
    )
    broken = ledger.verify_chain().broken
    assert broken is not None and broken.reason == "recorded outside the chain"


def test_replicas_writing_at_once_keep_one_linear_chain(
    ledger: Ledger, open_ledgers: Callable[[], Ledger]
) -> None:
    """Each replica records requests and settles them while another verifies: every
    verify sees a whole chain (one snapshot), and at the end it holds every event once."""
    replicas = [open_ledgers() for _ in range(3)]
    verifier = open_ledgers()
    done = threading.Event()
    errors: list[BaseException] = []
    verified: list[ChainReport] = []

    def work(replica: Ledger) -> None:
        try:
            for n in range(6):
                news = [new_request("voyado", "acoustic") for _ in range(5)]
                replica.record_requests(news, at(n))
                for new in news:
                    for vendor in ("voyado", "acoustic"):
                        items = sql(
                            replica,
                            "SELECT item_id FROM items WHERE request_id = ? AND vendor = ?",
                            (new.request.request_id, vendor),
                        )
                        done_items = tuple(ItemUpdate(item_id, S.COMPLETED) for (item_id,) in items)
                        replica.apply(Change(items=done_items), at(n))
        except BaseException as error:  # reported below
            errors.append(error)

    def verify() -> None:
        try:
            while not done.is_set():
                verified.append(verifier.verify_chain())
        except BaseException as error:  # reported below
            errors.append(error)

    checker = threading.Thread(target=verify)
    workers = [threading.Thread(target=work, args=(replica,)) for replica in replicas]
    checker.start()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(60)
    done.set()
    checker.join(60)
    assert not errors
    assert verified and all(report.broken is None for report in verified)
    rows = events_in(ledger)
    report = intact(ledger.verify_chain())
    assert report.checked == len(rows) == report.head_position == 3 * 6 * 5 * 6


def test_a_ledger_from_before_the_chain_keeps_its_events_outside_it(
    open_ledgers: Callable[[], Ledger],
) -> None:
    ledger = open_ledgers()
    assert isinstance(ledger, SqlBackend)
    with ledger._transaction(write=True) as tx:
        for migration in migrations(ledger.dialect)[:2]:
            for statement in migration.statements:
                tx.rows(statement)
        tx.rows("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        tx.rows("INSERT INTO schema_migrations VALUES (1, 'initial'), (2, 'obligations')")
        for n in range(3):
            tx.rows(
                "INSERT INTO events (event_id, request_id, status, changed_at)"
                " VALUES (?, 'old', 'RECEIVED', ?)",
                (f"old-{n}", ledger._to_db(T0)),
            )
    ledger.migrate()
    finish(ledger, new_request("voyado"))
    report = intact(ledger.verify_chain())
    assert (report.unchained, report.checked) == (3, len(events_in(ledger)) - 3)
    assert min(seq for seq, *_ in events_in(ledger)[3:]) == 4
    sql(ledger, "UPDATE events SET seq = 0 WHERE seq = 4")  # hiding an event among the old
    broken = ledger.verify_chain().broken
    assert broken is not None and broken.position == 5


def test_requeue_and_extend_record_their_actions_in_the_chain(ledger: Ledger) -> None:
    failed = failed_request(ledger, "voyado", "monetate", failing=["voyado"])
    anna = OperatorAction("anna", "vendor outage fixed")
    assert ledger.requeue(failed, RequeueFilter(), anna, at(20)).refused is None
    waiting = new_request("voyado")
    record(ledger, waiting)
    rid = waiting.request.request_id
    assert ledger.extend(rid, 5, anna, DEFAULT_DEADLINES, at(21)).refused is None
    intact(ledger.verify_chain())
    assert sql(ledger, "SELECT count(*) FROM operator_actions WHERE hash IS NOT NULL") == [(2,)]
    sql(ledger, "UPDATE operator_actions SET reason = 'nobody asked' WHERE action = 'extend'")
    broken = ledger.verify_chain().broken
    assert broken is not None and (broken.kind, broken.request_id) == ("action", rid)
