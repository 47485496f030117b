"""A transaction's statements run in order, whichever way the backend sends them.

PostgreSQL queues statements without results (`many`, `insert` of a few rows) and sends
them with the next statement or the COMMIT (`_PgTx`); SQLite runs them at once. Both must
behave alike: every statement sees the ones before it, and an error in a queued statement
fails the transaction as it would have failed at once.
"""

from __future__ import annotations

import pytest

from consumer.ledger.postgres import QUEUED_INSERT_ROWS, PostgresLedger
from consumer.ledger.protocol import Ledger, LedgerRejected
from consumer.ledger.sql import SqlLedger

GAP = ("after_pos", "hash", "deleted")


def sql_ledger(ledger: Ledger) -> SqlLedger:
    assert isinstance(ledger, SqlLedger)
    return ledger


def gaps(ledger: SqlLedger) -> list[tuple[int, str, int]]:
    with ledger._transaction(write=False) as tx:
        return [tuple(row) for row in tx.rows("SELECT * FROM chain_gaps ORDER BY after_pos")]


def test_a_statement_sees_every_queued_one_before_it_in_order(ledger: Ledger) -> None:
    sql = sql_ledger(ledger)
    with sql._transaction(write=True) as tx:
        tx.insert("chain_gaps", GAP, [(1, "a", 1), (2, "b", 1)])
        tx.many("UPDATE chain_gaps SET hash = ? WHERE after_pos = ?", [("c", 2)])
        tx.many("UPDATE chain_gaps SET deleted = deleted + 1 WHERE hash = ?", [("c",)])
        seen = tx.rows("SELECT after_pos, hash, deleted FROM chain_gaps ORDER BY after_pos")
        tx.many("DELETE FROM chain_gaps WHERE after_pos = ?", [(1,)])
    assert [tuple(row) for row in seen] == [(1, "a", 1), (2, "c", 2)]
    assert gaps(sql) == [(2, "c", 2)]


def test_a_large_insert_keeps_its_place_after_queued_statements(ledger: Ledger) -> None:
    sql = sql_ledger(ledger)
    many = [(n, "x", 0) for n in range(10, 11 + QUEUED_INSERT_ROWS)]
    with sql._transaction(write=True) as tx:
        tx.insert("chain_gaps", GAP, [(1, "first", 0)])
        tx.many("UPDATE chain_gaps SET deleted = 7 WHERE after_pos = ?", [(1,)])
        tx.insert("chain_gaps", GAP, many)
        tx.many("UPDATE chain_gaps SET hash = 'y' WHERE after_pos >= ?", [(10,)])
    rows = gaps(sql)
    assert rows[0] == (1, "first", 7)
    assert rows[1:] == [(n, "y", 0) for n, _, _ in many]


def test_a_queued_statement_that_fails_fails_its_transaction(ledger: Ledger) -> None:
    sql = sql_ledger(ledger)
    with sql._transaction(write=True) as tx:
        tx.insert("chain_gaps", GAP, [(1, "kept", 0)])
    with pytest.raises(LedgerRejected), sql._transaction(write=True) as tx:
        tx.many("UPDATE chain_gaps SET hash = 'lost' WHERE after_pos = ?", [(1,)])
        tx.insert("chain_gaps", GAP, [(2, "lost", 0), (4, "not Unicode: \ud800", 0)])
    assert gaps(sql) == [(1, "kept", 0)]
    with sql._transaction(write=True) as tx:  # the connection is still usable
        tx.insert("chain_gaps", GAP, [(3, "after", 0)])
    assert gaps(sql) == [(1, "kept", 0), (3, "after", 0)]


def test_a_statement_alone_is_a_transaction_of_its_own(ledger: Ledger) -> None:
    sql = sql_ledger(ledger)
    insert = "INSERT INTO chain_gaps (after_pos, hash, deleted) VALUES (?, ?, ?)"
    assert sql._alone(insert + " RETURNING after_pos", (1, "a", 0), write=True) == [(1,)]
    with pytest.raises(LedgerRejected):
        sql._alone(insert, (2, "not Unicode: \ud800", 0), write=True)
    read = sql._alone("SELECT after_pos, hash FROM chain_gaps", (), write=False)
    assert [tuple(row) for row in read] == [(1, "a")]
    # Later transactions are transactions again: what one did before failing is undone.
    with pytest.raises(ZeroDivisionError), sql._transaction(write=True) as tx:
        tx.many(insert, [(3, "undone", 0)])
        tx.rows("SELECT 1")
        1 / 0  # noqa: B018
    assert gaps(sql) == [(1, "a", 0)]


def test_postgresql_sends_a_statement_alone_without_begin_and_commit(ledger: Ledger) -> None:
    if not isinstance(ledger, PostgresLedger):
        pytest.skip("SQLite runs a statement alone in a transaction, as any other")
    ledger._alone("VACUUM chain_gaps", (), write=True)  # refused inside a transaction block
