"""The librdkafka properties of each client the worker builds, from `kafka:` settings.

`kafka.config` is passed through to every client (one place for security.*, sasl.*), then
the properties the worker's guarantees depend on are forced over it: a consumer never
commits on its own, a producer is idempotent with acks=all.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from consumer.config import KafkaSettings

_librdkafka_log = logging.getLogger("consumer.kafka.client.librdkafka")


def _not_cross_client_warning(record: logging.LogRecord) -> bool:
    """`kafka.config` goes to consumers and producers alike (one place for security.*,
    sasl.*), so librdkafka's notes that a consumer-only property is ignored by a producer
    (or the reverse) are expected, not news for the operator."""
    return "will be ignored by this" not in record.getMessage()


_librdkafka_log.addFilter(_not_cross_client_warning)

Config = dict[str, Any]

_RECEIVE_MESSAGE_MAX_BYTES: Final = 100_000_000  # librdkafka's default
_MESSAGE_MAX_BYTES_CEILING: Final = 1_000_000_000  # the most librdkafka accepts


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
    pointer (see `consumer.pipeline.ingest`)."""
    config = producer_config(settings)
    fetchable = int(config.get("receive.message.max.bytes", _RECEIVE_MESSAGE_MAX_BYTES))
    configured = int(config.get("message.max.bytes", 0))
    config["message.max.bytes"] = min(_MESSAGE_MAX_BYTES_CEILING, max(fetchable, configured))
    return config
