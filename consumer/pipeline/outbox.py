"""The outbox publisher: status events recorded in the ledger -> `erasure.status.changed`.

Events are recorded in the same transactions as the changes that cause them, and only
removed from the outbox once the broker has confirmed them, so none is lost; after a
crash one may be sent twice, with the same event_id (consumers dedupe on it).

One replica publishes at a time: the one holding the ledger's named lease "outbox",
renewed before every batch. Events go out in the order they were recorded, keyed by
request_id, so each request's events stay in order on their partition. If a batch is only
partly confirmed, only the confirmed prefix is marked published: the rest is sent again
in order, never a later event without an earlier one.

The one exception is an event that can never be delivered: one Kafka refuses for itself
(too large: `KafkaFailure.message_refused`) or one that cannot be encoded. It is given up
on where it stands (logged with its reason, counted in
`erasure_outbox_undeliverable_total`, and taken out of the outbox like a published one;
the ledger's history keeps it), so it cannot hold back the events behind it. Events are
small by construction (`detail` is capped where events are built), so this is a last
line of defence, not a path that is expected to be taken.

Runs on its own thread (a `LoopThread`, like every background loop, so its heartbeat
counts for /healthz) with its own ledger object. `notify()` wakes it, so a loop that has
just recorded events need not wait out a poll interval. A failed cycle (the ledger or the
schema registry away, events unconfirmed) is retried after a backoff without jitter: one
publisher per replica retries one resource, so there is no herd to spread.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from consumer.backoff import BackoffPolicy
from consumer.clock import SYSTEM_CLOCK, Clock
from consumer.config import KafkaSettings
from consumer.errors import TransientError
from consumer.kafka.client import (
    DeliveryOutcome,
    KafkaFailure,
    OutgoingMessage,
    Producer,
    producer_config,
)
from consumer.kafka.codec import Codec, CodecError
from consumer.ledger.protocol import Ledger
from consumer.ledger.records import OutboxEvent
from consumer.model import Status
from consumer.runtime.loops import Heartbeats, LoopThread
from consumer.runtime.metrics import (
    COMPLETION_SECONDS,
    OUTBOX_BACKLOG,
    OUTBOX_UNDELIVERABLE,
    STATUS_EVENTS,
)

log = logging.getLogger(__name__)

LEASE_NAME: Final = "outbox"
UNENCODABLE: Final = "unencodable"


def default_owner() -> str:
    """A lease owner id unique to this process (host, pid and a random suffix)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class OutboxTuning:
    """How the publisher batches, sleeps and retries.

    The lease must outlast a whole batch (at most `delivery_timeout`), or another replica
    could take it over mid-batch. A replica without the lease tries again every
    `standby_wait` seconds, so after a leader dies its successor starts within
    `lease_seconds + standby_wait`.
    """

    batch_size: int = 500
    lease_seconds: float = 15.0
    idle_wait: float = 1.0
    standby_wait: float = 2.0
    delivery_timeout: float = 10.0
    retry_initial: float = 0.5
    retry_max: float = 30.0
    close_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.delivery_timeout >= self.lease_seconds:
            raise ValueError("lease_seconds must be longer than delivery_timeout")

    @property
    def retry_backoff(self) -> BackoffPolicy:
        """After a failed cycle: `retry_initial` seconds, doubling up to `retry_max`."""
        return BackoffPolicy(self.retry_initial, self.retry_max, jitter="none")


class PublishFailed(TransientError):
    """The broker did not confirm every event of the batch."""


class OutboxPublisher:
    """Publishes the ledger's outbox. Owns its producer (closed by `stop`), not its ledger.

    `is_leader` says whether this replica held the lease at its last cycle; `last_cycle`
    is the clock's monotonic time at which the last cycle ended. `heartbeats` are those
    /healthz watches (the worker's); the loop beats as "outbox".
    """

    def __init__(
        self,
        ledger: Ledger,
        producer: Producer,
        codec: Codec,
        topic: str,
        *,
        owner: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        tuning: OutboxTuning | None = None,
        heartbeats: Heartbeats | None = None,
    ) -> None:
        self._ledger = ledger
        self._producer = producer
        self._codec = codec
        self._topic = topic
        self.owner = owner or default_owner()
        self._clock = clock
        self._tuning = tuning or OutboxTuning()
        self._heartbeats = heartbeats or Heartbeats(clock)
        self._stop = threading.Event()
        self._loop: LoopThread | None = None
        self.is_leader = False

    @classmethod
    def create(
        cls,
        kafka: KafkaSettings,
        ledger: Ledger,
        codec: Codec,
        *,
        owner: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        tuning: OutboxTuning | None = None,
        heartbeats: Heartbeats | None = None,
    ) -> OutboxPublisher:
        """The publisher as `kafka` configures it (its own idempotent producer)."""
        producer = Producer(producer_config(kafka), role="outbox", clock=clock)
        return cls(
            ledger,
            producer,
            codec,
            kafka.status_topic,
            owner=owner,
            clock=clock,
            tuning=tuning,
            heartbeats=heartbeats,
        )

    @property
    def last_cycle(self) -> float | None:
        return None if self._loop is None else self._loop.last_step_ended

    def start(self) -> None:
        """Publish on a new thread named "outbox" until `stop()`, then flush."""
        retry = self._tuning.retry_backoff
        self._loop = LoopThread(
            "outbox",
            self.publish_once,
            self._stop,
            self._heartbeats,
            transient=retry,
            unexpected=retry,
            on_exit=self._flush,
        )
        self._loop.start()

    def alive(self) -> bool:
        return self._loop is not None and self._loop.is_alive()

    def notify(self) -> None:
        """Events were recorded: publish now rather than after the idle wait. Any thread."""
        if self._loop is not None:
            self._loop.wake()

    def stop(self, timeout: float | None = None) -> None:
        """Let the batch in hand finish, flush the producer and wait for the thread."""
        self._stop.set()
        if self._loop is not None:
            self._loop.wake()
            self._loop.join(timeout)

    def _flush(self) -> None:
        """Wait for what is in flight as the loop ends; the rest is sent again later."""
        left = self._producer.close(self._tuning.close_timeout)
        if left:
            log.warning("%d status event(s) unconfirmed at shutdown; sent again later", left)

    def publish_once(self) -> float:
        """One cycle: renew the lease, publish one batch, mark it published.

        Returns how long to wait before the next cycle (0 when more events are pending).
        Raises a TransientError: LedgerUnavailable, SchemaUnavailable or PublishFailed.
        """
        now = self._clock.now()
        until = now + timedelta(seconds=self._tuning.lease_seconds)
        leader = self._ledger.try_lease(LEASE_NAME, self.owner, now, until)
        if leader != self.is_leader:
            log.info("Outbox lease %s by %s", "taken" if leader else "lost", self.owner)
            self.is_leader = leader
        if not leader:
            OUTBOX_BACKLOG.set(self._ledger.outbox_backlog())
            return self._tuning.standby_wait
        events = self._ledger.pending_events(self._tuning.batch_size)
        if events:
            self._publish(events)
        OUTBOX_BACKLOG.set(self._ledger.outbox_backlog())
        return 0.0 if len(events) == self._tuning.batch_size else self._tuning.idle_wait

    def _publish(self, events: Sequence[OutboxEvent]) -> None:
        """Send a batch, wait for the broker, and take the settled prefix out of the
        outbox: events confirmed, and events that can never be delivered."""
        encoded = [self._encode(e) for e in events]
        sendable = [m for m in encoded if isinstance(m, OutgoingMessage)]
        delivered = iter(self._producer.deliver(sendable, self._tuning.delivery_timeout))
        outcomes = [next(delivered) if isinstance(m, OutgoingMessage) else m for m in encoded]
        settled = len(list(itertools.takewhile(_settled, outcomes)))
        if settled:
            self._ledger.mark_published([e.seq for e in events[:settled]], self._clock.now())
        for outbox_event, outcome in zip(events[:settled], outcomes[:settled], strict=True):
            if outcome is None:
                _count(outbox_event)
            else:
                _give_up(outbox_event, outcome)
        if settled < len(events):
            raise PublishFailed(
                f"{len(events) - settled} of {len(events)} event(s) unconfirmed:"
                f" {outcomes[settled]}"
            )

    def _encode(self, outbox_event: OutboxEvent) -> OutgoingMessage | KafkaFailure:
        """The event as a message, or why it can never be one (SchemaUnavailable, the
        registry's trouble, passes through: that one is retried)."""
        event = outbox_event.event
        try:
            value = self._codec.encode_status_event(event)
        except TransientError:
            raise
        except (CodecError, ValueError) as error:
            return KafkaFailure(f"cannot be encoded ({type(error).__name__})", code=UNENCODABLE)
        return OutgoingMessage(self._topic, key=event.request_id.encode(), value=value)


def _settled(outcome: DeliveryOutcome) -> bool:
    """Done with: delivered, or never deliverable (a retry would fail the same way)."""
    return outcome is None or outcome.message_refused or outcome.code == UNENCODABLE


def _count(published: OutboxEvent) -> None:
    """The status event count, and the completion time of a vendor scope that finished.

    SKIPPED is left out of the completion times: nothing was done, and its vendor may be
    any name a request listed (an unbounded label).
    """
    event = published.event
    STATUS_EVENTS.labels(status=event.status.value).inc()
    finished = event.status.is_terminal and event.status is not Status.SKIPPED
    if event.vendor is not None and finished:
        elapsed = (event.changed_at - published.requested_at).total_seconds()
        COMPLETION_SECONDS.labels(vendor=event.vendor).observe(max(0.0, elapsed))


def _give_up(undeliverable: OutboxEvent, failure: KafkaFailure) -> None:
    """Record why an event left the outbox unpublished: a log line an operator can find
    it by (ids and status, never personal data) and a count by reason."""
    event = undeliverable.event
    OUTBOX_UNDELIVERABLE.labels(reason=failure.code).inc()
    log.error(
        "Status event %s (seq %d, request %s, %s) is undeliverable; taken out of the outbox: %s",
        event.event_id,
        undeliverable.seq,
        event.request_id,
        event.status.value,
        failure,
    )
