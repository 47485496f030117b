"""What Acquia CDP's sandbox reads and writes: the erasure body, Basic and bearer
credentials, query flags and Acquia's error answers. No state: `AcquiaCdpSandbox` keeps it.
Messages are the sandbox's own, never an echo of the request.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qs

from devtools.sandbox.server import (
    JsonValue,
    Request,
    Response,
    json_response,
    parse_json_body,
    parse_media_type,
)

MAX_IDS_PER_CALL = 200
REQUEST_ORIGIN = "Data Erasure"
MAX_REASON_CHARS = 255
"""The sandbox's own bound on ``reason`` (Acquia publishes none); the worker sends far less."""

_BODY_FIELDS = frozenset({"customerIds", "requestedDate", "reason", "requestOrigin", "tenantId"})
_DATE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC")
_DATE_FORMAT = "%Y-%m-%d %H:%M:%S UTC"


class ErasureBodyError(ValueError):
    """The erasure body is not acceptable; the message is safe to show (no values)."""


@dataclass(frozen=True)
class ErasureBody:
    """A validated erasure request body."""

    customer_ids: tuple[str, ...]
    requested_date: str
    reason: str
    tenant_id: int


def parse_erasure_body(body: bytes, tenant_id: int) -> ErasureBody:
    """Validate an erasure body against the path's tenant, exactly as the sandbox does.

    Public so tests can check the rules (and a client's body builder) without HTTP.
    """
    try:
        document = parse_json_body(body)
    except ValueError as error:
        raise ErasureBodyError(str(error)) from None
    if not isinstance(document, dict):
        raise ErasureBodyError("the body must be a JSON object")
    missing = sorted(_BODY_FIELDS - document.keys())
    if missing:
        raise ErasureBodyError(f"required fields missing: {', '.join(missing)}")
    if document.keys() - _BODY_FIELDS:
        raise ErasureBodyError("the body has fields this API does not define")
    return ErasureBody(
        _customer_ids(document["customerIds"]),
        _requested_date(document["requestedDate"]),
        _reason(document["reason"]),
        _tenant(document["tenantId"], document["requestOrigin"], tenant_id),
    )


def _customer_ids(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ErasureBodyError("customerIds must be a non-empty list")
    if len(value) > MAX_IDS_PER_CALL:
        raise ErasureBodyError(f"at most {MAX_IDS_PER_CALL} customer ids per request")
    if not all(isinstance(item, str) and item for item in value):
        raise ErasureBodyError("every customer id must be a non-empty string")
    return tuple(value)


def _requested_date(value: object) -> str:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise ErasureBodyError("requestedDate must look like 'YYYY-MM-DD HH:MM:SS UTC'")
    try:
        datetime.strptime(value, _DATE_FORMAT)
    except ValueError:
        raise ErasureBodyError("requestedDate is not a valid date and time") from None
    return value


def _reason(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ErasureBodyError("reason is required")
    if len(value) > MAX_REASON_CHARS or not value.isprintable():
        raise ErasureBodyError(f"reason must be printable text of at most {MAX_REASON_CHARS}")
    return value


def _tenant(value: object, origin: object, path_tenant: int) -> int:
    if origin != REQUEST_ORIGIN:
        raise ErasureBodyError(f"requestOrigin must be {REQUEST_ORIGIN!r}")
    if not isinstance(value, int) or isinstance(value, bool) or value != path_tenant:
        raise ErasureBodyError("tenantId must be the path's tenant id, as a number")
    return value


def error_answer(
    status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    """Acquia's error body; the message is the sandbox's own, never an echo of the request."""
    payload: dict[str, JsonValue] = {
        "errorCode": code,
        "userMessage": message,
        "developerMessage": message,
    }
    return json_response(status, payload, headers=headers)


def single_query(request: Request) -> dict[str, str] | Response:
    """Single-valued query parameters, or the 400 for a malformed or repeated one."""
    try:
        parsed = parse_qs(request.query, keep_blank_values=True, strict_parsing=bool(request.query))
    except ValueError:
        return error_answer(400, "INVALID_REQUEST", "the query string is malformed")
    if any(len(values) > 1 for values in parsed.values()):
        return error_answer(400, "INVALID_REQUEST", "a query parameter is repeated")
    return {name: values[0] for name, values in parsed.items()}


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``(username, password)`` from ``Authorization: Basic ...`` (UTF-8), else None."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, separator, password = decoded.partition(":")
    return (username, password) if separator else None


def bearer_token(request: Request) -> str | None:
    scheme, _, token = (request.header("authorization") or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison, as a real login endpoint would do."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def invalid_token() -> Response:
    return error_answer(401, "INVALID_TOKEN", "the session token is missing, invalid or expired")


def json_content_type_problem(value: str | None) -> Response | None:
    media_type, params = parse_media_type(value or "")
    if media_type != "application/json" or params.get("charset", "utf-8").lower() != "utf-8":
        return error_answer(415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json")
    return None


def fail_on_not_found(request: Request) -> bool | Response:
    """The optional ``failOnNotFound`` flag (default true); any other parameter is 400."""
    query = single_query(request)
    if isinstance(query, Response):
        return query
    flag = query.pop("failOnNotFound", "true")
    if query or flag not in ("true", "false"):
        return error_answer(400, "INVALID_REQUEST", "only failOnNotFound=true|false is accepted")
    return flag == "true"
