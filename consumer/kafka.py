"""The seam to Kafka: the only module that imports `confluent_kafka` (the schema registry
client aside, which lives in `codec`).

Everything the worker needs from Kafka is a handful of typed verbs on two small classes,
so ingest and the outbox can be read (and faked) without knowing librdkafka:

- `Consumer`: `subscribe`, `consume`, `commit`, `pause`, `resume`, `close`; offsets are
  only ever committed explicitly (`enable.auto.commit` and `enable.auto.offset.store` are
  forced off, whatever `kafka.config` says), so nothing is committed before the ledger
  has it.
- `Producer`: `deliver` a batch and learn what became of each message; a librdkafka
  producer that can no longer deliver (a fatal error, or stuck after a broker restart)
  is replaced by a fresh one at the end of that batch.

Errors surface as `KafkaFailure`, carrying librdkafka's error name, its `retriable` and
`fatal` flags, and whether the message itself is refused (`message_refused`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol, TypeVar

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from consumer.config import ConfigError, KafkaSettings
from consumer.metrics import PRODUCER_REBUILDS

log = logging.getLogger(__name__)
_librdkafka_log = logging.getLogger("consumer.kafka.librdkafka")


def _not_cross_client_warning(record: logging.LogRecord) -> bool:
    """`kafka.config` goes to consumers and producers alike (one place for security.*,
    sasl.*), so librdkafka's notes that a consumer-only property is ignored by a producer
    (or the reverse) are expected, not news for the operator."""
    return "will be ignored by this" not in record.getMessage()


_librdkafka_log.addFilter(_not_cross_client_warning)

Config = dict[str, Any]
DeliveryCallback = Callable[[KafkaError | None, confluent_kafka.Message], None]

_QUEUE_FULL_WAIT: Final = 0.1
_RECEIVE_MESSAGE_MAX_BYTES: Final = 100_000_000  # librdkafka's default
_MESSAGE_MAX_BYTES_CEILING: Final = 1_000_000_000  # the most librdkafka accepts


class KafkaConfigError(ConfigError):
    """librdkafka refused a property of `kafka.config` (unknown name or bad value)."""


T = TypeVar("T")


def _build(client: Callable[[Config], T], config: Config) -> T:
    """Construct a librdkafka client; a property it refuses is the user's configuration
    mistake, reported as such rather than as a traceback."""
    try:
        return client(config)
    except KafkaException as exception:
        error = exception.args[0] if exception.args else None
        if isinstance(error, KafkaError) and error.code() == KafkaError._INVALID_ARG:
            raise KafkaConfigError(f"kafka.config: {error.str()}") from None
        raise


MESSAGE_REFUSED: Final = frozenset(
    {"MSG_SIZE_TOO_LARGE", "RECORD_LIST_TOO_LARGE", "INVALID_RECORD"}
)
"""Errors about one message itself (librdkafka's own size check and the broker's
MESSAGE_TOO_LARGE share the name MSG_SIZE_TOO_LARGE): sending it again cannot succeed."""

_PRODUCER_STATE_LOST: Final = frozenset(
    {
        "_FATAL",
        "UNKNOWN_PRODUCER_ID",
        "OUT_OF_ORDER_SEQUENCE_NUMBER",
        "INVALID_PRODUCER_EPOCH",
        "INVALID_PRODUCER_ID_MAPPING",
        "PRODUCER_FENCED",
    }
)
"""Errors after which an idempotent producer's id, epoch or sequence numbers are worthless:
the broker forgot or disowns them (a restart without its state, an unclean leader
election, a truncated log; Tansu after a restart answers PRODUCER_FENCED to each message).
librdkafka flags only some of them fatal and retries others without end; a fresh producer
fixes all of them."""


class KafkaFailure(Exception):
    """A Kafka operation failed; `code` is librdkafka's error name (e.g. `_TRANSPORT`)."""

    def __init__(self, message: str, *, code: str, retriable: bool = False, fatal: bool = False):
        super().__init__(message)
        self.code = code
        self.retriable = retriable
        self.fatal = fatal

    @property
    def message_refused(self) -> bool:
        """The producer or the broker refuses this message itself (its size, its form), so
        a retry of the same bytes fails the same way, unlike a failure of the connection."""
        return self.code in MESSAGE_REFUSED


def _failure(cause: KafkaError | KafkaException, doing: str) -> KafkaFailure:
    """Map a KafkaError (or a KafkaException, which normally wraps one) to KafkaFailure.

    `_FATAL` counts as fatal even without librdkafka's flag: once a producer is fatally
    failed, each later message is reported with that code but not flagged."""
    error = cause.args[0] if isinstance(cause, KafkaException) and cause.args else cause
    if not isinstance(error, KafkaError):
        return KafkaFailure(f"{doing} failed: {error}", code="_UNKNOWN")
    return KafkaFailure(
        f"{doing} failed: {error.name()}: {error.str()}",
        code=error.name(),
        retriable=error.retriable(),
        fatal=error.fatal() or error.code() == KafkaError._FATAL,
    )


class ProducerClient(Protocol):
    """The part of `confluent_kafka.Producer` we use; tests wrap it to inject faults."""

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        on_delivery: DeliveryCallback | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None: ...

    def poll(self, timeout: float = -1) -> int: ...

    def flush(self, timeout: float = -1) -> int: ...

    def purge(self) -> None: ...


ProducerFactory = Callable[[Config], ProducerClient]


class Partition(NamedTuple):
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Message:
    """A consumed record: where it came from, and its key and value exactly as stored.
    A header with a null value reads as `b""`."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def source(self) -> Partition:
        return Partition(self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


class RebalanceListener(Protocol):
    """Called from inside `Consumer.consume` (so on the consuming thread) when the group
    changes who owns which partitions."""

    def on_assign(self, partitions: list[Partition]) -> None: ...

    def on_revoke(self, partitions: list[Partition]) -> None: ...

    def on_lost(self, partitions: list[Partition]) -> None: ...


def client_config(settings: KafkaSettings) -> Config:
    """What every client needs: the bootstrap servers and the `kafka.config` passthrough
    (security.protocol, sasl.*, ...), with librdkafka's logs routed to `logging`."""
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        **settings.config,
        "logger": _librdkafka_log,
    }


def consumer_config(settings: KafkaSettings) -> Config:
    """A consumer that starts a new group at the earliest offset (a worker must never skip
    requests) unless `kafka.config` says otherwise, and never commits on its own."""
    return {
        "group.id": settings.group_id,
        "auto.offset.reset": "earliest",
        # librdkafka prefetches up to 64 MiB by default, so memory grew with the backlog;
        # a few MiB keep the fetcher ahead of a 1,000-message batch (measured by make bench).
        "queued.max.messages.kbytes": 4096,
        **client_config(settings),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
    }


def producer_config(settings: KafkaSettings, linger_ms: int = 5) -> Config:
    """An idempotent producer (acks=all): no duplicates or reordering from its own retries,
    which keeps a request's status events in order."""
    return {
        "linger.ms": linger_ms,
        **client_config(settings),
        "enable.idempotence": True,
        "acks": "all",
    }


def dead_letter_producer_config(settings: KafkaSettings) -> Config:
    """The producer config for dead letters, which carry a consumed message whole: one
    record may be as large as the consumer can fetch (its `receive.message.max.bytes`,
    which bounds a fetch answer and so the largest record), not just librdkafka's default
    `message.max.bytes` of 1,000,000. What the broker still refuses is dead-lettered as a
    pointer (see `consumer.ingest`)."""
    config = producer_config(settings)
    fetchable = int(config.get("receive.message.max.bytes", _RECEIVE_MESSAGE_MAX_BYTES))
    configured = int(config.get("message.max.bytes", 0))
    config["message.max.bytes"] = min(_MESSAGE_MAX_BYTES_CEILING, max(fetchable, configured))
    return config


class Consumer:
    """A Kafka consumer whose offsets move only through `commit`. One thread only."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._fatal: KafkaFailure | None = None
        self._consumer = _build(confluent_kafka.Consumer, {**config, "error_cb": self._on_error})

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
            raise _failure(exception, "consume") from None
        messages = []
        for record in raw:
            error = record.error()
            if error is None:
                messages.append(_message(record))
            elif error.fatal():
                raise _failure(error, "consume")
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
            raise _failure(exception, "commit") from None
        for tp in committed:
            if tp.error is not None:
                raise _failure(tp.error, f"commit of {tp.topic}[{tp.partition}]")

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
            self._fatal = _failure(error, "consumer")
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


class _Pending:
    """Marks a message whose delivery report has not arrived yet."""


_PENDING: Final = _Pending()
DeliveryOutcome = KafkaFailure | None
"""None: the broker has the message (acks=all). Otherwise why it was not delivered."""
Outcomes = list[DeliveryOutcome | _Pending]

_STALLED: Final = frozenset({"_TIMED_OUT", "_QUEUE_FULL"})
_LIBRDKAFKA_ERRORS: Final = (KafkaException, SystemError, RuntimeError)
"""What a librdkafka call can raise once the producer failed (flush of a fatally failed
producer raises SystemError)."""


class _Client:
    """One librdkafka producer, and the first sign it gave that it cannot deliver any more
    (`broken`: the kind, "fatal" or "unconfirmed", and what happened). Its callbacks run
    on the calling thread, inside `poll` and `flush`."""

    def __init__(self, factory: ProducerFactory, config: Config) -> None:
        self.broken: tuple[str, str] | None = None
        self.unreported = 0  # produced, delivery report not arrived yet
        self.producer = _build(factory, {**config, "error_cb": self._on_error})

    def produce(
        self, message: OutgoingMessage, outcomes: Outcomes, index: int, deadline: float
    ) -> DeliveryOutcome | _Pending:
        """Hand one message to librdkafka (its report will land in `outcomes[index]`),
        waiting for room while its queue is full."""
        headers: list[tuple[str, str | bytes | None]] = list(message.headers)
        on_delivery = functools.partial(self._on_delivery, outcomes, index)
        while True:
            try:
                self.producer.produce(
                    message.topic,
                    value=message.value,
                    key=message.key,
                    headers=headers,
                    on_delivery=on_delivery,
                )
            except BufferError:
                if time.monotonic() >= deadline:
                    return KafkaFailure("producer queue full", code="_QUEUE_FULL", retriable=True)
                self.wait(self.producer.poll, _QUEUE_FULL_WAIT)
                continue
            except KafkaException as exception:
                return self._note(_failure(exception, "produce"))
            self.unreported += 1
            return _PENDING

    def wait(self, call: Callable[[float], int], timeout: float) -> None:
        """`poll` or `flush` for up to `timeout` seconds; an exception out of it means the
        client is broken."""
        try:
            call(timeout)
        except _LIBRDKAFKA_ERRORS as exception:
            self.break_down("fatal", f"{type(exception).__name__} from librdkafka: {exception}")

    def discard(self) -> None:
        """Purge what librdkafka still holds (already reported to the caller as not
        delivered), so that dropping the client does not wait for a broker."""
        try:
            self.producer.purge()
            self.producer.flush(0)
        except _LIBRDKAFKA_ERRORS as exception:
            log.info("Purging the broken producer: %s", exception)

    def _on_delivery(
        self,
        outcomes: Outcomes,
        index: int,
        error: KafkaError | None,
        _message: confluent_kafka.Message,
    ) -> None:
        self.unreported -= 1
        outcomes[index] = None if error is None else self._note(_failure(error, "delivery"))

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self.break_down("fatal", f"fatal error {error.name()}: {error.str()}")
            log.error("Kafka producer fatal error: %s: %s", error.name(), error.str())
        else:
            log.warning("Kafka producer: %s: %s", error.name(), error.str())

    def _note(self, failure: KafkaFailure) -> KafkaFailure:
        if failure.fatal or failure.code in _PRODUCER_STATE_LOST:
            self.break_down("fatal", str(failure))
        return failure

    def break_down(self, kind: str, why: str) -> None:
        """Note a sign that this client cannot deliver (the first one is kept)."""
        if self.broken is None:
            self.broken = (kind, why)


class Producer:
    """Produces batches and reports each message's fate. One thread only.

    The librdkafka producer inside goes through three states:

    - healthy: messages go out and their delivery reports come back;
    - broken: it gave a sign that it cannot deliver any more: an error callback with the
      fatal flag; a delivery report or produce() exception that is fatal, `_FATAL` or says
      the broker lost our producer state (`_PRODUCER_STATE_LOST`); an exception out of
      `flush` or `poll` (a fatally failed producer's flush raises SystemError); or
      messages still unconfirmed (or a queue still full) at the batch's deadline: after a
      broker restart librdkafka can retry UNKNOWN_PRODUCER_ID forever without calling it
      fatal (measured with Tansu). `rd_kafka_fatal_error` is not exposed by
      confluent_kafka, but a fatally failed producer fails every produce with `_FATAL`;
    - rebuilt: before the next batch, its queue is purged and a new producer is built
      from the same config (counted in `erasure_kafka_producer_rebuilds_total`): healthy.

    Messages of that batch that were not confirmed are reported as not delivered, so the
    caller sends them again: nothing is lost, and one the old producer got out before it
    was dropped arrives twice (callers tolerate duplicates). A message refused for
    itself (`KafkaFailure.message_refused`) fails alone and breaks nothing.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        factory: ProducerFactory = confluent_kafka.Producer,
        *,
        role: str = "other",
    ) -> None:
        """`role` names this producer in logs and metrics (e.g. "outbox", "dlq")."""
        self._config: Config = dict(config)
        self._factory = factory
        self._role = role
        self._client = _Client(factory, self._config)

    def deliver(self, messages: Sequence[OutgoingMessage], timeout: float) -> list[DeliveryOutcome]:
        """Produce `messages` and wait up to `timeout` seconds for their delivery reports.

        Returns one outcome per message, in order; messages not confirmed in time count as
        failed (they may still arrive: callers must tolerate the duplicates of a retry).
        """
        if self._client.broken is not None:
            self._rebuild(*self._client.broken)
        client = self._client
        outcomes: Outcomes = [_PENDING] * len(messages)
        deadline = time.monotonic() + timeout
        for index, message in enumerate(messages):
            outcomes[index] = client.produce(message, outcomes, index, deadline)
        client.wait(client.producer.flush, max(0.0, deadline - time.monotonic()))
        results = [
            KafkaFailure("delivery not confirmed in time", code="_TIMED_OUT", retriable=True)
            if isinstance(outcome, _Pending)
            else outcome
            for outcome in outcomes
        ]
        if any(result is not None and result.code in _STALLED for result in results):
            client.break_down("unconfirmed", "messages still unconfirmed at the deadline")
        if client.broken is not None:
            log.warning("The %s Kafka producer cannot deliver: %s", self._role, client.broken[1])
        return results

    def close(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for messages in flight; returns how many were left."""
        self._client.wait(self._client.producer.flush, timeout)
        return self._client.unreported

    def _rebuild(self, reason: str, why: str) -> None:
        """Drop the client that cannot deliver and start a new one from the same config."""
        log.info("Rebuilding the %s Kafka producer (%s: %s)", self._role, reason, why)
        self._client.discard()
        self._client = _Client(self._factory, self._config)
        PRODUCER_REBUILDS.labels(producer=self._role, reason=reason).inc()


class BrokerProbe:
    """Whether a broker answers right now (for /readyz). One client, kept: a new one per
    probe would connect, and log its connection failures, every time it is asked."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._admin = _build(AdminClient, dict(config))

    def answers(self, timeout: float) -> bool:
        """True once a broker answered a metadata request within `timeout` seconds."""
        try:
            self._admin.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return True


def ping(config: Mapping[str, Any], timeout: float) -> None:
    """Raise KafkaFailure unless a broker answers a metadata request within `timeout`."""
    admin = _build(AdminClient, dict(config))
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exception:
        raise _failure(exception, "metadata request") from None


def create_topics(
    config: Mapping[str, Any], names: Iterable[str], partitions: int, timeout: float = 10.0
) -> None:
    """Create topics (tests, `make run`); ones that already exist are left as they are."""
    admin = _build(AdminClient, dict(config))
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    for future in futures.values():
        try:
            future.result(timeout)
        except KafkaException as exception:
            failure = _failure(exception, "create topic")
            if failure.code != "TOPIC_ALREADY_EXISTS":
                raise failure from None
