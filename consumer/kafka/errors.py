"""How Kafka failures reach the rest of the worker: `KafkaFailure`, and `KafkaConfigError`
for a `kafka.config` property librdkafka refuses.

librdkafka reports trouble as `KafkaError` values, wrapped in `KafkaException` when raised;
`kafka_failure` turns either into one `KafkaFailure` carrying the error's name and its
`retriable` and `fatal` flags, so no caller outside this package handles librdkafka's types.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

from confluent_kafka import KafkaError, KafkaException

from consumer.config import ConfigError
from consumer.errors import TransientError

MESSAGE_REFUSED: Final = frozenset(
    {"MSG_SIZE_TOO_LARGE", "RECORD_LIST_TOO_LARGE", "INVALID_RECORD"}
)
"""Errors about one message itself (librdkafka's own size check and the broker's
MESSAGE_TOO_LARGE share the name MSG_SIZE_TOO_LARGE): sending it again cannot succeed."""

T = TypeVar("T")


class KafkaConfigError(ConfigError):
    """librdkafka refused a property of `kafka.config` (unknown name or bad value)."""


class KafkaFailure(TransientError):
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


def build_client(client: Callable[[dict[str, Any]], T], config: dict[str, Any]) -> T:
    """Construct a librdkafka client; a property it refuses is the user's configuration
    mistake, reported as such rather than as a traceback."""
    try:
        return client(config)
    except KafkaException as exception:
        error = exception.args[0] if exception.args else None
        if isinstance(error, KafkaError) and error.code() == KafkaError._INVALID_ARG:
            raise KafkaConfigError(f"kafka.config: {error.str()}") from None
        raise


def kafka_failure(cause: KafkaError | KafkaException, doing: str) -> KafkaFailure:
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
