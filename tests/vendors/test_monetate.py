"""The Monetate adapter over real HTTP against the Monetate sandbox.

The sandbox's nightly batch runs 250 ms after a submission and its data GET limit is raised
for speed; tests wait on conditions with deadlines, never fixed sleeps. In-call backoff
sleeps are recorded. The status rate is the worker's call gate's (tests/pipeline/
test_in_flight.py); these adapters have none.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from consumer.ledger.records import DueJob, WorkItem
from consumer.model import Regulation, Status
from consumer.vendors.base import (
    ItemOutcome,
    PermanentVendorError,
    PollResult,
    RetryableVendorError,
    SubmittedJob,
    VendorAuthError,
)
from consumer.vendors.monetate import MonetateAdapter, MonetateSettings, wire
from consumer.vendors.monetate.wire import iso_utc, load_signing_key, schema_rows, token_lifetime
from devtools.sandbox.monetate import MonetateSandbox, sandbox_keys
from devtools.sandbox.monetate_wire import is_iso8601
from devtools.sandbox.server import Fault, Request, Response, json_response
from tests.vendors.harness import Rig, due_job
from tests.vendors.harness_monetate import Harness

HARNESS = Harness()
MonetateRig = Rig[MonetateSandbox, MonetateAdapter]

USER, SHORT, DATASET = "api-123-erasure", "acme", "erasure_requests"
ACCOUNT = f"/api/data/v1/{SHORT}/production"
DATA = f"{ACCOUNT}/data/{DATASET}/"
STATUS = f"{ACCOUNT}/customer_data_privacy/status/"
REFRESH = "/api/auth/v0/refresh/"
_ids = itertools.count(1)


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@dataclass(frozen=True)
class Keys:
    private: str
    public: str


@pytest.fixture(scope="module")
def keys() -> Keys:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Keys(pem(key), public.decode())


def item(
    value: str, identity_type: str = "customer_id", requested_at: datetime | None = None
) -> WorkItem:
    return WorkItem(
        item_id=next(_ids),
        request_id="9f0c5a4e-3b1d-4c55-9a53-0d6f4f1f2a10",
        vendor="monetate",
        identity_type=identity_type,
        identity_value=value,
        destination=None,
        regulation=Regulation.GDPR,
        requested_at=requested_at or datetime.now(UTC),
        attempts=0,
        status=Status.SUBMITTED,
    )


def due(job: SubmittedJob | str, items: Sequence[WorkItem], job_id: int | None = None) -> DueJob:
    submitted = SubmittedJob(job, None, ()) if isinstance(job, str) else job
    return due_job(submitted, items, job_id)


def checked_ids(rig: MonetateRig) -> list[str]:
    return [
        parse_qs(call.query)["customer_id"][0]
        for call in rig.sandbox.calls
        if call.path == STATUS and call.status == 200
    ]


def new_sandbox(keys: Keys, *, dataset: bool = True, **options: Any) -> MonetateSandbox:
    values: dict[str, Any] = {
        "shortname": SHORT,
        "api_username": USER,
        "public_key_pem": keys.public,
        "deletion_delay_seconds": 0.25,  # long enough to see PENDING, even on a busy machine
        # Not what these tests are about (429s are injected as faults): no client on
        # loopback can reach it, however fast the machine.
        "data_get_rate_per_second": 1_000_000.0,
    }
    values.update(options)
    sandbox = MonetateSandbox(**values)
    sandbox.start()
    if dataset:
        sandbox.add_dataset(DATASET)
    return sandbox


def make_rig(sandbox: MonetateSandbox, keys: Keys, **overrides: Any) -> MonetateRig:
    values: dict[str, Any] = {
        "shortname": SHORT,
        "dataset": DATASET,
        "api_username": USER,
        "private_key": SecretStr(keys.private),
        "timeout_seconds": 2.0,
        "status_rate_per_second": 250.0,
    }
    checks = overrides.pop("status_checks_per_poll", 20)
    rand = overrides.pop("rand", lambda: 0.0)
    return Harness(status_checks_per_poll=checks, rand=rand).rig(sandbox, **(values | overrides))


@pytest.fixture
def rig(keys: Keys) -> Iterator[MonetateRig]:
    sandbox = new_sandbox(keys)
    built = make_rig(sandbox, keys)
    try:
        yield built
    finally:
        built.adapter.close()
        sandbox.stop()


def outcome_map(result: PollResult) -> dict[int, Status]:
    return {outcome.item_id: outcome.status for outcome in result.outcomes}


# --------------------------------------------------------------------------- submit and poll


def test_held_and_unknown_ids_both_complete(rig: MonetateRig) -> None:
    rig.sandbox.add_customer("C-held")
    requested = datetime(2024, 5, 1, 14, 34, 56, 789000, tzinfo=timezone(timedelta(hours=2)))
    held, unknown = item("C-held", requested_at=requested), item("C-unknown")
    ok_before = HARNESS.calls("submit", "ok")

    job = rig.submit_one_job([held, unknown])

    assert job.vendor_job_id.startswith("upload-")
    assert len(job.vendor_job_id) == len("upload-") + 12
    assert (job.destination, job.item_ids, job.status) == (
        None,
        (held.item_id, unknown.item_id),
        Status.SUBMITTED,
    )
    assert rig.sandbox.rows(DATASET)["C-held"] == "2024-05-01T12:34:56.789+00:00"
    assert HARNESS.calls("submit", "ok") - ok_before == 1
    first = rig.adapter.poll(due(job, [held, unknown]))
    assert first == PollResult(Status.IN_PROGRESS), "the upload is pending: nothing settled"
    assert checked_ids(rig) == ["C-held"], "and one check told the poll so"
    result = rig.poll_until_done(due(job, [held, unknown]))
    assert result == PollResult(
        Status.COMPLETED,
        (
            ItemOutcome(held.item_id, Status.COMPLETED),
            ItemOutcome(unknown.item_id, Status.COMPLETED),
        ),
    )
    assert rig.sandbox.customer_status("C-held") == "NOT_FOUND"


def test_one_status_check_per_customer_id(rig: MonetateRig) -> None:
    older = item("C-1", requested_at=datetime.now(UTC) - timedelta(days=1))
    twice = [item("C-1"), older, item("C-2")]
    job = rig.submit_one_job(twice)
    assert len(rig.sandbox.rows(DATASET)) == 2
    assert rig.sandbox.rows(DATASET)["C-1"] == iso_utc(older.requested_at)

    result = rig.adapter.poll(due(job, twice))

    assert result.job_status is Status.COMPLETED
    assert set(outcome_map(result)) == {entry.item_id for entry in twice}
    assert checked_ids(rig) == ["C-1", "C-2"]


def test_items_monetate_would_reject_fail_without_a_call(rig: MonetateRig) -> None:
    email, padded, fine = item("a@example.com", "email"), item(" C-1 "), item("C-2")

    result = rig.adapter.submit([email, padded, fine])

    assert [job.item_ids for job in result.jobs] == [(fine.item_id,)]
    assert {o.item_id: (o.status, o.detail) for o in result.outcomes} == {
        email.item_id: (Status.FAILED, "Monetate erases by customer_id, not email"),
        padded.item_id: (
            Status.FAILED,
            "customer id is empty or has surrounding whitespace, which Monetate rejects",
        ),
    }
    assert rig.sandbox.rows(DATASET) == {"C-2": rig.sandbox.rows(DATASET)["C-2"]}
    assert rig.adapter.submit([email]).jobs == ()
    assert rig.count(DATA) == 1


AWKWARD_IDS = ["a+b c@x", "100%/done?&=#", "zoë åländ", "用户-42", 'quote"d', "tab\tinside"]


def test_awkward_ids_round_trip(rig: MonetateRig) -> None:
    for value in AWKWARD_IDS:
        rig.sandbox.add_customer(value)
    items = [item(value) for value in AWKWARD_IDS]
    job = rig.submit_one_job(items)
    assert set(rig.sandbox.rows(DATASET)) == set(AWKWARD_IDS)
    result = rig.poll_until_done(due(job, items))
    assert set(outcome_map(result).values()) == {Status.COMPLETED}
    assert sorted(set(checked_ids(rig))) == sorted(AWKWARD_IDS)


# --------------------------------------------------------------------------- polling limits


def test_a_pending_upload_costs_one_check_a_poll_from_a_random_id(keys: Keys) -> None:
    """While an upload waits for its nightly batch, each poll checks one id (a random one,
    so ids that never go away cannot hide the rest); once it is deleted, each id is checked
    once. An upload is followed as jobs of `status_checks_per_poll` ids, checked at once
    by the worker's poll slots."""
    sandbox = new_sandbox(keys, deletion_delay_seconds=3600.0)  # held ids stay PENDING
    starts = iter([0.0, 0.5, 0.99, 0.0, 0.0])
    built = make_rig(sandbox, keys, status_checks_per_poll=5, rand=lambda: next(starts))
    try:
        start = datetime.now(UTC) - timedelta(hours=1)
        values = ["E", "D", "C", "B", "A"]  # A is the oldest request
        items = [item(v, requested_at=start - timedelta(minutes=n)) for n, v in enumerate(values)]
        for value in values:
            sandbox.add_customer(value)
        polled = due(built.submit_one_job(items), items)
        for _ in range(3):
            assert built.adapter.poll(polled) == PollResult(Status.IN_PROGRESS)
        assert checked_ids(built) == ["A", "C", "E"]
        unknown = [item(f"gone-{n}") for n in range(7)]  # NOT_FOUND at once
        jobs = built.adapter.submit(unknown).jobs
        assert [len(job.item_ids) for job in jobs] == [5, 2]
        by_id = {entry.item_id: entry for entry in unknown}
        for job in jobs:
            members = [by_id[item_id] for item_id in job.item_ids]
            assert built.adapter.poll(due(job, members)).job_status is Status.COMPLETED
    finally:
        built.adapter.close()
        sandbox.stop()
    assert len(checked_ids(built)) == 3 + 7


def offline_settings(**overrides: Any) -> MonetateSettings:
    """Settings for tests that make no call (the key is never parsed)."""
    values: dict[str, Any] = {
        "base_url": "https://api.monetate.example",
        "shortname": SHORT,
        "dataset": DATASET,
        "api_username": USER,
        "private_key": SecretStr("unused"),
    }
    return MonetateSettings(**{**values, **overrides})


def test_a_pending_upload_is_checked_less_and_less_often() -> None:
    settings = offline_settings(poll_interval_seconds=3600.0)
    assert settings.next_poll_seconds(86400.0, settled_some=True) == 0.0
    assert settings.next_poll_seconds(2.0, settled_some=False) == 1.0
    assert settings.next_poll_seconds(8000.0, settled_some=False) == 2000.0
    assert settings.next_poll_seconds(86400.0, settled_some=False) == 3600.0


def test_a_poll_keeps_what_it_learnt_before_a_failure(rig: MonetateRig) -> None:
    items = [item("C-1"), item("C-2"), item("C-3")]
    job = rig.submit_one_job(items)
    rig.sandbox.inject(Fault.status(500), path_prefix=STATUS, times=3)
    with pytest.raises(RetryableVendorError, match="HTTP 500"):
        rig.adapter.poll(due(job, items))
    assert len(rig.sleeps.waits) == 2  # a GET is retried in-call

    rig.sandbox.inject(Fault.delay(0.0), path_prefix=STATUS)  # the first check goes through
    rig.sandbox.inject(Fault.status(502), path_prefix=STATUS, times=3)
    partial = rig.adapter.poll(due(job, items))

    assert partial.job_status is Status.IN_PROGRESS
    assert outcome_map(partial) == {items[0].item_id: Status.COMPLETED}
    assert partial.detail == "monetate poll: HTTP 502 (injected_fault)"
    assert checked_ids(rig)[-1] == "C-1"


def test_a_refused_status_check_is_permanent(rig: MonetateRig) -> None:
    rig.sandbox.inject(Fault.status(400), path_prefix=STATUS)
    with pytest.raises(PermanentVendorError, match="HTTP 400"):
        rig.adapter.poll(due("upload-0123456789ab", [item("C-1")]))


# --------------------------------------------------------------------------- auth


def test_token_is_reused_and_refreshed_once_after_expiry(rig: MonetateRig) -> None:
    refreshes = HARNESS.calls("auth", "ok")
    rig.submit_one_job([item("C-1")])
    rig.submit_one_job([item("C-2")])
    assert rig.count(REFRESH) == 1
    rig.sandbox.expire_tokens()
    rejected = HARNESS.calls("submit", "client_error")

    rig.submit_one_job([item("C-3")])

    assert rig.count(REFRESH) == 2
    assert HARNESS.calls("auth", "ok") - refreshes == 2
    assert HARNESS.calls("submit", "client_error") - rejected == 1
    assert [(c.method, c.status) for c in rig.sandbox.calls][-3:] == [
        ("POST", 401),
        ("GET", 200),
        ("POST", 201),
    ]
    assert rig.sandbox.calls[-2].query == "ttl=3600"


def test_check_fetches_a_fresh_token(rig: MonetateRig) -> None:
    rig.adapter.check()
    rig.adapter.check()
    assert rig.count(REFRESH) == 2


def test_revoked_key_stops_every_operation(rig: MonetateRig, keys: Keys) -> None:
    job = rig.submit_one_job([item("C-1")])
    rig.sandbox.revoke_key()
    with pytest.raises(VendorAuthError, match="HTTP 403"):
        rig.adapter.submit([item("C-2")])
    with pytest.raises(VendorAuthError, match="HTTP 403"):
        rig.adapter.poll(due(job, [item("C-1")]))
    with pytest.raises(VendorAuthError, match="HTTP 403") as raised:
        rig.adapter.check()
    assert keys.private not in str(raised.value)
    assert rig.count(DATA) == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"api_username": "api-someone-else"}, "HTTP 401"),
        ({"private_key": SecretStr("not a key")}, "not an unencrypted RSA PEM key"),
        (
            {"private_key": SecretStr(pem(ec.generate_private_key(ec.SECP256R1())))},
            "not an unencrypted RSA PEM key",
        ),
    ],
)
def test_refused_or_unusable_credentials(
    keys: Keys, overrides: dict[str, Any], message: str
) -> None:
    sandbox = new_sandbox(keys)
    built = make_rig(sandbox, keys, **overrides)
    try:
        with pytest.raises(VendorAuthError, match=message) as raised:
            built.adapter.check()
        with pytest.raises(VendorAuthError):
            built.adapter.submit([item("C-1")])
    finally:
        built.adapter.close()
        sandbox.stop()
    assert "BEGIN" not in str(raised.value)
    assert built.count(DATA) == 0


def test_the_signing_key_is_parsed_once_for_all_call_slots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    private = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    parsed: list[bytes] = []

    def counting(data: bytes, password: None) -> object:
        parsed.append(data)
        return serialization.load_pem_private_key(data, password)

    monkeypatch.setattr(wire, "load_pem_private_key", counting)
    keys: list[object] = []
    slots = [
        threading.Thread(target=lambda: keys.append(load_signing_key(private))) for _ in range(8)
    ]
    for slot in slots:
        slot.start()
    for slot in slots:
        slot.join()
    assert len(parsed) == 1 and len(keys) == 8 and all(key is keys[0] for key in keys)
    for _ in range(2):  # a key that cannot be used is not remembered: each try says so
        with pytest.raises(VendorAuthError, match="not an unencrypted RSA PEM key"):
            load_signing_key("not a key")
    assert len(parsed) == 3


def test_a_key_the_vendor_does_not_know_is_refused(keys: Keys) -> None:
    sandbox = new_sandbox(keys)
    built = make_rig(sandbox, keys, private_key=SecretStr(sandbox_keys().private_pem))
    try:
        with pytest.raises(VendorAuthError, match="HTTP 401"):
            built.adapter.check()
    finally:
        built.adapter.close()
        sandbox.stop()


class GarbledRefreshSandbox(MonetateSandbox):
    """Answers every token refresh 200 with an envelope that holds no data object."""

    def _handle_refresh(self, request: Request) -> Response:
        return json_response(200, {"meta": {"code": 200, "errors": [], "warnings": []}})


def test_a_garbled_token_answer_is_an_auth_problem_not_the_items(keys: Keys) -> None:
    sandbox = GarbledRefreshSandbox(shortname=SHORT, api_username=USER, public_key_pem=keys.public)
    sandbox.start()
    built = make_rig(sandbox, keys)
    try:
        with pytest.raises(VendorAuthError, match="monetate auth: answer without a data object"):
            built.adapter.submit([item("C-1")])
    finally:
        built.adapter.close()
        sandbox.stop()
    assert built.count(DATA) == 0


def test_token_lifetime_prefers_the_vendors_own_clock() -> None:
    assert token_lifetime({"issued_at": 1000.5, "expires_at": 4600.5, "expires_in": 99}) == 3600
    assert token_lifetime({"expires_in": 600}) == 600
    assert token_lifetime({"expires_in": True}) == 3600
    assert token_lifetime({}) == 3600


# --------------------------------------------------------------------------- setup


def test_create_dataset_is_idempotent(keys: Keys) -> None:
    """The second create gets the 400 "exists" answer, which means the dataset is there:
    no undocumented call (such as reading the schema back) is needed to tell."""
    sandbox = new_sandbox(keys, dataset=False)
    built = make_rig(sandbox, keys)
    try:
        assert built.adapter.create_dataset() is True
        assert built.adapter.create_dataset() is False
    finally:
        built.adapter.close()
        sandbox.stop()
    assert sandbox.has_dataset(DATASET)
    calls = [(call.method, call.path, call.status) for call in sandbox.calls]
    schema = f"{ACCOUNT}/schema/"
    assert calls == [("GET", REFRESH, 200), ("POST", schema, 201), ("POST", schema, 400)]


def test_create_dataset_reports_why_it_was_refused(keys: Keys) -> None:
    sandbox = new_sandbox(keys, dataset=False)
    built = make_rig(sandbox, keys, dataset="not-valid")
    try:
        with pytest.raises(PermanentVendorError, match=r"name must be a letter") as raised:
            built.adapter.create_dataset()
    finally:
        built.adapter.close()
        sandbox.stop()
    assert "'not-valid'" in str(raised.value)


def test_missing_dataset_stops_calls_without_failing_items(keys: Keys) -> None:
    sandbox = new_sandbox(keys, dataset=False)
    built = make_rig(sandbox, keys)
    try:
        with pytest.raises(VendorAuthError) as submitted:
            built.adapter.submit([item("C-1")])
        with pytest.raises(VendorAuthError, match="status endpoint answered 404") as polled:
            built.adapter.poll(due("upload-0123456789ab", [item("C-1")]))
    finally:
        built.adapter.close()
        sandbox.stop()
    assert str(submitted.value) == (
        f"monetate submit: dataset {DATASET} does not exist: run `erasure-worker setup`"
    )
    assert "erasure-worker setup" in str(polled.value)


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("after_processing", [False, True])
def test_server_error_on_submit_is_not_resent_in_call(
    rig: MonetateRig, after_processing: bool
) -> None:
    rig.sandbox.inject(Fault.status(500, after_processing=after_processing), path_prefix=DATA)
    with pytest.raises(RetryableVendorError, match="HTTP 500"):
        rig.adapter.submit([item("C-1")])
    assert rig.count(DATA) == 1
    assert rig.sleeps.waits == []


def test_rate_limited_submit_waits_retry_after_and_is_resent(rig: MonetateRig) -> None:
    rig.sandbox.inject(Fault.rate_limited(retry_after=2), path_prefix=DATA)
    limited = HARNESS.calls("submit", "rate_limited")
    rig.submit_one_job([item("C-1")])
    assert len(rig.sleeps.waits) == 1
    assert rig.sleeps.waits[0] >= 2.0
    assert rig.count(DATA) == 2
    assert HARNESS.calls("submit", "rate_limited") - limited == 1


def test_rate_limited_status_check_waits_retry_after(rig: MonetateRig) -> None:
    target = item("C-1")
    job = rig.submit_one_job([target])
    rig.sandbox.inject(Fault.rate_limited(retry_after=1), path_prefix=STATUS)
    result = rig.adapter.poll(due(job, [target]))
    assert result.job_status is Status.COMPLETED
    assert rig.sleeps.waits == [1.0]


def test_long_retry_after_goes_back_to_the_caller(rig: MonetateRig) -> None:
    rig.sandbox.inject(Fault.rate_limited(retry_after=120), path_prefix=DATA)
    with pytest.raises(RetryableVendorError) as raised:
        rig.adapter.submit([item("C-1")])
    assert raised.value.retry_after == 120


def test_too_many_rows_is_permanent(keys: Keys) -> None:
    sandbox = new_sandbox(keys, max_rows_per_call=2)
    built = make_rig(sandbox, keys)
    try:
        with pytest.raises(PermanentVendorError, match="HTTP 400"):
            built.adapter.submit([item("C-1"), item("C-2"), item("C-3")])
        assert built.adapter.submit([item("C-1"), item("C-2")]).jobs
    finally:
        built.adapter.close()
        sandbox.stop()


def test_reset_and_timeout_on_submit_are_handed_back(keys: Keys) -> None:
    sandbox = new_sandbox(keys)
    built = make_rig(sandbox, keys, timeout_seconds=0.2)
    try:
        built.adapter.check()
        sandbox.inject(Fault.reset(after_processing=True), path_prefix=DATA)
        with pytest.raises(RetryableVendorError, match="connection failed"):
            built.adapter.submit([item("C-1")])
        sandbox.inject(Fault.delay(2.0), path_prefix=DATA)
        with pytest.raises(RetryableVendorError, match=r"no answer within 0.2s"):
            built.adapter.submit([item("C-2")])
    finally:
        built.adapter.close()
        sandbox.stop()
    assert built.count(DATA) == 2


def test_poll_rides_out_a_reset_and_a_slow_answer(keys: Keys) -> None:
    sandbox = new_sandbox(keys)
    built = make_rig(sandbox, keys, timeout_seconds=0.3)
    try:
        target = item("C-1")
        job = built.submit_one_job([target])
        sandbox.inject(Fault.reset(), path_prefix=STATUS)
        sandbox.inject(Fault.delay(2.0), path_prefix=STATUS)
        result = built.adapter.poll(due(job, [target]))
    finally:
        built.adapter.close()
        sandbox.stop()
    assert outcome_map(result) == {target.item_id: Status.COMPLETED}
    assert len(built.sleeps.waits) == 2


def test_refused_credentials_on_submit(rig: MonetateRig) -> None:
    rig.sandbox.inject(Fault.status(403), path_prefix=DATA)
    with pytest.raises(VendorAuthError, match="HTTP 403"):
        rig.adapter.submit([item("C-1")])


# --------------------------------------------------------------------------- encoders


@given(
    moment=st.datetimes(
        min_value=datetime(1970, 1, 2),
        timezones=st.one_of(
            st.none(),
            st.builds(
                timezone,
                st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)),
            ),
        ),
    )
)
def test_request_times_are_iso8601_utc_to_the_millisecond(moment: datetime) -> None:
    text = iso_utc(moment)
    assert is_iso8601(text)
    assert text.endswith("+00:00")
    parsed = datetime.fromisoformat(text)
    instant = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    assert timedelta(0) <= instant - parsed < timedelta(milliseconds=1)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 10_000)), max_size=12))
def test_schema_rows_keep_one_row_per_id_with_its_earliest_time(
    entries: list[tuple[str, int]],
) -> None:
    base = datetime(2024, 1, 1, tzinfo=UTC)
    items = [item(value, requested_at=base + timedelta(seconds=s)) for value, s in entries]
    rows = schema_rows(items)
    expected = {value: min(s for v, s in entries if v == value) for value, _ in entries}
    assert {r["customer_id"]: r["delete_request_time"] for r in rows} == {
        value: iso_utc(base + timedelta(seconds=s)) for value, s in expected.items()
    }
    assert len(rows) == len(expected)


_segment = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20)


@given(shortname=_segment, dataset=_segment)
def test_path_segments_are_url_encoded(shortname: str, dataset: str) -> None:
    adapter = MonetateAdapter(offline_settings(shortname=shortname, dataset=dataset))
    try:
        urls = (adapter._data_url, adapter._schema_url, adapter._status_url)
    finally:
        adapter.close()
    data_path = urlsplit(urls[0]).path.split("/")
    assert [unquote(part) for part in data_path] == [
        "",
        "api",
        "data",
        "v1",
        shortname,
        "production",
        "data",
        dataset,
        "",
    ]
    assert unquote(urlsplit(urls[1]).path.split("/")[4]) == shortname
    assert unquote(urlsplit(urls[2]).path.split("/")[4]) == shortname


def test_harness_matches_the_protocol() -> None:
    harness = Harness()
    assert harness.max_ids_per_call == 500
