"""The seam between the SQL ledger and its two backends: one transaction (`Tx`), the
dialect details a backend supplies, and the numbered schema migrations run over them.

SQL here uses `?` placeholders; the PostgreSQL backend rewrites them to `%s`.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from consumer.ledger.migrations import migrations
from consumer.ledger.rows import Row

_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
)


class Tx(Protocol):
    """One open transaction of a backend."""

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Execute one statement; its result rows (none for a statement without result)."""

    def many(self, sql: str, params: Sequence[Sequence[object]]) -> None:
        """Execute one statement for each parameter row, in order, before the transaction's
        next statement or its commit (PostgreSQL sends it with them: `_PgTx`)."""

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        """Insert rows in order (generated ids and seqs follow it), as fast as the backend can."""

    def stream(self, sql: str, params: Sequence[object] = ()) -> Iterator[Row]:
        """Execute one query and yield its rows a batch at a time (through a server-side
        cursor where the backend has one), so that a result of millions of rows is never
        held in memory. Consume it before the transaction ends."""


@functools.lru_cache(maxsize=128)
def insert_sql(table: str, columns: tuple[str, ...], rows: int = 1) -> str:
    """INSERT of `rows` rows of `columns` (`?` placeholders), in the order given."""
    marks = "(" + ", ".join("?" * len(columns)) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([marks] * rows)}"


class Conflict(Exception):
    """A concurrent transaction inserted the same key; retrying will see its rows."""


def utc(moment: datetime) -> datetime:
    """Refuse naive datetimes: silently reading them as local time would corrupt the ledger."""
    if moment.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return moment.astimezone(UTC)


class SqlBackend(ABC):
    """A backend's transactions and dialect, and the schema migrations run over them."""

    #: Compares a column with one parameter made by `_array`, e.g. "= ANY(?)".
    in_array: str
    #: Row locks that serialise writers of one request (empty where writers are serialised).
    lock_rows: str = ""
    #: Row locks that let replicas claim different rows; formatted with the table alias.
    skip_locked: str = ""
    #: Run first in a read transaction whose statements must all see one snapshot (verify,
    #: report); empty where a read transaction always does (SQLite's WAL readers).
    snapshot: str = ""
    #: The database's current time as the backend stores times. Leases are taken and judged
    #: on this one clock, so a replica whose own clock runs ahead cannot steal a live lease,
    #: and one whose clock lags cannot hand out leases that have already run out.
    db_now: str

    @abstractmethod
    def _transaction(self, write: bool) -> AbstractContextManager[Tx]:
        """One transaction: committed on success, rolled back on error; unreachable or
        locked databases raise LedgerUnavailable. `write` says it will write, for backends
        that must take their write lock up front."""

    def _alone(self, sql: str, params: Sequence[object], write: bool) -> list[Row]:
        """One statement that is a transaction of its own (a read that needs one snapshot,
        or a write that is atomic by itself): its rows. Backends that can send it without
        a BEGIN and a COMMIT do; the hottest statements of a busy worker are such."""
        with self._transaction(write) as tx:
            return tx.rows(sql, params)

    @abstractmethod
    def _to_db(self, moment: datetime) -> object:
        """A timezone-aware datetime as the backend stores it."""

    @abstractmethod
    def _from_db(self, value: Any) -> datetime:
        """A stored time as a UTC datetime."""

    def _to_db_or_none(self, moment: datetime | None) -> object:
        return None if moment is None else self._to_db(moment)

    @abstractmethod
    def _to_db_span(self, span: timedelta) -> object:
        """A duration as a parameter that can be added to `db_now`."""

    @abstractmethod
    def _array(self, values: Sequence[object]) -> object:
        """A list as the one parameter that `in_array` compares with."""

    #: The folder of consumer/ledger/migrations this backend's schema lives in.
    dialect: str
    #: One row when the table named by the parameter exists, none otherwise.
    table_exists: str

    @abstractmethod
    def _lock_for_migration(self, tx: Tx) -> None:
        """Serialise replicas that migrate at the same moment."""

    def missing_migrations(self) -> list[int]:
        """Versions this code has and the ledger lacks: the operator commands refuse to
        work on a ledger that the worker has not migrated yet, with one clear line, rather
        than fail half-way on a column that is not there."""
        with self._transaction(write=False) as tx:
            if not tx.rows(self.table_exists, ("schema_migrations",)):
                applied: set[int] = set()
            else:
                applied = {v for (v,) in tx.rows("SELECT version FROM schema_migrations")}
        return [m.version for m in migrations(self.dialect) if m.version not in applied]

    def migrate(self) -> None:
        """Apply, in one transaction, every numbered migration this ledger lacks."""
        with self._transaction(write=True) as tx:
            self._lock_for_migration(tx)
            tx.rows(_MIGRATIONS_TABLE)
            applied = {version for (version,) in tx.rows("SELECT version FROM schema_migrations")}
            for migration in migrations(self.dialect):
                if migration.version in applied:
                    continue
                for statement in migration.statements:
                    tx.rows(statement)
                tx.rows(
                    "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                    (migration.version, migration.name),
                )
