"""Session-wide test fixtures: one Kafka-protocol broker and one PostgreSQL server for the
whole run, and a ledger of each test's own.

The broker is a private Tansu process (killed at the end) unless KAFKA_BOOTSTRAP_SERVERS
names one. Tests never share topics, consumer groups or ledger databases: see
`tests.support.kafka` and `tests.support.pg`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from consumer.config import KafkaSettings
from consumer.ledger import Ledger, open_ledger
from devtools.devstack import kafka_bootstrap as kafka_bootstrap_servers
from tests.support import pg
from tests.support.kafka import kafka_settings


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """`host:port` of the test broker, started on first use."""
    with kafka_bootstrap_servers() as bootstrap:
        yield bootstrap


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaSettings:
    """Settings with this test's own group and (single-partition) topics."""
    return kafka_settings(kafka_bootstrap)


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A private PostgreSQL server for the session (see tests/support/pg.py); tests take a fresh
    database of it with `pg.fresh_database`."""
    with pg.postgres_server() as dsn:
        yield dsn


@pytest.fixture(params=["sqlite", "postgres"])
def any_ledger_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An empty ledger database on each backend in turn (the SQLite one in a directory not
    yet created); a module or folder that must run on both overrides `ledger_url` with it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'new-dir' / 'ledger.db'}"
        return
    with pg.fresh_database(request.getfixturevalue("postgres_dsn")) as dsn:
        yield dsn


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    """The URL of the test's own ledger database: a new SQLite file."""
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def open_ledgers(ledger_url: str) -> Iterator[Callable[[], Ledger]]:
    """Opens ledger objects on the test's database (one per loop, as in the worker; more for
    replicas and restarts), all closed at the end."""
    opened: list[Ledger] = []

    def open_one() -> Ledger:
        opened.append(open_ledger(ledger_url))
        return opened[-1]

    yield open_one
    for ledger in opened:
        ledger.close()


@pytest.fixture
def ledger(open_ledgers: Callable[[], Ledger]) -> Ledger:
    """The test's own view of its ledger, migrated."""
    ledger = open_ledgers()
    ledger.migrate()
    return ledger
