"""The rules a decoded request must follow (contract §3) and the worker's input limits.

Beyond §3's rules the worker enforces `InputLimits` (a message breaking one is an
`InvalidRequest` too), and rejects a NUL character in any string a request carries:
PostgreSQL cannot store one in a text column (§3 dead-letters what the ledger cannot
store). Lone surrogates need no rule: the Avro body is decoded as strict UTF-8, so encoded
surrogates already make the message undecodable.

Messages of `InvalidRequest` name fields, never identity values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from consumer.errors import RejectedError
from consumer.kafka.framing import CodecError
from consumer.model import ErasureRequest, Identity, Regulation

MAX_IDENTITY_LENGTH: Final = 1024
MAX_MESSAGE_BYTES: Final = 1_000_000
MAX_IDENTITIES: Final = 100
MAX_VENDORS: Final = 16
MAX_VENDOR_NAME_LENGTH: Final = 64
MAX_IDENTITY_TYPE_LENGTH: Final = 64
MAX_TEXT_LENGTH: Final = 256

_CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
# Unicode category Cc is exactly C0 (U+0000-U+001F), DEL and C1 (U+007F-U+009F).
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f]")
# All three identity value rules in one match, the fast path for valid values.
_VALID_IDENTITY_VALUE = re.compile(f"[^\x00-\x1f\x7f-\x9f]{{1,{MAX_IDENTITY_LENGTH}}}")
_REGULATIONS = {regulation.value: regulation for regulation in Regulation}


class InvalidRequest(CodecError, RejectedError):
    """The value decodes, but the request breaks a rule of contract §3."""


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


def validated_request(record: Mapping[str, Any], limits: InputLimits) -> ErasureRequest:
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
