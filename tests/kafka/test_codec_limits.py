"""The codec's input limits and its rejection of strings the ledger cannot store.

Each limit is tried at its value (accepted) and one past it (rejected as InvalidRequest,
which ingest dead-letters as `invalid_request`), and every reason must name the field and
the limit without repeating the offending text.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from consumer.kafka.codec import (
    DEFAULT_LIMITS,
    MAX_MESSAGE_BYTES,
    Codec,
    InputLimits,
    InvalidRequest,
    UndecodableMessage,
    encode_request,
    frame,
)
from consumer.model import ErasureRequest, Identity, Regulation

CODEC = Codec()
SECRET = "jane.doe@example.com"
# U+E000 encodes to 3 UTF-8 bytes, as a lone surrogate does with "surrogatepass": swapping
# the bytes after encoding gives a body with the surrogate in place and lengths intact.
PLACEHOLDER = "\ue000"
LONE_SURROGATE = "\ud800".encode("utf-8", "surrogatepass")


def a_request(**changes: object) -> ErasureRequest:
    values: dict[str, object] = {
        "request_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "requested_at": datetime(2024, 5, 1, tzinfo=UTC),
        "regulation": Regulation.GDPR,
        "identities": (Identity("email", SECRET),),
        "vendors": ("voyado",),
        "source": "crm",
        "trace_id": "trace-1",
    }
    values.update(changes)
    return ErasureRequest(**values)  # type: ignore[arg-type]


def accepted(request: ErasureRequest, codec: Codec = CODEC) -> bool:
    return codec.decode_request(encode_request(request)) == request


def rejection(request: ErasureRequest) -> str:
    """The reason the codec rejects `request` with (the test fails if it accepts it)."""
    with pytest.raises(InvalidRequest) as raised:
        CODEC.decode_request(encode_request(request))
    return str(raised.value)


def identities(count: int) -> tuple[Identity, ...]:
    return tuple(Identity("customer_id", f"C-{index}") for index in range(count))


# The largest message


def test_a_value_over_the_message_limit_is_rejected_before_decoding() -> None:
    # Garbage that would be undecodable: InvalidRequest proves the size came first.
    value = frame(0, b"\xff" * (MAX_MESSAGE_BYTES - 5 + 1))
    assert len(value) == MAX_MESSAGE_BYTES + 1
    with pytest.raises(InvalidRequest) as raised:
        CODEC.decode_request(value)
    assert str(raised.value) == (
        "message is 1,000,001 bytes, more than the limit of 1,000,000 bytes"
    )
    with pytest.raises(UndecodableMessage):
        CODEC.decode_request(value[:MAX_MESSAGE_BYTES])


def test_a_message_of_exactly_the_limit_is_accepted() -> None:
    # No valid request reaches 1 MB within the other limits, so try a codec with a tighter one.
    request = a_request()
    size = len(encode_request(request))
    assert accepted(request, Codec(limits=replace(DEFAULT_LIMITS, message_bytes=size)))
    with pytest.raises(InvalidRequest, match=f"limit of {size - 1} bytes"):
        Codec(limits=InputLimits(message_bytes=size - 1)).decode_request(encode_request(request))


# Fan-out


def test_identities_are_limited_to_100() -> None:
    assert accepted(a_request(identities=identities(100)))
    assert rejection(a_request(identities=identities(101))) == (
        "identities has 101 entries, more than the limit of 100"
    )


def test_vendors_are_limited_to_16() -> None:
    assert accepted(a_request(vendors=tuple(f"v{index}" for index in range(16))))
    assert rejection(a_request(vendors=tuple(f"v{index}" for index in range(17)))) == (
        "vendors has 17 entries, more than the limit of 16"
    )


# Lengths, in characters


def test_vendor_names_are_limited_to_64_characters() -> None:
    assert accepted(a_request(vendors=("voyado", "\U0001d11e" * 64)))
    reason = rejection(a_request(vendors=("voyado", SECRET + "x" * (64 - len(SECRET) + 1))))
    assert reason == "vendors[1] is longer than 64 characters"


def test_identity_types_are_limited_to_64_characters() -> None:
    longest = Identity("t" * 64, "C-1")
    assert accepted(a_request(identities=(longest,)))
    too_long = Identity(SECRET + "t" * (64 - len(SECRET) + 1), "C-1")
    reason = rejection(a_request(identities=(Identity("email", "a@b"), too_long)))
    assert reason == "identities[1].type is longer than 64 characters"


@pytest.mark.parametrize("field", ["source", "trace_id"])
def test_source_and_trace_id_are_limited_to_256_characters(field: str) -> None:
    assert accepted(a_request(**{field: "é" * 256}))
    reason = rejection(a_request(**{field: SECRET + "x" * (256 - len(SECRET) + 1)}))
    assert reason == f"{field} is longer than 256 characters"


# Strings the ledger cannot store

NUL_SECRET = SECRET[:4] + "\x00" + SECRET[4:]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"source": NUL_SECRET}, "source"),
        ({"trace_id": "\x00"}, "trace_id"),
        ({"vendors": ("voyado", NUL_SECRET)}, "vendors[1]"),
        (
            {"identities": (Identity("email", "a@b"), Identity(NUL_SECRET, "C-1"))},
            "identities[1].type",
        ),
    ],
)
def test_a_nul_character_in_any_stored_string_is_rejected(
    changes: dict[str, object], field: str
) -> None:
    reason = rejection(a_request(**changes))
    assert reason == f"{field} contains a NUL character, which the ledger cannot store"
    assert SECRET[:4] not in reason


@pytest.mark.parametrize(
    "changes",
    [
        {"source": "a" + PLACEHOLDER},
        {"trace_id": PLACEHOLDER},
        {"vendors": ("voyado", PLACEHOLDER)},
        {"identities": (Identity(PLACEHOLDER, "C-1"),)},
    ],
)
def test_a_lone_surrogate_in_any_string_is_undecodable(changes: dict[str, object]) -> None:
    placeholder = PLACEHOLDER.encode()
    value = encode_request(a_request(**changes))
    assert value.count(placeholder) == 1
    with pytest.raises(UndecodableMessage, match="UnicodeDecodeError"):
        CODEC.decode_request(value.replace(placeholder, LONE_SURROGATE))
