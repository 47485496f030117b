"""Tests of the Monetate sandbox itself, over real HTTP.

The sandbox is the yardstick for the worker's Monetate client, so it must reject exactly
what the vendor would; these tests pin that behaviour. Keys are generated here, so the
signature check is proven against a key the sandbox was given, not its default one.
Waiting is a deadline loop on a condition, never a fixed sleep.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.sandbox.monetate import (
    ALREADY_EXISTS_MESSAGE,
    DEFAULT_API_USERNAME,
    DEFAULT_SHORTNAME,
    MonetateSandbox,
    sandbox_keys,
)
from devtools.sandbox.monetate_wire import is_iso8601
from devtools.sandbox.server import Fault
from tests.support.waiting import wait_until

USER = "api-123-erasure"
SHORT = "acme"
DATASET = "erasure_requests"
ACCOUNT = f"/api/data/v1/{SHORT}/production"
REFRESH = "/api/auth/v0/refresh/"
STATUS = f"{ACCOUNT}/customer_data_privacy/status/"
DATA = f"{ACCOUNT}/data/{DATASET}/"
WHEN = "2024-05-01T12:34:56.789+00:00"


# --------------------------------------------------------------------------- helpers


def pem_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return pem_pair()


@pytest.fixture(scope="module")
def other_keys() -> tuple[str, str]:
    return pem_pair()


def signed(
    private_pem: str,
    *,
    username: str = USER,
    iat: object = None,
    algorithm: str = "RS256",
    **claims: Any,
) -> str:
    payload: dict[str, Any] = {"username": username, "iat": time.time() if iat is None else iat}
    payload.update(claims)
    return jwt.encode(payload, private_key(private_pem), algorithm=algorithm)


@functools.cache
def private_key(pem: str) -> rsa.RSAPrivateKey:
    """Parsing an RSA key takes ~50 ms; each test key is parsed once."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def forged(claims: dict[str, Any], hs256_secret: bytes | None = None) -> str:
    """A JWT that is unsigned (`alg: none`) or HMAC-signed with the public key as secret
    (the algorithm-confusion attack); PyJWT refuses to build either."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    algorithm = "none" if hs256_secret is None else "HS256"
    header = part(json.dumps({"alg": algorithm, "typ": "JWT"}).encode())
    payload = part(json.dumps(claims).encode())
    if hs256_secret is None:
        return f"{header}.{payload}."
    mac = hmac.new(hs256_secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{part(mac)}"


def refresh(box: MonetateSandbox, authorization: str | None, query: str = "") -> requests.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    url = f"{box.base_url}{REFRESH}{'?' + query if query else ''}"
    return requests.get(url, headers=headers, timeout=5)


def get_token(box: MonetateSandbox, private_pem: str) -> str:
    response = refresh(box, f"JWT {signed(private_pem)}")
    assert response.status_code == 200, response.text
    token = response.json()["data"]["token"]
    assert isinstance(token, str)
    return token


def call(
    box: MonetateSandbox,
    method: str,
    path: str,
    token: str,
    *,
    scheme: str = "Token",
    **kwargs: Any,
) -> requests.Response:
    headers = {"Authorization": f"{scheme} {token}", **kwargs.pop("headers", {})}
    return requests.request(method, f"{box.base_url}{path}", headers=headers, timeout=5, **kwargs)


def upload(
    box: MonetateSandbox, token: str, rows: list[Any], path: str = DATA
) -> requests.Response:
    return call(box, "POST", path, token, json={"schema_rows": rows})


def status_of(box: MonetateSandbox, token: str, customer_id: str) -> str:
    response = call(box, "GET", STATUS, token, params={"customer_id": customer_id})
    assert response.status_code == 200, response.text
    status = response.json()["data"]["status"]
    assert isinstance(status, str)
    return status


def row(customer_id: str, when: str = WHEN) -> dict[str, str]:
    return {"customer_id": customer_id, "delete_request_time": when}


def errors(response: requests.Response) -> list[dict[str, Any]]:
    body = response.json()
    assert body["meta"]["code"] == response.status_code
    found: list[dict[str, Any]] = body["meta"]["errors"]
    return found


def new_box(public_pem: str, **options: Any) -> MonetateSandbox:
    values: dict[str, Any] = {
        "shortname": SHORT,
        "api_username": USER,
        "public_key_pem": public_pem,
        "data_get_rate_per_second": 1_000_000.0,  # tests of the limit set their own
        "deletion_delay_seconds": 0.0,
    }
    values.update(options)
    box = MonetateSandbox(**values)
    box.start()
    return box


@pytest.fixture
def box(keys: tuple[str, str]) -> Iterator[MonetateSandbox]:
    sandbox = new_box(keys[1])
    sandbox.add_dataset(DATASET)
    yield sandbox
    sandbox.stop()


@pytest.fixture
def token(box: MonetateSandbox, keys: tuple[str, str]) -> str:
    return get_token(box, keys[0])


# --------------------------------------------------------------------------- auth API


def test_refresh_issues_a_token_for_the_requested_ttl(
    box: MonetateSandbox, keys: tuple[str, str]
) -> None:
    response = refresh(box, f"JWT {signed(keys[0])}", "ttl=600")
    assert response.status_code == 200
    body = response.json()
    assert body["meta"] == {"code": 200, "errors": [], "warnings": []}
    data = body["data"]
    assert set(data) == {"token", "issued_at", "expires_in", "expires_at"}
    assert data["expires_in"] == 600
    assert data["expires_at"] - data["issued_at"] == pytest.approx(600)
    assert abs(data["issued_at"] - time.time()) < 5
    default = refresh(box, f"JWT {signed(keys[0])}").json()["data"]
    assert default["expires_in"] == 3600


@pytest.mark.parametrize("algorithm", ["RS256", "RS384", "RS512"])
def test_refresh_accepts_the_documented_algorithms(
    box: MonetateSandbox, keys: tuple[str, str], algorithm: str
) -> None:
    assert refresh(box, f"JWT {signed(keys[0], algorithm=algorithm)}").status_code == 200


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("ttl=600", 200),
        ("ttl=43200", 200),
        ("ttl=599", 400),
        ("ttl=43201", 400),
        ("ttl=abc", 400),
        ("ttl=", 400),
        ("ttl=3600.5", 400),
        ("ttl=600&ttl=700", 400),
    ],
)
def test_ttl_bounds(box: MonetateSandbox, keys: tuple[str, str], query: str, status: int) -> None:
    response = refresh(box, f"JWT {signed(keys[0])}", query)
    assert response.status_code == status
    if status == 400:
        assert errors(response)[0]["field"] == "ttl"


def test_refresh_rejects_bad_credentials(
    box: MonetateSandbox, keys: tuple[str, str], other_keys: tuple[str, str]
) -> None:
    private, public = keys
    now = time.time()
    rejected = [
        None,
        "JWT",
        f"Bearer {signed(private)}",
        f"Token {signed(private)}",
        f"JWT {signed(other_keys[0])}",
        f"JWT {signed(private, username='api-someone-else')}",
        f"JWT {signed(private, iat=now - 120)}",
        f"JWT {signed(private, iat=now + 120)}",
        f"JWT {signed(private, iat='yesterday')}",
        f"JWT {jwt.encode({'username': USER}, private_key(private), algorithm='RS256')}",
        f"JWT {jwt.encode({'iat': now}, private_key(private), algorithm='RS256')}",
        f"JWT {forged({'username': USER, 'iat': now}, public.encode())}",
        f"JWT {forged({'username': USER, 'iat': now})}",
        f"JWT {signed(private)}x",
    ]
    for authorization in rejected:
        response = refresh(box, authorization)
        assert response.status_code == 401, authorization
        assert "token" not in response.json()["data"]
    assert refresh(box, f"JWT {signed(private, iat=now - 30)}").status_code == 200
    assert refresh(box, f"jwt {signed(private, iat=now + 30)}").status_code == 200


def test_revoked_key_is_forbidden_until_reactivated(
    box: MonetateSandbox, keys: tuple[str, str], token: str
) -> None:
    box.revoke_key()
    assert refresh(box, f"JWT {signed(keys[0])}").status_code == 403
    assert upload(box, token, [row("C-1")]).status_code == 403
    assert call(box, "GET", STATUS, token, params={"customer_id": "C-1"}).status_code == 403
    box.reactivate_key()
    assert upload(box, token, [row("C-1")]).status_code == 201


def test_data_calls_need_a_valid_token_for_this_retailer(box: MonetateSandbox, token: str) -> None:
    assert upload(box, "1.unknown", [row("C-1")]).status_code == 401
    as_bearer = call(box, "POST", DATA, token, scheme="Bearer", json={"schema_rows": []})
    assert as_bearer.status_code == 401
    other_account = f"/api/data/v1/other/production/data/{DATASET}/"
    response = upload(box, token, [row("C-1")], path=other_account)
    assert response.status_code == 401
    assert errors(response)[0]["message"] == "the token is not valid for this retailer"
    assert call(box, "POST", DATA, token.lower(), json={"schema_rows": []}).status_code == 401
    box.expire_tokens()
    assert upload(box, token, [row("C-1")]).status_code == 401
    assert box.rows(DATASET) == {}


def test_default_credentials_work_together() -> None:
    with MonetateSandbox() as sandbox:
        assert get_token_for_defaults(sandbox)


def get_token_for_defaults(sandbox: MonetateSandbox) -> str:
    assertion = signed(sandbox_keys().private_pem, username=DEFAULT_API_USERNAME)
    response = refresh(sandbox, f"JWT {assertion}")
    assert response.status_code == 200
    token: str = response.json()["data"]["token"]
    schema = f"/api/data/v1/{DEFAULT_SHORTNAME}/production/schema/"
    body = {"type": "customer_data_privacy", "name": "defaults", "fields": {}}
    assert call(sandbox, "POST", schema, token, json=body).status_code == 201
    return token


def test_constructor_rejects_unusable_options() -> None:
    with pytest.raises(ValueError, match="max_rows_per_call"):
        MonetateSandbox(max_rows_per_call=0)
    with pytest.raises(ValueError, match="positive"):
        MonetateSandbox(data_get_rate_per_second=0)
    with pytest.raises(ValueError, match="negative"):
        MonetateSandbox(deletion_delay_seconds=-1)
    with pytest.raises(ValueError):
        MonetateSandbox(public_key_pem=sandbox_keys().private_pem)
    assert sandbox_keys().public_pem.startswith("-----BEGIN PUBLIC KEY-----")


def test_the_default_key_is_made_once_per_process_and_stored_nowhere() -> None:
    assert sandbox_keys() is sandbox_keys()
    root = Path(__file__).resolve().parents[3]
    stored = [
        path
        for package in ("consumer", "devtools")
        for path in (root / package).rglob("*.py")
        if "PRIVATE KEY-----" in path.read_text(encoding="utf-8")
    ]
    assert stored == []


# --------------------------------------------------------------------------- schema


def test_create_and_duplicate_schema(box: MonetateSandbox, token: str) -> None:
    schema = {"type": "customer_data_privacy", "name": "privacy2", "fields": {}}
    created = call(box, "POST", f"{ACCOUNT}/schema/", token, json=schema)
    assert created.status_code == 201
    definition = created.json()["data"]
    assert definition["name"] == "privacy2"
    assert definition["fields"]["customer_id"]["unique_key"] is True
    assert box.has_dataset("privacy2")

    again = call(box, "POST", f"{ACCOUNT}/schema/", token, json=schema)
    assert again.status_code == 400
    assert errors(again) == [{"message": ALREADY_EXISTS_MESSAGE, "field": "name"}]

    # No documentation describes reading a schema back: an undocumented path is a 404.
    for name in ("privacy2", "privacy3"):
        response = call(box, "GET", f"{ACCOUNT}/schema/{name}/", token)
        assert response.status_code == 404
        assert "data" not in response.json()
    assert call(box, "GET", f"{ACCOUNT}/schema/", token).status_code == 405


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "event", "name": "x", "fields": {}}, "type"),
        ({"type": "customer_data_privacy", "name": "9lives", "fields": {}}, "name"),
        ({"type": "customer_data_privacy", "name": "has-dash", "fields": {}}, "name"),
        ({"type": "customer_data_privacy", "name": "a" * 65, "fields": {}}, "name"),
        ({"type": "customer_data_privacy", "name": "x", "fields": []}, "fields"),
        ({"type": "customer_data_privacy", "name": "x"}, None),
        ({"type": "customer_data_privacy", "name": 7, "fields": {}}, "name"),
        (
            {"type": "customer_data_privacy", "name": "x", "fields": {"note": {"data_type": "X"}}},
            "fields.note",
        ),
        (
            {
                "type": "customer_data_privacy",
                "name": "x",
                "fields": {"customer_id": {"data_type": "STRING"}},
            },
            "fields.customer_id",
        ),
        (
            {
                "type": "customer_data_privacy",
                "name": "x",
                "fields": {f"f{n}": {"data_type": "STRING"} for n in range(39)},
            },
            "fields",
        ),
    ],
)
def test_schema_validation(
    box: MonetateSandbox, token: str, body: dict[str, Any], field: str | None
) -> None:
    response = call(box, "POST", f"{ACCOUNT}/schema/", token, json=body)
    assert response.status_code == 400
    assert errors(response)[0].get("field") == field
    assert not box.has_dataset("x")


def test_schema_needs_json(box: MonetateSandbox, token: str) -> None:
    form = call(box, "POST", f"{ACCOUNT}/schema/", token, data={"type": "customer_data_privacy"})
    assert form.status_code == 415
    broken = call(
        box,
        "POST",
        f"{ACCOUNT}/schema/",
        token,
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert broken.status_code == 400


# --------------------------------------------------------------------------- data uploads


def test_upload_upserts_rows_and_echoes_them(box: MonetateSandbox, token: str) -> None:
    response = upload(box, token, [row("C-1"), row("C-2", "2024-05-02")])
    assert response.status_code == 201
    assert response.json()["data"] == {"schema_rows": [row("C-1"), row("C-2", "2024-05-02")]}
    later = "2024-06-01T00:00:00Z"
    assert upload(box, token, [row("C-1", later)]).status_code == 201
    assert box.rows(DATASET) == {"C-1": later, "C-2": "2024-05-02"}
    sent_time = call(
        box, "POST", DATA, token, json={"schema_rows": [], "_sent_time": WHEN}
    ).status_code
    assert sent_time == 201


def test_upload_limit_is_enforced_whole(keys: tuple[str, str]) -> None:
    sandbox = new_box(keys[1], max_rows_per_call=3)
    try:
        sandbox.add_dataset(DATASET)
        token = get_token(sandbox, keys[0])
        assert upload(sandbox, token, [row(f"C-{n}") for n in range(3)]).status_code == 201
        too_many = upload(sandbox, token, [row(f"D-{n}") for n in range(4)])
        assert too_many.status_code == 400
        assert errors(too_many)[0]["message"] == "too many rows: at most 3 per request"
        assert set(sandbox.rows(DATASET)) == {"C-0", "C-1", "C-2"}
    finally:
        sandbox.stop()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "schema_rows"),
        ({"schema_rows": {}}, "schema_rows"),
        ({"schema_rows": [], "extra": 1}, None),
        ({"schema_rows": [], "_sent_time": "now"}, "_sent_time"),
        ({"schema_rows": [row("ok"), "C-1"]}, "schema_rows[1]"),
        ({"schema_rows": [row("ok"), {"delete_request_time": WHEN}]}, "schema_rows[1]"),
        ({"schema_rows": [row("")]}, "schema_rows[0]"),
        ({"schema_rows": [row(" padded@id")]}, "schema_rows[0]"),
        ({"schema_rows": [row("padded@id\n")]}, "schema_rows[0]"),
        ({"schema_rows": [{"customer_id": 42, "delete_request_time": WHEN}]}, "schema_rows[0]"),
        ({"schema_rows": [{"customer_id": "C-1"}]}, "schema_rows[0]"),
        ({"schema_rows": [row("C-1", "2024-05-01T12:00:00")]}, "schema_rows[0]"),
        ({"schema_rows": [row("C-1", "yesterday")]}, "schema_rows[0]"),
        ({"schema_rows": [row("C-1", "2024-02-30")]}, "schema_rows[0]"),
        ({"schema_rows": [{**row("C-1"), "note": "x"}]}, "schema_rows[0]"),
    ],
)
def test_upload_validation_rejects_the_whole_call(
    box: MonetateSandbox, token: str, body: dict[str, Any], field: str | None
) -> None:
    response = call(box, "POST", DATA, token, json=body)
    assert response.status_code == 400
    assert errors(response)[0].get("field") == field
    assert "padded@id" not in response.text
    assert box.rows(DATASET) == {}


def test_upload_content_type_and_unknown_dataset(box: MonetateSandbox, token: str) -> None:
    as_text = call(
        box,
        "POST",
        DATA,
        token,
        data=b'{"schema_rows": []}',
        headers={"Content-Type": "text/plain"},
    )
    assert as_text.status_code == 415
    latin1 = call(
        box,
        "POST",
        DATA,
        token,
        data=b'{"schema_rows": []}',
        headers={"Content-Type": "application/json; charset=latin-1"},
    )
    assert latin1.status_code == 415
    missing = upload(box, token, [row("C-1")], path=f"{ACCOUNT}/data/nowhere/")
    assert missing.status_code == 404
    assert errors(missing)[0]["message"] == "dataset not found"


def test_extra_columns_of_the_dataset_are_accepted_and_ignored(
    box: MonetateSandbox, token: str
) -> None:
    schema = {
        "type": "customer_data_privacy",
        "name": "with_note",
        "fields": {"note": {"data_type": "STRING"}},
    }
    assert call(box, "POST", f"{ACCOUNT}/schema/", token, json=schema).status_code == 201
    path = f"{ACCOUNT}/data/with_note/"
    assert upload(box, token, [{**row("C-1"), "note": "x"}], path=path).status_code == 201
    assert box.rows("with_note") == {"C-1": WHEN}


# --------------------------------------------------------------------------- status


def test_status_lifecycle_of_held_and_unknown_ids(keys: tuple[str, str]) -> None:
    sandbox = new_box(keys[1], deletion_delay_seconds=0.5)
    try:
        sandbox.add_dataset(DATASET)
        sandbox.add_customer("held")
        token = get_token(sandbox, keys[0])
        assert status_of(sandbox, token, "held") == "FOUND"
        assert status_of(sandbox, token, "never") == "NOT_FOUND"
        assert upload(sandbox, token, [row("held"), row("never")]).status_code == 201
        assert status_of(sandbox, token, "held") == "PENDING"
        assert status_of(sandbox, token, "never") == "NOT_FOUND"
        wait_until(lambda: status_of(sandbox, token, "held") == "NOT_FOUND", 5.0, "deletion")
        response = call(sandbox, "GET", STATUS, token, params={"customer_id": "held"})
        assert response.json()["data"]["description"].startswith("The customer_id has not been")
    finally:
        sandbox.stop()


def test_status_needs_one_customer_id_and_a_privacy_dataset(
    keys: tuple[str, str], box: MonetateSandbox, token: str
) -> None:
    for query in ("", "customer_id=", "customer_id=a&customer_id=b", "customer_id=%FF"):
        response = call(box, "GET", f"{STATUS}?{query}", token)
        assert response.status_code == 400, query
    empty = new_box(keys[1])
    try:
        other_token = get_token(empty, keys[0])
        response = call(empty, "GET", STATUS, other_token, params={"customer_id": "C-1"})
        assert response.status_code == 404
    finally:
        empty.stop()


def test_data_gets_are_rate_limited(keys: tuple[str, str]) -> None:
    sandbox = new_box(keys[1], data_get_rate_per_second=4.0)
    try:
        sandbox.add_dataset(DATASET)
        token = get_token(sandbox, keys[0])
        assert status_of(sandbox, token, "C-1") == "NOT_FOUND"
        limited = call(sandbox, "GET", STATUS, token, params={"customer_id": "C-2"})
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "1"
        # Uploads are not data GETs.
        assert upload(sandbox, token, [row("C-3")]).status_code == 201

        def let_through() -> bool:
            response = call(sandbox, "GET", STATUS, token, params={"customer_id": "C-2"})
            return response.status_code == 200

        wait_until(let_through, 5.0, "the rate limit to let a call through")
        allowed = [c.timestamp for c in sandbox.calls if c.path == STATUS and c.status == 200]
        assert len(allowed) == 2
        assert allowed[1] - allowed[0] >= 0.249
    finally:
        sandbox.stop()


def test_injected_faults_come_from_the_shared_machinery(box: MonetateSandbox, token: str) -> None:
    box.inject(Fault.status(500), path_prefix=DATA)
    assert upload(box, token, [row("C-1")]).status_code == 500
    assert box.rows(DATASET) == {}
    box.inject(Fault.status(500, after_processing=True), path_prefix=DATA)
    assert upload(box, token, [row("C-1")]).status_code == 500
    assert box.rows(DATASET) == {"C-1": WHEN}
    assert box.pending_faults() == 0


# --------------------------------------------------------------------------- properties


_ids = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40).filter(
    lambda text: text == text.strip()
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(customer_id=_ids)
def test_any_customer_id_round_trips_through_upload_and_status(
    box: MonetateSandbox, token: str, customer_id: str
) -> None:
    box.add_customer(customer_id)
    assert upload(box, token, [row(customer_id)]).status_code == 201
    assert customer_id in box.rows(DATASET)
    wait_until(lambda: status_of(box, token, customer_id) == "NOT_FOUND", 5.0, "deletion")


@given(
    moment=st.datetimes(
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5, minutes=-30))])
    )
)
def test_aware_timestamps_and_dates_are_iso8601(moment: datetime) -> None:
    assert is_iso8601(moment.isoformat())
    assert is_iso8601(moment.date().isoformat())
    assert not is_iso8601(moment.replace(tzinfo=None).isoformat())
