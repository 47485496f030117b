"""What Monetate's sandbox reads and writes: the answer envelope, strict parsing of
schemas, upload rows, ISO 8601 times and query strings. No state: `MonetateSandbox` keeps it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from urllib.parse import parse_qs

from devtools.sandbox.server import JsonValue, Response, json_response, parse_media_type

MIN_TTL_SECONDS, MAX_TTL_SECONDS, DEFAULT_TTL_SECONDS = 600, 43200, 3600
PRIVACY_SCHEMA_TYPE = "customer_data_privacy"
PRIVACY_COLUMNS = ("customer_id", "delete_request_time")
MAX_SCHEMA_FIELDS = 40
DATA_TYPES = frozenset({"STRING", "MULTI_STRING", "NUMBER", "DATETIME", "BOOLEAN"})
SCHEMA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass
class Dataset:
    """A ``customer_data_privacy`` dataset: its extra (ignored) columns and its rows."""

    extra_fields: dict[str, JsonValue] = field(default_factory=dict)
    rows: dict[str, str] = field(default_factory=dict)  # customer_id -> delete_request_time

    def columns(self) -> frozenset[str]:
        return frozenset((*PRIVACY_COLUMNS, *self.extra_fields))

    def definition(self, name: str) -> dict[str, JsonValue]:
        """The schema as the vendor describes it: the type's two columns plus any extras."""
        fields: dict[str, JsonValue] = {
            "customer_id": {"data_type": "STRING", "identifier": True, "unique_key": True},
            "delete_request_time": {"data_type": "DATETIME"},
            **self.extra_fields,
        }
        return {"name": name, "type": PRIVACY_SCHEMA_TYPE, "fields": fields}


def envelope(code: int, data: JsonValue, errors: Sequence[JsonValue] = ()) -> JsonValue:
    """The body every Monetate API answers with."""
    return {"meta": {"code": code, "errors": list(errors), "warnings": []}, "data": data}


def error_answer(
    status: int,
    message: str,
    field_name: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> Response:
    """An error answer; ``message`` must never hold identifiers, keys or tokens."""
    error: dict[str, JsonValue] = {"message": message}
    if field_name is not None:
        error["field"] = field_name
    return json_response(status, envelope(status, {}, [error]), headers=headers)


def json_content_type_problem(value: str | None) -> Response | None:
    """415 unless the body is declared ``application/json`` (in UTF-8, if a charset is given)."""
    media_type, params = parse_media_type(value or "")
    if media_type != "application/json" or params.get("charset", "utf-8").lower() != "utf-8":
        return error_answer(415, "Content-Type must be application/json")
    return None


def is_iso8601(value: str) -> bool:
    """An ISO 8601 date (``YYYY-MM-DD``) or a date-time that carries a UTC offset."""
    if _DATE.fullmatch(value):
        try:
            date.fromisoformat(value)
        except ValueError:
            return False
        return True
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    return parsed.tzinfo is not None


def query_values(query: str, name: str) -> list[str] | None:
    """Every value of ``name`` in a query string; None when the query is not UTF-8."""
    try:
        return parse_qs(query, keep_blank_values=True, errors="strict").get(name, [])
    except UnicodeDecodeError:
        return None


def single_param(query: str, name: str) -> str | None:
    """The one value of ``name`` in a query string; None when absent, repeated or not UTF-8."""
    values = query_values(query, name)
    return values[0] if values is not None and len(values) == 1 else None


def requested_ttl(query: str) -> int | None:
    """The requested token lifetime (default 3600), or None if it is not acceptable."""
    values = query_values(query, "ttl")
    if values == []:
        return DEFAULT_TTL_SECONDS
    if values is None or len(values) != 1 or not (values[0].isascii() and values[0].isdigit()):
        return None
    ttl = int(values[0])
    return ttl if MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS else None


def parse_schema(body: object) -> tuple[str, dict[str, JsonValue]] | Response:
    """The new dataset's name and extra columns, or the 400 to answer with."""
    if not isinstance(body, dict) or not {"type", "name", "fields"} <= body.keys():
        return error_answer(400, "type, name and fields are required")
    if body["type"] != PRIVACY_SCHEMA_TYPE:
        return error_answer(400, f"this sandbox only supports type {PRIVACY_SCHEMA_TYPE}", "type")
    name, fields = body["name"], body["fields"]
    if not isinstance(name, str) or not SCHEMA_NAME.fullmatch(name):
        return error_answer(400, "name must be a letter then letters, digits or _ (max 64)", "name")
    if not isinstance(fields, dict):
        return error_answer(400, "fields must be an object", "fields")
    if len(fields) > MAX_SCHEMA_FIELDS - len(PRIVACY_COLUMNS):
        return error_answer(400, f"a schema has at most {MAX_SCHEMA_FIELDS} fields", "fields")
    for field_name, spec in fields.items():
        if field_name in PRIVACY_COLUMNS:
            return error_answer(400, "the type already defines this field", f"fields.{field_name}")
        if not isinstance(spec, dict) or spec.get("data_type") not in DATA_TYPES:
            return error_answer(400, "every field needs a valid data_type", f"fields.{field_name}")
    return name, fields


def parse_rows(
    body: object, columns: frozenset[str], max_rows: int
) -> list[dict[str, str]] | Response:
    """The rows of a data upload, or the 400 to answer with (no row is stored then)."""
    if not isinstance(body, dict) or not isinstance(body.get("schema_rows"), list):
        return error_answer(400, "schema_rows must be a list", "schema_rows")
    if set(body) - {"schema_rows", "_sent_time"}:
        return error_answer(
            400, "unknown top-level key; only schema_rows and _sent_time are allowed"
        )
    sent_time = body.get("_sent_time")
    if sent_time is not None and not (isinstance(sent_time, str) and is_iso8601(sent_time)):
        return error_answer(400, "_sent_time must be an ISO 8601 timestamp", "_sent_time")
    rows: list[object] = body["schema_rows"]
    if len(rows) > max_rows:
        return error_answer(400, f"too many rows: at most {max_rows} per request", "schema_rows")
    parsed: list[dict[str, str]] = []
    for index, row in enumerate(rows):
        checked = _parse_row(row, columns)
        if isinstance(checked, str):
            return error_answer(400, checked, f"schema_rows[{index}]")
        parsed.append(checked)
    return parsed


def _parse_row(row: object, columns: frozenset[str]) -> dict[str, str] | str:
    """The row's two privacy columns (extras are ignored), or why it is invalid (no values)."""
    if not isinstance(row, dict):
        return "each row must be an object"
    if set(row) - columns:
        return "the row has a column this dataset does not define"
    customer_id, requested = row.get("customer_id"), row.get("delete_request_time")
    if not isinstance(customer_id, str) or not customer_id or customer_id != customer_id.strip():
        return "customer_id must be non-empty text without leading or trailing whitespace"
    if not isinstance(requested, str) or not is_iso8601(requested):
        return "delete_request_time must be an ISO 8601 date or timestamp with an offset"
    return {"customer_id": customer_id, "delete_request_time": requested}
