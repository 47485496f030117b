"""The dead-letter topic as the `dlq` commands read it (contract §1).

It is read from the beginning by a consumer of its own (a throwaway group id that never
commits, partitions assigned, not subscribed), up to the end each partition had when it
was reached (librdkafka's partition EOF: the fetch's own high watermark, which is right
even where a broker reports a stale one), and never further.

What may be shown of a dead letter: its position, reason, error message, source position
and replay count, and the request_id where the value (or else the key) holds one in
canonical form. Never the bytes themselves: they may carry identity values.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import confluent_kafka
from confluent_kafka import KafkaError, TopicPartition

from consumer.clock import SYSTEM_CLOCK, Clock
from consumer.config import KafkaSettings
from consumer.kafka.errors import KafkaFailure, build_client, kafka_failure
from consumer.kafka.framing import REQUEST_SCHEMA, UndecodableMessage, read_body, unframe
from consumer.kafka.properties import client_config
from consumer.ledger.protocol import Ledger
from consumer.ledger.records import ReplayRecord
from consumer.ops.inputs import is_request_id
from consumer.pipeline.dead_letters import REPLAYS, VALUE_OMITTED

READ_TIMEOUT_SECONDS: Final = 30.0
_POLL_SECONDS: Final = 0.2
_BATCH: Final = 500


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic: where it is, and its bytes (never shown)."""

    partition: int
    offset: int
    key: bytes | None = field(repr=False)
    value: bytes | None = field(repr=False)
    headers: tuple[tuple[str, bytes], ...] = field(repr=False)

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        """The last value of header `name`, as text."""
        found = [value for key, value in self.headers if key == name]
        return found[-1].decode("utf-8", "replace") if found else None

    @property
    def reason(self) -> str:
        return self.header("error.reason") or "-"

    @property
    def message(self) -> str:
        return self.header("error.message") or "-"

    @property
    def source(self) -> str:
        parts = (self.header(f"source.{part}") for part in ("topic", "partition", "offset"))
        return "/".join(part or "?" for part in parts)

    @property
    def replays(self) -> int:
        """How many times this message had been replayed before it came back here."""
        text = self.header(REPLAYS)
        return int(text) if text is not None and text.isdecimal() else 0

    @property
    def value_omitted(self) -> bool:
        """A pointer to a message too large for this topic: there is nothing to replay."""
        return self.header(VALUE_OMITTED) == "true"

    @property
    def request_id(self) -> str | None:
        """The request_id of the value, else the key, where it is a canonical UUID."""
        candidate: Any
        try:
            candidate = read_body(unframe(self.value)[0], REQUEST_SCHEMA, None)["request_id"]
        except UndecodableMessage:
            candidate = None if self.key is None else self.key.decode("utf-8", "replace")
        return candidate if isinstance(candidate, str) and is_request_id(candidate) else None


def read_dead_letters(
    settings: KafkaSettings, timeout: float = READ_TIMEOUT_SECONDS, clock: Clock = SYSTEM_CLOCK
) -> Iterator[DeadLetter]:
    """Every record of the dead-letter topic as it is read (in offset order within each
    partition; partitions may interleave); KafkaFailure if the topic is missing, or when
    `timeout` seconds pass without a record or the end of a partition arriving."""
    consumer = build_client(confluent_kafka.Consumer, _reader_config(settings))
    try:
        partitions = _partitions(consumer, settings.dlq_topic, timeout)
        consumer.assign(
            [
                TopicPartition(settings.dlq_topic, p, confluent_kafka.OFFSET_BEGINNING)
                for p in partitions
            ]
        )
        yield from _read_to_end(consumer, set(partitions), timeout, clock)
    finally:
        consumer.close()


def _reader_config(settings: KafkaSettings) -> dict[str, Any]:
    return {
        **client_config(settings),
        "group.id": f"erasure-worker-dlq-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    }


def _partitions(consumer: confluent_kafka.Consumer, topic: str, timeout: float) -> list[int]:
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
    except confluent_kafka.KafkaException as exception:
        raise kafka_failure(exception, "reading the dead-letter topic's metadata") from None
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise KafkaFailure(f"the dead-letter topic {topic} does not exist", code="_UNKNOWN_TOPIC")
    return sorted(found.partitions)


def _read_to_end(
    consumer: confluent_kafka.Consumer, pending: set[int], timeout: float, clock: Clock
) -> Iterator[DeadLetter]:
    """The records of the `pending` partitions up to each one's end; records of a
    partition whose end was reached are newer dead letters, left for the next reader."""
    deadline = clock.monotonic() + timeout
    while pending:
        if clock.monotonic() > deadline:
            raise KafkaFailure("the dead-letter topic stopped answering", code="_TIMED_OUT")
        for record in consumer.consume(_BATCH, _POLL_SECONDS):
            error, partition = record.error(), record.partition()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                if error.fatal():
                    raise kafka_failure(error, "reading the dead-letter topic")
                continue  # librdkafka retries on its own; the deadline bounds the wait
            deadline = clock.monotonic() + timeout
            if error is not None:
                pending.discard(partition)
            elif partition in pending:
                yield _dead_letter(record)


def _dead_letter(record: confluent_kafka.Message) -> DeadLetter:
    partition, offset = record.partition(), record.offset()
    if partition is None or offset is None:
        raise KafkaFailure("read a dead letter without a position", code="_BAD_MSG")
    raw = record.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    headers = tuple(
        (name, value.encode() if isinstance(value, str) else value or b"") for name, value in pairs
    )
    return DeadLetter(partition, offset, record.key(), record.value(), headers)


def with_replays(
    ledger: Ledger, topic: str, letters: Iterable[DeadLetter]
) -> Iterator[tuple[DeadLetter, ReplayRecord | None]]:
    """Each dead letter with its replay as the ledger recorded it, looked up in batches."""
    for batch in batched(letters):
        found: dict[tuple[int, int], ReplayRecord] = {}
        for partition in sorted({letter.partition for letter in batch}):
            offsets = [letter.offset for letter in batch if letter.partition == partition]
            for offset, record in ledger.replays(topic, partition, offsets).items():
                found[partition, offset] = record
        for letter in batch:
            yield letter, found.get((letter.partition, letter.offset))


def batched(letters: Iterable[DeadLetter]) -> Iterator[list[DeadLetter]]:
    """Dead letters in lists of up to a few hundred, for lookups and deliveries in bulk."""
    batch: list[DeadLetter] = []
    for letter in letters:
        batch.append(letter)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
