"""How the SQLite ledger writes many rows: a few multi-row statements, not one per row,
since sqlite3 lets go of the GIL for each statement it steps (`_SqliteTx.insert`)."""

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
