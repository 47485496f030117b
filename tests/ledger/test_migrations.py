"""Numbered migrations: each applied once, in order, on both backends (racing replicas:
test_ledger_contract.test_concurrent_migrations_do_not_collide)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from consumer.ledger import Ledger
from consumer.ledger.backend import SqlBackend
from consumer.ledger.migrations import migrations


def applied_versions(ledger: object) -> list[int]:
    assert isinstance(ledger, SqlBackend)
    with ledger._transaction(write=False) as tx:
        return [version for (version,) in tx.rows("SELECT version FROM schema_migrations")]


def test_every_migration_is_recorded_once_in_order(open_ledgers: Callable[[], Ledger]) -> None:
    ledger = open_ledgers()
    ledger.migrate()
    ledger.migrate()  # a restart finds nothing to do
    versions = [migration.version for migration in migrations(ledger.dialect)]  # type: ignore[attr-defined]
    assert versions == sorted(set(versions)) and versions[0] == 1
    assert sorted(applied_versions(ledger)) == versions


def as_before_numbered_migrations(ledger: Ledger) -> SqlBackend:
    """`ledger` given version 1's tables only, and no schema_migrations: a ledger as a worker
    of a release before numbered migrations left it."""
    assert isinstance(ledger, SqlBackend)
    with ledger._transaction(write=True) as tx:
        for statement in migrations(ledger.dialect)[0].statements:
            tx.rows(statement)
    return ledger


def test_a_ledger_made_before_numbered_migrations_is_adopted(
    open_ledgers: Callable[[], Ledger],
) -> None:
    """A ledger from before numbered migrations has version 1's tables and no
    schema_migrations: the first migration (IF NOT EXISTS) adopts it without losing a row,
    and the later ones are applied on top."""
    ledger = as_before_numbered_migrations(open_ledgers())
    with ledger._transaction(write=True) as tx:
        tx.rows(
            "INSERT INTO leases (name, owner, until) VALUES ('kept', 'me', ?)",
            (ledger._to_db(datetime.now(UTC)),),
        )
    ledger.migrate()
    with ledger._transaction(write=False) as tx:
        assert tx.rows("SELECT owner FROM leases WHERE name = 'kept'") == [("me",)]
    assert sorted(applied_versions(ledger)) == [m.version for m in migrations(ledger.dialect)]
