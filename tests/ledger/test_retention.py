"""Minimisation, retention and lookup on both ledgers: identity values of COMPLETED
requests become keyed hashes and leave no trace in the database's bytes, FAILED and open
requests keep theirs, expired requests go with everything they hold, and the chain still
verifies afterwards (and still catches an edit)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from consumer.ledger import Ledger
from consumer.ledger.retention import identity_hash
from consumer.model import Status
from tests.ledger.test_audit_chain import finish, intact, record_action, sql
from tests.ledger.test_ledger_contract import T0, claim, new_request, record, settle, submit
from tests.support import pg

S = Status
KEY = b"a key only the operator knows"
DAY = timedelta(days=1)


def values_of(ledger: Ledger, request_id: str) -> list[str]:
    rows = sql(
        ledger,
        "SELECT identity_value FROM items WHERE request_id = ? ORDER BY item_id",
        (request_id,),
    )
    return [value for (value,) in rows]


def publish_all(ledger: Ledger) -> None:
    ledger.mark_published([event.seq for event in ledger.pending_events(100_000)], T0)


def test_only_completed_requests_finished_long_enough_ago_are_minimised(ledger: Ledger) -> None:
    done = [finish(ledger, new_request("voyado", "acoustic", per_vendor=2)) for _ in range(3)]
    failed = finish(ledger, new_request("monetate"), S.FAILED)
    recent = finish(ledger, new_request("voyado"), now=T0 + 10 * DAY)
    open_ = new_request("voyado")
    record(ledger, open_)
    before = {rid: values_of(ledger, rid) for rid in (*done, failed, recent)}
    now = T0 + 5 * DAY
    assert [ledger.minimise(now, KEY, 2 * DAY, 2) for _ in range(3)] == [2, 1, 0]
    for rid in done:
        new = [identity_hash(KEY, "email", value) for value in before[rid]]
        assert values_of(ledger, rid) == new
    for rid in (failed, recent):
        assert values_of(ledger, rid) == before[rid]
    assert values_of(ledger, open_.request.request_id) == [open_.items[0].identity_value]
    assert ledger.minimise(T0 + 20 * DAY, KEY, 2 * DAY, 10) == 1  # `recent` now


def test_lookup_finds_a_request_by_its_value_before_and_after_minimisation(
    ledger: Ledger,
) -> None:
    new = new_request("voyado", "monetate")
    rid = finish(ledger, new)
    value = new.items[0].identity_value
    (hit,) = ledger.lookup("email", value, KEY)
    assert (hit.request_id, hit.status, hit.finished_at, hit.minimised) == (
        rid,
        S.COMPLETED,
        T0,
        False,
    )
    ledger.minimise(T0, KEY, timedelta(0), 10)
    assert [hit.minimised for hit in ledger.lookup("email", value, KEY)] == [True]
    assert ledger.lookup("email", value, b"another key") == []
    assert ledger.lookup("email", value, None) == []
    assert ledger.lookup("customer_id", value, KEY) == []
    assert ledger.minimised_requests() == 1


def test_status_and_report_read_the_same_after_minimisation(ledger: Ledger) -> None:
    rid = finish(ledger, new_request("voyado", "acoustic"))
    trail = ledger.trail(rid)
    with ledger.report(T0, T0 + DAY) as rows:
        report = list(rows)
    ledger.minimise(T0, KEY, timedelta(0), 10)
    assert ledger.trail(rid) == trail
    with ledger.report(T0, T0 + DAY) as rows:
        assert list(rows) == report


def _sqlite_bytes(ledger: Ledger, url: str) -> bytes:
    assert ledger.scrub()
    path = Path(url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def _pg_dump(ledger: Ledger, url: str) -> bytes:
    assert ledger.scrub()
    dump = pg.find_bin_dir() / "pg_dump"
    return subprocess.run([str(dump), "--dbname", url], capture_output=True, check=True).stdout


def test_no_minimised_value_is_left_anywhere_in_the_database(
    open_ledgers: Callable[[], Ledger], ledger_url: str
) -> None:
    """Every byte of the SQLite file (and its WAL), or a full pg_dump: the values of
    minimised requests are nowhere, those of a FAILED request still are (so the search
    does find values). Items are updated several times first, so rows move in their pages
    and leave old copies behind, as in a worker."""
    ledger = open_ledgers()
    ledger.migrate()
    finished = [new_request("voyado", "acoustic", per_vendor=3) for _ in range(40)]
    for new in finished:
        finish(ledger, new)
    failed = new_request("monetate", per_vendor=2)
    finish(ledger, failed, S.FAILED)
    while ledger.minimise(T0, KEY, timedelta(0), 7):
        pass
    content = (_sqlite_bytes if ledger_url.startswith("sqlite") else _pg_dump)(ledger, ledger_url)
    for item in failed.items:
        assert item.identity_value.encode() in content
    leaked = [i for new in finished for i in new.items if i.identity_value.encode() in content]
    assert leaked == []


def test_expired_requests_go_with_everything_they_hold(ledger: Ledger) -> None:
    old = new_request("voyado", "monetate")
    shared_old = new_request("acoustic")
    shared_new = new_request("acoustic")
    record(ledger, old, shared_old, shared_new)
    for vendor in ("voyado", "monetate"):
        settle(ledger, claim(ledger, vendor), S.COMPLETED)
    items = claim(ledger, "acoustic")  # one job for both requests
    submit(ledger, items, job="shared")
    settle(ledger, [i for i in items if i.request_id == shared_old.request.request_id], S.FAILED)
    later = T0 + 400 * DAY
    settle(
        ledger,
        [i for i in items if i.request_id == shared_new.request.request_id],
        S.COMPLETED,
        later,
    )
    record_action(ledger, old.request.request_id)
    publish_all(ledger)
    gone = {old.request.request_id, shared_old.request.request_id}
    entries = [rid for (rid,) in sql(ledger, "SELECT request_id FROM events")] + [
        old.request.request_id
    ]
    assert ledger.delete_expired(T0 + 731 * DAY, 730 * DAY, 10) == 2
    assert ledger.delete_expired(T0 + 731 * DAY, 730 * DAY, 10) == 0
    kept = shared_new.request.request_id
    for table in ("requests", "vendor_scopes", "items", "events"):
        assert sql(ledger, f"SELECT DISTINCT request_id FROM {table}") == [(kept,)]
    assert sql(ledger, "SELECT count(*) FROM operator_actions") == [(0,)]
    assert sql(ledger, "SELECT vendor_job_id FROM jobs") == [("shared",)]
    report = intact(ledger.verify_chain())
    assert report.deleted == sum(rid in gone for rid in entries)
    assert report.checked == len(sql(ledger, "SELECT seq FROM events"))
    sql(ledger, "UPDATE events SET detail = 'edited' WHERE seq = (SELECT max(seq) FROM events)")
    assert ledger.verify_chain().broken is not None


def test_a_request_whose_events_are_not_all_published_is_kept(ledger: Ledger) -> None:
    finish(ledger, new_request("voyado"))
    assert ledger.delete_expired(T0 + 800 * DAY, 730 * DAY, 10) == 0
    publish_all(ledger)
    assert ledger.delete_expired(T0 + 800 * DAY, 730 * DAY, 10) == 1


def test_deleting_interleaved_requests_in_passes_keeps_the_chain_verifiable(
    ledger: Ledger,
) -> None:
    """Requests whose events interleave, finished at different days, deleted oldest first
    in small batches over several passes: runs of deleted entries merge with earlier ones,
    and each time what is left verifies. Then everything goes, and the chain goes on."""
    news = [new_request("voyado", "monetate") for _ in range(12)]
    record(ledger, *news)
    for vendor in ("voyado", "monetate"):  # request n finishes on day 7n mod 12
        items = sorted(claim(ledger, vendor), key=lambda item: item.request_id)
        for n, item in enumerate(items):
            settle(ledger, [item], S.COMPLETED, T0 + (n * 7 % 12) * DAY)
    publish_all(ledger)
    total = len(sql(ledger, "SELECT seq FROM events"))
    for cutoff in (2, 5, 6, 11):
        while ledger.delete_expired(T0 + (cutoff + 100) * DAY, 100 * DAY, 2):
            pass
        left = len(sql(ledger, "SELECT seq FROM events"))
        report = intact(ledger.verify_chain())
        assert (report.checked, report.deleted) == (left, total - left)
    assert sql(ledger, "SELECT count(*) FROM requests") == [(0,)]
    finish(ledger, new_request("acoustic"))
    intact(ledger.verify_chain())
