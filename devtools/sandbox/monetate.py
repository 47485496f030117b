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
  a faster call gets 429 with ``Retry-After``. ``data_get_burst`` calls may come at once
  (1: every call at least ``1 / rate`` after the last; "about 1/s" leaves room for 2).

Every body is ``{"meta": {"code", "errors", "warnings"}, "data": {...}}``; errors are
objects ``{"message", "field"?}`` whose messages never echo identifiers, keys or tokens.
Deletions advance lazily from the clock whenever the sandbox is asked anything.
"""

from __future__ import annotations

import functools
import math
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from devtools.sandbox.monetate_wire import (
    MAX_TTL_SECONDS,
    MIN_TTL_SECONDS,
    SCHEMA_NAME,
    Dataset,
    envelope,
    error_answer,
    json_content_type_problem,
    parse_rows,
    parse_schema,
    requested_ttl,
    single_param,
)
from devtools.sandbox.server import (
    JsonValue,
    Request,
    Response,
    Router,
    Sandbox,
    json_response,
    parse_json_body,
)

DEFAULT_SHORTNAME = "sandbox"
DEFAULT_API_USERNAME = "api-sandbox-erasure"
DEFAULT_MAX_ROWS_PER_CALL = 500
"""Monetate publishes no maximum (unverified); the worker's default batch size."""

JWT_ALGORITHMS = ("RS256", "RS384", "RS512")
ALREADY_EXISTS_MESSAGE = "a schema with this name already exists"

CustomerStatus = Literal["PENDING", "FOUND", "NOT_FOUND"]
_DESCRIPTIONS: Mapping[CustomerStatus, str] = {
    "PENDING": "The customer_id has been found within Monetate's data stores and is pending "
    "removal.",
    "FOUND": "The customer_id has been found within Monetate's data stores.",
    "NOT_FOUND": "The customer_id has not been found within Monetate's data stores.",
}


@dataclass(frozen=True)
class KeyPair:
    """An API user's RSA key pair, PEM-encoded: the private half is the worker's
    `private_key`, the public half is what the sandbox verifies JWTs with."""

    private_pem: str
    public_pem: str


@functools.cache
def sandbox_keys() -> KeyPair:
    """The key pair sandboxes use unless told otherwise: made once per process and never
    stored, so `python -m devtools.sandbox` runs with no arguments and no key sits in the
    repository. It is valid nowhere but in this process's sandboxes."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(private.decode("ascii"), public.decode("ascii"))


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
        public_key_pem: str | None = None,
        max_rows_per_call: int = DEFAULT_MAX_ROWS_PER_CALL,
        deletion_delay_seconds: float = 1.0,
        data_get_rate_per_second: float = 1.0,
        data_get_burst: int = 1,
        jwt_skew_seconds: float = 60.0,
    ) -> None:
        if max_rows_per_call < 1:
            raise ValueError("max_rows_per_call must be at least 1")
        if deletion_delay_seconds < 0 or jwt_skew_seconds < 0:
            raise ValueError("durations must not be negative")
        if data_get_rate_per_second <= 0 or data_get_burst < 1:
            raise ValueError("data_get_rate_per_second must be positive, the burst at least 1")
        pem = public_key_pem if public_key_pem is not None else sandbox_keys().public_pem
        key = load_pem_public_key(pem.encode("ascii"))
        if not isinstance(key, RSAPublicKey):
            raise ValueError("Monetate API keys are RSA keys")
        super().__init__(self._routes())
        self._shortname = shortname
        self._api_username = api_username
        self._public_key = key
        self._max_rows = max_rows_per_call
        self._deletion_delay = deletion_delay_seconds
        self._get_interval = 1.0 / data_get_rate_per_second
        self._get_tolerance = (data_get_burst - 1) * self._get_interval
        self._skew = jwt_skew_seconds
        self._lock = threading.RLock()
        self._key_active = True
        self._tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self._datasets: dict[str, Dataset] = {}
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
        if not SCHEMA_NAME.fullmatch(name):
            raise ValueError("dataset names are a letter then letters, digits or _ (max 64)")
        with self._lock:
            if name in self._datasets:
                raise ValueError(f"dataset {name!r} already exists")
            self._datasets[name] = Dataset()

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
            return error_answer(401, problem)
        with self._lock:
            if not self._key_active:
                return error_answer(403, "the API key has been deactivated")
        ttl = requested_ttl(request.query)
        if ttl is None:
            message = f"ttl must be an integer from {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS}"
            return error_answer(400, message, "ttl")
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
                return error_answer(401, "missing, invalid or expired token")
            if not self._key_active:
                return error_answer(403, "the token's API key has been deactivated")
        if request.params.get("shortname") != self._shortname:
            return error_answer(401, "the token is not valid for this retailer")
        return None

    def _rate_problem(self) -> Response | None:
        """429 when data GETs come faster than the configured rate (the vendor's 1/s)."""
        now = self.clock.now()
        with self._lock:
            wait = self._next_get_at - self._get_tolerance - now
            if wait > 0:
                retry = [("Retry-After", str(max(1, math.ceil(wait))))]
                return error_answer(
                    429, "too many requests to a rate-limited endpoint", None, retry
                )
            self._next_get_at = max(self._next_get_at, now) + self._get_interval
        return None

    # ----------------------------------------------------------------- schema

    def _handle_create_schema(self, request: Request) -> Response:
        problem = self._token_problem(request) or json_content_type_problem(
            request.header("content-type")
        )
        if problem is not None:
            return problem
        try:
            body = parse_json_body(request.body)
        except ValueError as error:
            return error_answer(400, str(error))
        parsed = parse_schema(body)
        if isinstance(parsed, Response):
            return parsed
        name, extra_fields = parsed
        with self._lock:
            if name in self._datasets:
                return error_answer(400, ALREADY_EXISTS_MESSAGE, "name")
            dataset = Dataset(extra_fields)
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
            return error_answer(404, "dataset not found")
        problem = json_content_type_problem(request.header("content-type"))
        if problem is not None:
            return problem
        try:
            body = parse_json_body(request.body)
        except ValueError as error:
            return error_answer(400, str(error))
        rows = parse_rows(body, dataset.columns(), self._max_rows)
        if isinstance(rows, Response):
            return rows
        self._store(dataset, rows)
        return json_response(201, envelope(201, {"schema_rows": list(rows)}))

    def _store(self, dataset: Dataset, rows: Sequence[Mapping[str, str]]) -> None:
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
        customer_id = single_param(request.query, "customer_id")
        if not customer_id:
            return error_answer(400, "exactly one non-empty customer_id is required", "customer_id")
        with self._lock:
            if not self._datasets:
                return error_answer(404, "no customer_data_privacy dataset exists for this account")
        status = self.customer_status(customer_id)
        data: dict[str, JsonValue] = {"status": status, "description": _DESCRIPTIONS[status]}
        return json_response(200, envelope(200, data))
