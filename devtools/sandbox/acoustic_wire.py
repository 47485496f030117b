"""What Acoustic's sandbox reads and writes: the erasure CSV, the OAuth token form, the
`{"meta", "data"}` envelope and its error answers. No state: `AcousticSandbox` keeps it.
Messages never echo identifiers, column names or tokens, since clients tend to log them.
"""

from __future__ import annotations

import csv
import hmac
import io
from collections.abc import Collection, Sequence
from urllib.parse import parse_qs

from devtools.sandbox.server import JsonValue, Request, Response, json_response, parse_media_type


class ErasureCsvError(ValueError):
    """The erasure body is not acceptable; the message is safe to show (no values)."""


def parse_erasure_csv(body: bytes, lookup_fields: Collection[str]) -> list[tuple[str, str]]:
    """Parse an erasure body into ``(column, value)`` pairs, exactly as the sandbox does.

    Public so tests can check the parser on its own as well as over HTTP.
    Quoted values may hold commas, quotes and line breaks (RFC 4180 as written
    by Python's csv module); anything else that is not one ``COLUMN,value``
    record raises ``ErasureCsvError``.
    """
    if not body:
        raise ErasureCsvError("the request body is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ErasureCsvError("the request body is not valid UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    pairs: list[tuple[str, str]] = []
    try:
        for row in reader:
            pairs.append(_check_record(row, reader.line_num, lookup_fields))
    except csv.Error:
        raise ErasureCsvError(f"malformed CSV near line {reader.line_num}") from None
    if not pairs:
        raise ErasureCsvError("the request body holds no identifiers")
    return pairs


def _check_record(row: Sequence[str], line: int, lookup_fields: Collection[str]) -> tuple[str, str]:
    """Validate one CSV record; messages cite the line only, never its content."""
    if len(row) != 2:
        raise ErasureCsvError(
            f"line {line}: expected exactly 2 fields (column,value), got {len(row)}"
        )
    column, value = row
    if column not in lookup_fields:
        raise ErasureCsvError(f"line {line}: column is not a GDPR lookup field of this database")
    if not value:
        raise ErasureCsvError(f"line {line}: empty identifier value")
    return column, value


def status_body(status: str) -> dict[str, JsonValue]:
    """The status body of the doc's "Sample response 2"."""
    return {"meta": _meta(), "data": {"status": status}}


def _meta(errors: Sequence[str] = ()) -> dict[str, JsonValue]:
    return {
        "attributes": {},
        "generalErrors": list(errors),
        "fieldErrors": {},
        "links": [],
        "nextPageUrl": None,
    }


def rest_error(status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> Response:
    """A /rest error in the same envelope as status bodies, with a value-free message."""
    return json_response(status, {"meta": _meta([message]), "data": None}, headers=headers)


def oauth_error(status: int, error: str, description: str) -> Response:
    """An RFC 6749 section 5.2 error; ``no-store`` as the RFC requires for token responses."""
    headers = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]
    return json_response(
        status, {"error": error, "error_description": description}, headers=headers
    )


def unauthorized() -> Response:
    challenge = [("WWW-Authenticate", 'Bearer error="invalid_token"')]
    return rest_error(401, "missing, invalid or expired access token", challenge)


def csv_content_type_problem(value: str | None) -> Response | None:
    """415 unless text/csv; 400 unless charset=UTF-8 (required always, stricter than the docs)."""
    if value is None:
        return rest_error(415, "Content-Type must be text/csv;charset=UTF-8")
    media_type, params = parse_media_type(value)
    if media_type != "text/csv":
        return rest_error(415, "Content-Type must be text/csv;charset=UTF-8")
    if params.get("charset", "").lower() != "utf-8":
        return rest_error(400, "Content-Type must declare charset=UTF-8")
    return None


def json_seconds(seconds: float) -> int | float:
    """Seconds as JSON: an integer when whole (as the vendor sends), else the exact float."""
    return int(seconds) if float(seconds).is_integer() else seconds


TOKEN_FORM_FIELDS = ("grant_type", "client_id", "client_secret", "refresh_token")


def parse_token_form(request: Request) -> dict[str, str] | Response:
    """The four token parameters from a form body, or the OAuth error to answer with.

    RFC 6749 requires form encoding and forbids repeating a parameter.
    """
    media_type, _ = parse_media_type(request.header("content-type") or "")
    if media_type != "application/x-www-form-urlencoded":
        return oauth_error(
            400, "invalid_request", "the body must be application/x-www-form-urlencoded"
        )
    try:
        parsed = parse_qs(
            request.body.decode("ascii"), keep_blank_values=True, strict_parsing=bool(request.body)
        )
    except (UnicodeDecodeError, ValueError):
        return oauth_error(400, "invalid_request", "the form body is malformed")
    if any(len(values) > 1 for values in parsed.values()):
        return oauth_error(400, "invalid_request", "a parameter is repeated")
    form = {name: values[0] for name, values in parsed.items()}
    if any(not form.get(name) for name in TOKEN_FORM_FIELDS):
        return oauth_error(
            400,
            "invalid_request",
            "grant_type, client_id, client_secret and refresh_token are required",
        )
    return form


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison, as a real token endpoint would do."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
