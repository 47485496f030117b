"""The PostgreSQL ledger, for several worker replicas sharing one database.

One connection per ledger object, opened on first use and reopened after it was lost, so
a database restart costs a LedgerUnavailable or two, not a worker restart. Replicas share
the work through `FOR UPDATE SKIP LOCKED` claims and serialise changes of one request
through a row lock on it (see `SqlLedger._lock_requests`). Leases run on the server's
clock, the one clock all replicas share.

Data the server cannot store (a NUL character, text that is not valid Unicode, a key too
large for its index) raises LedgerRejected after a rollback: retrying cannot help, and the
connection stays usable for the rows that follow.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg.sql import SQL, Identifier

from consumer.ledger.audit import EntryTable
from consumer.ledger.backend import Conflict, Tx, insert_sql, utc
from consumer.ledger.protocol import LedgerRejected, LedgerUnavailable
from consumer.ledger.rows import Row
from consumer.ledger.sql import SqlLedger

CONNECT_TIMEOUT_SECONDS = 5
# Waiting longer than SQLite's busy timeout for a row lock means something is stuck.
LOCK_TIMEOUT = "5s"
# Any constant works; it only has to be the same in every replica.
_MIGRATE_LOCK_KEY = 0x45524153  # "ERAS"
STREAM_BATCH = 1000
QUEUED_INSERT_ROWS = 100
"""Inserts up to this many rows are queued (see `_PgTx`); larger ones are COPYed."""
_stream_names = itertools.count()
# Errors about the data itself: class 22 (psycopg's DataError, also raised before sending
# for a NUL), 54000 (an index row over the btree limit, e.g. a 2.7 KB vendor name in a
# primary key) and text Python cannot encode as UTF-8 (lone surrogates).
_REFUSED = (psycopg.DataError, errors.ProgramLimitExceeded, UnicodeEncodeError)


@functools.lru_cache(maxsize=128)
def _placeholders(sql: str) -> str:
    """Our SQL uses `?` (no literal `?` or `%` anywhere, but for `_append_sql`'s binary
    `%b` placeholders); psycopg wants `%s`."""
    return sql.replace("?", "%s")


@functools.lru_cache(maxsize=4)
def _append_sql(entries: EntryTable) -> str:
    """INSERT of chain entries from column arrays, positioned and hashed by chain_append.
    Arrays go in binary (`%b`: twice as fast as text for a batch of thousands)."""
    columns = ", ".join(entries.columns)
    arrays = ", ".join(
        "%b::timestamptz[]" if n == entries.time_at else "%b::text[]"
        for n in range(len(entries.columns))
    )
    picked = ", ".join(f"e.{column}" for column in entries.columns)
    return (
        f"INSERT INTO {entries.table} ({entries.position}, {columns}, hash)"
        f" SELECT c.entry_pos, {picked}, c.entry_hash"
        f" FROM unnest({arrays}) WITH ORDINALITY AS e({columns}, n)"
        " JOIN chain_append(%b, %b::text[]) WITH ORDINALITY AS c(entry_pos, entry_hash, n)"
        " USING (n)"
    )


def _reason(error: Exception) -> str:
    """Why the server refused the data, without the data: the primary message of a server
    error (its DETAIL may quote the row), psycopg's own message, or the encoding problem."""
    if isinstance(error, UnicodeEncodeError):
        return f"text that is not valid Unicode ({error.reason})"
    if isinstance(error, psycopg.Error) and error.diag.message_primary:
        return error.diag.message_primary
    return str(error)


class _PgTx:
    """A transaction whose statements without results go to the server in batches.

    `many` (and `insert` of a few rows) only queues: the queue is sent, in one round trip
    (pipeline mode), together with the next statement whose rows are wanted, or with the
    COMMIT. Nothing reads a queued statement's result, and every later statement runs after
    it, so what the transaction does is unchanged; its errors surface at that next statement
    and map to the same exceptions. What changes is the round trips, and with them how long
    a row lock is held: a lock taken by a queued statement (the audit chain's head, taken
    by `chain_append` in the insert of the entries) is held until the COMMIT that travels
    with it, with no wait for this process's GIL in between.
    """

    def __init__(self, conn: psycopg.Connection[TupleRow]) -> None:
        self._conn = conn
        self._cursor = conn.cursor()
        self._queued: list[tuple[str, Sequence[Sequence[object]]]] = []

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        with self._after_queued():
            self._cursor.execute(_placeholders(sql), params)
        return self._cursor.fetchall() if self._cursor.description else []

    def many(self, sql: str, params: Sequence[Sequence[object]]) -> None:
        if params:
            self._queued.append((_placeholders(sql), params))

    def stream(self, sql: str, params: Sequence[object] = ()) -> Iterator[Row]:
        """A server-side cursor, fetched STREAM_BATCH rows at a time."""
        self._send_queued()
        name = f"stream_{next(_stream_names)}"
        with self._conn.cursor(name=name) as cursor:
            cursor.itersize = STREAM_BATCH
            cursor.execute(_placeholders(sql), params)
            yield from cursor

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        """A few rows are queued like `many`; more go by COPY at once, several times faster
        than INSERTs for ingest's thousands (COPY cannot join a pipeline)."""
        if len(rows) <= QUEUED_INSERT_ROWS:
            self.many(insert_sql(table, tuple(columns)), rows)
            return
        self._send_queued()
        statement = SQL("COPY {} ({}) FROM STDIN").format(
            Identifier(table), SQL(", ").join(map(Identifier, columns))
        )
        with self._cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)

    def commit(self) -> None:
        """COMMIT, sent with whatever is still queued in one round trip."""
        with self._after_queued():
            self._conn.commit()

    def close(self) -> None:
        self._cursor.close()

    def _send_queued(self) -> None:
        """Send what is queued now: a COPY or a server-side cursor cannot join a pipeline."""
        with self._after_queued():
            pass

    @contextmanager
    def _after_queued(self) -> Iterator[None]:
        """Whatever the block sends goes after the queued statements, in one round trip
        with them (a pipeline) when there are any."""
        if not self._queued:
            yield
            return
        queued, self._queued = self._queued, []
        with self._conn.pipeline():
            with self._conn.cursor() as cursor:
                for sql, params in queued:
                    cursor.executemany(sql, params)
            yield


class PostgresLedger(SqlLedger):
    """A `Ledger` in a PostgreSQL database given by a libpq URL."""

    dialect = "postgres"
    table_exists = "SELECT 1 WHERE to_regclass(?) IS NOT NULL"
    in_array = "= ANY(?)"
    lock_rows = " FOR UPDATE"
    skip_locked = " FOR UPDATE OF {} SKIP LOCKED"
    # Stable within one statement; unlike now() it does not lag by the transaction's age.
    db_now = "statement_timestamp()"
    snapshot = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection[TupleRow] | None = None

    def _connection(self) -> psycopg.Connection[TupleRow]:
        if self._conn is None:
            try:
                conn = psycopg.connect(self._conninfo(), autocommit=False)
                conn.execute("SET TIME ZONE 'UTC'")
                conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
                conn.commit()
            except psycopg.Error as exc:
                # The message names host and port, never the password.
                raise LedgerUnavailable(f"PostgreSQL ledger unavailable: {exc}") from exc
            self._conn = conn
        return self._conn

    def _conninfo(self) -> str:
        """The URL, with a connect timeout unless it sets one: fail fast, retry later."""
        if "connect_timeout" in conninfo_to_dict(self._url):
            return self._url
        return make_conninfo(self._url, connect_timeout=CONNECT_TIMEOUT_SECONDS)

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[_PgTx]:
        conn = self._connection()
        with self._errors_mapped(conn):
            tx = _PgTx(conn)
            try:
                yield tx
                tx.commit()
            finally:
                tx.close()

    def _alone(self, sql: str, params: Sequence[object], write: bool) -> list[Row]:
        """In autocommit mode: the statement is a transaction by itself, one round trip
        where BEGIN, the statement and COMMIT were three, each of which a thread of a busy
        worker waits to get the GIL back after (docs/benchmarks.md)."""
        conn = self._connection()
        with self._errors_mapped(conn):
            conn.autocommit = True
            try:
                cursor = conn.execute(_placeholders(sql), params)
                return cursor.fetchall() if cursor.description else []
            finally:
                conn.autocommit = False

    @contextmanager
    def _errors_mapped(self, conn: psycopg.Connection[TupleRow]) -> Iterator[None]:
        """The `Ledger` errors for psycopg's, the transaction rolled back."""
        try:
            yield
        except _REFUSED as exc:  # before OperationalError, which ProgramLimitExceeded is
            self._rollback_quietly(conn)
            raise LedgerRejected(f"PostgreSQL cannot store the data: {_reason(exc)}") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            # Lost connection, lock timeout, deadlock: start afresh on the next call.
            self.close()
            raise LedgerUnavailable(f"PostgreSQL ledger unavailable: {exc}") from exc
        except errors.UniqueViolation as exc:
            self._rollback_quietly(conn)
            raise Conflict(str(exc)) from exc
        except BaseException:
            self._rollback_quietly(conn)
            raise

    def _rollback_quietly(self, conn: psycopg.Connection[TupleRow]) -> None:
        """Roll back after an error; if even that fails the connection is beyond use."""
        try:
            conn.rollback()
        except psycopg.Error:
            self.close()

    def _to_db(self, moment: datetime) -> str:
        # ISO text, which PostgreSQL reads as timestamptz: ingest writes the same batch time
        # into ~11 columns per request, and formatting it once per batch instead of once per
        # value in psycopg's COPY was ~20% of ingest's client CPU.
        return utc(moment).isoformat()

    def _from_db(self, value: Any) -> datetime:
        moment: datetime = value
        return moment.astimezone(UTC)

    def _to_db_span(self, span: timedelta) -> timedelta:
        return span  # psycopg sends it as an interval

    def _array(self, values: Sequence[object]) -> list[object]:
        return list(values)

    def _append_entries(
        self, tx: Tx, entries: EntryTable, rows: Sequence[Row], bodies: Sequence[str]
    ) -> None:
        """The server positions and hashes the entries as it inserts them (chain_append,
        migration 0006), in a statement queued to go with the COMMIT: the head is locked
        from that statement to the commit, with no round trip to this process between."""
        columns = [list(column) for column in zip(*rows, strict=True)]
        tx.many(_append_sql(entries), [(*columns, entries.kind, list(bodies))])

    def _lock_for_migration(self, tx: Tx) -> None:
        # Replicas starting together would race on CREATE ... IF NOT EXISTS otherwise.
        tx.rows("SELECT pg_advisory_xact_lock(?)", (_MIGRATE_LOCK_KEY,))

    def ping(self) -> None:
        with self._transaction(write=False) as tx:
            tx.rows("SELECT 1")

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
