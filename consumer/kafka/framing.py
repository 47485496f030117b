"""Confluent framing and Avro bodies: the bytes of both topics (contract §1, §2).

A framed value is `0x00`, a 4-byte big-endian schema id, then the Avro binary body. The
schemas are the files shipped in `consumer/schemas/`.

The `uuid` logical type is dropped before parsing: fastavro would turn the string into a
`uuid.UUID`, losing the request_id exactly as sent (it is the Kafka key and the consumers'
join key) and turning a malformed id into a decoding error instead of an invalid request.
The wire encoding (an Avro string) is the same either way.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping
from importlib import resources
from typing import Any, Final

import fastavro

from consumer.errors import ErasureError, RejectedError

MAGIC_BYTE: Final = 0
HEADER_SIZE: Final = 5
REQUEST_SCHEMA_FILE: Final = "subject_erasure_requested.avsc"
STATUS_SCHEMA_FILE: Final = "erasure_status_changed.avsc"

_HEADER = struct.Struct(">BI")


class CodecError(ErasureError):
    """A value could not be turned into a request (or an event into bytes)."""


class UndecodableMessage(CodecError, RejectedError):
    """The framing or the Avro body is broken: the bytes are not a request at all."""


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


def parse_schema(schema_text: str) -> Any:
    return fastavro.parse_schema(_without_uuid_logical_type(json.loads(schema_text)))


REQUEST_SCHEMA: Final = parse_schema(load_schema_text(REQUEST_SCHEMA_FILE))
STATUS_SCHEMA: Final = parse_schema(load_schema_text(STATUS_SCHEMA_FILE))


def frame(schema_id: int, body: bytes) -> bytes:
    """Prefix an Avro body with the Confluent header."""
    return _HEADER.pack(MAGIC_BYTE, schema_id) + body


def write_body(schema: Any, record: Mapping[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def read_body(value: bytes, writer: Any, reader: Any | None) -> Any:
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


def unframe(value: bytes | None) -> tuple[bytes, int]:
    """The value and its schema id, or UndecodableMessage if it is not Confluent-framed."""
    if value is None:
        raise UndecodableMessage("no value (tombstone)")
    if len(value) < HEADER_SIZE or value[0] != MAGIC_BYTE:
        raise UndecodableMessage("not Confluent framing (magic byte 0 and a 4-byte schema id)")
    schema_id: int = _HEADER.unpack_from(value)[1]
    return value, schema_id
