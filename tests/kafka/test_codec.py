"""Framing, decoding and the request rules of contract §3, and status event encoding."""

from __future__ import annotations

import contextlib
import io
import json
import struct
import unicodedata
import uuid
from datetime import UTC, datetime
from pathlib import Path

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.kafka.codec import (
    Codec,
    InvalidRequest,
    UndecodableMessage,
    decode_status_event,
    encode_request,
    frame,
    load_schema_text,
)
from consumer.model import ErasureRequest, Identity, Regulation, Status, StatusEvent

CODEC = Codec()
REQUEST_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
WHEN = datetime(2024, 5, 1, 12, 30, 15, 123000, tzinfo=UTC)
CONTROL_CHARACTERS = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cc"]


def a_request(**changes: object) -> ErasureRequest:
    values: dict[str, object] = {
        "request_id": REQUEST_ID,
        "requested_at": WHEN,
        "regulation": Regulation.GDPR,
        "identities": (Identity("email", "jane@example.com"), Identity("customer_id", "C-1")),
        "vendors": None,
        "source": "crm",
        "trace_id": "trace-1",
    }
    values.update(changes)
    return ErasureRequest(**values)  # type: ignore[arg-type]


def raw_body(record: dict[str, object]) -> bytes:
    """A request body written with the plain schema file (uuid logical type included)."""
    schema = fastavro.parse_schema(json.loads(load_schema_text("subject_erasure_requested.avsc")))
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


# Round trips


def test_request_round_trips_and_keeps_request_id_as_sent() -> None:
    upper = a_request(request_id=REQUEST_ID.upper(), vendors=("voyado", "acoustic"))
    assert CODEC.decode_request(encode_request(upper)) == upper


def test_reads_a_body_written_with_the_uuid_logical_type() -> None:
    body = raw_body(
        {
            "request_id": uuid.UUID(REQUEST_ID),
            "requested_at": WHEN,
            "regulation": "CCPA",
            "identities": [{"type": "email", "value": "x@example.com"}],
            "vendors": None,
            "source": None,
            "trace_id": None,
        }
    )
    request = CODEC.decode_request(frame(0, body))
    assert request.request_id == REQUEST_ID
    assert request.regulation is Regulation.CCPA
    assert request.requested_at == WHEN


def test_schema_id_is_ignored_without_a_registry() -> None:
    body = encode_request(a_request())[5:]
    assert CODEC.decode_request(frame(123456, body)) == a_request()


def test_schemas_load_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    schema = json.loads(load_schema_text("erasure_status_changed.avsc"))
    assert schema["name"] == "ErasureStatusChanged"


def test_status_event_is_framed_with_schema_id_0_and_round_trips() -> None:
    event = StatusEvent(
        event_id=str(uuid.uuid4()),
        request_id=REQUEST_ID,
        vendor="voyado",
        status=Status.COMPLETED,
        previous_status=Status.SUBMITTED,
        vendor_job_id="job-9",
        changed_at=WHEN,
        detail=None,
    )
    value = CODEC.encode_status_event(event)
    assert value[:5] == b"\x00\x00\x00\x00\x00"
    assert decode_status_event(value) == event


# Undecodable


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (None, "tombstone"),
        (b"", "empty"),
        (b"\x00\x00\x00", "shorter than the header"),
        (b"\x01\x00\x00\x00\x00" + encode_request(a_request())[5:], "wrong magic byte"),
        (encode_request(a_request())[:-3], "truncated body"),
        (encode_request(a_request()) + b"\x00", "trailing bytes"),
        (b'{"request_id": "x"}', "JSON, not Avro"),
    ],
)
def test_undecodable(value: bytes | None, why: str) -> None:
    with pytest.raises(UndecodableMessage):
        CODEC.decode_request(value)


def test_invalid_utf8_is_undecodable() -> None:
    good = encode_request(a_request(source="ab"))
    broken = good.replace(b"\x04ab", b"\x04\xff\xfe")
    assert broken != good
    with pytest.raises(UndecodableMessage):
        CODEC.decode_request(broken)


def test_unknown_enum_symbol_index_is_undecodable() -> None:
    good = encode_request(a_request(regulation=Regulation.GDPR))
    # requested_at is a zig-zag long after the 36-char request_id; the enum index follows it.
    body = bytearray(good)
    index_at = 5 + 1 + 36 + len(_zigzag(int(WHEN.timestamp() * 1000)))
    assert body[index_at] == 0  # GDPR
    body[index_at] = 2 * 7  # symbol 7 of 3
    with pytest.raises(UndecodableMessage):
        CODEC.decode_request(bytes(body))


def _zigzag(number: int) -> bytes:
    encoded = (number << 1) ^ (number >> 63)
    out = bytearray()
    while encoded > 0x7F:
        out.append((encoded & 0x7F) | 0x80)
        encoded >>= 7
    out.append(encoded)
    return bytes(out)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_codec_errors(value: bytes) -> None:
    with contextlib.suppress(UndecodableMessage, InvalidRequest):
        CODEC.decode_request(value)


@settings(max_examples=500)
@given(st.binary(max_size=300), st.integers(0, 2**32 - 1))
def test_arbitrary_framed_bodies_only_raise_codec_errors(body: bytes, schema_id: int) -> None:
    with contextlib.suppress(UndecodableMessage, InvalidRequest):
        CODEC.decode_request(struct.pack(">bI", 0, schema_id) + body)


# Valid requests, generated

hex_uuids = st.uuids().map(str).flatmap(lambda u: st.sampled_from([u, u.upper()]))
valid_values = st.text(
    alphabet=st.characters(blacklist_categories=["Cc", "Cs"]), min_size=1, max_size=1024
)
identities = st.builds(
    Identity, st.sampled_from(["email", "customer_id", "customer_key", "phone"]), valid_values
)
# Any character but NUL, which the ledger cannot store (see tests/kafka/test_codec_limits.py).
storable = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
optional_text = st.none() | st.text(storable, max_size=50)
requests = st.builds(
    ErasureRequest,
    request_id=hex_uuids,
    requested_at=st.integers(0, 4102444800000).map(
        lambda ms: datetime.fromtimestamp(ms / 1000, UTC).replace(microsecond=(ms % 1000) * 1000)
    ),
    regulation=st.sampled_from(Regulation),
    identities=st.lists(identities, min_size=1, max_size=5).map(tuple),
    vendors=st.none() | st.lists(st.text(storable, max_size=20), min_size=1, max_size=5).map(tuple),
    source=optional_text,
    trace_id=optional_text,
)


@settings(max_examples=300)
@given(requests)
def test_valid_requests_round_trip(request: ErasureRequest) -> None:
    assert CODEC.decode_request(encode_request(request)) == request


# Invalid requests: one rule at a time


@pytest.mark.parametrize(
    "request_id",
    [
        "",
        "not-a-uuid",
        REQUEST_ID.replace("-", ""),
        "{" + REQUEST_ID + "}",
        "urn:uuid:" + REQUEST_ID,
        REQUEST_ID + "\n",
        " " + REQUEST_ID,
        REQUEST_ID[:-1] + "g",
        REQUEST_ID[:8] + REQUEST_ID[9:13] + "-" + REQUEST_ID[8] + REQUEST_ID[13:],
        REQUEST_ID.replace("0", "\uff10"),  # fullwidth digit zero
    ],
)
def test_request_id_must_be_a_canonical_uuid(request_id: str) -> None:
    with pytest.raises(InvalidRequest, match="request_id"):
        CODEC.decode_request(encode_request(a_request(request_id=request_id)))


def test_vendors_present_but_empty_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="vendors"):
        CODEC.decode_request(encode_request(a_request(vendors=())))


def test_identities_empty_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="identities"):
        CODEC.decode_request(encode_request(a_request(identities=())))


def test_empty_identity_value_is_invalid() -> None:
    identities = (Identity("email", "a@example.com"), Identity("customer_id", ""))
    with pytest.raises(InvalidRequest, match=r"identities\[1\]\.value is empty"):
        CODEC.decode_request(encode_request(a_request(identities=identities)))


def test_identity_value_of_1024_characters_is_valid_and_1025_is_not() -> None:
    longest = "é" * 1024
    request = a_request(identities=(Identity("email", longest),))
    assert CODEC.decode_request(encode_request(request)) == request
    too_long = a_request(identities=(Identity("email", longest + "x"),))
    with pytest.raises(InvalidRequest, match="longer than 1024") as raised:
        CODEC.decode_request(encode_request(too_long))
    assert "é" not in str(raised.value)


def test_control_characters_are_exactly_unicode_category_cc() -> None:
    assert len(CONTROL_CHARACTERS) == 65
    assert {"\t", "\n", "\r", "\x00", "\x7f", "\x85", "\x9f"} <= set(CONTROL_CHARACTERS)


@given(st.sampled_from(CONTROL_CHARACTERS), st.integers(0, 10))
def test_identity_value_with_a_control_character_is_invalid(control: str, at: int) -> None:
    secret = "jane.doe@example.com"
    value = secret[:at] + control + secret[at:]
    request = a_request(identities=(Identity("email", value),))
    with pytest.raises(InvalidRequest, match="control character") as raised:
        CODEC.decode_request(encode_request(request))
    assert secret[:5] not in str(raised.value)


@pytest.mark.parametrize(
    "allowed", ["\u200b", "\u00a0", "\u2028", "'quoted'@example.com", "josé@ex.com"]
)
def test_other_characters_are_allowed(allowed: str) -> None:
    request = a_request(identities=(Identity("email", "x" + allowed),))
    assert CODEC.decode_request(encode_request(request)) == request
