"""Reading vendor answers safely: bounded bodies, token answers, scrubbed error summaries.

Whatever a vendor sends, an answer is read into memory only up to `MAX_RESPONSE_BYTES`,
a token endpoint's answer is read by one rule (`token_answer`), and an error body is
turned into a short summary that never carries identity values or secrets
(`vendor_error_summary`).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

import requests

from consumer.vendors.base import RetryableVendorError

_SAFE_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")
_SAFE_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9.+\-]{0,40}/[a-z0-9][a-z0-9.+\-]{0,60}")
_EMAIL_LIKE = re.compile(r"\S+@\S+")
_MAX_MESSAGE_CHARS = 160

MAX_RESPONSE_BYTES = 10 * 1024 * 1024
"""Largest answer body read from a vendor (counted after decompression). A larger one is
refused unread when its Content-Length says so, else as soon as the count passes the
bound: one odd answer must not take the worker past its memory limit (the chart's is
512 MiB; a 512 MiB body read whole took the RSS past 1 GiB). The largest answer expected
is Acoustic's job response for a full batch of 5,000 addresses: with 254-character
addresses (the longest an address can be) it is 1.7 MB as compact JSON and 2.5 MB
indented by 4, so the bound leaves room for about four times that."""
_READ_CHUNK_BYTES = 64 * 1024


class ResponseTooLarge(requests.RequestException):
    """The answer's body is over `MAX_RESPONSE_BYTES`; it was not read (see `read_body`)."""


def read_body(response: requests.Response) -> requests.Response:
    """Read a streamed answer's body into the response (so `.json()` and `.content` work),
    refusing one over `MAX_RESPONSE_BYTES` before reading it when its Content-Length
    says so, else as soon as it passes the bound; a refused answer is closed."""
    declared = response.headers.get("Content-Length", "").strip()
    try:
        if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise ResponseTooLarge(response=response)
        body = bytearray()
        for chunk in response.iter_content(_READ_CHUNK_BYTES):
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                raise ResponseTooLarge(response=response)
    except BaseException:
        response.close()  # drops the connection: the rest of the body is never read
        raise
    response._content = bytes(body)
    return response


def token_answer(response: requests.Response, vendor: str) -> dict[str, Any]:
    """The JSON object of a token endpoint's 2xx answer: the one rule every adapter's
    token fetch follows.

    Anything else (an HTML maintenance page, a proxy's login form, a truncated body) says
    nothing about our credentials: it is transient trouble on the vendor's side, so it is
    retryable (the items of the call that needed the token spend an attempt and are sent
    again later), not an auth error that would stop every call to the vendor.
    """
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        shown = media_type if _SAFE_MEDIA_TYPE.fullmatch(media_type) else "unknown type"
        raise RetryableVendorError(
            f"{vendor} auth: token answer is not a JSON object ({shown}); trying again later"
        )
    return body


def vendor_error_summary(response: requests.Response, redact: Collection[str] = ()) -> str | None:
    """`code: message` from the known error fields of a JSON error body, scrubbed.

    Only named fields are read (OAuth `error`/`error_description`, Acquia
    `errorCode`/`userMessage`, `meta.generalErrors`/`meta.errors` lists), because error
    bodies may echo personal data; `redact` values and anything e-mail-like are masked.
    """
    try:
        body = response.json()
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None
    if not isinstance(body, dict):
        return None
    code = next(
        (value for key in ("error", "errorCode", "code") if _is_code(value := body.get(key))), None
    )
    message = _first_text(body)
    parts = [_scrub(part, redact) for part in (code, message) if isinstance(part, str)]
    return ": ".join(parts) or None


def _is_code(value: object) -> bool:
    return isinstance(value, str) and _SAFE_CODE.fullmatch(value) is not None


def _first_text(body: dict[str, object]) -> str | None:
    for key in ("error_description", "userMessage", "message"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    meta = body.get("meta")
    if isinstance(meta, dict):
        for key in ("generalErrors", "errors"):
            values = meta.get(key)
            if isinstance(values, list) and values:
                first = values[0]
                # Some vendors list plain strings, others objects with a "message".
                if isinstance(first, dict):
                    first = first.get("message")
                if isinstance(first, str) and first:
                    return first
    return None


def _scrub(text: str, redact: Collection[str]) -> str:
    for value in redact:
        if value:
            text = re.sub(re.escape(value), "<redacted>", text, flags=re.IGNORECASE)
    text = _EMAIL_LIKE.sub("<redacted>", text)
    text = "".join(char if char.isprintable() else " " for char in text)
    return text[:_MAX_MESSAGE_CHARS]
