"""Tests of the Acquia CDP data-erasure sandbox itself, over real HTTP.

The sandbox is the yardstick for the worker's Acquia CDP client, so it must reject
exactly what the vendor would; these tests pin that behaviour. Waiting is always a
deadline loop on a condition, never a fixed sleep.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.sandbox.acquia_cdp import (
    DEFAULT_PASSWORD,
    DEFAULT_TENANT_ID,
    DEFAULT_TOKEN_FIELD,
    DEFAULT_USERNAME,
    AcquiaCdpSandbox,
    SessionEvent,
)
from devtools.sandbox.acquia_cdp_wire import ErasureBody, ErasureBodyError, parse_erasure_body
from devtools.sandbox.server import Fault
from tests.support.waiting import wait_until

TENANT = DEFAULT_TENANT_ID
ERASURE_PATH = f"/v2/{TENANT}/dw/dataerasure"
DATE = "2024-05-06 07:08:09 UTC"
LISTS = ("readyForDataErasure", "notFound", "pendingForDataErasure", "failedToAccept")


# --------------------------------------------------------------------------- helpers


def basic(username: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(
    sandbox: AcquiaCdpSandbox, headers: dict[str, str] | None = None, query: str = "action=login"
) -> requests.Response:
    headers = basic(DEFAULT_USERNAME, DEFAULT_PASSWORD) if headers is None else headers
    url = f"{sandbox.base_url}/authentication?{query}"
    return requests.post(url, headers=headers, timeout=5)


def get_token(sandbox: AcquiaCdpSandbox, field: str = DEFAULT_TOKEN_FIELD) -> str:
    response = login(sandbox)
    assert response.status_code == 200, response.text
    token = response.json()[field]
    assert isinstance(token, str)
    return token


def logout(sandbox: AcquiaCdpSandbox, token: str | None) -> requests.Response:
    headers = bearer(token) if token is not None else {}
    url = f"{sandbox.base_url}/authentication?action=logout"
    return requests.post(url, headers=headers, timeout=5)


def body(ids: list[str], **overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "customerIds": ids,
        "requestedDate": DATE,
        "reason": "GDPR",
        "requestOrigin": "Data Erasure",
        "tenantId": TENANT,
    }
    document.update(overrides)
    return document


def erase(
    sandbox: AcquiaCdpSandbox,
    token: str,
    payload: object,
    *,
    path: str = ERASURE_PATH,
    query: str = "failOnNotFound=false",
    content_type: str | None = "application/json",
) -> requests.Response:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = bearer(token)
    if content_type is not None:
        headers["Content-Type"] = content_type
    url = f"{sandbox.base_url}{path}" + (f"?{query}" if query else "")
    return requests.post(url, data=data, headers=headers, timeout=5)


def answer(sandbox: AcquiaCdpSandbox, token: str, ids: list[str]) -> dict[str, Any]:
    response = erase(sandbox, token, body(ids))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def lists_of(result: dict[str, Any]) -> dict[str, list[str]]:
    return {key: result[key] for key in LISTS}


def expected_lists(**lists: list[str]) -> dict[str, list[str]]:
    return {key: lists.get(key, []) for key in LISTS}


@pytest.fixture
def sandbox() -> Iterator[AcquiaCdpSandbox]:
    with AcquiaCdpSandbox(erasure_seconds=60) as box:
        yield box


@pytest.fixture
def token(sandbox: AcquiaCdpSandbox) -> str:
    return get_token(sandbox)


# --------------------------------------------------------------------------- sessions


def test_login_issues_a_token_and_logout_ends_the_session(sandbox: AcquiaCdpSandbox) -> None:
    response = login(sandbox)
    assert response.status_code == 200
    assert set(response.json()) == {"access_token"}
    token = response.json()["access_token"]
    assert sandbox.open_sessions() == 1
    assert erase(sandbox, token, body(["a"])).status_code == 200

    assert logout(sandbox, token).status_code == 200

    assert sandbox.open_sessions() == 0
    assert erase(sandbox, token, body(["a"])).status_code == 401
    again = logout(sandbox, token)
    assert (again.status_code, again.json()["errorCode"]) == (401, "INVALID_TOKEN")
    assert sandbox.session_log() == [
        SessionEvent("login", 200, 1),
        SessionEvent("logout", 200, 1),
        SessionEvent("logout", 401, None),
    ]


def test_the_token_field_is_configurable() -> None:
    with AcquiaCdpSandbox(token_field="sessionToken") as box:
        assert set(login(box).json()) == {"sessionToken"}
        assert erase(box, get_token(box, "sessionToken"), body(["a"])).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-credentials"),
        pytest.param(basic(DEFAULT_USERNAME, "wrong"), id="wrong-password"),
        pytest.param(basic("someone-else", DEFAULT_PASSWORD), id="wrong-user"),
        pytest.param(basic(DEFAULT_USERNAME.upper(), DEFAULT_PASSWORD), id="user-case"),
        pytest.param({"Authorization": "Basic !!!not-base64"}, id="bad-base64"),
        pytest.param(
            {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}, id="no-colon"
        ),
        pytest.param({"Authorization": f"Bearer {DEFAULT_PASSWORD}"}, id="bearer-scheme"),
    ],
)
def test_login_needs_the_right_basic_credentials(
    sandbox: AcquiaCdpSandbox, headers: dict[str, str]
) -> None:
    response = login(sandbox, headers)
    assert response.status_code == 401
    assert response.json()["errorCode"] == "INVALID_CREDENTIALS"
    assert set(response.json()) == {"errorCode", "userMessage", "developerMessage"}
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert DEFAULT_PASSWORD not in response.text
    assert sandbox.open_sessions() == 0
    assert sandbox.session_log() == [SessionEvent("login", 401, None)]


def test_non_ascii_credentials_are_utf8() -> None:
    with AcquiaCdpSandbox(username="api-usér", password="pässwörd:with:colons") as box:
        assert login(box, basic("api-usér", "pässwörd:with:colons")).status_code == 200


def test_refused_credentials_are_403_and_end_sessions(sandbox: AcquiaCdpSandbox) -> None:
    token = get_token(sandbox)
    sandbox.refuse_credentials()
    refused = login(sandbox)
    assert (refused.status_code, refused.json()["errorCode"]) == (403, "USER_DISABLED")
    assert login(sandbox, basic(DEFAULT_USERNAME, "wrong")).status_code == 401
    assert erase(sandbox, token, body(["a"])).status_code == 401
    assert logout(sandbox, token).status_code == 401
    sandbox.restore_credentials()
    assert erase(sandbox, get_token(sandbox), body(["a"])).status_code == 200


@pytest.mark.parametrize(
    "query",
    ["", "action=", "action=refresh", "action=login&extra=1", "action=login&action=login", "x"],
)
def test_authentication_needs_exactly_one_known_action(
    sandbox: AcquiaCdpSandbox, query: str
) -> None:
    response = login(sandbox, query=query)
    assert response.status_code == 400
    assert sandbox.open_sessions() == 0


def test_authentication_is_post_only(sandbox: AcquiaCdpSandbox) -> None:
    url = f"{sandbox.base_url}/authentication?action=login"
    response = requests.get(url, headers=basic(DEFAULT_USERNAME, DEFAULT_PASSWORD), timeout=5)
    assert (response.status_code, response.headers["Allow"]) == (405, "POST")


def test_expire_tokens_ends_every_session(sandbox: AcquiaCdpSandbox) -> None:
    first, second = get_token(sandbox), get_token(sandbox)
    assert first != second
    assert sandbox.open_sessions() == 2
    sandbox.expire_tokens()
    assert sandbox.open_sessions() == 0
    assert erase(sandbox, first, body(["a"])).json()["errorCode"] == "INVALID_TOKEN"
    assert erase(sandbox, get_token(sandbox), body(["a"])).status_code == 200


def test_sessions_expire_after_their_ttl() -> None:
    with AcquiaCdpSandbox(session_ttl_seconds=0.05) as box:
        token = get_token(box)
        wait_until(lambda: erase(box, token, body(["a"])).status_code == 401, timeout=5)
        assert box.open_sessions() == 0
        assert logout(box, token).status_code == 401


# --------------------------------------------------------------------------- erasure requests


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, basic(DEFAULT_USERNAME, DEFAULT_PASSWORD)],
)
def test_erasure_needs_a_live_session(sandbox: AcquiaCdpSandbox, headers: dict[str, str]) -> None:
    sandbox.add_customer(TENANT, "a")
    headers = {**headers, "Content-Type": "application/json"}
    url = f"{sandbox.base_url}{ERASURE_PATH}"
    response = requests.post(url, data=json.dumps(body(["a"])), headers=headers, timeout=5)
    assert (response.status_code, response.json()["errorCode"]) == (401, "INVALID_TOKEN")
    assert not sandbox.is_queued(TENANT, "a")


def test_another_tenant_is_403(sandbox: AcquiaCdpSandbox, token: str) -> None:
    response = erase(sandbox, token, body(["a"], tenantId=99), path="/v2/99/dw/dataerasure")
    assert (response.status_code, response.json()["errorCode"]) == (403, "ACCESS_DENIED")


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        (None, 415),
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("application/json;charset=ISO-8859-1", 415),
        ("application/json", 200),
        ("Application/JSON; charset=UTF-8", 200),
    ],
)
def test_content_type_must_be_json(
    sandbox: AcquiaCdpSandbox, token: str, content_type: str | None, status: int
) -> None:
    response = erase(sandbox, token, body(["a"]), content_type=content_type)
    assert response.status_code == status


@pytest.mark.parametrize(
    "query",
    [
        "failOnNotFound=no",
        "failOnNotFound=False",
        "failOnNotFound=false&failOnNotFound=false",
        "failonnotfound=false",
        "failOnNotFound=false&dryRun=true",
    ],
)
def test_unknown_or_malformed_query_parameters_are_400(
    sandbox: AcquiaCdpSandbox, token: str, query: str
) -> None:
    assert erase(sandbox, token, body(["a"]), query=query).status_code == 400


BAD_BODIES: list[Any] = [
    pytest.param(b"{not json", id="not-json"),
    pytest.param(b"\xff\xfe{}", id="not-utf8"),
    pytest.param([], id="array"),
    pytest.param({k: v for k, v in body(["a"]).items() if k != "reason"}, id="no-reason"),
    pytest.param({k: v for k, v in body(["a"]).items() if k != "customerIds"}, id="no-ids"),
    pytest.param({k: v for k, v in body(["a"]).items() if k != "requestedDate"}, id="no-date"),
    pytest.param({k: v for k, v in body(["a"]).items() if k != "tenantId"}, id="no-tenant"),
    pytest.param({k: v for k, v in body(["a"]).items() if k != "requestOrigin"}, id="no-origin"),
    pytest.param(body(["a"], extra=1), id="unknown-field"),
    pytest.param(body([]), id="no-customer-ids"),
    pytest.param(body("a"), id="ids-not-a-list"),  # type: ignore[arg-type]
    pytest.param(body([""]), id="empty-id"),
    pytest.param(body([42]), id="numeric-id"),  # type: ignore[list-item]
    pytest.param(body([f"c{i}" for i in range(201)]), id="201-ids"),
    pytest.param(body(["a"], reason=""), id="empty-reason"),
    pytest.param(body(["a"], reason="   "), id="blank-reason"),
    pytest.param(body(["a"], reason=None), id="null-reason"),
    pytest.param(body(["a"], reason=["GDPR"]), id="list-reason"),
    pytest.param(body(["a"], reason="GDPR\n"), id="control-char-reason"),
    pytest.param(body(["a"], reason="x" * 256), id="long-reason"),
    pytest.param(body(["a"], requestedDate="2024-05-06T07:08:09Z"), id="iso-date"),
    pytest.param(body(["a"], requestedDate="2024-05-06 07:08:09"), id="date-no-utc"),
    pytest.param(body(["a"], requestedDate="2024-05-06 07:08:09.123 UTC"), id="date-millis"),
    pytest.param(body(["a"], requestedDate="2024-02-30 07:08:09 UTC"), id="date-impossible"),
    pytest.param(body(["a"], requestedDate="2024-05-06 07:08:09 CET"), id="date-not-utc"),
    pytest.param(body(["a"], requestedDate=1714979289), id="date-number"),
    pytest.param(body(["a"], requestOrigin="API"), id="wrong-origin"),
    pytest.param(body(["a"], tenantId=str(TENANT)), id="tenant-as-text"),
    pytest.param(body(["a"], tenantId=TENANT + 1), id="tenant-mismatch"),
    pytest.param(body(["a"], tenantId=True), id="tenant-bool"),
]


@pytest.mark.parametrize("payload", BAD_BODIES)
def test_invalid_bodies_are_400_without_echo(
    sandbox: AcquiaCdpSandbox, token: str, payload: object
) -> None:
    sandbox.add_customer(TENANT, "a")
    response = erase(sandbox, token, payload)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "INVALID_REQUEST"
    assert '"a"' not in response.text
    assert not sandbox.is_queued(TENANT, "a")
    assert sandbox.quota_used(TENANT) == 0


def test_two_hundred_ids_are_accepted(sandbox: AcquiaCdpSandbox, token: str) -> None:
    ids = [f"c{i}" for i in range(200)]
    assert lists_of(answer(sandbox, token, ids)) == expected_lists(notFound=ids)


def test_each_id_lands_in_one_list(sandbox: AcquiaCdpSandbox, token: str) -> None:
    for customer_id in ("ready", "queued-before", "flaky"):
        sandbox.add_customer(TENANT, customer_id)
    answer(sandbox, token, ["queued-before"])
    sandbox.fail_to_accept("flaky")

    result = answer(sandbox, token, ["ready", "unknown", "queued-before", "flaky", "ready"])

    assert lists_of(result) == expected_lists(
        readyForDataErasure=["ready"],
        notFound=["unknown"],
        pendingForDataErasure=["queued-before"],
        failedToAccept=["flaky"],
    )
    assert isinstance(result["eventId"], str)
    assert set(result) == {"eventId", *LISTS}
    assert sandbox.is_queued(TENANT, "ready")
    assert not sandbox.is_queued(TENANT, "flaky")


def test_each_call_gets_a_new_event_id(sandbox: AcquiaCdpSandbox, token: str) -> None:
    first, second = answer(sandbox, token, ["a"]), answer(sandbox, token, ["a"])
    assert first["eventId"] != second["eventId"]
    records = sandbox.erasures()
    assert [record.event_id for record in records] == [first["eventId"], second["eventId"]]
    assert (records[0].customer_ids, records[0].reason, records[0].requested_date) == (
        ("a",),
        "GDPR",
        DATE,
    )


def test_fail_to_accept_lasts_the_given_number_of_calls(
    sandbox: AcquiaCdpSandbox, token: str
) -> None:
    sandbox.add_customer(TENANT, "flaky")
    sandbox.fail_to_accept("flaky", times=2)
    outcomes = [lists_of(answer(sandbox, token, ["flaky"])) for _ in range(3)]
    assert outcomes == [
        expected_lists(failedToAccept=["flaky"]),
        expected_lists(failedToAccept=["flaky"]),
        expected_lists(readyForDataErasure=["flaky"]),
    ]


def test_queued_ids_are_erased_after_the_erasure_delay() -> None:
    with AcquiaCdpSandbox(erasure_seconds=0.05) as box:
        box.add_customer(TENANT, "a")
        token = get_token(box)
        assert answer(box, token, ["a"])["readyForDataErasure"] == ["a"]
        wait_until(lambda: not box.customer_exists(TENANT, "a"), timeout=5)
        assert not box.is_queued(TENANT, "a")
        assert lists_of(answer(box, token, ["a"])) == expected_lists(notFound=["a"])


def test_customers_belong_to_their_tenant(sandbox: AcquiaCdpSandbox, token: str) -> None:
    sandbox.add_customer(TENANT + 1, "elsewhere")
    assert answer(sandbox, token, ["elsewhere"])["notFound"] == ["elsewhere"]
    assert sandbox.customer_exists(TENANT + 1, "elsewhere")


def test_a_rejected_id_fails_the_whole_call(sandbox: AcquiaCdpSandbox, token: str) -> None:
    sandbox.add_customer(TENANT, "good")
    sandbox.reject("bad-id")
    response = erase(sandbox, token, body(["good", "bad-id"]))
    assert (response.status_code, response.json()["errorCode"]) == (400, "INVALID_CUSTOMER_ID")
    assert "bad-id" not in response.text
    assert not sandbox.is_queued(TENANT, "good")
    assert sandbox.quota_used(TENANT) == 0
    assert answer(sandbox, token, ["good"])["readyForDataErasure"] == ["good"]


def test_no_valid_id_is_404_unless_fail_on_not_found_is_false(
    sandbox: AcquiaCdpSandbox, token: str
) -> None:
    sandbox.add_customer(TENANT, "known")
    for query in ("", "failOnNotFound=true"):
        missing = erase(sandbox, token, body(["x", "y"]), query=query)
        assert (missing.status_code, missing.json()["errorCode"]) == (404, "NO_VALID_CUSTOMER_ID")
        assert erase(sandbox, token, body(["x", "known"]), query=query).status_code == 200
    assert answer(sandbox, token, ["x", "y"])["notFound"] == ["x", "y"]


def test_failed_to_accept_ids_are_not_a_404(sandbox: AcquiaCdpSandbox, token: str) -> None:
    sandbox.fail_to_accept("x")
    response = erase(sandbox, token, body(["x", "y"]), query="")
    assert response.status_code == 200
    assert lists_of(response.json()) == expected_lists(notFound=["y"], failedToAccept=["x"])


# --------------------------------------------------------------------------- weekly quota


def test_quota_is_429_with_retry_after_until_the_window_frees_up() -> None:
    with AcquiaCdpSandbox(weekly_quota=3, quota_window_seconds=0.5) as box:
        token = get_token(box)
        assert erase(box, token, body(["a", "b", "a"])).status_code == 200  # distinct ids count
        assert box.quota_used(TENANT) == 2
        over = erase(box, token, body(["c", "d"]))
        assert (over.status_code, over.json()["errorCode"]) == (429, "QUOTA_EXCEEDED")
        assert over.headers["Retry-After"] == "1"
        assert erase(box, token, body(["c"])).status_code == 200
        assert box.quota_used(TENANT) == 3
        wait_until(lambda: erase(box, token, body(["c", "d"])).status_code == 200, timeout=5)


def test_retry_after_counts_whole_seconds_to_the_freeing_call() -> None:
    with AcquiaCdpSandbox(weekly_quota=4, quota_window_seconds=100.0) as box:
        token = get_token(box)
        assert erase(box, token, body(["a", "b"])).status_code == 200
        assert erase(box, token, body(["c", "d"])).status_code == 200
        over = erase(box, token, body(["e"]))
        assert over.status_code == 429
        assert 99 <= int(over.headers["Retry-After"]) <= 100


def test_a_call_larger_than_the_whole_quota_is_400() -> None:
    with AcquiaCdpSandbox(weekly_quota=2) as box:
        response = erase(box, get_token(box), body(["a", "b", "c"]))
        assert (response.status_code, response.json()["errorCode"]) == (400, "QUOTA_EXCEEDED")
        assert box.quota_used(TENANT) == 0


def test_the_default_quota_is_acquias_weekly_limit(sandbox: AcquiaCdpSandbox, token: str) -> None:
    for start in range(0, 9990, 200):
        ids = [f"c{i}" for i in range(start, min(start + 200, 9990))]
        assert erase(sandbox, token, body(ids)).status_code == 200
    assert sandbox.quota_used(TENANT) == 9990
    assert erase(sandbox, token, body(["one-more"])).status_code == 429


# --------------------------------------------------------------------------- faults, routing


def test_injected_faults_come_from_the_base(sandbox: AcquiaCdpSandbox, token: str) -> None:
    sandbox.inject(Fault.status(500), path_prefix=ERASURE_PATH)
    sandbox.inject(Fault.rate_limited(retry_after=3), path_prefix=ERASURE_PATH)
    assert erase(sandbox, token, body(["a"])).status_code == 500
    limited = erase(sandbox, token, body(["a"]))
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "3")
    assert erase(sandbox, token, body(["a"])).status_code == 200
    assert [call.status for call in sandbox.calls if call.path == ERASURE_PATH] == [500, 429, 200]


@pytest.mark.parametrize(
    "path", ["/v2/abc/dw/dataerasure", "/v1/1234/dw/dataerasure", "/v2/1234/dataerasure", "/"]
)
def test_unknown_paths_are_404_without_an_acquia_body(
    sandbox: AcquiaCdpSandbox, token: str, path: str
) -> None:
    response = erase(sandbox, token, body(["a"]), path=path)
    assert response.status_code == 404
    assert "errorCode" not in response.json()


def test_constructor_rejects_impossible_settings() -> None:
    with pytest.raises(ValueError, match="durations"):
        AcquiaCdpSandbox(session_ttl_seconds=0)
    with pytest.raises(ValueError, match="quota"):
        AcquiaCdpSandbox(weekly_quota=0)
    with pytest.raises(ValueError, match="username"):
        AcquiaCdpSandbox(username="a:b")


# --------------------------------------------------------------------------- properties

customer_ids = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=40)


@given(
    ids=st.lists(customer_ids, min_size=1, max_size=200),
    reason=st.sampled_from(["GDPR", "CCPA/GDPR", "OTHER"]),
)
def test_parser_accepts_valid_bodies_whatever_the_ids(ids: list[str], reason: str) -> None:
    raw = json.dumps(body(ids, reason=reason)).encode()
    assert parse_erasure_body(raw, TENANT) == ErasureBody(tuple(ids), DATE, reason, TENANT)


@given(moment=st.datetimes(min_value=datetime(1000, 1, 1)))
def test_parser_accepts_every_real_date(moment: datetime) -> None:
    date = moment.isoformat(sep=" ", timespec="seconds") + " UTC"
    raw = json.dumps(body(["a"], requestedDate=date)).encode()
    assert parse_erasure_body(raw, TENANT).requested_date == date


def test_parser_errors_never_echo_values() -> None:
    with pytest.raises(ErasureBodyError) as raised:
        parse_erasure_body(json.dumps(body(["secret-id"], tenantId=1)).encode(), TENANT)
    assert "secret-id" not in str(raised.value)


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[tuple[AcquiaCdpSandbox, str]]:
    with AcquiaCdpSandbox(erasure_seconds=3600) as box:
        yield box, get_token(box)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ids=st.lists(customer_ids, min_size=1, max_size=20), held=st.data())
def test_every_distinct_id_is_answered_once_over_http(
    shared_sandbox: tuple[AcquiaCdpSandbox, str], ids: list[str], held: st.DataObject
) -> None:
    box, token = shared_sandbox
    for customer_id in held.draw(st.lists(st.sampled_from(ids), unique=True)):
        box.add_customer(TENANT, customer_id)
    result = answer(box, token, ids)
    answered = [customer_id for key in LISTS for customer_id in result[key]]
    assert sorted(answered) == sorted(set(ids))
