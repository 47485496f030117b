"""The SQLite ledger: one file, for a single worker process (its loops each open their own).

WAL lets readers work while a loop writes: each ledger object reads on a connection of its
own. Writes go through the process's one writer for the file (`sqlite_writer`), which
group-commits them: one fsync for the loops that wrote at the same moment. Its
`BEGIN IMMEDIATE` takes the write lock up front, so a write transaction never fails
half-way on a lock upgrade, and other processes (operator commands) wait up to the busy
timeout for it. synchronous=FULL: ingest commits Kafka offsets right after the
ledger transaction, so a transaction lost on a power cut would be a request lost for good;
batching makes the extra fsync per transaction cheap.

Times are stored as integer microseconds since the epoch: exact (no float rounding on the
way in or out), compact, and compared as integers. Leases run on the database's clock like
PostgreSQL's; here that is this machine's clock, read by SQLite.

SQLite stores any string, NUL characters included; text that is not valid Unicode (a lone
surrogate) or over SQLite's size limit raises LedgerRejected, as PostgreSQL's refusals do.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from consumer.clock import SYSTEM_CLOCK
from consumer.ledger.backend import Tx, insert_sql, utc
from consumer.ledger.protocol import LedgerRejected, LedgerUnavailable
from consumer.ledger.rows import Row
from consumer.ledger.sql import SqlLedger
from consumer.ledger.sqlite_writer import FileWriter, release, writer_for

BUSY_TIMEOUT_SECONDS = 5.0
# How long `ping` waits for the write lock: well within a readiness probe's timeout, and
# longer than the ledger's own write transactions normally hold the lock.
PING_WAIT_SECONDS = 1.0
STREAM_BATCH = 1000
INSERT_PARAMETERS = 999
"""Most parameters in one multi-row INSERT: SQLite's smallest default limit, so that any
build of the library takes the statement."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Errors that mean "cannot get at the file now", as opposed to bugs such as bad SQL.
_UNAVAILABLE = ("locked", "unable to open", "disk i/o error", "readonly", "disk is full")


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self._conn.execute(sql, params).fetchall()

    def many(self, sql: str, params: Sequence[Sequence[object]]) -> None:
        """An UPDATE of many rows joins them in a few statements, as `insert` does."""
        if not params:
            return
        if len(params) > 1 and joinable_update(sql, params):
            width = len(params[0])
            self._in_chunks(params, width, lambda rows: joined_update_sql(sql, width, rows))
        else:
            self._conn.executemany(sql, params)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        """Many rows to a statement, not a statement per row: sqlite3 lets go of the GIL
        for every statement it steps, and gets it back only after any busy thread's switch
        interval (5 ms), all the while holding the file's one writer. With one thread
        busy beside it, recording 2,000 requests row by row took 83 s instead of 0.1 s
        (docs/benchmarks.md)."""
        names = tuple(columns)
        self._in_chunks(rows, len(names), lambda count: insert_sql(table, names, count))

    def _in_chunks(
        self, rows: Sequence[Sequence[object]], width: int, sql_for: Callable[[int], str]
    ) -> None:
        """`rows` of `width` parameters, as many to a statement (`sql_for(count)`) as
        `INSERT_PARAMETERS` allows."""
        for start, count in row_chunks(len(rows), max(1, INSERT_PARAMETERS // width)):
            values = [value for row in rows[start : start + count] for value in row]
            self._conn.execute(sql_for(count), values)

    def stream(self, sql: str, params: Sequence[object] = ()) -> Iterator[Row]:
        cursor = self._conn.execute(sql, params)
        while batch := cursor.fetchmany(STREAM_BATCH):
            yield from batch


def row_chunks(total: int, most: int) -> Iterator[tuple[int, int]]:
    """(start, count) of consecutive chunks covering `total` rows, each count a power of
    two no larger than `most`: as few statements as the limit allows, in a few shapes
    that the statement cache keeps."""
    largest = 1 << (most.bit_length() - 1)
    start = 0
    while start < total:
        count = min(largest, 1 << ((total - start).bit_length() - 1))
        yield start, count
        start += count


def joinable_update(sql: str, params: Sequence[Sequence[object]]) -> bool:
    """Whether `UPDATE t SET ... WHERE ...` can take all of `params` joined as a list of
    rows (`UPDATE ... FROM (VALUES ...)`): every `?` in its SET or WHERE clause, no quoted
    text or subquery, and no two rows with the same WHERE parameters (rows updating one
    target row would apply in no set order; one after the other, the last wins)."""
    head, where_word, where = sql.partition(" WHERE ")
    setting = head.count("?")
    return (
        sql.startswith("UPDATE ")
        and bool(where_word)
        and "'" not in sql
        and " FROM " not in sql
        and setting + where.count("?") == len(params[0])
        and len({tuple(row[setting:]) for row in params}) == len(params)
    )


@functools.lru_cache(maxsize=64)
def joined_update_sql(sql: str, width: int, rows: int) -> str:
    """`sql` (a `joinable_update`) for `rows` rows of `width` parameters: its `?`s become
    the columns of a VALUES list joined to the target."""
    columns = iter(range(1, width + 1))
    joined = re.sub(r"\?", lambda _: f"v.column{next(columns)}", sql)
    head, _, where = joined.partition(" WHERE ")
    marks = "(" + ", ".join("?" * width) + ")"
    return f"{head} FROM (VALUES {', '.join([marks] * rows)}) AS v WHERE {where}"


@contextmanager
def _translated_errors() -> Iterator[None]:
    """The `Ledger` errors for SQLite's: a file that cannot be used now, or data it refuses
    (no data in the message: SQLite's own messages quote none, and we add only the reason)."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if any(marker in str(exc).lower() for marker in _UNAVAILABLE):
            raise LedgerUnavailable(f"SQLite ledger unavailable: {exc}") from exc
        raise
    except OSError as exc:  # creating the file's directory failed
        raise LedgerUnavailable(f"SQLite ledger unavailable: {exc}") from exc
    except UnicodeEncodeError as exc:
        raise LedgerRejected(
            f"SQLite cannot store text that is not valid Unicode ({exc.reason})"
        ) from exc
    except sqlite3.DataError as exc:  # "string or blob too big"
        raise LedgerRejected(f"SQLite cannot store the data: {exc}") from exc


def _connect(path: str) -> sqlite3.Connection:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread=False: the
    # object may be created in one thread and then used by (only) another.
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
    )
    try:
        _enable_wal(conn)
        conn.execute("PRAGMA synchronous = FULL")
        # The group commit makes the checkpoints, off the commit path (`sqlite_writer`).
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA foreign_keys = ON")
        # Freed space is zeroed, so an identity value that minimisation or retention removed
        # (or an older copy of a row that moved) is gone from the file's bytes; on every
        # connection, since any writer may leave a copy behind.
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
    except BaseException:
        conn.close()
        raise
    return conn


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL, waiting out other connections doing the same: the switch of a new
    file takes an exclusive lock that SQLite's busy handler does not wait for, so several
    loops (or a watcher and the worker) opening a fresh ledger at once would collide."""
    deadline = SYSTEM_CLOCK.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or SYSTEM_CLOCK.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class SqliteLedger(SqlLedger):
    """A `Ledger` in one SQLite file; the file and its directory are created on first use."""

    dialect = "sqlite"
    table_exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    in_array = "IN (SELECT value FROM json_each(?))"
    # Microseconds since the epoch, from SQLite's millisecond clock (rounding undoes the
    # float error of julianday(), which is far below a millisecond).
    db_now = "(CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) * 1000)"

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._writer: FileWriter | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = _connect(self._path)
        return self._conn

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[_SqliteTx]:
        if write:
            with self._written(BUSY_TIMEOUT_SECONDS) as tx:
                yield tx
            return
        with _translated_errors():
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                yield _SqliteTx(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _written(self, wait_seconds: float) -> Iterator[_SqliteTx]:
        """A write transaction through the process's writer for this file."""
        if self._writer is None:
            self._writer = writer_for(self._path, lambda: _connect(self._path))
        with _translated_errors(), self._writer.transaction(wait_seconds) as conn:
            yield _SqliteTx(conn)

    def _to_db(self, moment: datetime) -> int:
        # Aware datetimes subtract exactly whatever their zone; no conversion to UTC first.
        if moment.tzinfo is None:
            utc(moment)  # raises: naive times would be read as local time
        return (moment - _EPOCH) // _MICROSECOND

    def _from_db(self, value: Any) -> datetime:
        return _EPOCH + timedelta(microseconds=value)

    def _to_db_span(self, span: timedelta) -> int:
        return span // _MICROSECOND

    def _array(self, values: Sequence[object]) -> str:
        return json.dumps(values)

    def _lock_for_migration(self, tx: Tx) -> None:
        """Nothing to take: the migrating transaction began with `BEGIN IMMEDIATE`."""

    def ping(self) -> None:
        """Take the write lock and give it back, waiting at most PING_WAIT_SECONDS: a file
        that another process keeps locked still answers reads, yet the worker can record
        nothing in it, so it must not look ready."""
        with self._written(PING_WAIT_SECONDS):
            pass

    def scrub(self) -> bool:
        """Copy the WAL into the file and truncate it: the WAL still holds the page images
        from before minimisation or retention, identity values included. False while a
        reader keeps an older snapshot (the WAL then stays; the next scrub will do it)."""
        with _translated_errors():
            ((busy, _, _),) = self._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return not busy

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._writer is not None:
            release(self._path, self._writer)
            self._writer = None
