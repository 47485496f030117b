"""The bare baseline: the least code that moves erasure requests from Kafka into the ledger
tables with the worker's batching, for the worker to be compared with.

`consume(1000, 0.2)` -> `fastavro.schemaless_reader` past the 5-byte header -> one
transaction inserting each request row and its item rows (the worker's tables, columns and
indexes, executemany) -> synchronous offset commit. No validation, no fan-out planning, no
status events, no metrics, no error handling: what is left is the floor set by librdkafka,
fastavro and the database driver, which the worker cannot beat and should stay close to.

Run by `bench.ingest` as `python -m bench.baseline JOB_JSON`.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Protocol

import confluent_kafka
import fastavro
import psycopg
from confluent_kafka import TopicPartition

from bench.common import (
    DATABASE_ID,
    IDENTITY_TYPE,
    VENDOR,
    Deadline,
    Job,
    Result,
    child_main,
    memory_mib,
    reached,
)
from bench.cpu_time import backend_cpu_seconds

BATCH = 1000
POLL_TIMEOUT = 0.2
HEADER_SIZE = 5
DESTINATION = str(DATABASE_ID)
REQUEST_COLUMNS = "request_id, regulation, requested_at, received_at, source, trace_id, status"
ITEM_COLUMNS = (
    "request_id, vendor, identity_type, identity_value, destination, status,"
    " next_attempt_at, created_at, updated_at"
)

Row = tuple[Any, ...]


def request_schema() -> Any:
    """The request schema with `uuid` read as a plain string (as the worker's codec does:
    the id is inserted as text anyway, and a UUID object would only cost time)."""
    text = resources.files("consumer").joinpath("schemas", "subject_erasure_requested.avsc")
    schema = json.loads(text.read_text(encoding="utf-8"))
    for field in schema["fields"]:
        if isinstance(field["type"], dict) and field["type"].get("logicalType") == "uuid":
            field["type"] = "string"
    return fastavro.parse_schema(schema)


class Inserter(Protocol):
    def insert(self, requests: Sequence[Row], items: Sequence[Row]) -> None: ...

    def to_db(self, moment: datetime) -> object: ...

    def close(self) -> None: ...


class SqliteInserter:
    """Same connection settings as the SQLite ledger (WAL, synchronous=FULL)."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._requests = f"INSERT INTO requests ({REQUEST_COLUMNS}) VALUES ({_marks(7, '?')})"
        self._items = f"INSERT INTO items ({ITEM_COLUMNS}) VALUES ({_marks(9, '?')})"

    def insert(self, requests: Sequence[Row], items: Sequence[Row]) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        self._conn.executemany(self._requests, requests)
        self._conn.executemany(self._items, items)
        self._conn.execute("COMMIT")

    def to_db(self, moment: datetime) -> object:
        return moment.isoformat(timespec="microseconds")

    def close(self) -> None:
        self._conn.close()


class PostgresInserter:
    """psycopg 3 executemany (pipelined), one transaction per batch."""

    def __init__(self, url: str) -> None:
        self._conn = psycopg.connect(url, autocommit=False)
        self._conn.execute("SET TIME ZONE 'UTC'")
        self._conn.commit()
        self._requests = f"INSERT INTO requests ({REQUEST_COLUMNS}) VALUES ({_marks(7, '%s')})"
        self._items = f"INSERT INTO items ({ITEM_COLUMNS}) VALUES ({_marks(9, '%s')})"

    def insert(self, requests: Sequence[Row], items: Sequence[Row]) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(self._requests, requests)
            cursor.executemany(self._items, items)
        self._conn.commit()

    def to_db(self, moment: datetime) -> object:
        return moment

    def close(self) -> None:
        self._conn.close()


def _marks(count: int, mark: str) -> str:
    return ", ".join([mark] * count)


def open_inserter(url: str) -> Inserter:
    if url.startswith("sqlite:///"):
        return SqliteInserter(url.removeprefix("sqlite:///"))
    return PostgresInserter(url)


def measure(job: Job) -> Result:
    schema = request_schema()
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": job.bootstrap,
            "group.id": job.group_id,
            "auto.offset.reset": "earliest",
            **job.kafka_config,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
    )
    consumer.subscribe([job.input_topic])
    db = open_inserter(job.ledger_url)
    to_db = db.to_db
    rss_before = memory_mib("VmRSS")
    deadline = Deadline(job.timeout, "baseline")
    committed: dict[int, int] = {}
    started = cpu_started = 0.0
    batches = events = 0
    while not reached(committed, job.targets):
        deadline.check()
        messages = consumer.consume(BATCH, POLL_TIMEOUT)
        if not messages:
            continue
        if not batches:
            started, cpu_started = time.perf_counter(), time.process_time()
        at = to_db(datetime.now(UTC))
        requests: list[Row] = []
        items: list[Row] = []
        positions: dict[int, int] = {}
        for message in messages:
            value = message.value()
            if message.error() is not None or not isinstance(value, bytes):
                raise RuntimeError(f"consume error: {message.error()}")
            buffer = io.BytesIO(value)
            buffer.seek(HEADER_SIZE)
            record: dict[str, Any] = fastavro.schemaless_reader(buffer, schema, None)  # type: ignore[assignment]
            rid = record["request_id"]
            requests.append(
                (
                    rid,
                    record["regulation"],
                    to_db(record["requested_at"]),
                    at,
                    record["source"],
                    record["trace_id"],
                    "RECEIVED",
                )
            )
            items.extend(
                (rid, VENDOR, IDENTITY_TYPE, identity["value"], DESTINATION, "QUEUED", at, at, at)
                for identity in record["identities"]
                if identity["type"] == IDENTITY_TYPE
            )
            positions[message.partition()] = message.offset() + 1  # type: ignore[index,operator]
        db.insert(requests, items)
        consumer.commit(
            offsets=[TopicPartition(job.input_topic, p, o) for p, o in positions.items()],
            asynchronous=False,
        )
        committed.update(positions)
        batches += 1
        events += len(messages)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    server_cpu = backend_cpu_seconds(job.ledger_url)
    consumer.close()
    db.close()
    return Result(
        events, seconds, cpu_seconds, batches, rss_before, memory_mib("VmHWM"), server_cpu
    )


if __name__ == "__main__":
    child_main(measure)
