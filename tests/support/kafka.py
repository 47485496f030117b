"""Kafka test helpers shared by every suite that needs a broker (ingest, outbox, crash and
end-to-end tests): unique names, topics, settings with fast group timeouts, reading and
writing raw records, and committed offsets.

Reads and writes go through `confluent_kafka` directly, not through `consumer.kafka.client`, so
the tests check the worker against the broker itself rather than against its own seam.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

import confluent_kafka
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from consumer.config import KafkaSettings
from consumer.kafka.client import create_topics
from devtools import devstack
from tests.support.waiting import wait_until

FAST_GROUP_CONFIG: dict[str, str | int | float | bool] = {**devstack.fast_group_config()}


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create_topic(bootstrap: str, prefix: str = "topic", partitions: int = 1) -> str:
    """A new topic with a unique name (tests never share topics)."""
    name = unique_name(prefix)
    create_topics({"bootstrap.servers": bootstrap}, [name], partitions)
    return name


def kafka_settings(bootstrap: str, partitions: int = 1, **overrides: object) -> KafkaSettings:
    """Settings with a unique group and freshly created input, status and DLQ topics."""
    values: dict[str, object] = {
        "bootstrap_servers": bootstrap,
        "group_id": unique_name("group"),
        "input_topic": create_topic(bootstrap, "requests", partitions),
        "status_topic": create_topic(bootstrap, "status", partitions),
        "dlq_topic": create_topic(bootstrap, "dlq", 1),
        "config": dict(FAST_GROUP_CONFIG),
    }
    values.update(overrides)
    return KafkaSettings.model_validate(values)


def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None]],
    partition: int | None = None,
) -> list[tuple[int, int]]:
    """Produce (key, value) records, in order, and return each one's (partition, offset)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    positions: list[tuple[int, int] | None] = [None] * len(records)

    def delivered(index: int) -> Callable[[KafkaError | None, confluent_kafka.Message], None]:
        def record(error: KafkaError | None, message: confluent_kafka.Message) -> None:
            if error is None:
                positions[index] = (message.partition() or 0, message.offset() or 0)

        return record

    target = -1 if partition is None else partition  # -1: let the partitioner choose
    for index, (key, value) in enumerate(records):
        producer.produce(topic, value, key, target, on_delivery=delivered(index))
    left = producer.flush(10)
    confirmed = [position for position in positions if position is not None]
    if left or len(confirmed) != len(records):
        raise AssertionError(f"{len(records) - len(confirmed)} test record(s) not delivered")
    return confirmed


def read_all(
    bootstrap: str, topic: str, count: int, timeout: float = 10.0
) -> list[confluent_kafka.Message]:
    """The first `count` records of every partition of `topic` (no group: `assign`),
    partition by partition in offset order; fails if fewer arrive within `timeout`."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("reader"),
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        start = confluent_kafka.OFFSET_BEGINNING
        consumer.assign([TopicPartition(topic, p, start) for p in partitions])
        received: list[confluent_kafka.Message] = []

        def all_read() -> bool:
            batch = consumer.consume(count - len(received), 0.2)
            received.extend(message for message in batch if message.error() is None)
            return len(received) >= count

        try:
            wait_until(all_read, timeout, f"{count} records from {topic}", interval=0)
        except AssertionError:
            raise AssertionError(f"read {len(received)} of {count} records from {topic}") from None
        return sorted(received, key=lambda m: (m.partition() or 0, m.offset() or 0))
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group_id: str, topic: str) -> dict[int, int]:
    """The group's committed positions on `topic` (partitions without one are left out)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        committed = consumer.committed(partitions, timeout=10)
        return {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
    finally:
        consumer.close()


def committed(kafka: KafkaSettings) -> dict[int, int]:
    """The committed positions of the settings' group on its input topic."""
    return committed_offsets(kafka.bootstrap_servers, kafka.group_id, kafka.input_topic)
