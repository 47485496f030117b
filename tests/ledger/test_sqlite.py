"""How the SQLite ledger writes many rows: a few multi-row statements, not one per row,
since sqlite3 lets go of the GIL for each statement it steps (`_SqliteTx`)."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.ledger.sqlite import INSERT_PARAMETERS, _SqliteTx, row_chunks


@given(st.integers(min_value=0, max_value=5000), st.integers(min_value=1, max_value=1000))
def test_row_chunks_cover_every_row_once_in_order_in_powers_of_two(total: int, most: int) -> None:
    chunks = list(row_chunks(total, most))
    ends = [(0, 0), *chunks]  # each chunk starts where the one before ended
    assert all(start + count == after for (start, count), (after, _) in itertools.pairwise(ends))
    assert sum(count for _, count in chunks) == total
    assert all(count <= most and count & (count - 1) == 0 for _, count in chunks)
    assert len({count for _, count in chunks}) <= most.bit_length()


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (n INTEGER, label TEXT, blob BLOB)")
    yield conn
    conn.close()


def statements_of(conn: sqlite3.Connection) -> list[str]:
    """The statements the connection runs from now on."""
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    return seen


def test_many_rows_go_in_a_few_statements_in_the_order_given(conn: sqlite3.Connection) -> None:
    rows = [(n, f"label-{n}", bytes([n % 256])) for n in range(2000, 0, -1)]
    seen = statements_of(conn)
    _SqliteTx(conn).insert("t", ("n", "label", "blob"), rows)
    most = INSERT_PARAMETERS // 3
    assert len(seen) <= len(rows) // most + most.bit_length()
    assert conn.execute("SELECT n, label, blob FROM t ORDER BY rowid").fetchall() == rows


UPDATE = "UPDATE t SET label = ?, blob = COALESCE(?, blob) WHERE n = ?"


def filled(conn: sqlite3.Connection, count: int) -> None:
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(n, "old", b"x") for n in range(count)])


def test_an_update_of_many_rows_joins_them_in_a_few_statements(
    conn: sqlite3.Connection,
) -> None:
    filled(conn, 3000)
    updates = [(f"new-{n}", None if n % 2 else b"y", n) for n in range(0, 3000, 2)]
    seen = statements_of(conn)
    _SqliteTx(conn).many(UPDATE, updates)
    most = INSERT_PARAMETERS // 3
    assert len(seen) <= len(updates) // most + most.bit_length()
    assert all(" FROM (VALUES " in statement for statement in seen)
    got = conn.execute("SELECT n, label, blob FROM t ORDER BY n").fetchall()
    expected = [(n, f"new-{n}", b"y") if n % 2 == 0 else (n, "old", b"x") for n in range(3000)]
    assert got == expected


@pytest.mark.parametrize(
    ("sql", "rows"),
    [
        # Two rows for one target: one after the other, the last wins.
        (UPDATE, [("first", None, 1), ("second", None, 1)]),
        # Not an UPDATE of that shape.
        ("UPDATE t SET label = 'fixed' WHERE n = ?", [(1,), (2,)]),
        ("INSERT INTO t (n, label) VALUES (?, ?)", [(9, "a"), (10, "b")]),
    ],
)
def test_other_statements_run_row_by_row(
    conn: sqlite3.Connection, sql: str, rows: list[tuple[object, ...]]
) -> None:
    filled(conn, 3)
    seen = statements_of(conn)
    _SqliteTx(conn).many(sql, rows)
    assert len(seen) == len(rows)
    if sql == UPDATE:
        assert conn.execute("SELECT label FROM t WHERE n = 1").fetchone() == ("second",)
