"""The values that cross the Kafka seam: partitions, consumed records, records to send.

Plain data, shared by the consumer (`consumer.kafka.client`) and the producer
(`consumer.kafka.producer`), so the pipeline never sees librdkafka's own types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


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
