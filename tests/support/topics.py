"""The worker's topics read from the outside, as a downstream consumer would: requests
decoded with the schema file (to predict how the worker must treat them), the status and
dead-letter topics read whole without a consumer group, and waiting on the status topic.

Reads go through `confluent_kafka` directly; the only worker module used is the
status-event decoder (a downstream consumer needs one).
"""

from __future__ import annotations

import io
import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import confluent_kafka
import fastavro
from confluent_kafka import Consumer, Producer, TopicPartition

from consumer.kafka.codec import decode_status_event
from consumer.model import Status, StatusEvent
from tests.support.contract import TERMINAL
from tests.support.waiting import wait_until

SENTINEL_KEY = b"__end-of-test-read__"
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _plain_strings(node: Any) -> Any:
    """The schema without `uuid` logical types, so a malformed request_id reads as a string
    (the worker must see it and call it an invalid request, not an undecodable one)."""
    if isinstance(node, dict):
        if node.get("logicalType") == "uuid":
            return {key: value for key, value in node.items() if key != "logicalType"}
        return {key: _plain_strings(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain_strings(value) for value in node]
    return node


REQUEST_SCHEMA = fastavro.parse_schema(
    _plain_strings(
        json.loads((SCHEMAS / "subject_erasure_requested.avsc").read_text(encoding="utf-8"))
    )
)


def read_request_record(value: bytes | None) -> dict[str, Any]:
    """Decode a framed request value with the schema file; ValueError if it is undecodable
    (no Confluent framing, a broken Avro body or trailing bytes)."""
    if value is None or len(value) < 5 or value[0] != 0:
        raise ValueError("not Confluent-framed")
    buffer = io.BytesIO(value[5:])
    try:
        record: Any = fastavro.schemaless_reader(buffer, REQUEST_SCHEMA, None)
    except Exception as error:
        raise ValueError(f"undecodable: {type(error).__name__}") from None
    if buffer.tell() != len(value) - 5 or not isinstance(record, dict):
        raise ValueError("trailing bytes")
    return record


def expected_dlq_reason(value: bytes | None) -> str:
    try:
        read_request_record(value)
    except ValueError:
        return "undecodable"
    return "invalid_request"


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    header_names: tuple[str, ...] = ()

    def header(self, name: str) -> str | None:
        raw = self.headers.get(name)
        return None if raw is None else raw.decode("utf-8")


@dataclass(frozen=True)
class StatusRecord:
    record: Record
    event: StatusEvent


def as_record(message: confluent_kafka.Message) -> Record:
    """A consumed message with its headers as bytes by name (and their order kept)."""
    raw = message.headers() or []
    pairs = list(raw.items()) if isinstance(raw, dict) else raw
    headers = {
        name: value if isinstance(value, bytes) else (value or "").encode() for name, value in pairs
    }
    return Record(
        message.partition() or 0,
        message.offset() or 0,
        message.key(),
        message.value(),
        headers,
        tuple(name for name, _ in pairs),
    )


class TopicReader:
    """Reads every partition of a topic from the beginning, without a group (`assign`),
    keeping what it has read; `poll()` fetches whatever has arrived since."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"e2e-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
            }
        )
        metadata = self._consumer.list_topics(topic, timeout=10)
        self.partitions = sorted(metadata.topics[topic].partitions)
        self._consumer.assign(
            [TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in self.partitions]
        )
        self.records: list[Record] = []

    def poll(self, timeout: float = 0.2) -> list[Record]:
        """What arrived since the last poll (waits at most `timeout` when nothing has)."""
        new: list[Record] = []
        while True:
            batch = [m for m in self._consumer.consume(1000, timeout) if m.error() is None]
            new.extend(as_record(m) for m in batch)
            if len(batch) < 1000:
                break
        self.records.extend(new)
        return new

    def read_to_end(self, bootstrap: str, timeout: float = 20.0) -> list[Record]:
        """Everything in the topic: write a sentinel to each partition and read until all of
        them are back. Only meaningful once nobody else writes to the topic any more."""
        producer = Producer({"bootstrap.servers": bootstrap})
        for partition in self.partitions:
            producer.produce(self.topic, b"", SENTINEL_KEY, partition)
        assert producer.flush(10) == 0, f"sentinels to {self.topic} not delivered"

        def all_ends_read() -> bool:
            self.poll()
            ends = {r.partition for r in self.records if r.key == SENTINEL_KEY}
            return ends >= set(self.partitions)

        wait_until(all_ends_read, timeout, f"the sentinels of {self.topic} read back", interval=0)
        self.records = [r for r in self.records if r.key != SENTINEL_KEY]
        return self.records

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class StatusReader(TopicReader):
    """The status topic as a downstream consumer sees it."""

    def status_records(self) -> list[StatusRecord]:
        return [StatusRecord(r, decode_status_event(r.value or b"")) for r in self.records]

    def events(self) -> list[StatusEvent]:
        return [s.event for s in self.status_records()]

    def request_terminals(self) -> dict[str, list[Status]]:
        """Terminal request-scope statuses seen, per request."""
        out: defaultdict[str, list[Status]] = defaultdict(list)
        for event in self.events():
            if event.vendor is None and event.status in TERMINAL:
                out[event.request_id].append(event.status)
        return dict(out)


def wait_for_terminals(
    reader: StatusReader,
    request_ids: Iterable[str],
    timeout: float,
    diagnostics: Callable[[], str],
) -> dict[str, list[Status]]:
    """Read the status topic until every request has a terminal request-scope event."""
    wanted = set(request_ids)

    def all_terminal() -> dict[str, list[Status]] | None:
        reader.poll()
        terminals = reader.request_terminals()
        return terminals if wanted <= terminals.keys() else None

    try:
        return wait_until(all_terminal, timeout, "terminal request statuses", interval=0)
    except AssertionError:
        missing = wanted - reader.request_terminals().keys()
        raise AssertionError(
            f"{len(missing)} of {len(wanted)} requests have no terminal request status "
            f"after {timeout:.0f} s (e.g. {sorted(missing)[:3]}){diagnostics()}"
        ) from None
