"""Tests of the Voyado Elevate remove-customer-data sandbox itself, over real HTTP.

The sandbox is the yardstick for the worker's Voyado client, so it must reject exactly
what the vendor would; these tests pin that behaviour. Waiting is always a deadline loop
on a condition, never a fixed sleep.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.sandbox.server import Fault
from devtools.sandbox.voyado import (
    API_PREFIXES,
    DEFAULT_API_KEY,
    ArgumentError,
    VoyadoSandbox,
    parse_query,
)
from tests.support.waiting import wait_until

V4 = API_PREFIXES["v4"]
KEY_HEADER = {"Api-Key": DEFAULT_API_KEY}
UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
FAST: dict[str, Any] = {"created_seconds": 0.0, "waiting_seconds": 0.0, "running_seconds": 0.0}


# --------------------------------------------------------------------------- helpers


def create(
    box: VoyadoSandbox,
    query: str,
    *,
    prefix: str = V4,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> requests.Response:
    """POST create-remove-customer-job with a raw (already encoded) query string."""
    url = f"{box.base_url}{prefix}/create-remove-customer-job?{query}"
    return requests.post(
        url, headers=KEY_HEADER if headers is None else headers, data=data, timeout=5
    )


def create_for(box: VoyadoSandbox, key: str, prefix: str = V4) -> str:
    response = create(box, "customerKey=" + quote(key, safe=""), prefix=prefix)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "created"
    jid = body["jid"]
    assert isinstance(jid, str)
    return jid


def status_of(
    box: VoyadoSandbox, jid: str, *, prefix: str = V4, headers: dict[str, str] | None = None
) -> requests.Response:
    url = f"{box.base_url}{prefix}/job-status?jid={quote(jid, safe='')}"
    return requests.get(url, headers=KEY_HEADER if headers is None else headers, timeout=5)


def word(box: VoyadoSandbox, jid: str, prefix: str = V4) -> str:
    response = status_of(box, jid, prefix=prefix)
    assert response.status_code == 200
    assert response.json()["jid"] == jid
    status = response.json()["status"]
    assert isinstance(status, str)
    return status


def raw_request(box: VoyadoSandbox, target: bytes) -> int:
    """POST a request line byte for byte (no client library re-encodes it); the status."""
    host, port = box.base_url.removeprefix("http://").split(":")
    head = (
        b"POST "
        + target
        + b" HTTP/1.1\r\nHost: sandbox\r\nApi-Key: "
        + KEY_HEADER["Api-Key"].encode()
        + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(head)
        answer = b""
        while chunk := connection.recv(4096):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


@pytest.fixture
def box() -> Iterator[VoyadoSandbox]:
    """Jobs are done at once, so tests only wait for what they are about."""
    with VoyadoSandbox(**FAST) as sandbox:
        yield sandbox


# --------------------------------------------------------------------------- creating jobs


def test_create_answers_a_new_uuid_jid_each_time(box: VoyadoSandbox) -> None:
    first = create(box, "customerKey=e3921377-18a2-47c9-a449-06b894898623")
    second = create(box, "customerKey=e3921377-18a2-47c9-a449-06b894898623")
    assert first.status_code == second.status_code == 200
    assert first.headers["Content-Type"].startswith("application/json")
    assert set(first.json()) == {"jid", "status"}
    assert UUID_PATTERN.fullmatch(first.json()["jid"])
    assert first.json()["jid"] != second.json()["jid"]
    assert box.requested_keys() == ["e3921377-18a2-47c9-a449-06b894898623"] * 2


@pytest.mark.parametrize("version", ["v2", "v3", "v4"])
def test_every_api_generation_serves_both_endpoints(box: VoyadoSandbox, version: str) -> None:
    jid = create_for(box, "visitor-1", prefix=API_PREFIXES[version])
    assert word(box, jid, prefix=API_PREFIXES[version]) == "done"


def test_jobs_are_shared_between_generations(box: VoyadoSandbox) -> None:
    jid = create_for(box, "visitor-1", prefix=API_PREFIXES["v2"])
    assert word(box, jid, prefix=API_PREFIXES["v4"]) == "done"


def test_retired_v2_can_be_switched_off() -> None:
    with VoyadoSandbox(serve_v2=False) as retired:
        assert create(retired, "customerKey=a", prefix=API_PREFIXES["v2"]).status_code == 404
        assert status_of(retired, "x", prefix=API_PREFIXES["v2"]).status_code == 404
        assert create(retired, "customerKey=a", prefix=API_PREFIXES["v3"]).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/admin/v5/event-data/create-remove-customer-job",
        "/api/v4/event-data/create-remove-customer-job",
        "/api/admin/v2/event-data/create-remove-customer-job",
        f"{V4}/create-remove-customer-job/",
        f"{V4}/create-export-customer-job",
        "/",
    ],
)
def test_unknown_paths_are_404(box: VoyadoSandbox, path: str) -> None:
    url = f"{box.base_url}{path}?customerKey=a"
    assert requests.post(url, headers=KEY_HEADER, timeout=5).status_code == 404
    assert box.requested_keys() == []


@pytest.mark.parametrize(
    ("method", "endpoint", "allow"),
    [
        ("GET", "/create-remove-customer-job", "POST"),
        ("PUT", "/create-remove-customer-job", "POST"),
        ("POST", "/job-status", "GET"),
        ("DELETE", "/job-status", "GET"),
    ],
)
def test_wrong_methods_are_405(box: VoyadoSandbox, method: str, endpoint: str, allow: str) -> None:
    url = f"{box.base_url}{V4}{endpoint}?customerKey=a"
    response = requests.request(method, url, headers=KEY_HEADER, timeout=5)
    assert response.status_code == 405
    assert response.headers["Allow"] == allow


# --------------------------------------------------------------------------- credentials


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Api-Key": "wrong-key"},
        {"Api-Key": DEFAULT_API_KEY.upper()},
        {"Api-Key": DEFAULT_API_KEY + " "},
        {"Authorization": f"Bearer {DEFAULT_API_KEY}"},
        {"X-Api-Key": DEFAULT_API_KEY},
    ],
)
def test_calls_without_the_clusters_key_are_403(
    box: VoyadoSandbox, headers: dict[str, str]
) -> None:
    created = create(box, "customerKey=visitor-1", headers=headers)
    status = status_of(box, "some-jid", headers=headers)
    assert (created.status_code, status.status_code) == (403, 403)
    assert created.json() == {"error": "forbidden", "message": "Incorrect cluster credentials."}
    assert box.requested_keys() == []


def test_the_header_name_is_case_insensitive(box: VoyadoSandbox) -> None:
    response = create(box, "customerKey=a", headers={"API-KEY": DEFAULT_API_KEY})
    assert response.status_code == 200


def test_credentials_are_checked_before_arguments(box: VoyadoSandbox) -> None:
    assert create(box, "", headers={"Api-Key": "wrong"}).status_code == 403


def test_rotating_the_key_refuses_the_old_one(box: VoyadoSandbox) -> None:
    box.rotate_api_key("new-key")
    assert create(box, "customerKey=a").status_code == 403
    assert create(box, "customerKey=a", headers={"Api-Key": "new-key"}).status_code == 200
    with pytest.raises(ValueError):
        box.rotate_api_key("")


def test_a_custom_key_replaces_the_default() -> None:
    with VoyadoSandbox(api_key="cluster-7-key") as custom:
        assert create(custom, "customerKey=a").status_code == 403
        assert create(custom, "customerKey=a", headers={"Api-Key": "cluster-7-key"}).ok


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("", id="missing"),
        pytest.param("customerKey=", id="empty"),
        pytest.param("customerKey", id="no-equals-sign"),
        pytest.param("customerKey=a&customerKey=b", id="two-keys-hard-limit"),
        pytest.param("customerkey=a", id="name-case-differs"),
        pytest.param("customerKey=a&dryRun=true", id="unknown-parameter"),
        pytest.param("customerKey=a&b=c", id="unencoded-ampersand"),
        pytest.param("customerKey=%FF%FE", id="not-utf8"),
        pytest.param("customerKey=a&&", id="empty-field"),
    ],
)
def test_bad_arguments_are_400_and_create_nothing(box: VoyadoSandbox, query: str) -> None:
    response = create(box, query)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert box.requested_keys() == []


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(b"customerKey=a|b", id="pipe"),
        pytest.param(b'customerKey="a"', id="quotes"),
        pytest.param(b"customerKey=a^b{c}", id="caret-and-braces"),
        pytest.param(b"customerKey=a\\b", id="backslash"),
        pytest.param("customerKey=zoë".encode(), id="raw-utf8"),
        pytest.param(b"customerKey=a%zz", id="bad-escape"),
        pytest.param(b"customerKey=a%", id="truncated-escape"),
    ],
)
def test_unencoded_characters_and_bad_escapes_are_400(box: VoyadoSandbox, query: bytes) -> None:
    target = f"{V4}/create-remove-customer-job?".encode() + query
    assert raw_request(box, target) == 400
    assert box.requested_keys() == []


def test_raw_requests_are_otherwise_served(box: VoyadoSandbox) -> None:
    assert raw_request(box, f"{V4}/create-remove-customer-job?customerKey=a".encode()) == 200


def test_error_messages_never_echo_the_key(box: VoyadoSandbox) -> None:
    response = create(box, "customerKey=person-secret&customerKey=person-secret")
    assert response.status_code == 400
    assert "person-secret" not in response.text


@pytest.mark.parametrize(
    ("query", "decoded"),
    [
        ("customerKey=a+b", "a b"),
        ("customerKey=a%2Bb", "a+b"),
        ("customerKey=a%20b", "a b"),
        ("customerKey=a%26b%3Dc%2Fd", "a&b=c/d"),
        ("customerKey=zo%C3%AB%F0%9F%98%80", "zoë😀"),
        ("customerKey=a/b?c:d@e", "a/b?c:d@e"),
    ],
)
def test_keys_are_decoded_like_a_servlet_form(box: VoyadoSandbox, query: str, decoded: str) -> None:
    assert create(box, query).status_code == 200
    assert box.requested_keys() == [decoded]


@pytest.mark.parametrize(
    ("data", "headers"),
    [
        (b"customerKey=a", {**KEY_HEADER, "Content-Type": "application/x-www-form-urlencoded"}),
        (b'{"customerKey": "a"}', {**KEY_HEADER, "Content-Type": "application/json"}),
        (b"x", KEY_HEADER),
        (b"", {**KEY_HEADER, "Content-Type": "application/json"}),
    ],
)
def test_create_takes_no_body_and_no_content_type(
    box: VoyadoSandbox, data: bytes, headers: dict[str, str]
) -> None:
    assert create(box, "customerKey=a", data=data, headers=headers).status_code == 400
    assert box.requested_keys() == []


@pytest.mark.parametrize("query", ["", "jid=", "jid=a&jid=b", "jid=a&verbose=1", "JID=a"])
def test_job_status_needs_exactly_one_jid(box: VoyadoSandbox, query: str) -> None:
    url = f"{box.base_url}{V4}/job-status?{query}"
    assert requests.get(url, headers=KEY_HEADER, timeout=5).status_code == 400


# --------------------------------------------------------------------------- job lifecycle


@pytest.mark.parametrize(
    ("durations", "expected"),
    [
        ((60.0, 0.0, 0.0), "created"),
        ((0.0, 60.0, 0.0), "waiting"),
        ((0.0, 0.0, 60.0), "running"),
        ((0.0, 0.0, 0.0), "done"),
    ],
)
def test_each_phase_is_reported(durations: tuple[float, float, float], expected: str) -> None:
    created, waiting, running = durations
    with VoyadoSandbox(
        created_seconds=created, waiting_seconds=waiting, running_seconds=running
    ) as sandbox:
        sandbox.add_customer("visitor-1")
        jid = create_for(sandbox, "visitor-1")
        assert word(sandbox, jid) == expected
        assert sandbox.customer_exists("visitor-1") is (expected != "done")


def test_a_job_moves_forward_through_its_lifecycle() -> None:
    order = ["created", "waiting", "running", "done"]
    with VoyadoSandbox(created_seconds=0.05, waiting_seconds=0.05, running_seconds=0.05) as sandbox:
        jid = create_for(sandbox, "visitor-1")
        seen: list[str] = []

        def done() -> bool:
            seen.append(word(sandbox, jid))
            return seen[-1] == "done"

        wait_until(done, timeout=5.0, interval=0.005)
    assert seen[0] == "created"
    assert [order.index(status) for status in seen] == sorted(order.index(s) for s in seen)


def test_defaults_finish_a_job_within_two_seconds() -> None:
    with VoyadoSandbox() as sandbox:
        jid = create_for(sandbox, "visitor-1")
        assert word(sandbox, jid) == "created"
        wait_until(lambda: word(sandbox, jid) == "done", timeout=3.0)


def test_known_and_unknown_keys_both_end_done_but_only_known_ones_are_removed(
    box: VoyadoSandbox,
) -> None:
    box.add_customer("known")
    box.add_customer("kept")
    known, unknown = create_for(box, "known"), create_for(box, "unknown")
    assert (word(box, known), word(box, unknown)) == ("done", "done")
    assert box.removed_customers() == ["known"]
    assert not box.customer_exists("known")
    assert box.customer_exists("kept")
    assert box.requested_keys() == ["known", "unknown"]


def test_removal_happens_when_the_job_ends_even_without_polling() -> None:
    with VoyadoSandbox(created_seconds=0.02, waiting_seconds=0.02, running_seconds=0.02) as sb:
        sb.add_customer("visitor-1")
        create_for(sb, "visitor-1")
        assert sb.customer_exists("visitor-1")
        wait_until(lambda: not sb.customer_exists("visitor-1"), timeout=5.0, interval=0.005)
        assert sb.removed_customers() == ["visitor-1"]


def test_removing_twice_removes_once(box: VoyadoSandbox) -> None:
    box.add_customer("visitor-1")
    first, second = create_for(box, "visitor-1"), create_for(box, "visitor-1")
    assert (word(box, first), word(box, second)) == ("done", "done")
    assert box.removed_customers() == ["visitor-1"]


def test_failed_jobs_report_error_and_remove_nothing(box: VoyadoSandbox) -> None:
    box.add_customer("visitor-1")
    box.fail_next_jobs(1)
    failed = create_for(box, "visitor-1")
    assert word(box, failed) == "error"
    assert box.customer_exists("visitor-1")
    retried = create_for(box, "visitor-1")
    assert word(box, retried) == "done"
    assert box.removed_customers() == ["visitor-1"]
    with pytest.raises(ValueError):
        box.fail_next_jobs(-1)


def test_unknown_and_forgotten_jids_are_not_found(box: VoyadoSandbox) -> None:
    assert status_of(box, "healthcheck").json() == {"jid": "healthcheck", "status": "not_found"}
    with VoyadoSandbox(created_seconds=60.0) as slow:
        slow.add_customer("visitor-1")
        jid = create_for(slow, "visitor-1")
        assert word(slow, jid) == "created"
        slow.forget_jobs()
        assert word(slow, jid) == "not_found"
        assert slow.customer_exists("visitor-1")


def test_odd_jids_are_echoed_as_sent(box: VoyadoSandbox) -> None:
    assert word(box, "a b&c=d/é") == "not_found"


# --------------------------------------------------------------------------- decoding


keys = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)


@given(key=keys)
def test_parse_query_decodes_what_quote_and_quote_plus_encode(key: str) -> None:
    for query in (
        "customerKey=" + quote(key, safe=""),
        urlencode({"customerKey": key}),
    ):
        assert parse_query(query) == {"customerKey": [key]}


@given(junk=st.text(alphabet='|"<>\\^`{} ', min_size=1, max_size=3))
def test_parse_query_rejects_unencoded_characters(junk: str) -> None:
    with pytest.raises(ArgumentError):
        parse_query(f"customerKey=a{junk}")


@pytest.fixture(scope="module")
def shared_box() -> Iterator[VoyadoSandbox]:
    with VoyadoSandbox(**FAST) as sandbox:
        yield sandbox


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=keys)
def test_any_key_sent_with_requests_params_arrives_intact(
    shared_box: VoyadoSandbox, key: str
) -> None:
    before = len(shared_box.requested_keys())
    url = f"{shared_box.base_url}{V4}/create-remove-customer-job"
    response = requests.post(url, params={"customerKey": key}, headers=KEY_HEADER, timeout=5)
    assert response.status_code == 200
    assert shared_box.requested_keys()[before:] == [key]


# --------------------------------------------------------------------------- faults and log


def test_injected_faults_are_served_then_normal_service_resumes(box: VoyadoSandbox) -> None:
    box.inject(Fault.rate_limited(retry_after=3), path_prefix=f"{V4}/create-remove")
    box.inject(Fault.status(500), path_prefix=f"{V4}/job-status")
    limited = create(box, "customerKey=a")
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "3")
    assert status_of(box, "x").status_code == 500
    assert box.requested_keys() == []
    assert create(box, "customerKey=a").status_code == 200
    assert box.pending_faults() == 0


def test_a_reset_after_processing_hides_a_created_job(box: VoyadoSandbox) -> None:
    box.inject(Fault.reset(after_processing=True), path_prefix=V4)
    with pytest.raises(requests.ConnectionError):
        create(box, "customerKey=a")
    assert box.requested_keys() == ["a"]


def test_call_log_holds_no_api_key(box: VoyadoSandbox) -> None:
    create(box, "customerKey=a")
    assert [(call.method, call.path, call.status) for call in box.calls] == [
        ("POST", f"{V4}/create-remove-customer-job", 200)
    ]
    assert DEFAULT_API_KEY not in repr(box.calls)


def test_construction_is_validated() -> None:
    with pytest.raises(ValueError):
        VoyadoSandbox(waiting_seconds=-1)
    with pytest.raises(ValueError):
        VoyadoSandbox(api_key="")
    with pytest.raises(ValueError):
        VoyadoSandbox().add_customer("")
