"""Tests of the Acoustic GDPR erasure sandbox itself, over real HTTP.

The sandbox is the yardstick for the erasure worker's Acoustic client, so it
must reject exactly what the vendor would; these tests pin that behaviour.
Waiting is always a deadline loop on a condition, never a fixed sleep.
"""

from __future__ import annotations

import csv
import http.client
import io
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.sandbox.acoustic import AcousticSandbox
from devtools.sandbox.acoustic_wire import ErasureCsvError, parse_erasure_csv
from devtools.sandbox.server import Fault, parse_json_body
from tests.support.waiting import wait_until

DB = 10091
CSV_TYPE = "text/csv;charset=UTF-8"
T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


def wait_for(condition: Callable[[], T | None], timeout: float = 5.0) -> T:
    """Poll ``condition`` until it returns something truthy, or fail at the deadline."""
    return wait_until(condition, timeout, "condition not met before the deadline", interval=0.005)


def token_form(**overrides: str) -> dict[str, str]:
    form = {
        "grant_type": "refresh_token",
        "client_id": "sandbox-client",
        "client_secret": "sandbox-secret",
        "refresh_token": "sandbox-refresh",
    }
    form.update(overrides)
    return form


def get_token(sandbox: AcousticSandbox) -> str:
    response = requests.post(f"{sandbox.base_url}/oauth/token", data=token_form(), timeout=5)
    assert response.status_code == 200
    token = response.json()["access_token"]
    assert isinstance(token, str)
    return token


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(
    sandbox: AcousticSandbox,
    token: str,
    body: bytes,
    *,
    database_id: int = DB,
    content_type: str | None = CSV_TYPE,
) -> requests.Response:
    headers = auth(token)
    if content_type is not None:
        headers["Content-Type"] = content_type
    url = f"{sandbox.base_url}/rest/databases/{database_id}/gdpr_erasure"
    return requests.post(url, data=body, headers=headers, timeout=5)


def get(sandbox: AcousticSandbox, token: str, path: str) -> requests.Response:
    url = f"{sandbox.base_url}{path}"
    return requests.get(url, headers=auth(token), allow_redirects=False, timeout=5)


def status_of(sandbox: AcousticSandbox, token: str, job_id: int) -> requests.Response:
    return get(sandbox, token, f"/rest/gdpr_jobs/{job_id}/status")


def submit_ok(sandbox: AcousticSandbox, token: str, body: bytes, database_id: int = DB) -> int:
    response = submit(sandbox, token, body, database_id=database_id)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert isinstance(job_id, int)
    return job_id


def wait_done(sandbox: AcousticSandbox, token: str, job_id: int) -> requests.Response:
    """Poll the status until it is no longer pending (303, FAILED or archived)."""

    def finished() -> requests.Response | None:
        response = status_of(sandbox, token, job_id)
        pending = response.status_code == 200 and job_status(response) in PENDING
        return None if pending else response

    return wait_for(finished)


def job_status(response: requests.Response) -> str:
    status = response.json()["data"]["status"]
    assert isinstance(status, str)
    return status


def result_of(sandbox: AcousticSandbox, token: str, job_id: int) -> dict[str, Any]:
    done = wait_done(sandbox, token, job_id)
    assert done.status_code == 303
    response = get(sandbox, token, f"/rest/gdpr_jobs/{job_id}/response")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def csv_body(
    pairs: list[tuple[str, str]], lineterminator: str = "\r\n", *, quote_all: bool = False
) -> bytes:
    buffer = io.StringIO(newline="")
    if quote_all:
        csv.writer(buffer, lineterminator=lineterminator, quoting=csv.QUOTE_ALL).writerows(pairs)
    else:
        csv.writer(buffer, lineterminator=lineterminator).writerows(pairs)
    return buffer.getvalue().encode("utf-8")


def entry(found: bool, deleted: bool, name: str, value: str) -> dict[str, Any]:
    """One element of the response's ``contacts`` list."""
    identifiers = [{"name": name, "value": value}]
    return {"contactFound": found, "contactDeleted": deleted, "gdprIdentifiers": identifiers}


PENDING = {"SUBMITTED", "WAITING", "IN_PROGRESS"}
EMPTY_META: dict[str, Any] = {
    "attributes": {},
    "generalErrors": [],
    "fieldErrors": {},
    "links": [],
    "nextPageUrl": None,
}


@pytest.fixture
def sandbox() -> Iterator[AcousticSandbox]:
    """Jobs finish at once, so tests only wait for what they are about."""
    with AcousticSandbox(job_start_after_seconds=0, job_duration_seconds=0) as box:
        box.add_database(DB, ("EMAIL", "CUSTOMER_ID"))
        yield box


@pytest.fixture
def token(sandbox: AcousticSandbox) -> str:
    return get_token(sandbox)


# --------------------------------------------------------------------------- OAuth


def test_token_endpoint_issues_a_bearer_token(sandbox: AcousticSandbox) -> None:
    response = requests.post(f"{sandbox.base_url}/oauth/token", data=token_form(), timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 14400
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        (token_form(grant_type="client_credentials"), 400, "unsupported_grant_type"),
        (token_form(client_id="someone-else"), 401, "invalid_client"),
        (token_form(client_secret="wrong"), 401, "invalid_client"),
        (token_form(refresh_token="stale"), 400, "invalid_grant"),
        ({"grant_type": "refresh_token", "client_id": "sandbox-client"}, 400, "invalid_request"),
    ],
)
def test_token_endpoint_rejects_bad_grants(
    sandbox: AcousticSandbox, form: dict[str, str], status: int, error: str
) -> None:
    response = requests.post(f"{sandbox.base_url}/oauth/token", data=form, timeout=5)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert "sandbox-secret" not in response.text


def test_token_endpoint_requires_a_form_body(sandbox: AcousticSandbox) -> None:
    url = f"{sandbox.base_url}/oauth/token"
    as_json = requests.post(url, json=token_form(), timeout=5)
    repeated = requests.post(url, data=[*token_form().items(), ("client_id", "x")], timeout=5)
    assert (as_json.status_code, as_json.json()["error"]) == (400, "invalid_request")
    assert (repeated.status_code, repeated.json()["error"]) == (400, "invalid_request")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic c2FuZGJveA=="}],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/rest/databases/{DB}/gdpr_erasure"),
        ("GET", "/rest/gdpr_jobs/1/status"),
        ("GET", "/rest/gdpr_jobs/1/response"),
    ],
)
def test_rest_calls_need_a_valid_bearer_token(
    sandbox: AcousticSandbox, headers: dict[str, str], method: str, path: str
) -> None:
    headers = {**headers, "Content-Type": CSV_TYPE}
    response = requests.request(
        method, f"{sandbox.base_url}{path}", data=b"EMAIL,a@x.com", headers=headers, timeout=5
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert sandbox.submitted_bodies(DB) == []


def test_expire_tokens_invalidates_issued_tokens_until_refreshed(
    sandbox: AcousticSandbox, token: str
) -> None:
    assert submit(sandbox, token, b"EMAIL,a@x.com").status_code == 202
    sandbox.expire_tokens()
    assert submit(sandbox, token, b"EMAIL,a@x.com").status_code == 401
    assert submit(sandbox, get_token(sandbox), b"EMAIL,a@x.com").status_code == 202


def test_tokens_expire_after_their_ttl() -> None:
    with AcousticSandbox(token_ttl_seconds=0.05) as box:
        box.add_database(DB)
        token = get_token(box)
        wait_for(lambda: submit(box, token, b"EMAIL,a@x.com").status_code == 401)
        response = requests.post(f"{box.base_url}/oauth/token", data=token_form(), timeout=5)
        assert response.json()["expires_in"] == 0.05


def test_long_lived_tokens_keep_working(sandbox: AcousticSandbox, token: str) -> None:
    for _ in range(3):
        assert submit(sandbox, token, b"EMAIL,a@x.com").status_code == 202


# --------------------------------------------------------------------------- submission


def test_submission_is_accepted_with_location(sandbox: AcousticSandbox, token: str) -> None:
    body = b"EMAIL,a@x.com\r\nCUSTOMER_ID,42\r\n"
    response = submit(sandbox, token, body)
    assert response.status_code == 202
    job_id = response.json()["id"]
    location = f"{sandbox.base_url}/rest/gdpr_jobs/{job_id}/status"
    assert response.headers["Location"] == location
    assert response.json() == {"location": location, "id": job_id}
    assert sandbox.submitted_bodies(DB) == [body.decode()]


def test_each_submission_is_a_new_job(sandbox: AcousticSandbox, token: str) -> None:
    first = submit_ok(sandbox, token, b"EMAIL,a@x.com")
    second = submit_ok(sandbox, token, b"EMAIL,a@x.com")
    assert first != second


def test_unknown_database_is_404(sandbox: AcousticSandbox, token: str) -> None:
    response = submit(sandbox, token, b"EMAIL,a@x.com", database_id=999)
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        (None, 415),
        ("text/plain;charset=UTF-8", 415),
        ("application/json", 415),
        ("application/x-www-form-urlencoded", 415),
        ("text/csv", 400),
        ("text/csv;charset=ISO-8859-1", 400),
        ("text/csv;charset=utf8", 400),
        ("text/csv;charset=UTF-8;charset=UTF-8", 400),
        ("text/csv;charset=UTF-8", 202),
        ("TEXT/CSV; Charset=utf-8", 202),
        ('text/csv; charset="UTF-8"', 202),
    ],
)
def test_content_type_must_be_csv_in_utf8(
    sandbox: AcousticSandbox, token: str, content_type: str | None, status: int
) -> None:
    response = submit(sandbox, token, b"EMAIL,a@x.com", content_type=content_type)
    assert response.status_code == status


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\r\n", id="only-a-line-break"),
        pytest.param(b"EMAIL,\xff\xfe@x.com", id="invalid-utf8"),
        pytest.param(b"PHONE,555", id="not-a-lookup-field"),
        pytest.param(b"email,a@x.com", id="column-case-differs"),
        pytest.param(b"COLUMN,VALUE\r\nEMAIL,a@x.com", id="header-line"),
        pytest.param(b"EMAIL,a@x.com,extra", id="three-fields"),
        pytest.param(b"a@x.com", id="one-field"),
        pytest.param(b"EMAIL,a@x.com\r\n\r\nEMAIL,b@x.com", id="blank-line"),
        pytest.param(b"EMAIL,", id="empty-value"),
        pytest.param(b'EMAIL,"a@x.com"junk', id="broken-quoting"),
        pytest.param(b"\xef\xbb\xbfEMAIL,a@x.com", id="byte-order-mark"),
    ],
)
def test_malformed_bodies_are_400(sandbox: AcousticSandbox, token: str, body: bytes) -> None:
    response = submit(sandbox, token, body)
    assert response.status_code == 400
    assert b"x.com" not in response.content  # errors never echo identifiers
    assert sandbox.submitted_bodies(DB) == []
    assert len(sandbox.received_bodies(DB)) == 1


def test_chunked_bodies_are_read(sandbox: AcousticSandbox, token: str) -> None:
    url = f"{sandbox.base_url}/rest/databases/{DB}/gdpr_erasure"
    chunks = iter([b"EMAIL,a@", b"x.com\r\n"])
    headers = {**auth(token), "Content-Type": CSV_TYPE}
    response = requests.post(url, data=chunks, headers=headers, timeout=5)
    assert response.status_code == 202
    assert sandbox.submitted_bodies(DB) == ["EMAIL,a@x.com\r\n"]


# --------------------------------------------------------------------------- job lifecycle


def test_pending_job_reports_submitted_then_waiting() -> None:
    with AcousticSandbox(job_start_after_seconds=60) as box:
        box.add_database(DB)
        box.add_contact(DB, {"EMAIL": "a@x.com"})
        token = get_token(box)
        job_id = submit_ok(box, token, b"EMAIL,a@x.com")
        first, second = status_of(box, token, job_id), status_of(box, token, job_id)
        assert first.status_code == second.status_code == 200
        assert first.json() == {"meta": EMPTY_META, "data": {"status": "SUBMITTED"}}
        assert job_status(second) == "WAITING"
        assert get(box, token, f"/rest/gdpr_jobs/{job_id}/response").status_code == 404
        assert box.contact_exists(DB, "EMAIL", "a@x.com")


def test_running_job_reports_in_progress() -> None:
    with AcousticSandbox(job_start_after_seconds=0, job_duration_seconds=60) as box:
        box.add_database(DB)
        box.add_contact(DB, {"EMAIL": "a@x.com"})
        token = get_token(box)
        job_id = submit_ok(box, token, b"EMAIL,a@x.com")
        assert job_status(status_of(box, token, job_id)) == "IN_PROGRESS"
        assert get(box, token, f"/rest/gdpr_jobs/{job_id}/response").status_code == 404
        assert box.contact_exists(DB, "EMAIL", "a@x.com")


def test_job_moves_through_its_lifecycle_to_a_303() -> None:
    with AcousticSandbox(job_start_after_seconds=0.05, job_duration_seconds=0.1) as box:
        box.add_database(DB)
        box.add_contact(DB, {"EMAIL": "a@x.com"})
        token = get_token(box)
        job_id = submit_ok(box, token, b"EMAIL,a@x.com")
        seen: list[str] = []

        def completed() -> requests.Response | None:
            response = status_of(box, token, job_id)
            if response.status_code == 303:
                return response
            seen.append(job_status(response))
            return None

        done = wait_for(completed)
        order = ["SUBMITTED", "WAITING", "IN_PROGRESS"]
        assert [order.index(status) for status in seen] == sorted(order.index(s) for s in seen)
        assert done.headers["Location"] == f"{box.base_url}/rest/gdpr_jobs/{job_id}/response"
        assert not box.contact_exists(DB, "EMAIL", "a@x.com")


def test_contacts_are_erased_by_completion_even_without_polling() -> None:
    with AcousticSandbox(job_start_after_seconds=0.02, job_duration_seconds=0.02) as box:
        box.add_database(DB)
        box.add_contact(DB, {"EMAIL": "a@x.com"})
        submit_ok(box, get_token(box), b"EMAIL,a@x.com")
        wait_for(lambda: not box.contact_exists(DB, "EMAIL", "a@x.com"))


def test_response_reports_each_line_in_order(sandbox: AcousticSandbox, token: str) -> None:
    sandbox.add_contact(DB, {"EMAIL": "a@x.com", "CUSTOMER_ID": "1"})
    sandbox.add_contact(DB, {"EMAIL": "kept@x.com", "CUSTOMER_ID": "2"})
    sandbox.add_contact(DB, {"EMAIL": "c@x.com", "CUSTOMER_ID": "3"})
    sandbox.set_undeletable(DB, "EMAIL", "kept@x.com")
    body = csv_body(
        [
            ("CUSTOMER_ID", "3"),
            ("EMAIL", "missing@x.com"),
            ("EMAIL", "kept@x.com"),
            ("EMAIL", "a@x.com"),
        ]
    )
    job_id = submit_ok(sandbox, token, body)
    result = result_of(sandbox, token, job_id)
    assert result["databaseId"] == DB
    assert result["timestamp"].endswith("Z")
    assert result["contacts"] == [
        entry(True, True, "CUSTOMER_ID", "3"),
        entry(False, False, "EMAIL", "missing@x.com"),
        entry(True, False, "EMAIL", "kept@x.com"),
        entry(True, True, "EMAIL", "a@x.com"),
    ]
    assert not sandbox.contact_exists(DB, "EMAIL", "c@x.com")
    assert sandbox.contact_exists(DB, "EMAIL", "kept@x.com")
    assert not sandbox.contact_exists(DB, "CUSTOMER_ID", "1")


def test_contact_erased_by_an_earlier_job_is_not_found(
    sandbox: AcousticSandbox, token: str
) -> None:
    sandbox.add_contact(DB, {"EMAIL": "a@x.com"})
    first = result_of(sandbox, token, submit_ok(sandbox, token, b"EMAIL,a@x.com"))
    second = result_of(sandbox, token, submit_ok(sandbox, token, b"EMAIL,a@x.com"))
    assert first["contacts"][0]["contactFound"] is True
    assert second["contacts"][0] == entry(False, False, "EMAIL", "a@x.com")


def test_erasure_only_touches_its_own_database(sandbox: AcousticSandbox, token: str) -> None:
    sandbox.add_database(2)
    sandbox.add_contact(DB, {"EMAIL": "a@x.com"})
    sandbox.add_contact(2, {"EMAIL": "a@x.com"})
    result_of(sandbox, token, submit_ok(sandbox, token, b"EMAIL,a@x.com", database_id=2))
    assert sandbox.contact_exists(DB, "EMAIL", "a@x.com")
    assert not sandbox.contact_exists(2, "EMAIL", "a@x.com")


def test_failed_jobs_report_failed_and_delete_nothing(sandbox: AcousticSandbox, token: str) -> None:
    sandbox.add_contact(DB, {"EMAIL": "a@x.com"})
    sandbox.fail_next_jobs(1)
    failed = submit_ok(sandbox, token, b"EMAIL,a@x.com")
    done = wait_done(sandbox, token, failed)
    assert (done.status_code, job_status(done)) == (200, "FAILED")
    assert get(sandbox, token, f"/rest/gdpr_jobs/{failed}/response").status_code == 404
    assert sandbox.contact_exists(DB, "EMAIL", "a@x.com")
    retried = submit_ok(sandbox, token, b"EMAIL,a@x.com")
    assert result_of(sandbox, token, retried)["contacts"][0]["contactDeleted"] is True


def test_archived_job_reports_plain_success_and_no_response() -> None:
    with AcousticSandbox(
        job_start_after_seconds=0, job_duration_seconds=0, archive_after_seconds=0.1
    ) as box:
        box.add_database(DB)
        token = get_token(box)
        job_id = submit_ok(box, token, b"EMAIL,a@x.com")
        archived = wait_for(lambda: status_of(box, token, job_id).status_code == 200)
        assert archived
        response = status_of(box, token, job_id)
        assert response.json() == {"meta": EMPTY_META, "data": {"status": "SUCCESS"}}
        assert "Location" not in response.headers
        assert get(box, token, f"/rest/gdpr_jobs/{job_id}/response").status_code == 404


def test_response_stays_available_before_archiving(sandbox: AcousticSandbox, token: str) -> None:
    job_id = submit_ok(sandbox, token, b"EMAIL,a@x.com")
    result_of(sandbox, token, job_id)
    assert status_of(sandbox, token, job_id).status_code == 303
    assert get(sandbox, token, f"/rest/gdpr_jobs/{job_id}/response").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/rest/gdpr_jobs/999/status",
        "/rest/gdpr_jobs/999/response",
        "/rest/gdpr_jobs/abc/status",
        "/rest/databases/abc/gdpr_erasure",
        "/rest/gdpr_jobs",
        "/oauth/authorize",
        "/",
    ],
)
def test_unknown_resources_are_404(sandbox: AcousticSandbox, token: str, path: str) -> None:
    assert get(sandbox, token, path).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", f"/rest/databases/{DB}/gdpr_erasure", "POST"),
        ("DELETE", "/rest/gdpr_jobs/1/status", "GET"),
        ("POST", "/rest/gdpr_jobs/1/response", "GET"),
        ("GET", "/oauth/token", "POST"),
    ],
)
def test_wrong_methods_are_405(
    sandbox: AcousticSandbox, token: str, method: str, path: str, allow: str
) -> None:
    response = requests.request(method, f"{sandbox.base_url}{path}", headers=auth(token), timeout=5)
    assert response.status_code == 405
    assert response.headers["Allow"] == allow


# --------------------------------------------------------------------------- CSV round trip

ROUND_TRIP_FIELDS = ("EMAIL", "内部会員", "CUSTOMER_ID")
identifier_values = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30)
identifier_pairs = st.lists(
    st.tuples(st.sampled_from(ROUND_TRIP_FIELDS), identifier_values), min_size=1, max_size=5
)


@pytest.fixture(scope="module")
def round_trip_sandbox() -> Iterator[tuple[AcousticSandbox, str]]:
    with AcousticSandbox(job_start_after_seconds=0, job_duration_seconds=0) as box:
        box.add_database(DB, ROUND_TRIP_FIELDS)
        yield box, get_token(box)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs=identifier_pairs)
def test_csv_written_by_python_round_trips_over_http(
    round_trip_sandbox: tuple[AcousticSandbox, str], pairs: list[tuple[str, str]]
) -> None:
    box, token = round_trip_sandbox
    result = result_of(box, token, submit_ok(box, token, csv_body(pairs)))
    parsed = [
        (entry["gdprIdentifiers"][0]["name"], entry["gdprIdentifiers"][0]["value"])
        for entry in result["contacts"]
    ]
    assert parsed == pairs


@given(pairs=identifier_pairs, quote_all=st.booleans())
def test_csv_parser_round_trips_python_csv(pairs: list[tuple[str, str]], quote_all: bool) -> None:
    assert parse_erasure_csv(csv_body(pairs, quote_all=quote_all), ROUND_TRIP_FIELDS) == pairs


@given(pairs=identifier_pairs)
def test_quote_all_with_bare_newlines_round_trips(pairs: list[tuple[str, str]]) -> None:
    body = csv_body(pairs, lineterminator="\n", quote_all=True)
    assert parse_erasure_csv(body, ROUND_TRIP_FIELDS) == pairs


def test_minimal_quoting_with_bare_newline_terminator_is_not_safe() -> None:
    """Python's writer quotes only lineterminator characters: a bare CR then splits a record.

    The sandbox cannot guess the intent, so clients must keep the default
    ``\r\n`` terminator (or quote every field).
    """
    body = csv_body([("EMAIL", "a\rb")], lineterminator="\n")
    assert body == b"EMAIL,a\rb\n"
    with pytest.raises(ErasureCsvError):
        parse_erasure_csv(body, ROUND_TRIP_FIELDS)


def test_quoted_commas_quotes_line_breaks_and_non_ascii(
    sandbox: AcousticSandbox, token: str
) -> None:
    sandbox.add_contact(DB, {"EMAIL": 'o"brien, jr\r\nåsa@x.com'})
    body = 'EMAIL,"o""brien, jr\r\nåsa@x.com"\r\n'.encode()
    result = result_of(sandbox, token, submit_ok(sandbox, token, body))
    assert result["contacts"][0]["contactDeleted"] is True
    with pytest.raises(ErasureCsvError):
        parse_erasure_csv(b'EMAIL,"unterminated', ("EMAIL",))


# --------------------------------------------------------------------------- fault injection


def test_status_fault_is_consumed_then_normal_service_resumes(
    sandbox: AcousticSandbox, token: str
) -> None:
    sandbox.inject(Fault.status(503), path_prefix="/rest/databases", times=2)
    assert submit(sandbox, token, b"EMAIL,a@x.com").status_code == 503
    assert submit(sandbox, token, b"EMAIL,a@x.com").status_code == 503
    assert submit(sandbox, token, b"EMAIL,a@x.com").status_code == 202
    assert sandbox.submitted_bodies(DB) == ["EMAIL,a@x.com"]
    assert sandbox.pending_faults() == 0


def test_fault_only_hits_matching_paths(sandbox: AcousticSandbox, token: str) -> None:
    sandbox.inject(Fault.status(500), path_prefix="/rest/gdpr_jobs")
    job_id = submit_ok(sandbox, token, b"EMAIL,a@x.com")
    assert sandbox.pending_faults() == 1
    assert status_of(sandbox, token, job_id).status_code == 500
    assert status_of(sandbox, token, job_id).status_code == 303


def test_rate_limit_fault_sends_retry_after(sandbox: AcousticSandbox, token: str) -> None:
    sandbox.inject(Fault.rate_limited(retry_after=2))
    response = submit(sandbox, token, b"EMAIL,a@x.com")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert sandbox.submitted_bodies(DB) == []


def test_delay_fault_slows_the_response(sandbox: AcousticSandbox, token: str) -> None:
    sandbox.inject(Fault.delay(0.3), path_prefix="/rest")
    started = time.monotonic()
    response = submit(sandbox, token, b"EMAIL,a@x.com")
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 202
    sandbox.inject(Fault.delay(1.0), path_prefix="/rest")
    url = f"{sandbox.base_url}/rest/gdpr_jobs/1/status"
    with pytest.raises(requests.Timeout):
        requests.get(url, headers=auth(token), allow_redirects=False, timeout=0.1)


def test_reset_fault_drops_the_connection(sandbox: AcousticSandbox, token: str) -> None:
    sandbox.inject(Fault.reset(), path_prefix="/rest")
    with pytest.raises(requests.ConnectionError):
        submit(sandbox, token, b"EMAIL,a@x.com")
    assert sandbox.submitted_bodies(DB) == []
    assert sandbox.calls[-1].status is None
    assert sandbox.calls[-1].fault == "reset"
    assert submit(sandbox, token, b"EMAIL,a@x.com").status_code == 202


@pytest.mark.parametrize(
    "fault", [Fault.reset(after_processing=True), Fault.status(500, after_processing=True)]
)
def test_faults_after_processing_hide_a_created_job(
    sandbox: AcousticSandbox, token: str, fault: Fault
) -> None:
    sandbox.inject(fault, path_prefix="/rest/databases")
    try:
        response: requests.Response | None = submit(sandbox, token, b"EMAIL,a@x.com")
    except requests.ConnectionError:
        response = None
    assert response is None or response.status_code == 500
    assert sandbox.submitted_bodies(DB) == ["EMAIL,a@x.com"]
    assert status_of(sandbox, token, 1).status_code == 303


def test_fault_constructors_validate_arguments(sandbox: AcousticSandbox) -> None:
    with pytest.raises(ValueError):
        Fault.status(200)
    with pytest.raises(ValueError):
        Fault.delay(-1)
    with pytest.raises(ValueError):
        sandbox.inject(Fault.reset(), times=0)


# --------------------------------------------------------------------------- transport and log


def test_call_log_records_requests_without_bodies(sandbox: AcousticSandbox, token: str) -> None:
    submit(sandbox, token, b"EMAIL,secret-person@x.com")
    get(sandbox, token, "/rest/gdpr_jobs/1/status?verbose=1")
    calls = sandbox.calls
    assert [(c.method, c.path, c.query, c.status) for c in calls] == [
        ("POST", "/oauth/token", "", 200),
        ("POST", f"/rest/databases/{DB}/gdpr_erasure", "", 202),
        ("GET", "/rest/gdpr_jobs/1/status", "verbose=1", 303),
    ]
    assert calls[0].timestamp <= calls[1].timestamp <= calls[2].timestamp
    assert "secret-person" not in repr(calls)
    assert token not in repr(calls)
    calls.clear()
    assert len(sandbox.calls) == 3


def test_connections_are_kept_alive_with_content_length(
    sandbox: AcousticSandbox, token: str
) -> None:
    host, port = sandbox.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        headers = {**auth(token), "Content-Type": CSV_TYPE}
        connection.request("POST", f"/rest/databases/{DB}/gdpr_erasure", b"EMAIL,a@x.com", headers)
        first = connection.getresponse()
        first.read()
        socket_after_first = connection.sock
        connection.request("GET", "/rest/gdpr_jobs/1/status", headers=auth(token))
        second = connection.getresponse()
        second.read()
        assert (first.status, second.status) == (202, 303)
        assert connection.sock is socket_after_first is not None
        assert first.getheader("Content-Length") is not None
        assert second.getheader("Content-Length") is not None
    finally:
        connection.close()


def test_stop_closes_kept_alive_connections() -> None:
    box = AcousticSandbox()
    base_url = box.start()
    session = requests.Session()
    assert session.post(f"{base_url}/oauth/token", data=token_form(), timeout=5).ok
    box.stop()
    with pytest.raises(requests.ConnectionError):
        session.post(f"{base_url}/oauth/token", data=token_form(), timeout=5)
    with pytest.raises(RuntimeError):
        _ = box.base_url


def test_database_setup_is_validated(sandbox: AcousticSandbox) -> None:
    with pytest.raises(ValueError):
        sandbox.add_database(1, ("A", "B", "C", "D", "E", "F"))
    with pytest.raises(ValueError):
        sandbox.add_database(1, ())
    with pytest.raises(ValueError):
        sandbox.add_database(DB)
    with pytest.raises(ValueError):
        sandbox.add_contact(12345, {"EMAIL": "a@x.com"})
    sandbox.add_database(1, ("A", "B", "C", "D", "E"))


def test_shared_json_body_helper_is_strict() -> None:
    assert parse_json_body(b'{"a": [1, "\xc3\xa5"]}') == {"a": [1, "å"]}
    for bad in (b"", b"{", b"\xff"):
        with pytest.raises(ValueError):
            parse_json_body(bad)
