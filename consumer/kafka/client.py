"""The seam to Kafka: the only package that imports `confluent_kafka` (the schema registry
client aside, which lives in `codec`), and this module its front door.

Everything the worker needs from Kafka is a handful of typed verbs on two small classes,
so ingest and the outbox can be read (and faked) without knowing librdkafka:

- `Consumer` (here): `subscribe`, `consume`, `commit`, `pause`, `resume`, `close`; offsets
  are only ever committed explicitly (`enable.auto.commit` and `enable.auto.offset.store`
  are forced off, whatever `kafka.config` says), so nothing is committed before the ledger
  has it.
- `Producer` (`consumer.kafka.producer`): `deliver` a batch and learn what became of each
  message; a librdkafka producer that can no longer deliver (a fatal error, or stuck after
  a broker restart) is replaced by a fresh one at the end of that batch.

Errors surface as `KafkaFailure` (`consumer.kafka.errors`), carrying librdkafka's error
name, its `retriable` and `fatal` flags, and whether the message itself is refused
(`message_refused`). Client properties are built in `consumer.kafka.properties`; the
values that cross the seam are in `consumer.kafka.messages`. This module re-exports them
all, so callers import the seam from one place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from consumer.kafka.errors import (
    MESSAGE_REFUSED,
    KafkaConfigError,
    KafkaFailure,
    build_client,
    kafka_failure,
)
from consumer.kafka.messages import Message, OutgoingMessage, Partition
from consumer.kafka.producer import (
    DeliveryCallback,
    DeliveryOutcome,
    Producer,
    ProducerClient,
    ProducerFactory,
)
from consumer.kafka.properties import (
    Config,
    client_config,
    consumer_config,
    dead_letter_producer_config,
    producer_config,
)

__all__ = [
    "MESSAGE_REFUSED",
    "BrokerProbe",
    "Config",
    "Consumer",
    "DeliveryCallback",
    "DeliveryOutcome",
    "KafkaConfigError",
    "KafkaFailure",
    "Message",
    "OutgoingMessage",
    "Partition",
    "Producer",
    "ProducerClient",
    "ProducerFactory",
    "RebalanceListener",
    "client_config",
    "consumer_config",
    "create_topics",
    "dead_letter_producer_config",
    "ping",
    "producer_config",
]

log = logging.getLogger(__name__)


class RebalanceListener(Protocol):
    """Called from inside `Consumer.consume` (so on the consuming thread) when the group
    changes who owns which partitions."""

    def on_assign(self, partitions: list[Partition]) -> None: ...

    def on_revoke(self, partitions: list[Partition]) -> None: ...

    def on_lost(self, partitions: list[Partition]) -> None: ...


class Consumer:
    """A Kafka consumer whose offsets move only through `commit`. One thread only."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._fatal: KafkaFailure | None = None
        self._consumer = build_client(
            confluent_kafka.Consumer, {**config, "error_cb": self._on_error}
        )

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        """Join the group; `listener` hears of assignments from inside `consume`."""

        def adapt(
            callback: Callable[[list[Partition]], None],
        ) -> Callable[[confluent_kafka.Consumer, list[TopicPartition]], None]:
            def call(_consumer: confluent_kafka.Consumer, partitions: list[TopicPartition]) -> None:
                callback([Partition(tp.topic, tp.partition) for tp in partitions])

            return call

        self._consumer.subscribe(
            list(topics),
            on_assign=adapt(listener.on_assign),
            on_revoke=adapt(listener.on_revoke),
            on_lost=adapt(listener.on_lost),
        )

    def consume(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to `max_messages` records, waiting at most `timeout` seconds (the whole
        timeout when fewer are available). Serves rebalance callbacks and heartbeats.
        Raises KafkaFailure only for fatal errors; others are logged and skipped."""
        if self._fatal is not None:
            raise self._fatal
        try:
            raw = self._consumer.consume(max_messages, timeout)
        except KafkaException as exception:
            raise kafka_failure(exception, "consume") from None
        messages = []
        for record in raw:
            error = record.error()
            if error is None:
                messages.append(_message(record))
            elif error.fatal():
                raise kafka_failure(error, "consume")
            else:
                log.warning("Kafka consumer: %s: %s", error.name(), error.str())
        return messages

    def commit(self, positions: Mapping[Partition, int]) -> None:
        """Commit synchronously: each position is the offset of the next record to read
        (last processed offset + 1). Raises KafkaFailure if any partition failed."""
        offsets = [TopicPartition(p.topic, p.partition, offset) for p, offset in positions.items()]
        try:
            committed = self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exception:
            raise kafka_failure(exception, "commit") from None
        for tp in committed:
            if tp.error is not None:
                raise kafka_failure(tp.error, f"commit of {tp.topic}[{tp.partition}]")

    def lag(self, positions: Mapping[Partition, int]) -> dict[Partition, int]:
        """Messages after each committed position, from the high watermarks the last fetch
        brought (no broker round trip; partitions not fetched yet are left out)."""
        lags = {}
        for partition, position in positions.items():
            tp = TopicPartition(partition.topic, partition.partition)
            try:
                _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high >= 0:
                lags[partition] = max(0, high - position)
        return lags

    def pause(self, partitions: Collection[Partition]) -> None:
        """Stop fetching from `partitions`; `consume` keeps the group membership alive."""
        if partitions:
            self._consumer.pause(_topic_partitions(partitions))

    def resume(self, partitions: Collection[Partition]) -> None:
        if partitions:
            self._consumer.resume(_topic_partitions(partitions))

    def close(self) -> None:
        """Leave the group (revoke callbacks run) and release the client."""
        self._consumer.close()

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = kafka_failure(error, "consumer")
            log.error("Kafka consumer fatal error: %s: %s", error.name(), error.str())
        else:
            log.warning("Kafka consumer: %s: %s", error.name(), error.str())


def _message(record: confluent_kafka.Message) -> Message:
    """Our value of a consumed record (which always has a topic, partition and offset)."""
    topic, partition, offset = record.topic(), record.partition(), record.offset()
    if topic is None or partition is None or offset is None:
        raise KafkaFailure("consumed a record without a position", code="_BAD_MSG")
    return Message(topic, partition, offset, record.key(), record.value(), _headers(record))


def _headers(record: confluent_kafka.Message) -> tuple[tuple[str, bytes], ...]:
    raw = record.headers()
    if not raw:
        return ()
    pairs = raw.items() if isinstance(raw, dict) else raw
    return tuple(
        (name, value.encode() if isinstance(value, str) else value or b"") for name, value in pairs
    )


def _topic_partitions(partitions: Iterable[Partition]) -> list[TopicPartition]:
    return [TopicPartition(p.topic, p.partition) for p in partitions]


class BrokerProbe:
    """Whether a broker answers right now (for /readyz). One client, kept: a new one per
    probe would connect, and log its connection failures, every time it is asked."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._admin = build_client(AdminClient, dict(config))

    def answers(self, timeout: float) -> bool:
        """True once a broker answered a metadata request within `timeout` seconds."""
        try:
            self._admin.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return True


def ping(config: Mapping[str, Any], timeout: float) -> None:
    """Raise KafkaFailure unless a broker answers a metadata request within `timeout`."""
    admin = build_client(AdminClient, dict(config))
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exception:
        raise kafka_failure(exception, "metadata request") from None


def create_topics(
    config: Mapping[str, Any], names: Iterable[str], partitions: int, timeout: float = 10.0
) -> None:
    """Create topics (tests, `make run`); ones that already exist are left as they are."""
    admin = build_client(AdminClient, dict(config))
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    for future in futures.values():
        try:
            future.result(timeout)
        except KafkaException as exception:
            failure = kafka_failure(exception, "create topic")
            if failure.code != "TOPIC_ALREADY_EXISTS":
                raise failure from None
