"""Dead letters (contract §1): what ingest does with a message that can never be a request.

The consumed message goes to the dead-letter topic byte for byte, with headers saying why
(`error.reason`, `error.message`) and where it came from. One the dead-letter topic
refuses for its size is replaced by a pointer (same key and headers, no value,
`error.value_omitted: true`) naming where the value still is. Delivery is confirmed
before the batch's offsets are committed; a dead letter not confirmed raises
`DeadLetterFailed`, and the batch is held and retried (what was delivered stays marked).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from consumer.errors import TransientError
from consumer.kafka.client import KafkaFailure, Message, OutgoingMessage, Producer
from consumer.kafka.codec import CodecError, UndecodableMessage
from consumer.model import ErasureRequest
from consumer.runtime.metrics import DLQ_MESSAGES, REQUESTS

log = logging.getLogger(__name__)

UNDECODABLE: Final = "undecodable"
INVALID_REQUEST: Final = "invalid_request"
VALUE_OMITTED: Final = "error.value_omitted"
#: How many times `erasure-worker dlq replay` has published this message again (its header
#: on the replayed message, copied onto the dead letter if it is rejected again).
REPLAYS: Final = "erasure.replays"


class DeadLetterFailed(TransientError):
    """The dead-letter topic did not confirm every rejected message of the batch."""


class Entry:
    """A consumed message and what became of it so far (kept across retries of its batch)."""

    __slots__ = ("dead_lettered", "message", "outcome", "recorded")

    def __init__(self, message: Message) -> None:
        self.message = message
        self.outcome: ErasureRequest | CodecError | None = None
        self.recorded = False
        self.dead_lettered = False


class DeadLetters:
    """Sends the rejected entries of a batch to `topic` through `producer` (owned: closed
    by `close`), waiting up to `delivery_timeout` seconds for the broker each time."""

    def __init__(self, producer: Producer, topic: str, delivery_timeout: float) -> None:
        self._producer = producer
        self._topic = topic
        self._delivery_timeout = delivery_timeout

    def send(self, entries: list[Entry]) -> None:
        """Send the rejected messages not yet sent and wait until the broker has them; one
        refused for its size goes again as a pointer to where its value still is."""
        pending = [e for e in entries if isinstance(e.outcome, CodecError) and not e.dead_lettered]
        failures = self._deliver(pending, self._dead_letter_message)
        too_large = [entry for entry, failure in failures if failure.message_refused]
        if too_large:
            log.warning(
                "%d dead letter(s) refused for their size; sending pointers instead",
                len(too_large),
            )
        failures = [(e, f) for e, f in failures if not f.message_refused]
        failures += self._deliver(too_large, self._pointer_message)
        if failures:
            first = failures[0][1]
            raise DeadLetterFailed(f"{len(failures)} dead letter(s) not delivered: {first}")

    def close(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for dead letters in flight; returns how many were left."""
        return self._producer.close(timeout)

    def _deliver(
        self, entries: list[Entry], build: Callable[[Entry], OutgoingMessage]
    ) -> list[tuple[Entry, KafkaFailure]]:
        """Deliver one dead letter per entry, as `build` makes it; mark and count the
        delivered ones and return the others with why they failed."""
        if not entries:
            return []
        outgoing = [build(entry) for entry in entries]
        outcomes = self._producer.deliver(outgoing, self._delivery_timeout)
        failures = []
        for entry, failure in zip(entries, outcomes, strict=True):
            if failure is None:
                entry.dead_lettered = True
                _count(entry)
            else:
                failures.append((entry, failure))
        return failures

    def _dead_letter_message(self, entry: Entry) -> OutgoingMessage:
        """The consumed message byte for byte, with the contract's error headers."""
        message = entry.message
        headers = _error_headers(entry, str(entry.outcome))
        return OutgoingMessage(self._topic, message.key, message.value, headers)

    def _pointer_message(self, entry: Entry) -> OutgoingMessage:
        """The dead letter of a message too large for the dead-letter topic: its key and
        headers, no value, and where the value can still be read (until retention)."""
        message = entry.message
        why = (
            f"{entry.outcome}; the value of {len(message.value or b'')} bytes was too large"
            f" for the dead-letter topic and is still at"
            f" {message.topic}/{message.partition}/{message.offset}"
        )
        headers = (*_error_headers(entry, why), (VALUE_OMITTED, b"true"))
        return OutgoingMessage(self._topic, message.key, None, headers)


def _count(entry: Entry) -> None:
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


def _reason(outcome: ErasureRequest | CodecError | None) -> str:
    return UNDECODABLE if isinstance(outcome, UndecodableMessage) else INVALID_REQUEST


def _error_headers(entry: Entry, error_message: str) -> tuple[tuple[str, bytes], ...]:
    """The dead-letter headers of contract §1 (`error.message` never carries personal
    data: codec messages name rules, not values), and the replay count of a replayed
    message, so that `dlq replay --all` knows it came back and never loops."""
    message = entry.message
    replays = tuple((name, value) for name, value in message.headers if name == REPLAYS)
    return (
        ("error.reason", _reason(entry.outcome).encode()),
        ("error.message", error_message.encode()),
        ("source.topic", message.topic.encode()),
        ("source.partition", str(message.partition).encode()),
        ("source.offset", str(message.offset).encode()),
        *replays[-1:],
    )
