"""The Acquia CDP adapter over real HTTP against the Acquia CDP sandbox.

Acquia has no status API, so everything is decided at submit time. In-call backoff
sleeps are injected and recorded; nothing here sleeps to synchronise.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from consumer.ledger.records import DueJob, WorkItem
from consumer.model import Regulation, Status
from consumer.vendors.acquia_cdp import (
    MAX_CALLS_PER_SUBMIT,
    AcquiaCdpAdapter,
    AcquiaCdpSettings,
    answer_verdicts,
    basic_authorization,
    erasure_body,
)
from consumer.vendors.base import (
    ItemOutcome,
    PermanentVendorError,
    RetryableVendorError,
    SubmitResult,
    VendorAuthError,
)
from consumer.vendors.http import VendorHttp
from devtools.sandbox.acquia_cdp import (
    DEFAULT_PASSWORD,
    DEFAULT_TENANT_ID,
    AcquiaCdpSandbox,
    SessionEvent,
)
from devtools.sandbox.acquia_cdp_wire import parse_erasure_body
from devtools.sandbox.server import Fault, Response, Router, Sandbox, json_response
from tests.vendors.harness import RecordedSleeps, Rig
from tests.vendors.harness_acquia_cdp import Harness

HARNESS = Harness()
AcquiaRig = Rig[AcquiaCdpSandbox, AcquiaCdpAdapter]

TENANT = DEFAULT_TENANT_ID
ERASURE_PATH = f"/v2/{TENANT}/dw/dataerasure"
NOW = datetime(2024, 5, 6, 7, 8, 9, 987654, tzinfo=UTC)
INVALID_ID = "INVALID_CUSTOMER_ID: a customer id in the request is invalid"
_ids = itertools.count(1)


def item(
    value: str,
    regulation: Regulation = Regulation.GDPR,
    requested_at: datetime = NOW,
    identity_type: str = "customer_id",
) -> WorkItem:
    return WorkItem(
        item_id=next(_ids),
        request_id="0b7e4d1c-2f3a-4c5b-8d6e-7f8091a2b3c4",
        vendor="acquia_cdp",
        identity_type=identity_type,
        identity_value=value,
        destination=None,
        regulation=regulation,
        requested_at=requested_at,
        attempts=0,
        status=Status.QUEUED,
    )


def by_value(
    items: Sequence[WorkItem], result: SubmitResult
) -> dict[str, tuple[Status, str | None]]:
    """Outcomes keyed by identity value (each item must have exactly one outcome)."""
    values = {entry.item_id: entry.identity_value for entry in items}
    ids = [outcome.item_id for outcome in result.outcomes]
    assert sorted(ids) == sorted(values), "every item needs exactly one outcome"
    return {values[o.item_id]: (o.status, o.detail) for o in result.outcomes}


def statuses(items: Sequence[WorkItem], result: SubmitResult) -> dict[str, Status]:
    return {value: status for value, (status, _) in by_value(items, result).items()}


def erasure_calls(rig: AcquiaRig) -> list[int | None]:
    return [call.status for call in rig.sandbox.calls if call.path == ERASURE_PATH]


def sent_ids(rig: AcquiaRig) -> list[list[str]]:
    """Customer ids of each call answered 200, in order."""
    return [list(record.customer_ids) for record in rig.sandbox.erasures()]


def accepted_ids(rig: AcquiaRig) -> list[str]:
    return [value for ids in sent_ids(rig) for value in ids]


def make_settings(sandbox: Sandbox, **overrides: Any) -> AcquiaCdpSettings:
    return HARNESS.settings(sandbox, **({"timeout_seconds": 2.0} | overrides))


def make_rig(sandbox: AcquiaCdpSandbox, **overrides: Any) -> AcquiaRig:
    return HARNESS.rig(sandbox, **({"timeout_seconds": 2.0} | overrides))


@pytest.fixture
def rig() -> Iterator[AcquiaRig]:
    with AcquiaCdpSandbox(erasure_seconds=60) as sandbox:
        built = make_rig(sandbox)
        try:
            yield built
        finally:
            built.adapter.close()


def seed(rig: AcquiaRig, *values: str) -> None:
    for value in values:
        rig.sandbox.add_customer(TENANT, value)


# --------------------------------------------------------------------------- answers


def test_each_answer_list_maps_to_its_status(rig: AcquiaRig) -> None:
    seed(rig, "ready", "pending", "flaky")
    rig.adapter.submit([item("pending")])
    rig.sandbox.fail_to_accept("flaky")
    items = [item("ready"), item("pending"), item("unknown"), item("flaky")]
    ok_before = HARNESS.calls("submit", "ok")

    result = rig.adapter.submit(items)

    assert result.jobs == ()
    (event_id,) = {record.event_id for record in rig.sandbox.erasures()[1:]}
    assert by_value(items, result) == {
        "ready": (Status.ACCEPTED, f"queued for erasure (Acquia CDP eventId {event_id})"),
        "pending": (
            Status.ACCEPTED,
            f"already queued for erasure by an earlier request (Acquia CDP eventId {event_id})",
        ),
        "unknown": (Status.NOT_FOUND, None),
        "flaky": (Status.QUEUED, "Acquia CDP failed to accept the id; sending again"),
    }
    assert HARNESS.calls("submit", "ok") - ok_before == 1
    assert rig.sandbox.is_queued(TENANT, "ready")


def test_one_call_carries_the_batch_reason_and_earliest_date(rig: AcquiaRig) -> None:
    later = NOW + timedelta(hours=3)
    items = [
        item("a", Regulation.GDPR, later),
        item("b", Regulation.CCPA, NOW.astimezone(timezone(timedelta(hours=-7)))),
        item("c", Regulation.GDPR, later),
    ]
    rig.adapter.submit(items)
    (record,) = rig.sandbox.erasures()
    assert record.customer_ids == ("a", "b", "c")
    assert record.reason == "CCPA/GDPR"
    assert record.requested_date == "2024-05-06 07:08:09 UTC"
    assert [call.query for call in rig.sandbox.calls if call.path == ERASURE_PATH] == [
        "failOnNotFound=false"
    ]


def test_reasons_are_distinct_sorted_and_joined(rig: AcquiaRig) -> None:
    regulations = [Regulation.OTHER, Regulation.GDPR, Regulation.CCPA, Regulation.GDPR]
    rig.adapter.submit([item(f"cust-{i}", regulation) for i, regulation in enumerate(regulations)])
    assert [record.reason for record in rig.sandbox.erasures()] == ["CCPA/GDPR/OTHER"]


def test_a_batch_of_unknown_ids_is_all_not_found(rig: AcquiaRig) -> None:
    items = [item("x"), item("y")]
    assert statuses(items, rig.adapter.submit(items)) == {
        "x": Status.NOT_FOUND,
        "y": Status.NOT_FOUND,
    }


def test_duplicate_ids_are_sent_once_and_settle_every_item(rig: AcquiaRig) -> None:
    seed(rig, "twice")
    items = [item("twice", Regulation.GDPR), item("other"), item("twice", Regulation.CCPA)]
    result = rig.adapter.submit(items)
    assert sent_ids(rig) == [["twice", "other"]]
    assert rig.sandbox.erasures()[0].reason == "CCPA/GDPR"
    outcomes = {o.item_id: o.status for o in result.outcomes}
    assert outcomes == {
        items[0].item_id: Status.ACCEPTED,
        items[1].item_id: Status.NOT_FOUND,
        items[2].item_id: Status.ACCEPTED,
    }


def test_more_than_200_ids_are_split_into_calls_of_at_most_200(rig: AcquiaRig) -> None:
    items = [item(f"c{i}") for i in range(450)]
    result = rig.adapter.submit(items)
    assert [len(ids) for ids in sent_ids(rig)] == [200, 200, 50]
    assert set(statuses(items, result).values()) == {Status.NOT_FOUND}


def test_duplicates_count_once_towards_the_limit(rig: AcquiaRig) -> None:
    items = [item(f"c{i % 200}") for i in range(300)]
    rig.adapter.submit(items)
    assert [len(ids) for ids in sent_ids(rig)] == [200]


def test_items_of_another_identity_type_fail_without_a_call(rig: AcquiaRig) -> None:
    email = item("a@example.com", identity_type="email")
    result = rig.adapter.submit([email])
    assert result.outcomes == (
        ItemOutcome(
            email.item_id, Status.FAILED, "not an Acquia CDP customer id: identity type 'email'"
        ),
    )
    assert rig.sandbox.calls == []


def test_poll_is_never_valid() -> None:
    job = DueJob(1, "acquia_cdp", "evt", None, NOW, 0, (item("a"),))
    with AcquiaCdpSandbox() as sandbox:
        adapter = make_rig(sandbox).adapter
        with pytest.raises(PermanentVendorError, match="nothing to poll"):
            adapter.poll(job)
        assert sandbox.calls == []


# --------------------------------------------------------------------------- 400: bisection


def test_a_rejected_id_is_isolated_and_only_it_fails(rig: AcquiaRig) -> None:
    seed(rig, *(f"c{i}" for i in range(8)))
    rig.sandbox.reject("c5")
    items = [item(f"c{i}") for i in range(8)]
    rejected_before = HARNESS.calls("submit", "client_error")

    result = rig.adapter.submit(items)

    outcome = by_value(items, result)
    assert outcome.pop("c5") == (Status.FAILED, f"acquia_cdp submit: HTTP 400 ({INVALID_ID})")
    assert {status for status, _ in outcome.values()} == {Status.ACCEPTED}
    # Breadth first: [0-7] 400, [0-3] 200, [4-7] 400, [4,5] 400, [6,7] 200, [4] 200, [5] 400.
    assert erasure_calls(rig) == [400, 200, 400, 400, 200, 200, 400]
    assert HARNESS.calls("submit", "client_error") - rejected_before == 4
    assert sorted(accepted_ids(rig)) == sorted(f"c{i}" for i in range(8) if i != 5)


def test_two_rejected_ids_in_a_full_batch(rig: AcquiaRig) -> None:
    rig.sandbox.reject("c17")
    rig.sandbox.reject("c140")
    items = [item(f"c{i}") for i in range(200)]
    result = rig.adapter.submit(items)
    failed = {value for value, status in statuses(items, result).items() if status is Status.FAILED}
    assert failed == {"c17", "c140"}
    assert len(erasure_calls(rig)) <= MAX_CALLS_PER_SUBMIT
    assert len(accepted_ids(rig)) == 198


def test_a_lone_rejected_id_fails_after_one_call(rig: AcquiaRig) -> None:
    rig.sandbox.reject("bad")
    bad = item("bad")
    (outcome,) = rig.adapter.submit([bad]).outcomes
    assert outcome.status is Status.FAILED
    assert outcome.detail is not None and "bad" not in outcome.detail
    assert erasure_calls(rig) == [400]


def test_a_400_about_the_request_runs_out_of_calls_instead_of_failing_ids(rig: AcquiaRig) -> None:
    rig.sandbox.inject(Fault.status(400), path_prefix=ERASURE_PATH, times=1000)
    items = [item(f"c{i}") for i in range(100)]
    result = rig.adapter.submit(items)
    assert len(erasure_calls(rig)) == MAX_CALLS_PER_SUBMIT
    assert set(statuses(items, result).values()) == {Status.QUEUED}
    detail = result.outcomes[0].detail
    assert (
        detail
        == f"rejected in a group not narrowed down within {MAX_CALLS_PER_SUBMIT} calls; resending"
    )


def test_a_server_error_midway_keeps_the_answers_already_given(rig: AcquiaRig) -> None:
    seed(rig, "cust-a", "cust-b", "cust-c")
    rig.sandbox.reject("cust-b")
    rig.sandbox.inject(Fault.delay(0), path_prefix=ERASURE_PATH, times=3)
    rig.sandbox.inject(Fault.status(500), path_prefix=ERASURE_PATH)
    items = [item(value) for value in ("cust-a", "cust-b", "cust-c", "cust-d")]
    # Calls: [a b c d] 400, [a b] 400, [c d] 200, [a] 500; b was never answered.
    result = rig.adapter.submit(items)
    assert erasure_calls(rig) == [400, 400, 200, 500]
    leftover = (Status.QUEUED, "acquia_cdp submit: HTTP 500 (injected_fault)")
    assert by_value(items, result) == {
        "cust-a": leftover,
        "cust-b": leftover,
        "cust-c": (Status.ACCEPTED, by_value(items, result)["cust-c"][1]),
        "cust-d": (Status.NOT_FOUND, None),
    }


def test_a_rejection_midway_fails_only_the_unanswered(rig: AcquiaRig) -> None:
    rig.sandbox.reject("cust-b")
    rig.sandbox.inject(Fault.delay(0), path_prefix=ERASURE_PATH, times=3)
    rig.sandbox.inject(Fault.status(422), path_prefix=ERASURE_PATH)
    items = [item(value) for value in ("cust-a", "cust-b", "cust-c")]
    result = rig.adapter.submit(items)
    assert erasure_calls(rig) == [400, 400, 200, 422]
    assert statuses(items, result) == {
        "cust-a": Status.FAILED,
        "cust-b": Status.FAILED,
        "cust-c": Status.NOT_FOUND,
    }


def test_credentials_refused_midway_leave_unanswered_items_unmentioned(rig: AcquiaRig) -> None:
    rig.sandbox.reject("cust-b")
    rig.sandbox.inject(Fault.delay(0), path_prefix=ERASURE_PATH, times=3)
    rig.sandbox.inject(Fault.status(403), path_prefix=ERASURE_PATH)
    items = [item(value) for value in ("cust-a", "cust-b", "cust-c")]
    # Calls: [a b c] 400, [a b] 400, [c] 200, [a] 403: a and b are released unspent.
    result = rig.adapter.submit(items)
    assert erasure_calls(rig) == [400, 400, 200, 403]
    assert result.outcomes == (ItemOutcome(items[2].item_id, Status.NOT_FOUND),)


# --------------------------------------------------------------------------- 404 answers


def scripted_sandbox(erasure: Response) -> Sandbox:
    """A stand-in Acquia whose login works and whose erasure call answers `erasure`."""
    router = Router()
    router.add(
        "POST", "/authentication", lambda _request: json_response(200, {"access_token": "t"})
    )
    router.add("POST", ERASURE_PATH, lambda _request: erasure)
    return Sandbox(router)


def submit_to(sandbox: Sandbox, items: Sequence[WorkItem]) -> SubmitResult:
    settings = make_settings(sandbox)
    adapter = AcquiaCdpAdapter(settings, VendorHttp("acquia_cdp", timeout_seconds=2.0))
    try:
        return adapter.submit(items)
    finally:
        adapter.close()


def test_an_acquia_404_means_no_id_was_found() -> None:
    acquia_404 = json_response(
        404, {"errorCode": "NOT_FOUND", "userMessage": "none", "developerMessage": "none"}
    )
    items = [item("x"), item("y")]
    with scripted_sandbox(acquia_404) as sandbox:
        result = submit_to(sandbox, items)
    assert statuses(items, result) == {"x": Status.NOT_FOUND, "y": Status.NOT_FOUND}


def test_a_bare_404_is_a_configuration_error_not_not_found() -> None:
    with AcquiaCdpSandbox() as sandbox:
        adapter = make_rig(sandbox, base_url=f"{sandbox.base_url}/wrong-prefix").adapter
        with pytest.raises(PermanentVendorError, match="base_url"):
            adapter.submit([item("x")])
        adapter.close()


@pytest.mark.parametrize(
    "answer",
    [
        Response(200, b"<html>maintenance</html>", (("Content-Type", "text/html"),)),
        json_response(200, ["not", "an", "object"]),
        json_response(200, {"eventId": "e", "notFound": "x"}),
        Response(204),
    ],
)
def test_unreadable_success_answers_are_sent_again(answer: Response) -> None:
    with scripted_sandbox(answer) as sandbox, pytest.raises(RetryableVendorError):
        submit_to(sandbox, [item("x")])


# --------------------------------------------------------------------------- transport failures


def test_server_error_is_retryable_and_not_resent_in_call(rig: AcquiaRig) -> None:
    rig.sandbox.inject(Fault.status(500, after_processing=True), path_prefix=ERASURE_PATH)
    with pytest.raises(RetryableVendorError, match="HTTP 500"):
        rig.adapter.submit([item("a")])
    assert erasure_calls(rig) == [500]
    assert rig.sleeps.waits == []


def test_rate_limited_submit_waits_retry_after_and_is_resent(rig: AcquiaRig) -> None:
    seed(rig, "a")
    rig.sandbox.inject(Fault.rate_limited(retry_after=2), path_prefix=ERASURE_PATH)
    limited = HARNESS.calls("submit", "rate_limited")
    a = item("a")
    assert statuses([a], rig.adapter.submit([a])) == {"a": Status.ACCEPTED}
    assert len(rig.sleeps.waits) == 1 and rig.sleeps.waits[0] >= 2.0
    assert erasure_calls(rig) == [429, 200]
    assert HARNESS.calls("submit", "rate_limited") - limited == 1


def test_quota_exhaustion_hands_retry_after_to_the_dispatcher() -> None:
    with AcquiaCdpSandbox(weekly_quota=2) as sandbox:
        built = make_rig(sandbox)
        built.adapter.submit([item("cust-1"), item("cust-2")])
        with pytest.raises(RetryableVendorError, match="QUOTA_EXCEEDED") as raised:
            built.adapter.submit([item("cust-3")])
        built.adapter.close()
    # The week's Retry-After reaches the dispatcher (the shared layer caps it at 6 h).
    assert raised.value.retry_after is not None and raised.value.retry_after >= 6 * 3600
    assert built.sleeps.waits == []


def test_slow_answer_times_out(rig: AcquiaRig) -> None:
    with AcquiaCdpSandbox() as sandbox:
        built = make_rig(sandbox, timeout_seconds=0.2)
        sandbox.inject(Fault.delay(2.0), path_prefix=ERASURE_PATH)
        timeouts = HARNESS.calls("submit", "timeout")
        with pytest.raises(RetryableVendorError, match=r"no answer within 0.2s"):
            built.adapter.submit([item("a")])
        built.adapter.close()
    assert HARNESS.calls("submit", "timeout") - timeouts == 1


def test_connection_reset_is_retryable(rig: AcquiaRig) -> None:
    rig.sandbox.inject(Fault.reset(after_processing=True), path_prefix=ERASURE_PATH)
    with pytest.raises(RetryableVendorError, match="connection failed"):
        rig.adapter.submit([item("a")])
    assert len(erasure_calls(rig)) == 1


# --------------------------------------------------------------------------- sessions


def test_one_session_serves_many_calls_and_close_logs_it_out(rig: AcquiaRig) -> None:
    rig.adapter.submit([item("a")])
    rig.adapter.submit([item("b")])
    assert rig.sandbox.session_log() == [SessionEvent("login", 200, 1)]
    rig.adapter.close()
    rig.adapter.close()
    assert rig.sandbox.session_log()[1:] == [SessionEvent("logout", 200, 1)]
    assert rig.sandbox.open_sessions() == 0


def test_close_without_a_session_makes_no_call(rig: AcquiaRig) -> None:
    rig.adapter.close()
    assert rig.sandbox.calls == []


def test_a_refused_token_is_logged_out_and_replaced_once(
    rig: AcquiaRig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.adapter.submit([item("a")])
    rig.sandbox.expire_tokens()
    auth_ok = HARNESS.calls("auth", "ok")
    rig.adapter.submit([item("b")])
    assert rig.sandbox.session_log() == [
        SessionEvent("login", 200, 1),
        SessionEvent("logout", 401, None),
        SessionEvent("login", 200, 2),
    ]
    assert erasure_calls(rig) == [200, 401, 200]
    assert HARNESS.calls("auth", "ok") - auth_ok == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "a 401 logout is normal"
    rig.adapter.close()
    assert rig.sandbox.open_sessions() == 0


def test_close_survives_a_failing_logout(rig: AcquiaRig) -> None:
    rig.adapter.submit([item("a")])
    rig.sandbox.inject(Fault.status(500), path_prefix="/authentication")
    rig.adapter.close()
    assert rig.sandbox.session_log() == [SessionEvent("login", 200, 1)]
    assert [call.status for call in rig.sandbox.calls][-1] == 500


def test_check_logs_in_and_out_with_its_own_session(rig: AcquiaRig) -> None:
    rig.adapter.submit([item("a")])
    rig.adapter.check()
    assert rig.sandbox.session_log() == [
        SessionEvent("login", 200, 1),
        SessionEvent("login", 200, 2),
        SessionEvent("logout", 200, 2),
    ]
    rig.adapter.submit([item("b")])
    assert erasure_calls(rig) == [200, 200]


def test_check_accepts_a_session_that_ended_before_its_logout(rig: AcquiaRig) -> None:
    rig.sandbox.inject(Fault.delay(0), path_prefix="/authentication")
    rig.sandbox.inject(Fault.status(401), path_prefix="/authentication")
    rig.adapter.check()
    assert [call.status for call in rig.sandbox.calls] == [200, 401]


def test_check_fails_when_logout_fails(rig: AcquiaRig) -> None:
    rig.sandbox.inject(Fault.delay(0), path_prefix="/authentication")
    rig.sandbox.inject(Fault.status(500), path_prefix="/authentication")
    with pytest.raises(RetryableVendorError, match="acquia_cdp auth: HTTP 500"):
        rig.adapter.check()


@pytest.mark.parametrize("password", ["wrong-password", None])
def test_refused_credentials_are_auth_errors_without_secrets(password: str | None) -> None:
    with AcquiaCdpSandbox() as sandbox:
        if password is None:
            sandbox.refuse_credentials()
        built = make_rig(sandbox, password=SecretStr(password or DEFAULT_PASSWORD))
        with pytest.raises(VendorAuthError) as checked:
            built.adapter.check()
        with pytest.raises(VendorAuthError) as submitted:
            built.adapter.submit([item("a")])
        built.adapter.close()
    code = "INVALID_CREDENTIALS" if password else "USER_DISABLED"
    for error in (checked.value, submitted.value):
        assert code in str(error)
        assert DEFAULT_PASSWORD not in str(error) and "wrong-password" not in str(error)
    assert erasure_calls(built) == []


def test_credentials_refused_during_a_session(rig: AcquiaRig) -> None:
    rig.adapter.submit([item("a")])
    rig.sandbox.refuse_credentials()
    with pytest.raises(VendorAuthError, match="HTTP 403"):
        rig.adapter.submit([item("b")])
    assert erasure_calls(rig) == [200, 401]


def test_the_token_field_comes_from_the_settings() -> None:
    with AcquiaCdpSandbox(token_field="sessionToken") as sandbox:
        built = make_rig(sandbox, token_field="sessionToken")
        built.adapter.submit([item("a")])
        built.adapter.close()
        wrong = make_rig(sandbox)
        with pytest.raises(VendorAuthError, match="'access_token' \\(token_field\\)"):
            wrong.adapter.submit([item("a")])
    assert erasure_calls(built) == [200]


def test_a_username_with_a_colon_cannot_log_in() -> None:
    with AcquiaCdpSandbox() as sandbox:
        adapter = make_rig(sandbox, username="team:erasure").adapter
        with pytest.raises(VendorAuthError, match="must not contain ':'"):
            adapter.check()
        assert sandbox.calls == []


# --------------------------------------------------------------------------- pure functions

customer_ids = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=30)
moments = st.datetimes(
    min_value=datetime(1000, 1, 1), timezones=st.sampled_from([UTC, timezone(timedelta(hours=5))])
)


@given(
    entries=st.lists(
        st.tuples(customer_ids, st.sampled_from(list(Regulation)), moments), min_size=1, max_size=30
    )
)
def test_erasure_body_is_what_acquia_accepts(
    entries: list[tuple[str, Regulation, datetime]],
) -> None:
    items = [item(value, regulation, moment) for value, regulation, moment in entries]
    ids = list(dict.fromkeys(value for value, _, _ in entries))
    built = erasure_body(ids, items, TENANT)
    parsed = parse_erasure_body(json.dumps(built).encode(), TENANT)
    earliest = min(moment for _, _, moment in entries).astimezone(UTC)
    assert parsed.customer_ids == tuple(ids)
    assert parsed.reason == "/".join(sorted({regulation.value for _, regulation, _ in entries}))
    stated = datetime.strptime(parsed.requested_date, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)
    assert stated == earliest.replace(microsecond=0)


def test_erasure_body_refuses_more_than_200_ids() -> None:
    with pytest.raises(ValueError, match="1 to 200"):
        erasure_body([f"c{i}" for i in range(201)], [item("a")], TENANT)


@given(
    username=st.text(st.characters(exclude_categories=["Cs"]).filter(lambda c: c != ":")),
    password=st.text(st.characters(exclude_categories=["Cs"])),
)
def test_basic_authorization_round_trips(username: str, password: str) -> None:
    scheme, encoded = basic_authorization(username, password).split(" ")
    assert scheme == "Basic"
    decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    assert decoded.partition(":") == (username, ":", password)


LIST_NAMES = ("readyForDataErasure", "pendingForDataErasure", "notFound", "failedToAccept")
EXPECTED = {
    "readyForDataErasure": Status.ACCEPTED,
    "pendingForDataErasure": Status.ACCEPTED,
    "notFound": Status.NOT_FOUND,
    "failedToAccept": Status.QUEUED,
    None: Status.QUEUED,
}


@given(
    placed=st.dictionaries(customer_ids, st.sampled_from([*LIST_NAMES, None]), min_size=1),
    strangers=st.lists(customer_ids),
)
def test_answer_verdicts_follow_the_lists(
    placed: dict[str, str | None], strangers: list[str]
) -> None:
    body: dict[str, Any] = {"eventId": "evt-1", **{name: [] for name in LIST_NAMES}}
    for customer_id, name in placed.items():
        if name is not None:
            body[name].append(customer_id)
    body["notFound"].extend(s for s in strangers if s not in placed)
    verdicts = answer_verdicts(body, list(placed))
    assert set(verdicts) == set(placed)
    assert {i: status for i, (status, _) in verdicts.items()} == {
        i: EXPECTED[name] for i, name in placed.items()
    }


def test_an_id_listed_twice_takes_the_most_favourable_list() -> None:
    body = {"failedToAccept": ["a"], "readyForDataErasure": ["a"], "notFound": ["a", "b"]}
    verdicts = answer_verdicts(body, ["a", "b"])
    assert verdicts == {"a": (Status.ACCEPTED, "queued for erasure"), "b": (Status.NOT_FOUND, None)}


@pytest.mark.parametrize(
    ("event_id", "shown"),
    [(12345, " (Acquia CDP eventId 12345)"), ("x@example.com", ""), ("", ""), (True, "")],
)
def test_unsafe_event_ids_are_left_out_of_details(event_id: object, shown: str) -> None:
    verdicts = answer_verdicts({"eventId": event_id, "readyForDataErasure": ["a"]}, ["a"])
    assert verdicts["a"] == (Status.ACCEPTED, f"queued for erasure{shown}")


# --------------------------------------------------------------------------- contract harness


def test_the_harness_runs_the_contract_scenarios() -> None:
    harness = Harness()
    sleeps = RecordedSleeps()
    with harness.running() as sandbox:
        adapter = harness.adapter(harness.settings(sandbox), sleeps)
        harness.seed(sandbox, "held")
        items = harness.items(["held", "unknown"])
        result = adapter.submit(items)
        assert statuses(items, result) == {
            "held": harness.expected.existing,
            "unknown": harness.expected.unknown,
        }
        harness.expire_tokens(sandbox)
        assert adapter.submit(harness.items(["again"])).outcomes
        sandbox.inject(Fault.rate_limited(retry_after=1), path_prefix=harness.submit_path)
        assert adapter.submit(harness.items(["limited"])).outcomes
        assert sleeps.waits and sleeps.waits[0] >= 1
        many = harness.items([f"c{i}" for i in range(harness.max_ids_per_call + 1)])
        assert len(adapter.submit(many).outcomes) == len(many)
        harness.refuse_credentials(sandbox)
        with pytest.raises(VendorAuthError):
            adapter.submit(harness.items(["refused"]))
        adapter.close()
    logins = [call for call in sandbox.calls if call.path == harness.auth_path]
    assert logins and harness.poll_path is None
