"""What goes over the wire to Monetate: the signed JWT, token lifetimes, upload rows and
the `{"meta": {"errors"}, "data"}` envelope every answer comes in. No state, no calls."""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TypeGuard

import jwt
import requests
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from consumer.ledger.records import WorkItem
from consumer.vendors.base import PermanentVendorError, VendorAuthError

TOKEN_TTL_SECONDS = 3600
"""The token lifetime we ask for, and assume when the answer does not say."""


def load_signing_key(private_key_pem: str) -> RSAPrivateKey:
    """The API user's RSA key; a key we cannot use is an auth problem (calls stop).

    Parsed once per process: loading checks the key (about 50 ms of CPU), and every call
    slot of the worker has its own adapter, so each would pay it again at the same moment.
    """
    with _KEY_LOCK:
        return _parsed_key(private_key_pem)


_KEY_LOCK = threading.Lock()


@functools.lru_cache(maxsize=2)
def _parsed_key(private_key_pem: str) -> RSAPrivateKey:
    try:
        key = load_pem_private_key(private_key_pem.encode("utf-8"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, RSAPrivateKey):
        raise VendorAuthError("monetate auth: private_key is not an unencrypted RSA PEM key")
    return key


def signed_jwt(key: RSAPrivateKey, username: str, now: float) -> str:
    """The Auth API's credential: `{"username", "iat"}` signed RS256 with the API key."""
    return jwt.encode({"username": username, "iat": int(now)}, key, algorithm="RS256")


def token_lifetime(data: dict[str, Any]) -> float:
    """Seconds the token lives: `expires_at - issued_at` (the vendor's own clock, so our
    clock's skew does not matter), else `expires_in`, else the ttl we asked for."""
    issued_at, expires_at = data.get("issued_at"), data.get("expires_at")
    if _is_number(issued_at) and _is_number(expires_at):
        return float(expires_at - issued_at)
    expires_in = data.get("expires_in")
    return float(expires_in) if _is_number(expires_in) else float(TOKEN_TTL_SECONDS)


def schema_rows(items: Iterable[WorkItem]) -> list[dict[str, str]]:
    """One row per customer id (a repeated id keeps its earliest request time)."""
    earliest: dict[str, datetime] = {}
    for item in items:
        requested = as_utc(item.requested_at)
        if item.identity_value not in earliest or requested < earliest[item.identity_value]:
            earliest[item.identity_value] = requested
    return [
        {"customer_id": customer_id, "delete_request_time": iso_utc(requested)}
        for customer_id, requested in earliest.items()
    ]


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds (requests carry millisecond timestamps)."""
    return as_utc(moment).isoformat(timespec="milliseconds")


def upload_job_id() -> str:
    """A synthetic job id for one upload; random, so it carries no personal data."""
    return f"upload-{uuid.uuid4().hex[:12]}"


def as_utc(moment: datetime) -> datetime:
    """Aware datetimes converted to UTC; naive ones are taken to be UTC already."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def envelope_data(response: requests.Response, operation: str) -> dict[str, Any]:
    """The `data` object of a Monetate envelope (PermanentVendorError if there is none)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise PermanentVendorError(f"monetate {operation}: answer without a data object")
    return data


def first_error(response: requests.Response) -> str | None:
    """The first `meta.errors` message, printable and short.

    Only used for schema calls, whose errors concern the dataset, never a customer id.
    """
    messages = error_messages(response)
    if not messages:
        return None
    return "".join(char if char.isprintable() else " " for char in messages[0])[:160]


def error_messages(response: requests.Response) -> list[str]:
    """Every `meta.errors` message (each given as text or as `{"message"}`)."""
    try:
        body = response.json()
    except ValueError:
        return []
    meta = body.get("meta") if isinstance(body, dict) else None
    errors = meta.get("errors") if isinstance(meta, dict) else None
    if not isinstance(errors, list):
        return []
    messages = (error.get("message") if isinstance(error, dict) else error for error in errors)
    return [message for message in messages if isinstance(message, str)]
