"""Strict sandbox of Monetate's Auth API v0 and Consumer Data Privacy API.

It follows the vendor page (shared/vendor-docs/monetate-consumer-data-privacy-api.txt),
VENDOR-FACTS section 2 and Monetate's published OpenAPI documents, and is deliberately
strict wherever they leave room, so that a client that passes here is correct:

* ``GET /api/auth/v0/refresh/?ttl=N`` needs ``Authorization: JWT <jwt>``: an RS256/384/512
  JWT signed by the registered key, with ``username`` equal to the API user and an ``iat``
  within ``jwt_skew_seconds`` (60 s at the vendor) of now; else 401. A deactivated key
  gets 403. ``ttl`` must be an integer in 600..43200 (default 3600), else 400.
* Data API calls need ``Authorization: Token <token>``: unknown or expired tokens and
  tokens used on another retailer's shortname get 401, tokens of a deactivated key 403.
* ``POST .../schema/`` creates a ``customer_data_privacy`` dataset (the only type this
  sandbox knows). A duplicate name is **400** with an error whose message says the schema
  already exists (the vendor's answer is unverified; this is the sandbox's choice). No
  documentation describes reading a schema back, so ``GET .../schema/{name}/`` is a 404
  like every other undocumented path (and a documented path with another method is a 405).
* ``POST .../data/{dataset}/`` takes ``{"schema_rows": [...]}`` as ``application/json``
  (else 415): at most ``max_rows_per_call`` rows (else 400), each with exactly the
  dataset's columns, a ``customer_id`` that is a STRING (non-empty, no surrounding
  whitespace) and an ISO 8601 ``delete_request_time`` (a date, or a time with an offset).
  Any bad row rejects the whole call (400) and stores nothing. Unknown dataset: 404.
  Rows are upserted by ``customer_id``. 201 echoes the rows.
* ``GET .../customer_data_privacy/status/?customer_id=X``: ``FOUND`` while Monetate holds
  the id, ``PENDING`` once it was submitted, ``NOT_FOUND`` after the "nightly batch"
  (``deletion_delay_seconds`` after submission) or when it was never held. 404 while the
  account has no ``customer_data_privacy`` dataset (sandbox choice).
* Data GET endpoints share a limit of ``data_get_rate_per_second`` (1/s at the vendor):
  a faster call gets 429 with ``Retry-After``.

Every body is ``{"meta": {"code", "errors", "warnings"}, "data": {...}}``; errors are
objects ``{"message", "field"?}`` whose messages never echo identifiers, keys or tokens.
Deletions advance lazily from the clock whenever the sandbox is asked anything.
"""

from __future__ import annotations

import math
import re
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal
from urllib.parse import parse_qs, unquote

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from consumer.sandbox.server import (
    JsonValue,
    Request,
    Response,
    Router,
    Sandbox,
    json_response,
    parse_json_body,
    parse_media_type,
)

DEFAULT_SHORTNAME = "sandbox"
DEFAULT_API_USERNAME = "api-sandbox-erasure"
# A throwaway key pair that exists only so `erasure-worker sandbox` runs with no arguments.
# It is valid nowhere but in this sandbox.
DEFAULT_PRIVATE_KEY_PEM = """-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQC7BnAcLQOKsI4v
tevJ7OdVqg6wYXX3udHryXvgenC3ftY28w/+Q8KrAsvmwZtSX9Rhm9lexPoBoj+Y
e1v2lQgvGpkx7wI4ZnR5/ZNMsRWnqygk3PVQkuhLZ5sR86h+lTDwq1/+95SiB0aP
txTzlPWtNXl+NyJ3EZtIrIo69uuud3FqjwglcJMy21LIcazdFEWjHZ5TnLHPzedA
zAZwg8jeritp5WsBTfFjbskFg/9S5VV7FM2XaZf9F3cbqe1otORv/NBKbunryOcy
WumXBW3PA2q2fKAevREstjmA+WOcfinBBVlwKBlehQyH6cjW1774a4hWDt24RPDH
uspXLfRFAgMBAAECggEABMbEkLemlkFtlDLbd3/9JX8vGlqW2nGMtq6h4wkFfW44
FtWs1CPTYi4zWmyZ5KftYuPJ0KWLtAR6htCpt9m1CIzvmiqePiYBtgbfnu8L3Ekf
AJgDDOB/ncNi3rnAFSGGyzK5RCf7DAtPBkcY+iKVBqwtsudCElPpCRlc+2YIfV9k
2XOgTpvgoGADfmVAC3RCuULzDZ31U68YW1JvVWRxcpHpLRpoy44ygJ8WS4TQZzod
7rGS8dXgI5/s1k4C4z36Qyc6adQd0Kx+svLURwsr4ZEYuend4RxaQk1aRGKRTrib
t+gFwTWMxcCZ07FfKjj+z+pkMKvBmyY+QuoXt+kLsQKBgQDresA09ZTxFUaxj16n
kx+TZUskoL4CO4MHL47ffo0AGASb4thUAztRLq+WZS/VdFotxnQIWXxq0jTX82gE
cDoeBNMOjOX7ontUtQRhHBxOLzm24tUh1HBTvo2TYvnLB4P3WyM588KaiAO1w30j
XAr95VR5AKUZb+EBPcY/57wH9QKBgQDLUrtmIsptutR33Sb9YXajZuanpmcWapZZ
j34hzz2CiCCh/n3xt19vokiZDF8I8MefV2duaxzJNvVdKZSqLyQ+Mlf5ybCZbmJa
yUX63i7XjF3du8ek/XH3B9F08ha9DflAC+lwoPFyjkF4XxCN1aCpOl35af49IK9G
9sNioTCZEQKBgGiUgZyDnPxdCKJ/G/isfI+HoxHHWdu/9ndQhdF4cMKj6BgbbRwS
u1tYsp7GnbHdFNfTlWDH7Vu7s8Bc18tw1D7Uwa9qoBFbng6GvkUqqN+IVceFgkae
BK0Mqe/VOz8SPWez0DdCrSDYW110TrVPgYo1OYjr4mcjqvhUKSHklzupAoGAOzGy
7WFjnd6uzNbN6ybc62Wh8V041gXiD+D+z8kOF1qaZY86C41fc5jDmgtH/8pZ08IW
kscMcmhVtvHMHl/rJVBy3H4jtAe3CsdeYFMfQBHVoiBxV0+SRmE4UdvJUvEmh8bw
B6JTqQ5RcUH8B88SHzKm+V4qbpF9diORbr2O8IECgYAUGstYEZX8VQC4/ELleJjf
zEp76KWP5iw+UuZkJdx9WOgQqSRrPbFHz9EMkGq7HRqgMJ/bPGGFla8kglA4sTfj
yDrWqpsc3dSmsckdf81uPbqqnOqdPgcxT7TzCNCQQRloOF3Lw25E2PvFziWFRG6a
qcGAwPZinPjvpHybmSXB7A==
-----END PRIVATE KEY-----
"""
DEFAULT_PUBLIC_KEY_PEM = """-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAuwZwHC0DirCOL7Xryezn
VaoOsGF197nR68l74Hpwt37WNvMP/kPCqwLL5sGbUl/UYZvZXsT6AaI/mHtb9pUI
LxqZMe8COGZ0ef2TTLEVp6soJNz1UJLoS2ebEfOofpUw8Ktf/veUogdGj7cU85T1
rTV5fjcidxGbSKyKOvbrrndxao8IJXCTMttSyHGs3RRFox2eU5yxz83nQMwGcIPI
3q4raeVrAU3xY27JBYP/UuVVexTNl2mX/Rd3G6ntaLTkb/zQSm7p68jnMlrplwVt
zwNqtnygHr0RLLY5gPljnH4pwQVZcCgZXoUMh+nI1te++GuIVg7duETwx7rKVy30
RQIDAQAB
-----END PUBLIC KEY-----
"""
DEFAULT_MAX_ROWS_PER_CALL = 500
"""Monetate publishes no maximum (unverified); the worker's default batch size."""

JWT_ALGORITHMS = ("RS256", "RS384", "RS512")
MIN_TTL_SECONDS, MAX_TTL_SECONDS, DEFAULT_TTL_SECONDS = 600, 43200, 3600
PRIVACY_SCHEMA_TYPE = "customer_data_privacy"
PRIVACY_COLUMNS = ("customer_id", "delete_request_time")
MAX_SCHEMA_FIELDS = 40
DATA_TYPES = frozenset({"STRING", "MULTI_STRING", "NUMBER", "DATETIME", "BOOLEAN"})
ALREADY_EXISTS_MESSAGE = "a schema with this name already exists"
_SCHEMA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

CustomerStatus = Literal["PENDING", "FOUND", "NOT_FOUND"]
_DESCRIPTIONS: Mapping[CustomerStatus, str] = {
    "PENDING": "The customer_id has been found within Monetate's data stores and is pending "
    "removal.",
    "FOUND": "The customer_id has been found within Monetate's data stores.",
    "NOT_FOUND": "The customer_id has not been found within Monetate's data stores.",
}


@dataclass
class _Dataset:
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


def _error(
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


def _check_json_content_type(value: str | None) -> Response | None:
    """415 unless the body is declared ``application/json`` (in UTF-8, if a charset is given)."""
    media_type, params = parse_media_type(value or "")
    if media_type != "application/json" or params.get("charset", "utf-8").lower() != "utf-8":
        return _error(415, "Content-Type must be application/json")
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


def _query_values(query: str, name: str) -> list[str] | None:
    """Every value of ``name`` in a query string; None when the query is not UTF-8."""
    try:
        return parse_qs(query, keep_blank_values=True, errors="strict").get(name, [])
    except UnicodeDecodeError:
        return None


def _single_param(query: str, name: str) -> str | None:
    """The one value of ``name`` in a query string; None when absent, repeated or not UTF-8."""
    values = _query_values(query, name)
    return values[0] if values is not None and len(values) == 1 else None


class MonetateSandbox(Sandbox):
    """In-process Monetate Auth + Consumer Data Privacy API with a fast, configurable clock.

    All durations are real seconds. ``deletion_delay_seconds`` stands for the nightly batch
    (24-48 h at the vendor) that removes a submitted id Monetate holds.
    """

    def __init__(
        self,
        *,
        shortname: str = DEFAULT_SHORTNAME,
        api_username: str = DEFAULT_API_USERNAME,
        public_key_pem: str = DEFAULT_PUBLIC_KEY_PEM,
        max_rows_per_call: int = DEFAULT_MAX_ROWS_PER_CALL,
        deletion_delay_seconds: float = 1.0,
        data_get_rate_per_second: float = 1.0,
        jwt_skew_seconds: float = 60.0,
    ) -> None:
        if max_rows_per_call < 1:
            raise ValueError("max_rows_per_call must be at least 1")
        if deletion_delay_seconds < 0 or jwt_skew_seconds < 0:
            raise ValueError("durations must not be negative")
        if data_get_rate_per_second <= 0:
            raise ValueError("data_get_rate_per_second must be positive")
        key = load_pem_public_key(public_key_pem.encode("ascii"))
        if not isinstance(key, RSAPublicKey):
            raise ValueError("Monetate API keys are RSA keys")
        super().__init__(self._routes())
        self._shortname = shortname
        self._api_username = api_username
        self._public_key = key
        self._max_rows = max_rows_per_call
        self._deletion_delay = deletion_delay_seconds
        self._get_interval = 1.0 / data_get_rate_per_second
        self._skew = jwt_skew_seconds
        self._lock = threading.RLock()
        self._key_active = True
        self._tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self._datasets: dict[str, _Dataset] = {}
        self._held: set[str] = set()
        self._deletions: dict[str, float] = {}  # held customer_id -> when the batch removes it
        self._next_get_at = 0.0

    def _routes(self) -> Router:
        base = "/api/data/v1/{shortname}/production"
        router = Router()
        router.add("GET", "/api/auth/v0/refresh/", self._handle_refresh)
        router.add("POST", f"{base}/schema/", self._handle_create_schema)
        router.add("POST", f"{base}/data/{{dataset}}/", self._handle_data)
        router.add("GET", f"{base}/customer_data_privacy/status/", self._handle_status)
        return router

    # ----------------------------------------------------------------- test setup

    def add_customer(self, customer_id: str) -> None:
        """Make Monetate hold ``customer_id`` (its status becomes FOUND)."""
        if not customer_id:
            raise ValueError("customer_id must not be empty")
        with self._lock:
            self._held.add(customer_id)

    def add_dataset(self, name: str) -> None:
        """Create a ``customer_data_privacy`` dataset, as `POST .../schema/` would."""
        if not _SCHEMA_NAME.fullmatch(name):
            raise ValueError("dataset names are a letter then letters, digits or _ (max 64)")
        with self._lock:
            if name in self._datasets:
                raise ValueError(f"dataset {name!r} already exists")
            self._datasets[name] = _Dataset()

    def has_dataset(self, name: str) -> bool:
        with self._lock:
            return name in self._datasets

    def rows(self, dataset: str) -> dict[str, str]:
        """``customer_id -> delete_request_time`` as stored (upserted) in the dataset."""
        with self._lock:
            found = self._datasets.get(dataset)
            if found is None:
                raise ValueError(f"unknown dataset {dataset!r}")
            return dict(found.rows)

    def customer_status(self, customer_id: str) -> CustomerStatus:
        """What the status endpoint would answer for ``customer_id`` now."""
        with self._lock:
            self._advance(self.clock.now())
            if customer_id in self._deletions:
                return "PENDING"
            return "FOUND" if customer_id in self._held else "NOT_FOUND"

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (401); the key stays valid."""
        with self._lock:
            self._tokens.clear()

    def revoke_key(self) -> None:
        """Deactivate the API key: refreshes and every token issued against it get 403."""
        with self._lock:
            self._key_active = False

    def reactivate_key(self) -> None:
        """Undo `revoke_key`; tokens that have not expired work again."""
        with self._lock:
            self._key_active = True

    # ----------------------------------------------------------------- auth

    def _handle_refresh(self, request: Request) -> Response:
        problem = self._jwt_problem(request.header("authorization"))
        if problem is not None:
            return _error(401, problem)
        with self._lock:
            if not self._key_active:
                return _error(403, "the API key has been deactivated")
        ttl = _ttl(request.query)
        if ttl is None:
            message = f"ttl must be an integer from {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS}"
            return _error(400, message, "ttl")
        return self._issue_token(ttl)

    def _jwt_problem(self, header: str | None) -> str | None:
        """Why ``Authorization: JWT <jwt>`` is unacceptable, or None if it is fine."""
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "jwt" or not token:
            return "missing or malformed Authorization: JWT header"
        try:
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=list(JWT_ALGORITHMS),
                options={"verify_iat": False, "require": ["iat", "username"]},
            )
        except jwt.PyJWTError:
            return "the JWT is malformed or not signed by an active key of this user"
        if claims["username"] != self._api_username:
            return "the JWT is not for a known API user"
        iat = claims["iat"]
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            return "the JWT iat claim is not a timestamp"
        if abs(self.clock.utc_now().timestamp() - iat) > self._skew:
            return "the JWT iat claim is too far from the current time"
        return None

    def _issue_token(self, ttl: int) -> Response:
        token = f"1.{secrets.token_urlsafe(32)}"
        issued_at = self.clock.utc_now().timestamp()
        with self._lock:
            self._tokens[token] = self.clock.now() + ttl
        data: dict[str, JsonValue] = {
            "token": token,
            "issued_at": issued_at,
            "expires_in": ttl,
            "expires_at": issued_at + ttl,
        }
        return json_response(200, envelope(200, data))

    def _token_problem(self, request: Request) -> Response | None:
        """401/403 unless ``Authorization: Token <token>`` is valid for this retailer."""
        scheme, _, token = (request.header("authorization") or "").partition(" ")
        with self._lock:
            expires_at = self._tokens.get(token) if scheme.lower() == "token" else None
            if expires_at is None or self.clock.now() >= expires_at:
                return _error(401, "missing, invalid or expired token")
            if not self._key_active:
                return _error(403, "the token's API key has been deactivated")
        if request.params.get("shortname") != self._shortname:
            return _error(401, "the token is not valid for this retailer")
        return None

    def _rate_problem(self) -> Response | None:
        """429 when data GETs come faster than the configured rate (the vendor's 1/s)."""
        now = self.clock.now()
        with self._lock:
            wait = self._next_get_at - now
            if wait > 0:
                retry = [("Retry-After", str(max(1, math.ceil(wait))))]
                return _error(429, "too many requests to a rate-limited endpoint", None, retry)
            self._next_get_at = now + self._get_interval
        return None

    # ----------------------------------------------------------------- schema

    def _handle_create_schema(self, request: Request) -> Response:
        problem = self._token_problem(request) or _check_json_content_type(
            request.header("content-type")
        )
        if problem is not None:
            return problem
        try:
            body = parse_json_body(request.body)
        except ValueError as error:
            return _error(400, str(error))
        parsed = _parse_schema(body)
        if isinstance(parsed, Response):
            return parsed
        name, extra_fields = parsed
        with self._lock:
            if name in self._datasets:
                return _error(400, ALREADY_EXISTS_MESSAGE, "name")
            dataset = _Dataset(extra_fields)
            self._datasets[name] = dataset
        return json_response(201, envelope(201, dataset.definition(name)))

    # ----------------------------------------------------------------- data

    def _handle_data(self, request: Request) -> Response:
        problem = self._token_problem(request)
        if problem is not None:
            return problem
        with self._lock:
            dataset = self._datasets.get(unquote(request.params["dataset"]))
        if dataset is None:
            return _error(404, "dataset not found")
        problem = _check_json_content_type(request.header("content-type"))
        if problem is not None:
            return problem
        try:
            body = parse_json_body(request.body)
        except ValueError as error:
            return _error(400, str(error))
        rows = _parse_rows(body, dataset.columns(), self._max_rows)
        if isinstance(rows, Response):
            return rows
        self._store(dataset, rows)
        return json_response(201, envelope(201, {"schema_rows": list(rows)}))

    def _store(self, dataset: _Dataset, rows: Sequence[Mapping[str, str]]) -> None:
        """Upsert the rows and queue every held id for the next "nightly batch"."""
        now = self.clock.now()
        with self._lock:
            self._advance(now)
            for row in rows:
                customer_id = row["customer_id"]
                dataset.rows[customer_id] = row["delete_request_time"]
                if customer_id in self._held:
                    self._deletions.setdefault(customer_id, now + self._deletion_delay)

    def _advance(self, now: float) -> None:
        """Run the batch: remove every held id whose deletion time has come."""
        with self._lock:
            for customer_id, due in list(self._deletions.items()):
                if now >= due:
                    self._held.discard(customer_id)
                    del self._deletions[customer_id]

    def _handle_status(self, request: Request) -> Response:
        problem = self._token_problem(request) or self._rate_problem()
        if problem is not None:
            return problem
        customer_id = _single_param(request.query, "customer_id")
        if not customer_id:
            return _error(400, "exactly one non-empty customer_id is required", "customer_id")
        with self._lock:
            if not self._datasets:
                return _error(404, "no customer_data_privacy dataset exists for this account")
        status = self.customer_status(customer_id)
        data: dict[str, JsonValue] = {"status": status, "description": _DESCRIPTIONS[status]}
        return json_response(200, envelope(200, data))


def _ttl(query: str) -> int | None:
    """The requested token lifetime (default 3600), or None if it is not acceptable."""
    values = _query_values(query, "ttl")
    if values == []:
        return DEFAULT_TTL_SECONDS
    if values is None or len(values) != 1 or not (values[0].isascii() and values[0].isdigit()):
        return None
    ttl = int(values[0])
    return ttl if MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS else None


def _parse_schema(body: object) -> tuple[str, dict[str, JsonValue]] | Response:
    """The new dataset's name and extra columns, or the 400 to answer with."""
    if not isinstance(body, dict) or not {"type", "name", "fields"} <= body.keys():
        return _error(400, "type, name and fields are required")
    if body["type"] != PRIVACY_SCHEMA_TYPE:
        return _error(400, f"this sandbox only supports type {PRIVACY_SCHEMA_TYPE}", "type")
    name, fields = body["name"], body["fields"]
    if not isinstance(name, str) or not _SCHEMA_NAME.fullmatch(name):
        return _error(400, "name must be a letter then letters, digits or _ (max 64)", "name")
    if not isinstance(fields, dict):
        return _error(400, "fields must be an object", "fields")
    if len(fields) > MAX_SCHEMA_FIELDS - len(PRIVACY_COLUMNS):
        return _error(400, f"a schema has at most {MAX_SCHEMA_FIELDS} fields", "fields")
    for field_name, spec in fields.items():
        if field_name in PRIVACY_COLUMNS:
            return _error(400, "the type already defines this field", f"fields.{field_name}")
        if not isinstance(spec, dict) or spec.get("data_type") not in DATA_TYPES:
            return _error(400, "every field needs a valid data_type", f"fields.{field_name}")
    return name, fields


def _parse_rows(
    body: object, columns: frozenset[str], max_rows: int
) -> list[dict[str, str]] | Response:
    """The rows of a data upload, or the 400 to answer with (no row is stored then)."""
    if not isinstance(body, dict) or not isinstance(body.get("schema_rows"), list):
        return _error(400, "schema_rows must be a list", "schema_rows")
    if set(body) - {"schema_rows", "_sent_time"}:
        return _error(400, "unknown top-level key; only schema_rows and _sent_time are allowed")
    sent_time = body.get("_sent_time")
    if sent_time is not None and not (isinstance(sent_time, str) and is_iso8601(sent_time)):
        return _error(400, "_sent_time must be an ISO 8601 timestamp", "_sent_time")
    rows: list[object] = body["schema_rows"]
    if len(rows) > max_rows:
        return _error(400, f"too many rows: at most {max_rows} per request", "schema_rows")
    parsed: list[dict[str, str]] = []
    for index, row in enumerate(rows):
        checked = _parse_row(row, columns)
        if isinstance(checked, str):
            return _error(400, checked, f"schema_rows[{index}]")
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
