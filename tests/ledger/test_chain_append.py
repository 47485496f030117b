"""Appending to the audit chain: SQLite hashes entries in the worker, PostgreSQL in the
server (migration 0006's chain_append); `verify_chain`, in Python, must agree with both,
whatever the entries hold, and PostgreSQL must not hold the head while the worker works."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from consumer.ledger import Ledger
from consumer.ledger.audit import SqlAudit
from consumer.ledger.postgres import QUEUED_INSERT_ROWS, PostgresLedger
from consumer.ledger.rows import Row
from tests.ledger.test_audit_chain import intact, record_action, sql
from tests.ledger.test_ledger_contract import T0
from tests.support import pg

AWKWARD = ("naïve ✓ 😀", "", "x" * 1000, "a;b:c-", "12:ab", None)


def events(ledger: SqlAudit, count: int) -> list[Row]:
    """Event rows (EVENT_COLUMNS) with every kind of awkward text and NULLs in them."""
    rows = []
    for n in range(count):
        text = AWKWARD[n % len(AWKWARD)]
        rows.append(
            (
                str(uuid.uuid4()),
                str(uuid.uuid4()),
                text,
                "QUEUED",
                None,
                text,
                ledger._to_db(T0),
                text,
            )
        )
    return rows


def append(ledger: Ledger, rows: list[Row]) -> None:
    assert isinstance(ledger, SqlAudit)
    with ledger._transaction(write=True) as tx:
        ledger._insert_events(tx, rows)


def test_verify_agrees_with_every_entry_the_ledger_chained(ledger: Ledger) -> None:
    assert isinstance(ledger, SqlAudit)
    append(ledger, events(ledger, 1))
    append(ledger, events(ledger, 7))
    append(ledger, events(ledger, QUEUED_INSERT_ROWS + 50))
    for reason in AWKWARD[:-1]:
        record_action(ledger, str(uuid.uuid4()), reason)
    report = intact(ledger.verify_chain())
    assert report.checked == 1 + 7 + QUEUED_INSERT_ROWS + 50 + len(AWKWARD) - 1
    ((head,),) = sql(ledger, "SELECT pos FROM chain_head")
    assert head == report.checked


def test_a_server_hash_that_does_not_match_is_found(ledger: Ledger) -> None:
    assert isinstance(ledger, SqlAudit)
    append(ledger, events(ledger, 3))
    sql(ledger, "UPDATE events SET detail = 'edited' WHERE seq = 2")
    broken = ledger.verify_chain().broken
    assert broken is not None and broken.position == 2


@pytest.fixture
def postgres_ledger(postgres_dsn: str) -> Iterator[PostgresLedger]:
    with pg.fresh_database(postgres_dsn) as dsn:
        ledger = PostgresLedger(dsn)
        ledger.migrate()
        yield ledger
        ledger.close()


def test_postgresql_takes_the_head_only_with_the_commit(
    postgres_ledger: PostgresLedger,
) -> None:
    """While a recording transaction is still open (its events handed over), another
    replica can take the head at once: the lock is taken and released in the server, in
    the COMMIT's round trip."""
    rows = events(postgres_ledger, 2)
    with psycopg.connect(postgres_ledger._url) as other, postgres_ledger._transaction(True) as tx:
        postgres_ledger._insert_events(tx, rows)
        other.execute("SELECT pos FROM chain_head WHERE id = 1 FOR UPDATE NOWAIT")
        other.rollback()
    intact(postgres_ledger.verify_chain())
    assert sql(postgres_ledger, "SELECT pos FROM chain_head") == [(2,)]
