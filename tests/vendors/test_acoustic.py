"""The Acoustic adapter over real HTTP against the Acoustic sandbox.

Jobs finish in about 0.15 s in the sandbox; tests poll with a deadline instead of
sleeping. In-call backoff sleeps are injected and recorded.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from pydantic import SecretStr

from consumer.ledger.records import WorkItem
from consumer.model import Regulation, Status
from consumer.vendors.acoustic import (
    ARCHIVED_DETAIL,
    AcousticAdapter,
    _job_id,
    _status_result,
    erasure_csv,
)
from consumer.vendors.base import (
    PermanentVendorError,
    PollResult,
    RetryableVendorError,
    SubmitResult,
    SubmittedJob,
    VendorAuthError,
)
from devtools.sandbox.acoustic import AcousticSandbox
from devtools.sandbox.acoustic_wire import parse_erasure_csv
from devtools.sandbox.server import Fault
from tests.vendors.harness import Rig
from tests.vendors.harness import due_job as due
from tests.vendors.harness_acoustic import Harness

HARNESS = Harness()
DB, DB2 = 10091, 20092
CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN = "worker-client", "cl13nt-s3cret", "r3fresh-t0ken"
SUBMIT_PREFIX = "/rest/databases"
_ids = itertools.count(1)

AcousticRig = Rig[AcousticSandbox, AcousticAdapter]


def item(value: str, identity_type: str = "email", destination: str | None = str(DB)) -> WorkItem:
    return WorkItem(
        item_id=next(_ids),
        request_id="9f0c5a4e-3b1d-4c55-9a53-0d6f4f1f2a10",
        vendor="acoustic",
        identity_type=identity_type,
        identity_value=value,
        destination=destination,
        regulation=Regulation.GDPR,
        requested_at=datetime.now(UTC),
        attempts=0,
        status=Status.QUEUED,
    )


def posts(rig: AcousticRig, database: int = DB) -> int:
    return rig.count(f"/rest/databases/{database}/gdpr_erasure")


def make_rig(sandbox: AcousticSandbox, **overrides: Any) -> AcousticRig:
    values: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": SecretStr(CLIENT_SECRET),
        "refresh_token": SecretStr(REFRESH_TOKEN),
        "database_ids": (DB, DB2),
        "lookup_fields": {"EMAIL": "email", "ALT_EMAIL": "email", "CUSTOMER_ID": "customer_id"},
        "timeout_seconds": 2.0,
    }
    return HARNESS.rig(sandbox, **(values | overrides))


def new_sandbox(**options: float) -> AcousticSandbox:
    sandbox = AcousticSandbox(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=REFRESH_TOKEN, **options
    )
    sandbox.start()
    for database in (DB, DB2):
        sandbox.add_database(database, lookup_fields=("EMAIL", "ALT_EMAIL", "CUSTOMER_ID"))
    return sandbox


@pytest.fixture
def rig() -> Iterator[AcousticRig]:
    sandbox = new_sandbox()
    built = make_rig(sandbox)
    try:
        yield built
    finally:
        built.adapter.close()
        sandbox.stop()


def outcome_map(result: PollResult | SubmitResult) -> dict[int, tuple[Status, str | None]]:
    return {outcome.item_id: (outcome.status, outcome.detail) for outcome in result.outcomes}


# --------------------------------------------------------------------------- submit and poll


def test_found_not_found_and_undeletable_contacts(rig: AcousticRig) -> None:
    rig.sandbox.add_contact(DB, {"EMAIL": "found@example.com"})
    rig.sandbox.add_contact(DB, {"EMAIL": "kept@example.com"})
    rig.sandbox.set_undeletable(DB, "EMAIL", "kept@example.com")
    found, missing, kept = (
        item("found@example.com"),
        item("missing@example.com"),
        item("kept@example.com"),
    )
    ok_before = HARNESS.calls("submit", "ok")

    job = rig.submit_one_job([found, missing, kept])

    assert (job.destination, job.item_ids) == (
        str(DB),
        (found.item_id, missing.item_id, kept.item_id),
    )
    assert rig.sandbox.submitted_bodies(DB) == [
        "EMAIL,found@example.com\r\nALT_EMAIL,found@example.com\r\n"
        "EMAIL,missing@example.com\r\nALT_EMAIL,missing@example.com\r\n"
        "EMAIL,kept@example.com\r\nALT_EMAIL,kept@example.com\r\n"
    ]
    assert HARNESS.calls("submit", "ok") - ok_before == 1
    first = rig.adapter.poll(due(job, [found, missing, kept]))
    assert first == PollResult(Status.SUBMITTED)
    result = rig.poll_until_done(due(job, [found, missing, kept]))
    assert result.job_status is Status.COMPLETED
    assert outcome_map(result) == {
        found.item_id: (Status.COMPLETED, None),
        missing.item_id: (Status.NOT_FOUND, None),
        kept.item_id: (Status.FAILED, "contact found but not deleted"),
    }
    assert not rig.sandbox.contact_exists(DB, "EMAIL", "found@example.com")


def test_an_item_on_several_columns_combines_their_results(rig: AcousticRig) -> None:
    rig.sandbox.add_contact(DB, {"ALT_EMAIL": "alt@example.com"})
    rig.sandbox.add_contact(DB, {"EMAIL": "both@example.com"})
    rig.sandbox.add_contact(DB, {"ALT_EMAIL": "both@example.com"})
    rig.sandbox.set_undeletable(DB, "ALT_EMAIL", "both@example.com")
    rig.sandbox.add_contact(DB, {"CUSTOMER_ID": "C-42"})
    alt, both, customer = (
        item("alt@example.com"),
        item("both@example.com"),
        item("C-42", "customer_id"),
    )

    job = rig.submit_one_job([alt, both, customer])
    result = rig.poll_until_done(due(job, [alt, both, customer]))

    assert rig.sandbox.submitted_bodies(DB)[0].endswith("CUSTOMER_ID,C-42\r\n")
    assert outcome_map(result) == {
        alt.item_id: (Status.COMPLETED, None),
        both.item_id: (Status.FAILED, "contact found but not deleted"),
        customer.item_id: (Status.COMPLETED, None),
    }


def test_one_call_per_database(rig: AcousticRig) -> None:
    first, second, third = (
        item("a@example.com"),
        item("b@example.com", destination=str(DB2)),
        item("c@example.com"),
    )

    result = rig.adapter.submit([first, second, third])

    assert result.outcomes == ()
    assert {(job.destination, job.item_ids) for job in result.jobs} == {
        (str(DB), (first.item_id, third.item_id)),
        (str(DB2), (second.item_id,)),
    }
    assert (posts(rig, DB), posts(rig, DB2)) == (1, 1)


def test_a_database_gets_at_most_batch_size_lines_a_call() -> None:
    """Each item of email type makes two lines here (EMAIL and ALT_EMAIL): with batch_size
    4, five items to one database are three calls of 4, 4 and 2 lines, no item split."""
    sandbox = new_sandbox()
    built = make_rig(sandbox, batch_size=4)
    try:
        entries = [item(f"u{n}@example.com") for n in range(5)]
        result = built.adapter.submit(entries)
        settings = HARNESS.settings(
            sandbox, database_ids=(DB, DB2), lookup_fields={"EMAIL": "email", "ALT": "email"}
        )
    finally:
        built.adapter.close()
        sandbox.stop()
    assert [len(job.item_ids) for job in result.jobs] == [2, 2, 1]
    assert [len(body.splitlines()) for body in sandbox.submitted_bodies(DB)] == [4, 4, 2]
    assert settings.calls_per_submit == 2 * 2, "databases x lines per email: the lease's calls"


def test_identical_lines_are_sent_once_and_settle_every_item(rig: AcousticRig) -> None:
    rig.sandbox.add_contact(DB, {"EMAIL": "twice@example.com"})
    one, other = item("twice@example.com"), item("twice@example.com")
    job = rig.submit_one_job([one, other])
    assert rig.sandbox.submitted_bodies(DB) == [
        "EMAIL,twice@example.com\r\nALT_EMAIL,twice@example.com\r\n"
    ]
    result = rig.poll_until_done(due(job, [one, other]))
    assert {status for status, _ in outcome_map(result).values()} == {Status.COMPLETED}


AWKWARD_VALUES = [
    "comma,inside@example.com",
    '"quoted"@example.com',
    'mixed ",\r\n all@example.com',
    "line\nbreak@example.com",
    "zoë.åländ@exämple.com",
    "用户@例子.广告",
    " leading-and-trailing-space@example.com ",
]


def test_csv_quoting_round_trips_through_the_vendor(rig: AcousticRig) -> None:
    for value in AWKWARD_VALUES:
        rig.sandbox.add_contact(DB, {"EMAIL": value})
    items = [item(value) for value in AWKWARD_VALUES]

    job = rig.submit_one_job(items)
    (body,) = rig.sandbox.submitted_bodies(DB)
    parsed = parse_erasure_csv(body.encode("utf-8"), ("EMAIL", "ALT_EMAIL"))
    assert [value for column, value in parsed if column == "EMAIL"] == AWKWARD_VALUES
    result = rig.poll_until_done(due(job, items))

    assert {status for status, _ in outcome_map(result).values()} == {Status.COMPLETED}
    assert not any(rig.sandbox.contact_exists(DB, "EMAIL", value) for value in AWKWARD_VALUES)


def test_erasure_csv_has_no_header_and_crlf_lines() -> None:
    assert erasure_csv([("EMAIL", "a@x.com"), ("内部会員", 'x"y')]) == (
        'EMAIL,a@x.com\r\n内部会員,"x""y"\r\n'.encode()
    )


# --------------------------------------------------------------------------- auth


def test_token_is_reused_and_refreshed_once_after_expiry(rig: AcousticRig) -> None:
    refreshes = HARNESS.calls("auth", "ok")
    rig.submit_one_job([item("a@example.com")])
    rig.submit_one_job([item("b@example.com")])
    assert rig.count("/oauth/token") == 1
    rig.sandbox.expire_tokens()
    rejected = HARNESS.calls("submit", "client_error")

    rig.submit_one_job([item("c@example.com")])

    assert rig.count("/oauth/token") == 2
    assert HARNESS.calls("auth", "ok") - refreshes == 2
    assert HARNESS.calls("submit", "client_error") - rejected == 1
    assert [call.status for call in rig.sandbox.calls if call.method == "POST"][-3:] == [
        401,
        200,
        202,
    ]


def test_check_fetches_a_token(rig: AcousticRig) -> None:
    rig.adapter.check()
    rig.adapter.check()
    assert rig.count("/oauth/token") == 2


def test_refused_credentials_are_auth_errors_without_secrets() -> None:
    sandbox = new_sandbox()
    adapter = make_rig(sandbox, refresh_token=SecretStr("revoked-refresh-token")).adapter
    failed_auth = HARNESS.calls("auth", "client_error")
    try:
        with pytest.raises(VendorAuthError) as raised:
            adapter.check()
        with pytest.raises(VendorAuthError):
            adapter.submit([item("a@example.com")])
    finally:
        adapter.close()
        sandbox.stop()
    assert "invalid_grant" in str(raised.value)
    assert "revoked-refresh-token" not in str(raised.value)
    assert CLIENT_SECRET not in str(raised.value)
    assert HARNESS.calls("auth", "client_error") - failed_auth == 2
    assert not any(call.path.endswith("/gdpr_erasure") for call in sandbox.calls)


# --------------------------------------------------------------------------- failures on submit


@pytest.mark.parametrize("after_processing", [False, True])
def test_server_error_on_submit_is_not_resent_in_call(
    rig: AcousticRig, after_processing: bool
) -> None:
    rig.sandbox.inject(
        Fault.status(500, after_processing=after_processing), path_prefix=SUBMIT_PREFIX
    )
    server_errors = HARNESS.calls("submit", "server_error")
    with pytest.raises(RetryableVendorError, match="HTTP 500"):
        rig.adapter.submit([item("a@example.com")])
    assert posts(rig) == 1
    assert rig.sleeps.waits == []
    assert HARNESS.calls("submit", "server_error") - server_errors == 1


def test_rate_limited_submit_waits_retry_after_and_is_resent(rig: AcousticRig) -> None:
    rig.sandbox.inject(Fault.rate_limited(retry_after=2), path_prefix=SUBMIT_PREFIX)
    limited = HARNESS.calls("submit", "rate_limited")

    job = rig.submit_one_job([item("a@example.com")])

    assert job.vendor_job_id
    assert len(rig.sleeps.waits) == 1
    assert rig.sleeps.waits[0] >= 2.0
    assert posts(rig) == 2
    assert len(rig.sandbox.submitted_bodies(DB)) == 1
    assert HARNESS.calls("submit", "rate_limited") - limited == 1


def test_connection_reset_on_submit_is_handed_back(rig: AcousticRig) -> None:
    rig.sandbox.inject(Fault.reset(after_processing=True), path_prefix=SUBMIT_PREFIX)
    resets = HARNESS.calls("submit", "connection_error")
    with pytest.raises(RetryableVendorError, match="connection failed"):
        rig.adapter.submit([item("a@example.com")])
    assert posts(rig) == 1
    assert HARNESS.calls("submit", "connection_error") - resets == 1


def test_slow_submit_times_out_and_is_handed_back() -> None:
    sandbox = new_sandbox()
    # 1 s, not less: the whole-call deadline must not fire before a loaded machine has
    # even sent the request (the test is about a vendor that got it and answers late).
    built = make_rig(sandbox, timeout_seconds=1.0)
    sandbox.inject(Fault.delay(3.0), path_prefix=SUBMIT_PREFIX)
    timeouts = HARNESS.calls("submit", "timeout")
    try:
        with pytest.raises(RetryableVendorError, match=r"no answer within 1s"):
            built.adapter.submit([item("a@example.com")])
    finally:
        built.adapter.close()
        sandbox.stop()
    assert posts(built) == 1
    assert HARNESS.calls("submit", "timeout") - timeouts == 1


def test_one_failed_database_does_not_lose_the_other_job(rig: AcousticRig) -> None:
    rig.sandbox.inject(Fault.status(503), path_prefix=f"/rest/databases/{DB2}", times=3)
    kept, retried = item("a@example.com"), item("b@example.com", destination=str(DB2))

    result = rig.adapter.submit([kept, retried])

    assert [job.item_ids for job in result.jobs] == [(kept.item_id,)]
    status, detail = outcome_map(result)[retried.item_id]
    assert status is Status.QUEUED
    assert detail == "acoustic submit: HTTP 503 (injected_fault)"
    assert posts(rig, DB2) == 3


def test_rejected_database_fails_its_items_or_the_whole_batch(rig: AcousticRig) -> None:
    kept, rejected = item("a@example.com"), item("b@example.com", destination="30093")

    result = rig.adapter.submit([kept, rejected])

    assert [job.item_ids for job in result.jobs] == [(kept.item_id,)]
    status, detail = outcome_map(result)[rejected.item_id]
    assert (status, detail) == (Status.FAILED, "acoustic submit: HTTP 404 (database not found)")
    with pytest.raises(PermanentVendorError, match="HTTP 404"):
        rig.adapter.submit([item("c@example.com", destination="30093")])


def test_mixed_failures_without_any_job_are_reported_per_item(rig: AcousticRig) -> None:
    rig.sandbox.inject(Fault.status(502), path_prefix=f"/rest/databases/{DB2}")
    unknown, flaky = (
        item("a@example.com", destination="30093"),
        item("b@example.com", destination=str(DB2)),
    )
    result = rig.adapter.submit([unknown, flaky])
    assert result.jobs == ()
    assert {key: status for key, (status, _) in outcome_map(result).items()} == {
        unknown.item_id: Status.FAILED,
        flaky.item_id: Status.QUEUED,
    }


def test_refused_credentials_after_a_job_keep_the_job_and_leave_the_rest(rig: AcousticRig) -> None:
    rig.sandbox.inject(Fault.status(403), path_prefix=f"/rest/databases/{DB2}")
    sent, waiting = item("a@example.com"), item("b@example.com", destination=str(DB2))
    result = rig.adapter.submit([sent, waiting])
    assert [job.item_ids for job in result.jobs] == [(sent.item_id,)]
    assert result.outcomes == ()
    rig.sandbox.inject(Fault.status(403), path_prefix=SUBMIT_PREFIX)
    with pytest.raises(VendorAuthError, match="HTTP 403"):
        rig.adapter.submit([waiting])


def test_items_that_cannot_be_sent_fail_without_a_call(rig: AcousticRig) -> None:
    phone, nowhere = (
        item("+4912345", identity_type="phone"),
        item("a@example.com", destination=None),
    )
    result = rig.adapter.submit([phone, nowhere])
    assert result.jobs == ()
    assert outcome_map(result) == {
        phone.item_id: (Status.FAILED, "no Acoustic lookup field for identity type 'phone'"),
        nowhere.item_id: (Status.FAILED, "no valid Acoustic database id for this item"),
    }
    assert rig.sandbox.calls == []


# --------------------------------------------------------------------------- polling


def test_poll_survives_a_reset_and_a_slow_answer() -> None:
    sandbox = new_sandbox()
    built = make_rig(sandbox, timeout_seconds=0.3)
    try:
        target = item("a@example.com")
        job = built.submit_one_job([target])
        sandbox.inject(Fault.reset(), path_prefix="/rest/gdpr_jobs")
        sandbox.inject(Fault.delay(2.0), path_prefix="/rest/gdpr_jobs")
        timeouts, resets = (
            HARNESS.calls("poll", "timeout"),
            HARNESS.calls("poll", "connection_error"),
        )
        result = built.poll_until_done(due(job, [target]))
    finally:
        built.adapter.close()
        sandbox.stop()
    assert outcome_map(result) == {target.item_id: (Status.NOT_FOUND, None)}
    assert len(built.sleeps.waits) == 2
    assert HARNESS.calls("poll", "timeout") - timeouts == 1
    assert HARNESS.calls("poll", "connection_error") - resets == 1


def test_failed_job(rig: AcousticRig) -> None:
    rig.sandbox.fail_next_jobs(1)
    target = item("a@example.com")
    job = rig.submit_one_job([target])
    result = rig.poll_until_done(due(job, [target]))
    assert result == PollResult(Status.FAILED, detail="Acoustic reported the job FAILED")


def test_archived_job_completes_every_item_with_a_detail() -> None:
    sandbox = new_sandbox(archive_after_seconds=0.0)
    built = make_rig(sandbox)
    try:
        items = [item("a@example.com"), item("b@example.com")]
        job = built.submit_one_job(items)
        result = built.poll_until_done(due(job, items))
    finally:
        built.adapter.close()
        sandbox.stop()
    assert result.job_status is Status.COMPLETED
    assert set(outcome_map(result).values()) == {(Status.COMPLETED, ARCHIVED_DETAIL)}


def test_unknown_job_fails(rig: AcousticRig) -> None:
    ghost = SubmittedJob("987654", str(DB), (1,))
    assert rig.adapter.poll(due(ghost, [item("a@example.com")])) == PollResult(
        Status.FAILED, detail="job unknown to Acoustic"
    )


def test_item_missing_from_the_job_response_is_sent_again(rig: AcousticRig) -> None:
    sent, stranger = item("sent@example.com"), item("never-sent@example.com")
    job = rig.submit_one_job([sent])
    result = rig.poll_until_done(due(job, [sent, stranger]))
    status, detail = outcome_map(result)[stranger.item_id]
    assert status is Status.QUEUED
    assert detail is not None
    assert "never-sent" not in detail


def test_token_never_follows_a_redirect_to_another_origin() -> None:
    sandbox = new_sandbox()
    # Configured as "localhost": the sandbox's 303 names 127.0.0.1, a different origin.
    built = make_rig(sandbox, base_url=sandbox.base_url.replace("127.0.0.1", "localhost"))
    try:
        target = item("a@example.com")
        job = built.submit_one_job([target])
        with pytest.raises(PermanentVendorError, match="another host"):
            built.poll_until_done(due(job, [target]))
    finally:
        built.adapter.close()
        sandbox.stop()
    assert not any(call.path.endswith("/response") for call in sandbox.calls)


def test_details_never_contain_identity_values(rig: AcousticRig) -> None:
    rig.sandbox.add_contact(DB, {"EMAIL": "kept@example.com"})
    rig.sandbox.set_undeletable(DB, "EMAIL", "kept@example.com")
    rig.sandbox.inject(Fault.status(400), path_prefix=f"/rest/databases/{DB2}")
    items = [item("kept@example.com"), item("other@example.com", destination=str(DB2))]
    submitted = rig.adapter.submit(items)
    (job,) = submitted.jobs
    polled = rig.poll_until_done(due(job, items[:1]))
    details = [outcome.detail or "" for outcome in (*submitted.outcomes, *polled.outcomes)]
    assert details
    assert not any("example.com" in detail for detail in details)


# ----------------------------------------------- vendor answers the sandbox never gives


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("SUBMITTED", Status.SUBMITTED),
        ("WAITING", Status.SUBMITTED),
        ("IN_PROGRESS", Status.IN_PROGRESS),
        ("IN PROGRESS", Status.IN_PROGRESS),
        ("ERROR", Status.FAILED),
        ("COMPLETE", Status.COMPLETED),
    ],
)
def test_status_words(word: str, expected: Status) -> None:
    job = due(SubmittedJob("1", str(DB), (1,)), [item("a@example.com")])
    assert _status_result(job, word).job_status is expected


def test_unknown_status_word_keeps_the_job_open_and_is_not_echoed_when_odd() -> None:
    job = due(SubmittedJob("1", str(DB), (1,)), [item("a@example.com")])
    paused = _status_result(job, "PAUSED")
    assert paused.job_status is Status.SUBMITTED and "'PAUSED'" in (paused.detail or "")
    assert "'?'" in (_status_result(job, "A@EXAMPLE.COM").detail or "")


def test_job_id_falls_back_to_the_location_header() -> None:
    accepted = requests.Response()
    accepted.status_code = 202
    accepted.headers["Location"] = "https://acoustic.example/rest/gdpr_jobs/33/status"
    accepted._content = b""
    assert _job_id(accepted) == "33"
    accepted.headers["Location"] = "https://acoustic.example/elsewhere"
    assert _job_id(accepted) is None
