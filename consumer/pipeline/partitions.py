"""The partitions an ingest loop owns: which are paused, where it started reading each,
what it committed, what is waiting to be committed, and their lag.

Kept apart from the batch logic of `consumer.pipeline.ingest` because its rules are about
Kafka's group protocol, not about requests: positions are committed only for partitions
still owned; a partition that leaves is forgotten whole (librdkafka keeps an
application's pause across a rebalance, so a pause is lifted as the partition leaves);
and the lag of a partition is reported from the position this member is responsible for.
One thread only (the ingest loop's; rebalance callbacks run on it too).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection, Iterable
from typing import Final

from consumer.clock import Clock
from consumer.kafka.client import Consumer, KafkaFailure, Message, Partition
from consumer.runtime.metrics import CONSUMER_LAG

log = logging.getLogger(__name__)

LAG_REPORT_SECONDS: Final = 5.0


class OwnedPartitions:
    """Ownership, pauses and positions of the partitions assigned to this member.

    A position is the offset of the next message to read. `started` holds the first
    offset consumed per partition (the group's committed position when this member got
    it: the lag's base until it commits); `uncommitted` holds positions whose messages
    the ledger (or the dead-letter topic) already has but Kafka does not know yet.
    """

    def __init__(self, consumer: Consumer, clock: Clock, commit_retry: float) -> None:
        """A failed commit is tried again after `commit_retry` seconds."""
        self._consumer = consumer
        self._clock = clock
        self._commit_retry = commit_retry
        self.assigned: frozenset[Partition] = frozenset()
        self._paused: set[Partition] = set()
        self._uncommitted: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}
        self._started: dict[Partition, int] = {}
        self._lag_report_at = 0.0
        self._commit_retry_at = 0.0

    def assign(self, partitions: Iterable[Partition]) -> None:
        """Own these partitions; their lag series exists from now on (0 until the first
        fetch tells the real lag), so a worker that never commits still shows its lag."""
        partitions = frozenset(partitions)
        self.assigned = self.assigned | partitions
        for partition in partitions:
            CONSUMER_LAG.labels(topic=partition.topic, partition=str(partition.partition)).set(0)

    def forget(self, partitions: Collection[Partition]) -> None:
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
        paused = self._paused & gone
        if paused:
            self._consumer.resume(paused)
        self.assigned = self.assigned - gone
        self._paused -= gone
        for partition in gone:
            self._uncommitted.pop(partition, None)

    def consumed(self, messages: Iterable[Message]) -> None:
        """The first offset seen per partition is where this member started there."""
        for message in messages:
            self._started.setdefault(message.source, message.offset)

    def taken(self, message: Message) -> None:
        """The ledger (or the dead-letter topic) has `message`: its position may be committed."""
        source = message.source
        self._uncommitted[source] = max(message.offset + 1, self._uncommitted.get(source, 0))

    def commit_if_due(self) -> None:
        """Retry a failed commit once `commit_retry` has passed."""
        if self._uncommitted and self._clock.monotonic() >= self._commit_retry_at:
            self.commit()

    def commit(self, only: Collection[Partition] | None = None) -> None:
        """Commit positions whose messages the ledger (or the DLQ) already has.

        A failed commit is only logged: the positions stay and are committed again after
        `commit_retry` seconds or with the next batch; at worst the messages are delivered
        again (the ledger ignores duplicates).
        """
        positions = {
            partition: position
            for partition, position in self._uncommitted.items()
            if partition in self.assigned and (only is None or partition in only)
        }
        if not positions:
            return
        try:
            self._consumer.commit(positions)
        except KafkaFailure as error:
            self._commit_retry_at = self._clock.monotonic() + self._commit_retry
            log.warning("Offset commit failed, will retry: %s", error)
            return
        for partition, position in positions.items():
            if self._uncommitted.get(partition) == position:
                del self._uncommitted[partition]
        self._committed.update(positions)
        self.report_lag()

    def report_lag_if_due(self) -> None:
        if self._clock.monotonic() >= self._lag_report_at:
            self.report_lag()

    def report_lag(self) -> None:
        """Lag from our committed positions (where we started, before our first commit)
        to the newest high watermarks; also between commits and while a batch is held, so
        a worker stuck before or after a commit shows its growing lag."""
        self._lag_report_at = self._clock.monotonic() + LAG_REPORT_SECONDS
        positions = {**self._started, **self._committed}
        for partition, lag in self._consumer.lag(positions).items():
            CONSUMER_LAG.labels(topic=partition.topic, partition=str(partition.partition)).set(lag)

    def pause_assigned(self) -> None:
        newly = self.assigned - self._paused
        if newly:
            self._consumer.pause(newly)
            self._paused |= newly

    def resume_all(self) -> None:
        paused = self._paused & self.assigned
        self._paused = set()
        if paused:
            self._consumer.resume(paused)
            log.info("Resumed %d partition(s)", len(paused))
