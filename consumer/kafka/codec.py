"""Confluent-framed Avro for both topics (contract §1, §2) and the request rules of §3.

A framed value is `0x00`, a 4-byte big-endian schema id, then the Avro binary body.
Without a schema registry the id is ignored on read (the body is decoded with the schema
shipped in `consumer/schemas/`) and status events are written with id 0. With a registry,
the writer schema of each id is fetched once, parsed once and resolved against our reader
schema; the status schema is registered once under `<status topic>-value`.

The framing and Avro bodies are `consumer.kafka.framing`'s, the request rules and input
limits `consumer.kafka.request_rules`'; this module puts them together and re-exports
what callers need, so the codec is imported from one place.

Exceptions (placed in the worker's tree in `consumer.errors`):

    CodecError
     ├── UndecodableMessage   framing or Avro decoding failed: dead-letter as `undecodable`
     ├── InvalidRequest       decoded, but breaks a rule of §3: dead-letter as `invalid_request`
     └── SchemaUnavailable    the registry cannot answer right now: retry later, the
                              message itself may be fine

Messages of these exceptions name fields, never identity values.
"""

from __future__ import annotations

import logging
import threading
import warnings
from datetime import datetime
from types import ModuleType
from typing import Any, Final

from consumer.config import KafkaSettings
from consumer.errors import TransientError
from consumer.kafka.framing import (
    REQUEST_SCHEMA,
    STATUS_SCHEMA,
    STATUS_SCHEMA_FILE,
    CodecError,
    UndecodableMessage,
    frame,
    load_schema_text,
    parse_schema,
    read_body,
    unframe,
    write_body,
)
from consumer.kafka.request_rules import (
    DEFAULT_LIMITS,
    MAX_MESSAGE_BYTES,
    InputLimits,
    InvalidRequest,
    validated_request,
)
from consumer.model import ErasureRequest, Status, StatusEvent

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_MESSAGE_BYTES",
    "REQUEST_SCHEMA",
    "Codec",
    "CodecError",
    "InputLimits",
    "InvalidRequest",
    "SchemaUnavailable",
    "UndecodableMessage",
    "decode_status_event",
    "encode_request",
    "frame",
    "load_schema_text",
]

log = logging.getLogger(__name__)

_SCHEMA_NOT_FOUND: Final = 404


class SchemaUnavailable(CodecError, TransientError):
    """The schema registry could not be reached or refused us; try again later."""


def _registry_api() -> ModuleType:
    """`confluent_kafka.schema_registry`, imported only when a registry is configured.

    It pulls in httpx and authlib (~0.2 s of start-up), and authlib's import emits a
    deprecation warning about its own httpx integration: noise for our users, dropped here.
    """
    with warnings.catch_warnings(record=True):
        import confluent_kafka.schema_registry as api  # noqa: PLC0415
    return api


def _status_record(event: StatusEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "request_id": event.request_id,
        "vendor": event.vendor,
        "status": event.status.value,
        "previous_status": None if event.previous_status is None else event.previous_status.value,
        "vendor_job_id": event.vendor_job_id,
        "changed_at": event.changed_at,
        "detail": event.detail,
    }


class Codec:
    """Decodes requests and encodes status events, with or without a schema registry.

    Safe to share between threads: its caches only ever gain complete entries.
    """

    def __init__(
        self,
        registry: Any | None = None,
        status_subject: str | None = None,
        *,
        limits: InputLimits = DEFAULT_LIMITS,
    ) -> None:
        """`registry` (a `confluent_kafka.schema_registry.SchemaRegistryClient`) None means:
        ignore schema ids on read, write status events with id 0. With a registry,
        `status_subject` is where the status schema is registered. `limits` are the largest
        requests `decode_request` accepts."""
        if registry is not None and status_subject is None:
            raise ValueError("a schema registry needs the status subject to register under")
        self._registry = registry
        self._limits = limits
        self._status_subject = status_subject
        # schema id -> (parsed writer schema, reader schema or None when they are equal)
        self._writers: dict[int, tuple[Any, Any | None]] = {}
        self._status_schema_id: int | None = None if registry is not None else 0
        self._register_lock = threading.Lock()

    @classmethod
    def from_settings(cls, kafka: KafkaSettings) -> Codec:
        """The codec `kafka.schema_registry_url` asks for."""
        if kafka.schema_registry_url is None:
            return cls()
        registry = _registry_api().SchemaRegistryClient({"url": kafka.schema_registry_url})
        return cls(registry, status_subject=f"{kafka.status_topic}-value")

    def decode_request(self, value: bytes | None) -> ErasureRequest:
        """Decode and validate one `subject.erasure.requested` value.

        Raises UndecodableMessage, InvalidRequest or (with a registry) SchemaUnavailable.
        """
        if value is not None and len(value) > self._limits.message_bytes:
            raise InvalidRequest(
                f"message is {len(value):,} bytes, more than the limit of "
                f"{self._limits.message_bytes:,} bytes"
            )
        framed, schema_id = unframe(value)
        if self._registry is None:
            record = read_body(framed, REQUEST_SCHEMA, None)
        else:
            writer, reader = self._writers.get(schema_id) or self._fetch_writer(schema_id)
            record = read_body(framed, writer, reader)
        return validated_request(record, self._limits)

    def encode_status_event(self, event: StatusEvent) -> bytes:
        """One framed `erasure.status.changed` value (raises SchemaUnavailable with a registry
        that cannot register the schema right now)."""
        schema_id = self._status_schema_id
        if schema_id is None:
            schema_id = self._register_status_schema()
        return frame(schema_id, write_body(STATUS_SCHEMA, _status_record(event)))

    def close(self) -> None:
        """Close the registry client's HTTP connections (nothing to do without a registry)."""
        if self._registry is not None:
            self._registry.close()

    def _fetch_writer(self, schema_id: int) -> tuple[Any, Any | None]:
        """Fetch, parse and cache the writer schema of `schema_id`."""
        assert self._registry is not None
        try:
            schema = self._registry.get_schema(schema_id)
        except _registry_api().SchemaRegistryError as error:
            if error.http_status_code == _SCHEMA_NOT_FOUND:
                message = f"schema id {schema_id} is unknown to the registry"
                raise UndecodableMessage(message) from None
            message = f"schema registry error for id {schema_id}: {error}"
            raise SchemaUnavailable(message) from None
        except Exception as error:  # httpx connection errors and timeouts
            message = f"schema registry unreachable ({type(error).__name__})"
            raise SchemaUnavailable(message) from None
        if schema.schema_type not in (None, "AVRO"):
            raise UndecodableMessage(f"schema id {schema_id} is not an Avro schema")
        try:
            writer = parse_schema(schema.schema_str)
        except Exception as error:
            raise UndecodableMessage(
                f"schema id {schema_id} cannot be parsed ({type(error).__name__})"
            ) from None
        entry = (writer, None if writer == REQUEST_SCHEMA else REQUEST_SCHEMA)
        self._writers[schema_id] = entry
        log.info("Using writer schema id %d for requests", schema_id)
        return entry

    def _register_status_schema(self) -> int:
        assert self._registry is not None and self._status_subject is not None
        with self._register_lock:
            if self._status_schema_id is None:
                schema = _registry_api().Schema(load_schema_text(STATUS_SCHEMA_FILE), "AVRO")
                try:
                    schema_id = self._registry.register_schema(self._status_subject, schema)
                except Exception as error:
                    raise SchemaUnavailable(
                        f"cannot register the status schema under {self._status_subject} "
                        f"({type(error).__name__}: {error})"
                    ) from None
                log.info("Status schema registered as id %d (%s)", schema_id, self._status_subject)
                self._status_schema_id = schema_id
            return self._status_schema_id


def encode_request(request: ErasureRequest, schema_id: int = 0) -> bytes:
    """A framed request value as an upstream producer writes it (samples, tests, benchmarks)."""
    record = {
        "request_id": request.request_id,
        "requested_at": request.requested_at,
        "regulation": request.regulation.value,
        "identities": [{"type": i.type, "value": i.value} for i in request.identities],
        "vendors": None if request.vendors is None else list(request.vendors),
        "source": request.source,
        "trace_id": request.trace_id,
    }
    return frame(schema_id, write_body(REQUEST_SCHEMA, record))


def decode_status_event(value: bytes) -> StatusEvent:
    """Read back a status event written with our schema, as a downstream consumer would."""
    framed, _ = unframe(value)
    record = read_body(framed, STATUS_SCHEMA, None)
    changed_at: datetime = record["changed_at"]
    previous = record["previous_status"]
    return StatusEvent(
        event_id=record["event_id"],
        request_id=record["request_id"],
        vendor=record["vendor"],
        status=Status(record["status"]),
        previous_status=None if previous is None else Status(previous),
        vendor_job_id=record["vendor_job_id"],
        changed_at=changed_at,
        detail=record["detail"],
    )
