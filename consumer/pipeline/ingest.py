"""The consume loop: Kafka batch -> decode and validate -> dead-letter the bad ones ->
one ledger transaction for the good ones -> commit the offsets.

Offsets are committed only after the ledger holds every request of the batch (and the
dead-letter topic every rejected message), so a crash at any point re-delivers rather
than loses: the ledger is idempotent on request_id. The loop only ever waits on Kafka and
the ledger, never on a vendor.

When the batch cannot be taken right now (the ledger is unavailable, the schema registry
does not answer, the dead-letter topic does not confirm delivery) the loop keeps the
batch, pauses its partitions and keeps polling, so the consumer stays in its group while
it retries with backoff; it resumes once the batch is in. Nothing is committed meanwhile.

What can never be taken does not hold the batch: a request the ledger refuses to store
(LedgerRejected) is found by bisecting the batch and dead-lettered as `invalid_request`;
a dead letter the dead-letter topic refuses for its size is replaced by a pointer (same
key and headers, no value, `error.value_omitted: true`) naming where the value still is.

Dead letters are sent by `consumer.pipeline.dead_letters`; partition ownership, commits
and lag are kept by `consumer.pipeline.partitions`; retry waits follow the worker's one
backoff rule (`consumer.backoff`, here without jitter) on the injected `consumer.clock`.

Runs on one thread (the main one): rebalance callbacks run inside `consume`, between the
steps of a batch, never in the middle of one. `stop()` and `state()` may be called from
any thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from consumer.backoff import BackoffPolicy, backoff_delay
from consumer.clock import SYSTEM_CLOCK, Clock
from consumer.config import KafkaSettings, VendorSettings
from consumer.errors import TransientError
from consumer.kafka.client import (
    Consumer,
    Message,
    Partition,
    Producer,
    consumer_config,
    dead_letter_producer_config,
)
from consumer.kafka.codec import Codec, CodecError, InvalidRequest
from consumer.ledger.deadlines import DEFAULT_DEADLINES, Deadlines
from consumer.ledger.protocol import Ledger, LedgerRejected, LedgerUnavailable
from consumer.ledger.records import NewRequest, RecordResult
from consumer.model import ErasureRequest
from consumer.pipeline.dead_letters import DeadLetters, Entry
from consumer.pipeline.fanout import plan_request
from consumer.pipeline.partitions import OwnedPartitions
from consumer.runtime.metrics import INGEST_BATCH_SECONDS, LEDGER_ERRORS, REQUESTS

log = logging.getLogger(__name__)

LEDGER_REFUSED: Final = (
    "the request decodes, but the ledger refuses to store it (a value the database cannot"
    " hold, such as a NUL character or a text too long for an index)"
)


@dataclass(frozen=True, slots=True)
class IngestTuning:
    """How the loop batches and retries.

    `batch_size` messages per consume call and ledger transaction (batching the
    transaction and the commit is worth ~10x in throughput); `poll_timeout` is the longest
    a consume call waits, which bounds how late `stop()` is noticed; a batch that cannot
    be taken is retried after `retry_initial` seconds, doubling up to `retry_max`.
    """

    batch_size: int = 1000
    poll_timeout: float = 0.2
    delivery_timeout: float = 10.0
    retry_initial: float = 0.5
    retry_max: float = 10.0
    commit_retry: float = 1.0
    close_timeout: float = 5.0

    @property
    def retry_backoff(self) -> BackoffPolicy:
        """No jitter: one loop per process retries one resource, so there is no herd to
        spread, and exact waits are what an operator reads in the log."""
        return BackoffPolicy(self.retry_initial, self.retry_max, jitter="none")


@dataclass(frozen=True, slots=True)
class IngestState:
    """What /healthz and /readyz need to know about the loop (a snapshot).

    `last_poll` is the clock's monotonic time of the last consume call that returned (None
    before the first); `in_group` is true between an assignment and a loss of membership
    (a member may own no partition when there are more replicas than partitions).
    """

    in_group: bool
    partitions: int
    last_poll: float | None
    held_messages: int
    ledger_available: bool


class Ingest:
    """Consumes erasure requests into the ledger. Owns the consumer and the producer it is
    given (closes them on the way out); the ledger stays the caller's."""

    def __init__(
        self,
        consumer: Consumer,
        dlq_producer: Producer,
        ledger: Ledger,
        codec: Codec,
        vendors: Mapping[str, VendorSettings],
        *,
        input_topic: str,
        dlq_topic: str,
        clock: Clock = SYSTEM_CLOCK,
        tuning: IngestTuning | None = None,
        on_recorded: Callable[[], None] | None = None,
        deadlines: Deadlines = DEFAULT_DEADLINES,
    ) -> None:
        """Subscribes to `input_topic` at once. `vendors` are the enabled ones;
        `on_recorded` is called after a batch added requests (e.g. `OutboxPublisher.notify`);
        `deadlines` give each request its due date."""
        self._consumer = consumer
        self._ledger = ledger
        self._codec = codec
        self._vendors = vendors
        self._deadlines = deadlines
        self._clock = clock
        self._tuning = tuning or IngestTuning()
        self._dead_letters = DeadLetters(dlq_producer, dlq_topic, self._tuning.delivery_timeout)
        self._partitions = OwnedPartitions(consumer, clock, self._tuning.commit_retry)
        self._on_recorded = on_recorded
        self._stop = threading.Event()
        self._held: list[Entry] = []
        self._failures = 0
        self._retry_at = 0.0
        self._in_group = False
        self._last_poll: float | None = None
        self._ledger_available = True
        consumer.subscribe([input_topic], self)

    @classmethod
    def create(
        cls,
        kafka: KafkaSettings,
        ledger: Ledger,
        codec: Codec,
        vendors: Mapping[str, VendorSettings],
        *,
        clock: Clock = SYSTEM_CLOCK,
        tuning: IngestTuning | None = None,
        on_recorded: Callable[[], None] | None = None,
        deadlines: Deadlines = DEFAULT_DEADLINES,
    ) -> Ingest:
        """The loop as `kafka` configures it: its consumer group, input and DLQ topics."""
        return cls(
            Consumer(consumer_config(kafka)),
            Producer(dead_letter_producer_config(kafka), role="dlq", clock=clock),
            ledger,
            codec,
            vendors,
            input_topic=kafka.input_topic,
            dlq_topic=kafka.dlq_topic,
            clock=clock,
            tuning=tuning,
            on_recorded=on_recorded,
            deadlines=deadlines,
        )

    def run(self) -> None:
        """Consume until `stop()`; then finish the batch in hand, commit and close.
        Raises KafkaFailure on a fatal consumer error (after closing)."""
        try:
            while not self._stop.is_set():
                self.poll_once()
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Ask `run` to return after the current step (at most ~`poll_timeout` later)."""
        self._stop.set()

    def state(self) -> IngestState:
        return IngestState(
            in_group=self._in_group,
            partitions=len(self._partitions.assigned),
            last_poll=self._last_poll,
            held_messages=len(self._held),
            ledger_available=self._ledger_available,
        )

    def poll_once(self) -> None:
        """One step: take a new batch, or (while one is held) keep polling and retry it
        once its backoff has passed."""
        self._partitions.commit_if_due()
        self._partitions.report_lag_if_due()
        if not self._held:
            self._held = [Entry(message) for message in self._consume(self._tuning.poll_timeout)]
        else:
            wait = self._retry_at - self._clock.monotonic()
            # Paused partitions yield nothing; a partition assigned meanwhile might. (Consume
            # first: a revocation inside consume replaces self._held.)
            arrived = self._consume(min(self._tuning.poll_timeout, max(0.0, wait)))
            self._held.extend(Entry(message) for message in arrived)
            if not self._held:  # all of it was revoked
                self._partitions.resume_all()
                return
            self._partitions.pause_assigned()
            if self._clock.monotonic() < self._retry_at:
                return
        if self._held:
            self._take_held()

    # Rebalance listener: called from inside Consumer.consume.

    def on_assign(self, partitions: list[Partition]) -> None:
        """Own these partitions (see `OwnedPartitions.assign`)."""
        self._partitions.assign(partitions)
        self._in_group = True
        log.info("Assigned %d partition(s): %s", len(partitions), _names(partitions))

    def on_revoke(self, partitions: list[Partition]) -> None:
        """Commit what the ledger already has for these partitions, drop the rest: the
        new owner gets the unwritten messages again."""
        self._partitions.commit(only=frozenset(partitions))
        self._forget(partitions)
        log.info("Revoked %d partition(s): %s", len(partitions), _names(partitions))

    def on_lost(self, partitions: list[Partition]) -> None:
        """Someone else owns these already: commit nothing, drop everything of them."""
        self._forget(partitions)
        self._in_group = False
        log.warning("Lost %d partition(s): %s", len(partitions), _names(partitions))

    # The batch.

    def _consume(self, timeout: float) -> list[Message]:
        messages = self._consumer.consume(self._tuning.batch_size, timeout)
        self._last_poll = self._clock.monotonic()
        self._partitions.consumed(messages)
        return messages

    def _take_held(self) -> None:
        """Try to take the held batch; on a transient failure keep it and pause."""
        try:
            self._take(self._held)
        except TransientError as error:
            self._hold(error)
            return
        self._held = []
        self._failures = 0
        self._ledger_available = True
        self._partitions.resume_all()

    def _take(self, entries: list[Entry]) -> None:
        """Record the valid requests, dead-letter the rest, commit. Each step skips what an
        earlier attempt at the same batch already did."""
        started = self._clock.monotonic()
        self._decode(entries)
        result = self._record(entries)
        if result.accepted and self._on_recorded is not None:
            self._on_recorded()
        self._dead_letters.send(entries)
        for entry in entries:
            self._partitions.taken(entry.message)
        self._partitions.commit()
        INGEST_BATCH_SECONDS.observe(self._clock.monotonic() - started)

    def _decode(self, entries: list[Entry]) -> None:
        """Decode what is not decoded yet (SchemaUnavailable, the registry's trouble,
        leaves the rest for the retry)."""
        for entry in entries:
            if entry.outcome is None:
                try:
                    entry.outcome = self._codec.decode_request(entry.message.value)
                except TransientError:
                    raise
                except CodecError as error:
                    entry.outcome = error

    def _record(self, entries: list[Entry]) -> RecordResult:
        """Record the batch's valid requests not recorded yet: in one ledger transaction,
        unless the ledger refuses some of them (see `_record_isolating`)."""
        planned = [
            (entry, plan_request(entry.outcome, self._vendors, self._deadlines))
            for entry in entries
            if isinstance(entry.outcome, ErasureRequest) and not entry.recorded
        ]
        if not planned:
            return RecordResult(accepted=(), duplicates=())
        result = self._record_isolating(planned, self._clock.now())
        REQUESTS.labels(outcome="accepted").inc(len(result.accepted))
        REQUESTS.labels(outcome="duplicate").inc(len(result.duplicates))
        if result.duplicates:
            log.info("%d duplicate request(s) not fanned out again", len(result.duplicates))
        return result

    def _record_isolating(
        self, planned: list[tuple[Entry, NewRequest]], now: datetime
    ) -> RecordResult:
        """Record `planned`; when the ledger refuses the data itself, record each half
        apart, down to the single requests it refuses, which become invalid requests (to
        be dead-lettered): one bad row costs about 2·log2(batch) transactions, and never
        stops the rest. LedgerUnavailable passes through; what was recorded stays marked,
        so the retry of the batch does not count it as a duplicate."""
        try:
            result = self._ledger.record_requests([plan for _, plan in planned], now)
        except LedgerRejected:
            if len(planned) == 1:
                planned[0][0].outcome = InvalidRequest(LEDGER_REFUSED)
                return RecordResult(accepted=(), duplicates=())
            middle = len(planned) // 2
            first = self._record_isolating(planned[:middle], now)
            second = self._record_isolating(planned[middle:], now)
            return RecordResult(
                first.accepted + second.accepted, first.duplicates + second.duplicates
            )
        for entry, _plan in planned:
            entry.recorded = True
        return result

    def _hold(self, error: TransientError) -> None:
        """Keep the batch, pause the partitions and schedule the retry; report the lag at
        once, since a held batch is when it starts to grow."""
        self._failures += 1
        if self._failures == 1:
            self._partitions.report_lag()
        if isinstance(error, LedgerUnavailable):
            self._ledger_available = False
            LEDGER_ERRORS.labels(loop="ingest").inc()
        delay = backoff_delay(self._tuning.retry_backoff, self._failures)
        self._retry_at = self._clock.monotonic() + delay
        self._partitions.pause_assigned()
        log.warning(
            "Cannot take a batch of %d message(s) now (%s: %s); holding it, retry in %.1f s",
            len(self._held),
            type(error).__name__,
            error,
            delay,
        )

    def _forget(self, partitions: Collection[Partition]) -> None:
        """Drop partitions leaving us, and their messages from the held batch."""
        gone = frozenset(partitions)
        self._held = [entry for entry in self._held if entry.message.source not in gone]
        self._partitions.forget(gone)

    def _shutdown(self) -> None:
        """Finish the batch in hand if the ledger takes it, commit, and close."""
        if self._held:
            self._take_held()
            if self._held:
                log.warning(
                    "Stopping with %d message(s) not recorded; they will be consumed again",
                    len(self._held),
                )
                self._held = []
        self._partitions.commit()
        self._consumer.close()
        self._in_group = False
        self._partitions.assigned = frozenset()
        left = self._dead_letters.close(self._tuning.close_timeout)
        if left:
            log.warning("%d dead letter(s) still in flight at shutdown", left)


def _names(partitions: Collection[Partition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in sorted(partitions))
