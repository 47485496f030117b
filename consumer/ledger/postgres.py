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

from consumer.ledger.backend import Conflict, Tx, utc
from consumer.ledger.protocol import LedgerRejected, LedgerUnavailable
from consumer.ledger.rows import Row
from consumer.ledger.sql import SqlLedger

CONNECT_TIMEOUT_SECONDS = 5
# Waiting longer than SQLite's busy timeout for a row lock means something is stuck.
LOCK_TIMEOUT = "5s"
# Any constant works; it only has to be the same in every replica.
_MIGRATE_LOCK_KEY = 0x45524153  # "ERAS"
STREAM_BATCH = 1000
_stream_names = itertools.count()
# Errors about the data itself: class 22 (psycopg's DataError, also raised before sending
# for a NUL), 54000 (an index row over the btree limit, e.g. a 2.7 KB vendor name in a
# primary key) and text Python cannot encode as UTF-8 (lone surrogates).
_REFUSED = (psycopg.DataError, errors.ProgramLimitExceeded, UnicodeEncodeError)


@functools.lru_cache(maxsize=128)
def _placeholders(sql: str) -> str:
    """Our SQL uses `?` (no literal `?` or `%` anywhere); psycopg wants `%s`."""
    return sql.replace("?", "%s")


def _reason(error: Exception) -> str:
    """Why the server refused the data, without the data: the primary message of a server
    error (its DETAIL may quote the row), psycopg's own message, or the encoding problem."""
    if isinstance(error, UnicodeEncodeError):
        return f"text that is not valid Unicode ({error.reason})"
    if isinstance(error, psycopg.Error) and error.diag.message_primary:
        return error.diag.message_primary
    return str(error)


class _PgTx:
    def __init__(self, cursor: psycopg.Cursor[TupleRow]) -> None:
        self._cursor = cursor

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        self._cursor.execute(_placeholders(sql), params)
        return self._cursor.fetchall() if self._cursor.description else []

    def many(self, sql: str, params: Sequence[Sequence[object]]) -> None:
        if params:
            self._cursor.executemany(_placeholders(sql), params)

    def stream(self, sql: str, params: Sequence[object] = ()) -> Iterator[Row]:
        """A server-side cursor, fetched STREAM_BATCH rows at a time."""
        name = f"stream_{next(_stream_names)}"
        with self._cursor.connection.cursor(name=name) as cursor:
            cursor.itersize = STREAM_BATCH
            cursor.execute(_placeholders(sql), params)
            yield from cursor

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        """COPY: several times faster than executemany for ingest's thousands of rows."""
        if not rows:
            return
        statement = SQL("COPY {} ({}) FROM STDIN").format(
            Identifier(table), SQL(", ").join(map(Identifier, columns))
        )
        with self._cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)


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
        try:
            with conn.cursor() as cursor:
                yield _PgTx(cursor)
            conn.commit()
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
