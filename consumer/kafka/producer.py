"""Producing to Kafka: deliver a batch and learn what became of each message.

A librdkafka producer that can no longer deliver (a fatal error, or stuck after a broker
restart) is replaced by a fresh one at the end of that batch; see `Producer`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException

from consumer.clock import SYSTEM_CLOCK, Clock
from consumer.kafka.errors import KafkaFailure, build_client, kafka_failure
from consumer.kafka.messages import OutgoingMessage
from consumer.kafka.properties import Config
from consumer.runtime.metrics import PRODUCER_REBUILDS

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[KafkaError | None, confluent_kafka.Message], None]

_QUEUE_FULL_WAIT: Final = 0.1

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

    def __init__(self, factory: ProducerFactory, config: Config, clock: Clock) -> None:
        self.broken: tuple[str, str] | None = None
        self.unreported = 0  # produced, delivery report not arrived yet
        self._clock = clock
        self.producer = build_client(factory, {**config, "error_cb": self._on_error})

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
                if self._clock.monotonic() >= deadline:
                    return KafkaFailure("producer queue full", code="_QUEUE_FULL", retriable=True)
                self.wait(self.producer.poll, _QUEUE_FULL_WAIT)
                continue
            except KafkaException as exception:
                return self._note(kafka_failure(exception, "produce"))
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
        outcomes[index] = None if error is None else self._note(kafka_failure(error, "delivery"))

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
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """`role` names this producer in logs and metrics (e.g. "outbox", "dlq"); `clock`
        times each batch's delivery deadline."""
        self._config: Config = dict(config)
        self._factory = factory
        self._role = role
        self._clock = clock
        self._client = _Client(factory, self._config, clock)

    def deliver(self, messages: Sequence[OutgoingMessage], timeout: float) -> list[DeliveryOutcome]:
        """Produce `messages` and wait up to `timeout` seconds for their delivery reports.

        Returns one outcome per message, in order; messages not confirmed in time count as
        failed (they may still arrive: callers must tolerate the duplicates of a retry).
        """
        if self._client.broken is not None:
            self._rebuild(*self._client.broken)
        client = self._client
        outcomes: Outcomes = [_PENDING] * len(messages)
        deadline = self._clock.monotonic() + timeout
        for index, message in enumerate(messages):
            outcomes[index] = client.produce(message, outcomes, index, deadline)
        client.wait(client.producer.flush, max(0.0, deadline - self._clock.monotonic()))
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
        self._client = _Client(self._factory, self._config, self._clock)
        PRODUCER_REBUILDS.labels(producer=self._role, reason=reason).inc()
