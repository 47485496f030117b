"""Session-wide test fixtures: one Kafka-protocol broker for the whole run.

The broker is a private Tansu process (killed at the end) unless KAFKA_BOOTSTRAP_SERVERS
names one. Tests never share topics or consumer groups: see `kafka_helpers`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from consumer.config import KafkaSettings
from consumer.devstack import kafka_bootstrap as kafka_bootstrap_servers
from tests import pg
from tests.kafka_helpers import kafka_settings


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
    """A private PostgreSQL server for the session (see tests/pg.py); tests take a fresh
    database of it with `pg.fresh_database`."""
    with pg.postgres_server() as dsn:
        yield dsn
