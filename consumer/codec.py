"""Confluent-framed Avro for both topics (contract §1, §2) and the request rules of §3.

A framed value is `0x00`, a 4-byte big-endian schema id, then the Avro binary body.
Without a schema registry the id is ignored on read (the body is decoded with the schema
shipped in `consumer/schemas/`) and status events are written with id 0. With a registry,
the writer schema of each id is fetched once, parsed once and resolved against our reader
schema; the status schema is registered once under `<status topic>-value`.

Exceptions:

    CodecError
     ├── UndecodableMessage   framing or Avro decoding failed: dead-letter as `undecodable`
     ├── InvalidRequest       decoded, but breaks a rule of §3: dead-letter as `invalid_request`
     └── SchemaUnavailable    the registry cannot answer right now: retry later, the
                              message itself may be fine

Messages of these exceptions name fields, never identity values.

Beyond §3's rules the codec enforces `InputLimits` (a message breaking one is an
`InvalidRequest` too), and rejects a NUL character in any string a request carries:
PostgreSQL cannot store one in a text column (§3 dead-letters what the ledger cannot
store). Lone surrogates need no rule: the Avro body is decoded as strict UTF-8, so encoded
surrogates already make the message undecodable.

The `uuid` logical type is dropped before parsing: fastavro would turn the string into a
`uuid.UUID`, losing the request_id exactly as sent (it is the Kafka key and the consumers'
join key) and turning a malformed id into a decoding error instead of an invalid request.
The wire encoding (an Avro string) is the same either way.
"""

from __future__ import annotations

import io
import json
import logging
import re
import struct
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from types import ModuleType
from typing import Any, Final

import fastavro

from consumer.config import KafkaSettings
from consumer.model import ErasureRequest, Identity, Regulation, Status, StatusEvent

log = logging.getLogger(__name__)

MAGIC_BYTE: Final = 0
HEADER_SIZE: Final = 5
MAX_IDENTITY_LENGTH: Final = 1024
MAX_MESSAGE_BYTES: Final = 1_000_000
MAX_IDENTITIES: Final = 100
MAX_VENDORS: Final = 16
MAX_VENDOR_NAME_LENGTH: Final = 64
MAX_IDENTITY_TYPE_LENGTH: Final = 64
MAX_TEXT_LENGTH: Final = 256
REQUEST_SCHEMA_FILE: Final = "subject_erasure_requested.avsc"
STATUS_SCHEMA_FILE: Final = "erasure_status_changed.avsc"

_HEADER = struct.Struct(">BI")
_CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
# Unicode category Cc is exactly C0 (U+0000-U+001F), DEL and C1 (U+007F-U+009F).
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f]")
# All three identity value rules in one match, the fast path for valid values.
_VALID_IDENTITY_VALUE = re.compile(f"[^\x00-\x1f\x7f-\x9f]{{1,{MAX_IDENTITY_LENGTH}}}")
_REGULATIONS = {regulation.value: regulation for regulation in Regulation}
_SCHEMA_NOT_FOUND = 404


class CodecError(Exception):
    """A value could not be turned into a request (or an event into bytes)."""


class UndecodableMessage(CodecError):
    """The framing or the Avro body is broken: the bytes are not a request at all."""


class InvalidRequest(CodecError):
    """The value decodes, but the request breaks a rule of contract §3."""


class SchemaUnavailable(CodecError):
    """The schema registry could not be reached or refused us; try again later."""


@dataclass(frozen=True, slots=True)
class InputLimits:
    """The largest request the worker takes; a message over any limit is an InvalidRequest.

    One message must neither cost unbounded work nor break a later stage:
    `message_bytes` is checked before decoding, so a huge value costs nothing (it is also
    librdkafka's default `message.max.bytes`); `identities` bounds the fan-out (items are
    identities x vendors x destinations; one 1.6 MB message once made 500,000 items);
    `vendors` and `vendor_name_length` bound the SKIPPED scopes a list of unknown names
    makes: vendor names are a few fixed short words, but every name is stored in the
    ledger's primary key (PostgreSQL's index takes ~2.7 KB at most) and sent in a status
    event (a 1 MB name jammed the outbox); `identity_type_length` and `text_length`
    (`source`, `trace_id`) keep the other stored strings of a request small. Lengths
    count characters (code points), like §3's 1,024 for identity values.
    """

    message_bytes: int = MAX_MESSAGE_BYTES
    identities: int = MAX_IDENTITIES
    vendors: int = MAX_VENDORS
    vendor_name_length: int = MAX_VENDOR_NAME_LENGTH
    identity_type_length: int = MAX_IDENTITY_TYPE_LENGTH
    text_length: int = MAX_TEXT_LENGTH


DEFAULT_LIMITS: Final = InputLimits()


def _registry_api() -> ModuleType:
    """`confluent_kafka.schema_registry`, imported only when a registry is configured.

    It pulls in httpx and authlib (~0.2 s of start-up), and authlib's import emits a
    deprecation warning about its own httpx integration: noise for our users, dropped here.
    """
    with warnings.catch_warnings(record=True):
        import confluent_kafka.schema_registry as api  # noqa: PLC0415
    return api


def load_schema_text(filename: str) -> str:
    """A schema file as shipped inside the package, whatever the working directory."""
    return resources.files("consumer").joinpath("schemas", filename).read_text(encoding="utf-8")


def _without_uuid_logical_type(node: Any) -> Any:
    """A copy of a schema (JSON) where every `"logicalType": "uuid"` string is a plain string."""
    if isinstance(node, dict):
        if node.get("logicalType") == "uuid":
            return {key: value for key, value in node.items() if key != "logicalType"}
        return {key: _without_uuid_logical_type(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_without_uuid_logical_type(value) for value in node]
    return node


def _parse(schema_text: str) -> Any:
    return fastavro.parse_schema(_without_uuid_logical_type(json.loads(schema_text)))


REQUEST_SCHEMA: Final = _parse(load_schema_text(REQUEST_SCHEMA_FILE))
STATUS_SCHEMA: Final = _parse(load_schema_text(STATUS_SCHEMA_FILE))


def frame(schema_id: int, body: bytes) -> bytes:
    """Prefix an Avro body with the Confluent header."""
    return _HEADER.pack(MAGIC_BYTE, schema_id) + body


def _write(schema: Any, record: Mapping[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def _read(value: bytes, writer: Any, reader: Any | None) -> Any:
    """Decode one framed value; any failure of the framing or the body is UndecodableMessage.

    Arbitrary bytes make fastavro raise almost anything (EOFError, ValueError, IndexError,
    UnicodeDecodeError, OverflowError, ...), hence the broad except.
    """
    buffer = io.BytesIO(value)
    buffer.seek(HEADER_SIZE)
    try:
        record = fastavro.schemaless_reader(buffer, writer, reader)
    except Exception as error:
        raise UndecodableMessage(f"Avro body cannot be decoded ({type(error).__name__})") from None
    if buffer.tell() != len(value):
        raise UndecodableMessage("trailing bytes after the Avro body")
    return record


def _unframe(value: bytes | None) -> tuple[bytes, int]:
    """The value and its schema id, or UndecodableMessage if it is not Confluent-framed."""
    if value is None:
        raise UndecodableMessage("no value (tombstone)")
    if len(value) < HEADER_SIZE or value[0] != MAGIC_BYTE:
        raise UndecodableMessage("not Confluent framing (magic byte 0 and a 4-byte schema id)")
    schema_id: int = _HEADER.unpack_from(value)[1]
    return value, schema_id


def _validated_request(record: Mapping[str, Any], limits: InputLimits) -> ErasureRequest:
    """Apply contract §3's rules and our `limits` to a decoded record and build the request."""
    request_id: str = record["request_id"]
    if _CANONICAL_UUID.fullmatch(request_id) is None:
        raise InvalidRequest("request_id is not a UUID in canonical 8-4-4-4-12 hex form")
    raw_vendors: list[str] | None = record["vendors"]
    if raw_vendors is not None:
        _check_vendors(raw_vendors, limits)
    identities = _validated_identities(record["identities"], limits)
    for field in ("source", "trace_id"):
        if record[field] is not None:
            _check_text(field, record[field], limits.text_length)
    return ErasureRequest(
        request_id=request_id,
        requested_at=record["requested_at"],
        regulation=_REGULATIONS[record["regulation"]],
        identities=identities,
        vendors=None if raw_vendors is None else tuple(raw_vendors),
        source=record["source"],
        trace_id=record["trace_id"],
    )


def _check_vendors(vendors: Sequence[str], limits: InputLimits) -> None:
    """A present `vendors` list: not empty (§3), and every name storable even though an
    unknown name is only SKIPPED: each becomes a vendor scope row and a status event."""
    if not vendors:
        raise InvalidRequest("vendors is present but empty (use null for every enabled vendor)")
    if len(vendors) > limits.vendors:
        raise InvalidRequest(
            f"vendors has {len(vendors)} entries, more than the limit of {limits.vendors}"
        )
    for index, vendor in enumerate(vendors):
        _check_text(f"vendors[{index}]", vendor, limits.vendor_name_length)


def _validated_identities(
    raw_identities: Sequence[Mapping[str, str]], limits: InputLimits
) -> tuple[Identity, ...]:
    """The identities, counted before they are looked at (the count bounds the fan-out)."""
    if not raw_identities:
        raise InvalidRequest("identities is empty")
    if len(raw_identities) > limits.identities:
        raise InvalidRequest(
            f"identities has {len(raw_identities)} entries, "
            f"more than the limit of {limits.identities}"
        )
    identities = []
    for index, identity in enumerate(raw_identities):
        _check_text(f"identities[{index}].type", identity["type"], limits.identity_type_length)
        value = identity["value"]
        if _VALID_IDENTITY_VALUE.fullmatch(value) is None:
            raise InvalidRequest(f"identities[{index}].value {_identity_value_problem(value)}")
        identities.append(Identity(identity["type"], value))
    return tuple(identities)


def _check_text(field: str, text: str, max_length: int) -> None:
    """Reject a string the ledger cannot store or that is over its limit (names the field,
    never the text)."""
    if "\x00" in text:
        raise InvalidRequest(f"{field} contains a NUL character, which the ledger cannot store")
    if len(text) > max_length:
        raise InvalidRequest(f"{field} is longer than {max_length} characters")


def _identity_value_problem(value: str) -> str:
    """Which rule an identity value breaks, in words that do not repeat the value."""
    if not value:
        return "is empty"
    if _CONTROL_CHARACTER.search(value) is not None:
        return "contains a control character"
    return f"is longer than {MAX_IDENTITY_LENGTH} characters"


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
        framed, schema_id = _unframe(value)
        if self._registry is None:
            record = _read(framed, REQUEST_SCHEMA, None)
        else:
            writer, reader = self._writers.get(schema_id) or self._fetch_writer(schema_id)
            record = _read(framed, writer, reader)
        return _validated_request(record, self._limits)

    def encode_status_event(self, event: StatusEvent) -> bytes:
        """One framed `erasure.status.changed` value (raises SchemaUnavailable with a registry
        that cannot register the schema right now)."""
        schema_id = self._status_schema_id
        if schema_id is None:
            schema_id = self._register_status_schema()
        return frame(schema_id, _write(STATUS_SCHEMA, _status_record(event)))

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
            writer = _parse(schema.schema_str)
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
    return frame(schema_id, _write(REQUEST_SCHEMA, record))


def decode_status_event(value: bytes) -> StatusEvent:
    """Read back a status event written with our schema, as a downstream consumer would."""
    framed, _ = _unframe(value)
    record = _read(framed, STATUS_SCHEMA, None)
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
