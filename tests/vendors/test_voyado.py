"""The Voyado adapter over real HTTP against the Voyado sandbox.

Jobs finish in about 0.06 s in the sandbox; tests poll with a deadline instead of
sleeping. In-call backoff sleeps are injected and recorded. The contract scenarios
(happy path, 429, 500, timeouts, resets, 403, the one-key limit) run through the
harness the shared contract suite will use, so it is exercised here too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from consumer.ledger.records import WorkItem
from consumer.model import Status
from consumer.vendors.base import (
    ItemOutcome,
    PermanentVendorError,
    PollResult,
    RetryableVendorError,
    SubmitResult,
    SubmittedJob,
    VendorAuthError,
)
from consumer.vendors.http import VendorHttp
from consumer.vendors.voyado import (
    API_PREFIXES,
    JOB_ERROR_DETAIL,
    UNKNOWN_JOB_FAILED_DETAIL,
    UNKNOWN_JOB_RESEND_DETAIL,
    VoyadoAdapter,
    VoyadoSettings,
    remove_job_url,
    status_result,
)
from devtools.sandbox.server import Fault
from devtools.sandbox.voyado import API_PREFIXES as SANDBOX_PREFIXES
from devtools.sandbox.voyado import VoyadoSandbox, parse_query
from tests.vendors.harness import Rig
from tests.vendors.harness import due_job as due
from tests.vendors.harness_voyado import Harness

HARNESS = Harness()
SUBMIT_PATH = HARNESS.submit_path
STATUS_PATH = f"{API_PREFIXES['v4']}/job-status"


def item(value: str, **changes: Any) -> WorkItem:
    (built,) = HARNESS.items([value])
    return replace(built, **changes)


def outcome_map(result: PollResult | SubmitResult) -> dict[int, tuple[Status, str | None]]:
    return {outcome.item_id: (outcome.status, outcome.detail) for outcome in result.outcomes}


VoyadoRig = Rig[VoyadoSandbox, VoyadoAdapter]


def posts(rig: VoyadoRig) -> int:
    return rig.count(method="POST")


@pytest.fixture
def rig() -> Iterator[VoyadoRig]:
    with HARNESS.running() as sandbox:
        built = HARNESS.rig(sandbox)
        try:
            yield built
        finally:
            built.adapter.close()


@pytest.fixture
def slow_rig() -> Iterator[VoyadoRig]:
    """Jobs stay `created` for a minute."""
    with VoyadoSandbox(created_seconds=60.0) as sandbox:
        built = HARNESS.rig(sandbox)
        try:
            yield built
        finally:
            built.adapter.close()


# --------------------------------------------------------------------------- submit and poll


def test_known_and_unknown_keys_both_complete(rig: VoyadoRig) -> None:
    rig.sandbox.add_customer("known-visitor")
    known, unknown = item("known-visitor"), item("unknown-visitor")
    ok_before = HARNESS.calls("submit", "ok")

    result = rig.adapter.submit([known, unknown])

    assert [(job.destination, job.item_ids) for job in result.jobs] == [
        (None, (known.item_id,)),
        (None, (unknown.item_id,)),
    ]
    assert result.outcomes == ()
    assert HARNESS.calls("submit", "ok") - ok_before == 2
    assert rig.sandbox.requested_keys() == ["known-visitor", "unknown-visitor"]
    for job, target in zip(result.jobs, (known, unknown), strict=True):
        polled = rig.poll_until_done(due(job, [target]))
        assert polled == PollResult(
            Status.COMPLETED, (ItemOutcome(target.item_id, Status.COMPLETED),)
        )
    assert rig.sandbox.removed_customers() == ["known-visitor"]


def test_submission_is_a_bodiless_post_with_the_api_key(rig: VoyadoRig) -> None:
    job = rig.submit_one_job([item("visitor-1")])
    (call,) = rig.sandbox.calls
    assert (call.method, call.path, call.status) == ("POST", SUBMIT_PATH, 200)
    assert rig.sandbox.requested_keys() == ["visitor-1"]  # the sandbox refuses bodies
    assert job.status is Status.SUBMITTED
    assert job.vendor_job_id


def test_open_statuses_keep_the_job_open(slow_rig: VoyadoRig) -> None:
    target = item("visitor-1")
    job = slow_rig.submit_one_job([target])
    assert slow_rig.adapter.poll(due(job, [target])) == PollResult(Status.SUBMITTED)
    assert slow_rig.sandbox.calls[-1].path == STATUS_PATH


def test_running_job_is_in_progress() -> None:
    with VoyadoSandbox(created_seconds=0, waiting_seconds=0, running_seconds=60) as sandbox:
        built = HARNESS.rig(sandbox)
        target = item("visitor-1")
        job = built.submit_one_job([target])
        assert built.adapter.poll(due(job, [target])) == PollResult(Status.IN_PROGRESS)
        built.adapter.close()


AWKWARD_KEYS = [
    "e3921377-18a2-47c9-a449-06b894898623",
    "a&customerKey=b",
    "x=y",
    "path/with/slashes",
    "spaces and+plus",
    "100% sure?#frag",
    "zoë.åländ",
    "用户-鍵",
    "emoji-😀",
    " leading and trailing ",
]


def test_awkward_keys_reach_voyado_intact(rig: VoyadoRig) -> None:
    for key in AWKWARD_KEYS:
        rig.submit_one_job([item(key)])
    assert rig.sandbox.requested_keys() == AWKWARD_KEYS


@given(key=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=60))
def test_remove_job_url_round_trips_any_key(key: str) -> None:
    url = remove_job_url("https://c1.elevate-api.cloud/api/admin/v4/event-data", key)
    base, _, query = url.partition("?")
    assert base == "https://c1.elevate-api.cloud/api/admin/v4/event-data/create-remove-customer-job"
    assert parse_query(query) == {"customerKey": [key]}


@pytest.fixture(scope="module")
def shared_rig() -> Iterator[VoyadoRig]:
    with HARNESS.running() as sandbox:
        built = HARNESS.rig(sandbox)
        yield built
        built.adapter.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=40))
def test_any_key_is_submitted_exactly_over_http(shared_rig: VoyadoRig, key: str) -> None:
    before = len(shared_rig.sandbox.requested_keys())
    shared_rig.submit_one_job([item(key)])
    assert shared_rig.sandbox.requested_keys()[before:] == [key]


@pytest.mark.parametrize("version", ["v2", "v3", "v4"])
def test_api_version_selects_the_path_generation(version: str) -> None:
    with HARNESS.running() as sandbox:
        assert isinstance(sandbox, VoyadoSandbox)
        built = HARNESS.rig(sandbox, api_version=version)
        target = item("visitor-1")
        job = built.submit_one_job([target])
        assert built.poll_until_done(due(job, [target])).job_status is Status.COMPLETED
        built.adapter.check()
        built.adapter.close()
    prefix = SANDBOX_PREFIXES[version]
    assert {call.path for call in sandbox.calls} == {
        f"{prefix}/create-remove-customer-job",
        f"{prefix}/job-status",
    }


def test_adapter_and_sandbox_agree_on_the_paths() -> None:
    assert dict(API_PREFIXES) == dict(SANDBOX_PREFIXES)


def test_failed_job_fails_with_a_detail(rig: VoyadoRig) -> None:
    rig.sandbox.fail_next_jobs(1)
    target = item("visitor-1")
    job = rig.submit_one_job([target])
    assert rig.poll_until_done(due(job, [target])) == PollResult(
        Status.FAILED, detail=JOB_ERROR_DETAIL
    )


def test_unknown_job_is_resent_once_then_failed(slow_rig: VoyadoRig) -> None:
    first, resent = item("visitor-1"), item("visitor-2", attempts=1)
    job = slow_rig.submit_one_job([first])
    slow_rig.sandbox.forget_jobs()

    result = slow_rig.adapter.poll(due(job, [first, resent]))

    assert result.job_status is Status.COMPLETED
    assert outcome_map(result) == {
        first.item_id: (Status.QUEUED, UNKNOWN_JOB_RESEND_DETAIL),
        resent.item_id: (Status.FAILED, UNKNOWN_JOB_FAILED_DETAIL),
    }


def test_any_jid_is_asked_about_intact(rig: VoyadoRig) -> None:
    target = item("visitor-1")
    ghost = SubmittedJob("a b&jid=c/é", None, (target.item_id,))
    result = rig.adapter.poll(due(ghost, [target]))
    assert outcome_map(result) == {target.item_id: (Status.QUEUED, UNKNOWN_JOB_RESEND_DETAIL)}
    assert parse_query(rig.sandbox.calls[-1].query) == {"jid": ["a b&jid=c/é"]}


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("created", Status.SUBMITTED),
        ("started", Status.SUBMITTED),
        ("waiting", Status.SUBMITTED),
        ("running", Status.IN_PROGRESS),
        ("done", Status.COMPLETED),
        ("error", Status.FAILED),
        ("not_found", Status.COMPLETED),
    ],
)
def test_status_words(word: str, expected: Status) -> None:
    job = due(SubmittedJob("jid-1", None, (1,)), [item("visitor-1")])
    assert status_result(job, word).job_status is expected


def test_unknown_status_word_keeps_the_job_open_and_is_not_echoed_when_odd() -> None:
    job = due(SubmittedJob("jid-1", None, (1,)), [item("visitor-1")])
    paused = status_result(job, "paused")
    assert paused.job_status is Status.SUBMITTED and "'paused'" in (paused.detail or "")
    assert "'?'" in (status_result(job, "visitor-1@example.com").detail or "")


# --------------------------------------------------------------------------- rejected submissions


def test_rejected_key_is_a_permanent_error(rig: VoyadoRig) -> None:
    rejected = HARNESS.calls("submit", "client_error")
    with pytest.raises(PermanentVendorError, match="HTTP 400"):
        rig.adapter.submit([item("")])  # Voyado rejects an empty customerKey
    assert HARNESS.calls("submit", "client_error") - rejected == 1
    assert rig.sandbox.requested_keys() == []


def test_a_rejected_item_fails_alone(rig: VoyadoRig) -> None:
    rejected, sent = item(""), item("visitor-1")
    result = rig.adapter.submit([rejected, sent])
    assert [job.item_ids for job in result.jobs] == [(sent.item_id,)]
    status, detail = outcome_map(result)[rejected.item_id]
    assert status is Status.FAILED
    assert detail is not None
    assert detail.startswith("voyado submit: HTTP 400")


def test_items_of_another_identity_type_fail_without_a_call(rig: VoyadoRig) -> None:
    with pytest.raises(PermanentVendorError, match="'customer_key', not 'email'"):
        rig.adapter.submit([item("a@example.com", identity_type="email")])
    assert rig.sandbox.calls == []


# --------------------------------------------------------------------------- credentials


def test_refused_credentials_are_auth_errors_everywhere(rig: VoyadoRig) -> None:
    target = item("visitor-1")
    job = rig.submit_one_job([target])
    HARNESS.refuse_credentials(rig.sandbox)
    for action in (
        lambda: rig.adapter.submit([item("visitor-2")]),
        lambda: rig.adapter.poll(due(job, [target])),
        rig.adapter.check,
    ):
        with pytest.raises(VendorAuthError, match="HTTP 403") as raised:
            action()
        assert "Incorrect cluster credentials" in str(raised.value)
    assert rig.sandbox.requested_keys() == ["visitor-1"]
    assert rig.sleeps.waits == []


def test_refused_credentials_after_a_job_keep_it_and_leave_the_rest(rig: VoyadoRig) -> None:
    sent, refused, later = item("visitor-1"), item("visitor-2"), item("visitor-3")
    rig.sandbox.inject(Fault.delay(0), path_prefix=SUBMIT_PATH)  # first call served normally
    rig.sandbox.inject(Fault.status(403), path_prefix=SUBMIT_PATH)

    result = rig.adapter.submit([sent, refused, later])

    assert [job.item_ids for job in result.jobs] == [(sent.item_id,)]
    assert result.outcomes == ()  # the dispatcher releases the unmentioned items
    assert rig.sandbox.requested_keys() == ["visitor-1"]
    assert posts(rig) == 2


def test_check_asks_job_status_about_a_dummy_jid(rig: VoyadoRig) -> None:
    auth_ok = HARNESS.calls("auth", "ok")
    rig.adapter.check()
    (call,) = rig.sandbox.calls
    assert (call.method, call.path, call.query, call.status) == (
        "GET",
        STATUS_PATH,
        "jid=healthcheck",
        200,
    )
    assert HARNESS.calls("auth", "ok") - auth_ok == 1


def test_check_reports_a_rejected_check_as_permanent_not_as_credentials(rig: VoyadoRig) -> None:
    rig.sandbox.inject(Fault.status(400), path_prefix=STATUS_PATH)
    with pytest.raises(PermanentVendorError, match="voyado auth: HTTP 400") as raised:
        rig.adapter.check()
    assert not isinstance(raised.value, VendorAuthError)


def test_check_names_a_wrong_api_version() -> None:
    with VoyadoSandbox(serve_v2=False) as sandbox:
        built = HARNESS.rig(sandbox, api_version="v2")
        with pytest.raises(PermanentVendorError, match="api_version v2 wrong"):
            built.adapter.check()
        built.adapter.close()


def test_errors_never_hold_the_key_or_the_api_key(rig: VoyadoRig) -> None:
    key = "person-secret-key"
    rig.sandbox.inject(Fault.status(400), path_prefix=SUBMIT_PATH)
    rig.sandbox.inject(Fault.status(500), path_prefix=SUBMIT_PATH)
    messages = []
    for _ in range(2):
        with pytest.raises((PermanentVendorError, RetryableVendorError)) as raised:
            rig.adapter.submit([item(key)])
        messages.append(str(raised.value))
    settings = HARNESS.settings(rig.sandbox)
    api_key = settings.api_key.get_secret_value()
    assert not any(key in message or api_key in message for message in messages)


# --------------------------------------------------------------------------- transient failures


def test_rate_limited_submit_waits_retry_after_and_is_resent(rig: VoyadoRig) -> None:
    rig.sandbox.inject(Fault.rate_limited(retry_after=2), path_prefix=SUBMIT_PATH)
    limited = HARNESS.calls("submit", "rate_limited")
    rig.submit_one_job([item("visitor-1")])
    assert len(rig.sleeps.waits) == 1
    assert rig.sleeps.waits[0] >= 2.0
    assert posts(rig) == 2
    assert rig.sandbox.requested_keys() == ["visitor-1"]
    assert HARNESS.calls("submit", "rate_limited") - limited == 1


def test_a_long_retry_after_is_handed_to_the_dispatcher(rig: VoyadoRig) -> None:
    rig.sandbox.inject(Fault.rate_limited(retry_after=120), path_prefix=SUBMIT_PATH)
    with pytest.raises(RetryableVendorError) as raised:
        rig.adapter.submit([item("visitor-1")])
    assert raised.value.retry_after == 120.0
    assert rig.sleeps.waits == []


@pytest.mark.parametrize("after_processing", [False, True])
def test_server_error_on_submit_is_not_resent_in_call(
    rig: VoyadoRig, after_processing: bool
) -> None:
    rig.sandbox.inject(
        Fault.status(500, after_processing=after_processing), path_prefix=SUBMIT_PATH
    )
    server_errors = HARNESS.calls("submit", "server_error")
    with pytest.raises(RetryableVendorError, match="HTTP 500"):
        rig.adapter.submit([item("visitor-1")])
    assert posts(rig) == 1
    assert rig.sleeps.waits == []
    assert len(rig.sandbox.requested_keys()) == int(after_processing)
    assert HARNESS.calls("submit", "server_error") - server_errors == 1


def test_unavailable_vendor_is_tried_again_in_call(rig: VoyadoRig) -> None:
    rig.sandbox.inject(Fault.status(503), path_prefix=SUBMIT_PATH)
    rig.submit_one_job([item("visitor-1")])
    assert posts(rig) == 2
    assert len(rig.sleeps.waits) == 1


def test_after_a_transient_failure_the_rest_of_the_batch_waits(rig: VoyadoRig) -> None:
    sent, failed, unsent = item("visitor-1"), item("visitor-2"), item("visitor-3")
    rig.sandbox.inject(Fault.delay(0), path_prefix=SUBMIT_PATH)
    rig.sandbox.inject(Fault.status(500), path_prefix=SUBMIT_PATH)

    result = rig.adapter.submit([sent, failed, unsent])

    assert [job.item_ids for job in result.jobs] == [(sent.item_id,)]
    assert outcome_map(result) == {
        failed.item_id: (Status.QUEUED, "voyado submit: HTTP 500 (injected_fault)")
    }
    assert posts(rig) == 2


@pytest.mark.parametrize("after_processing", [False, True])
def test_connection_reset_on_submit_is_handed_back(rig: VoyadoRig, after_processing: bool) -> None:
    rig.sandbox.inject(Fault.reset(after_processing=after_processing), path_prefix=SUBMIT_PATH)
    resets = HARNESS.calls("submit", "connection_error")
    with pytest.raises(RetryableVendorError, match="connection failed"):
        rig.adapter.submit([item("visitor-1")])
    assert posts(rig) == 1
    assert HARNESS.calls("submit", "connection_error") - resets == 1


def test_slow_submit_times_out_and_is_handed_back() -> None:
    with HARNESS.running() as sandbox:
        assert isinstance(sandbox, VoyadoSandbox)
        built = HARNESS.rig(sandbox, timeout_seconds=0.2)
        sandbox.inject(Fault.delay(2.0), path_prefix=SUBMIT_PATH)
        timeouts = HARNESS.calls("submit", "timeout")
        with pytest.raises(RetryableVendorError, match=r"no answer within 0.2s"):
            built.adapter.submit([item("visitor-1")])
        built.adapter.close()
    assert posts(built) == 1
    assert HARNESS.calls("submit", "timeout") - timeouts == 1


def test_poll_survives_a_reset_and_a_slow_answer() -> None:
    with HARNESS.running() as sandbox:
        assert isinstance(sandbox, VoyadoSandbox)
        built = HARNESS.rig(sandbox, timeout_seconds=0.3)
        target = item("visitor-1")
        job = built.submit_one_job([target])
        sandbox.inject(Fault.reset(), path_prefix=STATUS_PATH)
        sandbox.inject(Fault.delay(2.0), path_prefix=STATUS_PATH)
        timeouts, resets = (
            HARNESS.calls("poll", "timeout"),
            HARNESS.calls("poll", "connection_error"),
        )
        result = built.poll_until_done(due(job, [target]))
        built.adapter.close()
    assert result.job_status is Status.COMPLETED
    assert len(built.sleeps.waits) == 2
    assert HARNESS.calls("poll", "timeout") - timeouts == 1
    assert HARNESS.calls("poll", "connection_error") - resets == 1


def test_poll_gives_up_after_three_server_errors(rig: VoyadoRig) -> None:
    target = item("visitor-1")
    job = rig.submit_one_job([target])
    rig.sandbox.inject(Fault.status(502), path_prefix=STATUS_PATH, times=3)
    with pytest.raises(RetryableVendorError, match="HTTP 502"):
        rig.adapter.poll(due(job, [target]))
    assert len(rig.sleeps.waits) == 2


# --------------------------------------------------------------------------- odd vendor answers


class CannedHttp(VendorHttp):
    """Answers every call with one canned response: answers the sandbox never gives."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__("voyado", timeout_seconds=1.0)
        self._status, self._body = status, body

    def call(self, *args: Any, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = self._status
        response._content = self._body
        return response


def canned_adapter(status: int, body: bytes) -> VoyadoAdapter:
    settings = VoyadoSettings(base_url="https://c1.elevate-api.cloud", api_key=SecretStr("k"))
    return VoyadoAdapter(settings, CannedHttp(status, body))


def test_status_words_are_read_case_insensitively() -> None:
    job = due(SubmittedJob("jid-1", None, (1,)), [item("visitor-1")])
    adapter = canned_adapter(200, b'{"jid": "jid-1", "status": " Running "}')
    assert adapter.poll(job) == PollResult(Status.IN_PROGRESS)


def test_accepted_without_a_jid_is_sent_again() -> None:
    with pytest.raises(RetryableVendorError, match="without a jid"):
        canned_adapter(200, b'{"status": "created"}').submit([item("visitor-1")])


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (200, b"<html>", "not a JSON object"),
        (200, b'["created"]', "not a JSON object"),
    ],
)
def test_odd_submit_answers_are_permanent(status: int, body: bytes, message: str) -> None:
    with pytest.raises(PermanentVendorError, match=message):
        canned_adapter(status, body).submit([item("visitor-1")])


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (200, b'{"jid": "j"}', "without a status"),
        (200, b"null", "not a JSON object"),
        (400, b'{"error": "bad_request", "message": "jid"}', "HTTP 400 \\(bad_request: jid\\)"),
    ],
)
def test_odd_status_answers_are_permanent(status: int, body: bytes, message: str) -> None:
    job = due(SubmittedJob("jid-1", None, (1,)), [item("visitor-1")])
    with pytest.raises(PermanentVendorError, match=message):
        canned_adapter(status, body).poll(job)


# --------------------------------------------------------------------------- harness


def test_the_harness_fits_the_contract_suite() -> None:
    harness = HARNESS
    assert harness.max_ids_per_call == 1
    assert HARNESS.has_tokens is False
    assert harness.expected.existing is harness.expected.unknown is Status.COMPLETED


def test_harness_settings_keep_the_one_key_limit() -> None:
    with HARNESS.running() as sandbox:
        assert HARNESS.settings(sandbox, batch_size=50).batch_size == 1
        HARNESS.expire_tokens(sandbox)  # documented no-op; must not break anything
        url = f"{sandbox.base_url}{SUBMIT_PATH}?customerKey=a&customerKey=b"
        response = requests.post(url, headers={"Api-Key": "sandbox-voyado-api-key"}, timeout=5)
        assert response.status_code == 400


def test_harness_seeds_existing_keys(rig: VoyadoRig) -> None:
    HARNESS.seed(rig.sandbox, "seeded")
    target = item("seeded")
    job = rig.submit_one_job([target])
    rig.poll_until_done(due(job, [target]))
    assert rig.sandbox.removed_customers() == ["seeded"]
