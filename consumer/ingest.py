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

Runs on one thread (the main one): rebalance callbacks run inside `consume`, between the
steps of a batch, never in the middle of one. `stop()` and `state()` may be called from
any thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from consumer.codec import (
    Codec,
    CodecError,
    InvalidRequest,
    SchemaUnavailable,
    UndecodableMessage,
)
from consumer.config import KafkaSettings, VendorSettings
from consumer.fanout import plan_request
from consumer.kafka import (
    Consumer,
    KafkaFailure,
    Message,
    OutgoingMessage,
    Partition,
    Producer,
    consumer_config,
    dead_letter_producer_config,
)
from consumer.ledger.base import Ledger, LedgerRejected, LedgerUnavailable
from consumer.metrics import (
    CONSUMER_LAG,
    DLQ_MESSAGES,
    INGEST_BATCH_SECONDS,
    LEDGER_ERRORS,
    REQUESTS,
)
from consumer.model import ErasureRequest
from consumer.work import NewRequest, RecordResult

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
LAG_REPORT_SECONDS: Final = 5.0
UNDECODABLE: Final = "undecodable"
INVALID_REQUEST: Final = "invalid_request"
LEDGER_REFUSED: Final = (
    "the request decodes, but the ledger refuses to store it (a value the database cannot"
    " hold, such as a NUL character or a text too long for an index)"
)
VALUE_OMITTED: Final = "error.value_omitted"


def utc_now() -> datetime:
    return datetime.now(UTC)


def backoff(failures: int, initial: float, maximum: float) -> float:
    """Seconds to wait after `failures` (>= 1) consecutive failures: doubling, capped.

    No jitter: one loop per process retries one resource, so there is no herd to spread.
    """
    return min(maximum, initial * 2.0 ** (failures - 1))


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


@dataclass(frozen=True, slots=True)
class IngestState:
    """What /healthz and /readyz need to know about the loop (a snapshot).

    `last_poll` is the `time.monotonic()` of the last consume call that returned (None
    before the first); `in_group` is true between an assignment and a loss of membership
    (a member may own no partition when there are more replicas than partitions).
    """

    in_group: bool
    partitions: int
    last_poll: float | None
    held_messages: int
    ledger_available: bool


class _DeadLetterFailed(Exception):
    """The dead-letter topic did not confirm every rejected message of the batch."""


class _Entry:
    """A consumed message and what became of it so far (kept across retries of its batch)."""

    __slots__ = ("dead_lettered", "message", "outcome", "recorded")

    def __init__(self, message: Message) -> None:
        self.message = message
        self.outcome: ErasureRequest | CodecError | None = None
        self.recorded = False
        self.dead_lettered = False


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
        clock: Clock = utc_now,
        tuning: IngestTuning | None = None,
        on_recorded: Callable[[], None] | None = None,
    ) -> None:
        """Subscribes to `input_topic` at once. `vendors` are the enabled ones;
        `on_recorded` is called after a batch added requests (e.g. `OutboxPublisher.notify`)."""
        self._consumer = consumer
        self._producer = dlq_producer
        self._ledger = ledger
        self._codec = codec
        self._vendors = vendors
        self._dlq_topic = dlq_topic
        self._clock = clock
        self._tuning = tuning or IngestTuning()
        self._on_recorded = on_recorded
        self._stop = threading.Event()
        self._held: list[_Entry] = []
        self._failures = 0
        self._retry_at = 0.0
        self._paused: set[Partition] = set()
        self._assigned: frozenset[Partition] = frozenset()
        self._uncommitted: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}
        self._started: dict[Partition, int] = {}
        self._lag_report_at = 0.0
        self._commit_retry_at = 0.0
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
        clock: Clock = utc_now,
        tuning: IngestTuning | None = None,
        on_recorded: Callable[[], None] | None = None,
    ) -> Ingest:
        """The loop as `kafka` configures it: its consumer group, input and DLQ topics."""
        return cls(
            Consumer(consumer_config(kafka)),
            Producer(dead_letter_producer_config(kafka), role="dlq"),
            ledger,
            codec,
            vendors,
            input_topic=kafka.input_topic,
            dlq_topic=kafka.dlq_topic,
            clock=clock,
            tuning=tuning,
            on_recorded=on_recorded,
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
            partitions=len(self._assigned),
            last_poll=self._last_poll,
            held_messages=len(self._held),
            ledger_available=self._ledger_available,
        )

    def poll_once(self) -> None:
        """One step: take a new batch, or (while one is held) keep polling and retry it
        once its backoff has passed."""
        if self._uncommitted and time.monotonic() >= self._commit_retry_at:
            self._commit_uncommitted()
        if time.monotonic() >= self._lag_report_at:
            self._report_lag()
        if not self._held:
            self._held = [_Entry(message) for message in self._consume(self._tuning.poll_timeout)]
        else:
            wait = min(self._tuning.poll_timeout, max(0.0, self._retry_at - time.monotonic()))
            # Paused partitions yield nothing; a partition assigned meanwhile might. (Consume
            # first: a revocation inside consume replaces self._held.)
            arrived = self._consume(wait)
            self._held.extend(_Entry(message) for message in arrived)
            if not self._held:  # all of it was revoked
                self._resume_all()
                return
            self._pause_assigned()
            if time.monotonic() < self._retry_at:
                return
        if self._held:
            self._take_held()

    # Rebalance listener: called from inside Consumer.consume.

    def on_assign(self, partitions: list[Partition]) -> None:
        """Own these partitions; their lag series exists from now on (0 until the first
        fetch tells the real lag), so a worker that never commits still shows its lag."""
        self._assigned = self._assigned | frozenset(partitions)
        self._in_group = True
        for partition in partitions:
            CONSUMER_LAG.labels(topic=partition.topic, partition=str(partition.partition)).set(0)
        log.info("Assigned %d partition(s): %s", len(partitions), _names(partitions))

    def on_revoke(self, partitions: list[Partition]) -> None:
        """Commit what the ledger already has for these partitions, drop the rest: the
        new owner gets the unwritten messages again."""
        self._commit_uncommitted(only=frozenset(partitions))
        self._forget(partitions)
        log.info("Revoked %d partition(s): %s", len(partitions), _names(partitions))

    def on_lost(self, partitions: list[Partition]) -> None:
        """Someone else owns these already: commit nothing, drop everything of them."""
        self._forget(partitions)
        self._in_group = False
        log.warning("Lost %d partition(s): %s", len(partitions), _names(partitions))

    # The batch.

    def _consume(self, timeout: float) -> list[Message]:
        """A batch; the first offset seen per partition is where this worker started
        there (the group's committed position), the lag's base until it commits."""
        messages = self._consumer.consume(self._tuning.batch_size, timeout)
        self._last_poll = time.monotonic()
        for message in messages:
            self._started.setdefault(message.source, message.offset)
        return messages

    def _take_held(self) -> None:
        """Try to take the held batch; on a transient failure keep it and pause."""
        try:
            self._take(self._held)
        except (LedgerUnavailable, SchemaUnavailable, _DeadLetterFailed) as error:
            self._hold(error)
            return
        self._held = []
        self._failures = 0
        self._ledger_available = True
        self._resume_all()

    def _take(self, entries: list[_Entry]) -> None:
        """Record the valid requests, dead-letter the rest, commit. Each step skips what an
        earlier attempt at the same batch already did."""
        started = time.perf_counter()
        self._decode(entries)
        result = self._record(entries)
        if result.accepted and self._on_recorded is not None:
            self._on_recorded()
        self._dead_letter(entries)
        for entry in entries:
            position = entry.message.offset + 1
            source = entry.message.source
            self._uncommitted[source] = max(position, self._uncommitted.get(source, 0))
        self._commit_uncommitted()
        INGEST_BATCH_SECONDS.observe(time.perf_counter() - started)

    def _decode(self, entries: list[_Entry]) -> None:
        """Decode what is not decoded yet (SchemaUnavailable leaves the rest for the retry)."""
        for entry in entries:
            if entry.outcome is None:
                try:
                    entry.outcome = self._codec.decode_request(entry.message.value)
                except SchemaUnavailable:
                    raise
                except CodecError as error:
                    entry.outcome = error

    def _dead_letter(self, entries: list[_Entry]) -> None:
        """Send the rejected messages not yet sent and wait until the broker has them; one
        refused for its size goes again as a pointer to where its value still is."""
        pending = [e for e in entries if isinstance(e.outcome, CodecError) and not e.dead_lettered]
        failures = self._send_dead_letters(pending, self._dead_letter_message)
        too_large = [entry for entry, failure in failures if failure.message_refused]
        if too_large:
            log.warning(
                "%d dead letter(s) refused for their size; sending pointers instead",
                len(too_large),
            )
        failures = [(e, f) for e, f in failures if not f.message_refused]
        failures += self._send_dead_letters(too_large, self._pointer_message)
        if failures:
            first = failures[0][1]
            raise _DeadLetterFailed(f"{len(failures)} dead letter(s) not delivered: {first}")

    def _send_dead_letters(
        self, entries: list[_Entry], build: Callable[[_Entry], OutgoingMessage]
    ) -> list[tuple[_Entry, KafkaFailure]]:
        """Deliver one dead letter per entry, as `build` makes it; mark and count the
        delivered ones and return the others with why they failed."""
        if not entries:
            return []
        outgoing = [build(entry) for entry in entries]
        outcomes = self._producer.deliver(outgoing, self._tuning.delivery_timeout)
        failures = []
        for entry, failure in zip(entries, outcomes, strict=True):
            if failure is None:
                entry.dead_lettered = True
                self._count_dead_letter(entry)
            else:
                failures.append((entry, failure))
        return failures

    def _dead_letter_message(self, entry: _Entry) -> OutgoingMessage:
        """The consumed message byte for byte, with the contract's error headers."""
        message = entry.message
        headers = _error_headers(entry, str(entry.outcome))
        return OutgoingMessage(self._dlq_topic, message.key, message.value, headers)

    def _pointer_message(self, entry: _Entry) -> OutgoingMessage:
        """The dead letter of a message too large for the dead-letter topic: its key and
        headers, no value, and where the value can still be read (until retention)."""
        message = entry.message
        why = (
            f"{entry.outcome}; the value of {len(message.value or b'')} bytes was too large"
            f" for the dead-letter topic and is still at"
            f" {message.topic}/{message.partition}/{message.offset}"
        )
        headers = (*_error_headers(entry, why), (VALUE_OMITTED, b"true"))
        return OutgoingMessage(self._dlq_topic, message.key, None, headers)

    def _count_dead_letter(self, entry: _Entry) -> None:
        reason = _reason(entry.outcome)
        DLQ_MESSAGES.labels(reason=reason).inc()
        REQUESTS.labels(outcome="invalid").inc()
        message = entry.message
        log.warning(
            "Dead-lettered %s[%d]@%d (%s): %s",
            message.topic,
            message.partition,
            message.offset,
            reason,
            entry.outcome,
        )

    def _record(self, entries: list[_Entry]) -> RecordResult:
        """Record the batch's valid requests not recorded yet: in one ledger transaction,
        unless the ledger refuses some of them (see `_record_isolating`)."""
        planned = [
            (entry, plan_request(entry.outcome, self._vendors))
            for entry in entries
            if isinstance(entry.outcome, ErasureRequest) and not entry.recorded
        ]
        if not planned:
            return RecordResult(accepted=(), duplicates=())
        result = self._record_isolating(planned, self._clock())
        REQUESTS.labels(outcome="accepted").inc(len(result.accepted))
        REQUESTS.labels(outcome="duplicate").inc(len(result.duplicates))
        if result.duplicates:
            log.info("%d duplicate request(s) not fanned out again", len(result.duplicates))
        return result

    def _record_isolating(
        self, planned: list[tuple[_Entry, NewRequest]], now: datetime
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

    def _hold(self, error: Exception) -> None:
        """Keep the batch, pause the partitions and schedule the retry; report the lag at
        once, since a held batch is when it starts to grow."""
        self._failures += 1
        if self._failures == 1:
            self._report_lag()
        if isinstance(error, LedgerUnavailable):
            self._ledger_available = False
            LEDGER_ERRORS.labels(loop="ingest").inc()
        delay = backoff(self._failures, self._tuning.retry_initial, self._tuning.retry_max)
        self._retry_at = time.monotonic() + delay
        self._pause_assigned()
        log.warning(
            "Cannot take a batch of %d message(s) now (%s: %s); holding it, retry in %.1f s",
            len(self._held),
            type(error).__name__,
            error,
            delay,
        )

    # Offsets and partitions.

    def _commit_uncommitted(self, only: Collection[Partition] | None = None) -> None:
        """Commit positions whose messages the ledger (or the DLQ) already has.

        A failed commit is only logged: the positions stay and are committed again after
        `commit_retry` seconds or with the next batch; at worst the messages are delivered
        again (the ledger ignores duplicates).
        """
        positions = {
            partition: position
            for partition, position in self._uncommitted.items()
            if partition in self._assigned and (only is None or partition in only)
        }
        if not positions:
            return
        try:
            self._consumer.commit(positions)
        except KafkaFailure as error:
            self._commit_retry_at = time.monotonic() + self._tuning.commit_retry
            log.warning("Offset commit failed, will retry: %s", error)
            return
        for partition, position in positions.items():
            if self._uncommitted.get(partition) == position:
                del self._uncommitted[partition]
        self._committed.update(positions)
        self._report_lag()

    def _report_lag(self) -> None:
        """Lag from our committed positions (where we started, before our first commit)
        to the newest high watermarks; also between commits and while a batch is held, so
        a worker stuck before or after a commit shows its growing lag."""
        self._lag_report_at = time.monotonic() + LAG_REPORT_SECONDS
        positions = {**self._started, **self._committed}
        for partition, lag in self._consumer.lag(positions).items():
            CONSUMER_LAG.labels(topic=partition.topic, partition=str(partition.partition)).set(lag)

    def _forget(self, partitions: Collection[Partition]) -> None:
        """Drop all state of partitions leaving us, and lift our pause on them: librdkafka
        keeps an application's pause across a rebalance, so a partition paused now and
        assigned to us again later would otherwise never deliver again. Their lag is
        another member's to report now."""
        gone = frozenset(partitions)
        for partition in gone:
            self._committed.pop(partition, None)
            self._started.pop(partition, None)
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(partition.topic, str(partition.partition))
        self._held = [entry for entry in self._held if entry.message.source not in gone]
        paused = self._paused & gone
        if paused:
            self._consumer.resume(paused)
        self._assigned = self._assigned - gone
        self._paused -= gone
        for partition in gone:
            self._uncommitted.pop(partition, None)

    def _pause_assigned(self) -> None:
        newly = self._assigned - self._paused
        if newly:
            self._consumer.pause(newly)
            self._paused |= newly

    def _resume_all(self) -> None:
        paused = self._paused & self._assigned
        self._paused = set()
        if paused:
            self._consumer.resume(paused)
            log.info("Resumed %d partition(s)", len(paused))

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
        self._commit_uncommitted()
        self._consumer.close()
        self._in_group = False
        self._assigned = frozenset()
        left = self._producer.close(self._tuning.close_timeout)
        if left:
            log.warning("%d dead letter(s) still in flight at shutdown", left)


def _reason(outcome: ErasureRequest | CodecError | None) -> str:
    return UNDECODABLE if isinstance(outcome, UndecodableMessage) else INVALID_REQUEST


def _error_headers(entry: _Entry, error_message: str) -> tuple[tuple[str, bytes], ...]:
    """The dead-letter headers of contract §1 (`error.message` never carries personal
    data: codec messages name rules, not values)."""
    message = entry.message
    return (
        ("error.reason", _reason(entry.outcome).encode()),
        ("error.message", error_message.encode()),
        ("source.topic", message.topic.encode()),
        ("source.partition", str(message.partition).encode()),
        ("source.offset", str(message.offset).encode()),
    )


def _names(partitions: Collection[Partition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in sorted(partitions))
