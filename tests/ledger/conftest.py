"""Fixtures for the ledger contract suite: every test runs against SQLite and PostgreSQL.

The PostgreSQL server is private to the session (see tests/pg.py) and every test gets a
database of its own, so tests never see each other's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from consumer.ledger import Ledger, open_ledger
from tests import pg


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A URL to an empty ledger database (the SQLite one in a directory not yet created)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'new-dir' / 'ledger.db'}"
        return
    with pg.fresh_database(request.getfixturevalue("postgres_dsn")) as dsn:
        yield dsn


@pytest.fixture
def open_ledgers(ledger_url: str) -> Iterator[Callable[[], Ledger]]:
    """Opens more ledger objects on the same database (replicas, restarts), closed at the end."""
    opened: list[Ledger] = []

    def open_one() -> Ledger:
        ledger = open_ledger(ledger_url)
        opened.append(ledger)
        return ledger

    yield open_one
    for ledger in opened:
        ledger.close()


@pytest.fixture
def ledger(open_ledgers: Callable[[], Ledger]) -> Ledger:
    ledger = open_ledgers()
    ledger.migrate()
    return ledger
