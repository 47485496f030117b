"""Odd vendors, against the real sandboxes over HTTP, through the real Dispatcher and Poller
over a real SQLite ledger: every fault ends in a counted retry or in FAILED with a reason,
never in an attempt count that does not move (issue 7, items 5, 6 and 7).

The ledger runs on a hand-moved clock (batch age, backoff, next poll); the sandboxes on
real time. The rows are read straight from the SQLite file: the attempt count is what
these tests are about, and no ledger query shows it.
"""

from __future__ import annotations

import json
import logging
import random
import string
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.model import Status
from consumer.pipeline.vendor_loop import lease_seconds
from consumer.runtime.metrics import REGISTRY
from consumer.vendors.http import MAX_RESPONSE_BYTES
from devtools.sandbox.acoustic import AcousticSandbox
from devtools.sandbox.acquia_cdp import AcquiaCdpSandbox
from devtools.sandbox.server import Fault, Sandbox
from tests.support.vendor_rig import VendorRig
from tests.vendors import harness_acoustic, harness_acquia_cdp, harness_monetate, harness_voyado
from tests.vendors.harness import VendorHarness

ACOUSTIC = harness_acoustic.Harness()
VOYADO = harness_voyado.Harness()
MONETATE = harness_monetate.Harness()
ACQUIA = harness_acquia_cdp.Harness()
TIMEOUT = 0.5
MAX_ATTEMPTS = 3
SETTINGS: dict[str, object] = {
    "timeout_seconds": TIMEOUT,
    "max_attempts": MAX_ATTEMPTS,
    "rate_per_second": 1000.0,
    "first_poll_after_seconds": 0.0,
    "poll_interval_seconds": 60.0,
}


def a_rig(
    harness: VendorHarness, sandbox: Sandbox, tmp_path: Path, **overrides: object
) -> VendorRig:
    """The vendor's rig: short timeouts, three attempts, polls due at once (`SETTINGS`)."""
    return VendorRig(harness, sandbox, tmp_path / "ledger.db", SETTINGS | overrides)


@pytest.fixture
def acoustic(tmp_path: Path) -> Iterator[tuple[Sandbox, VendorRig]]:
    with ACOUSTIC.running() as sandbox:
        rig = a_rig(ACOUSTIC, sandbox, tmp_path)
        yield sandbox, rig
        rig.close()


def submitted_job(rig: VendorRig) -> None:
    """Record one request and let the dispatcher send it: one open job, one item in it."""
    rig.record("a@example.com")
    rig.dispatch()
    assert rig.items() == [("SUBMITTED", 0, None)]


def only_item(rig: VendorRig) -> tuple[str, int, str]:
    ((status, attempts, detail),) = rig.items()
    assert detail is not None, "every retry and failure carries a reason"
    return status, attempts, detail


# --------------------------------------------------------------------------- whole-call deadline


def test_a_dripping_answer_ends_within_the_timeout_and_costs_an_attempt(
    acoustic: tuple[Sandbox, VendorRig],
) -> None:
    sandbox, rig = acoustic
    rig.record("a@example.com")
    # 20 bytes a second: the status line and headers alone take several seconds.
    sandbox.inject(Fault.drip(20), path_prefix=ACOUSTIC.submit_path)
    elapsed = rig.dispatch()
    assert elapsed < TIMEOUT + 1.0
    status, attempts, detail = only_item(rig)
    assert (status, attempts) == ("QUEUED", 1)
    assert detail == f"acoustic submit: no answer within {TIMEOUT:g}s"
    assert rig.sleeps.waits == [], "a POST that may have been processed is not resent in-call"


def test_an_endless_drip_of_a_poll_ends_within_the_timeout(
    acoustic: tuple[Sandbox, VendorRig],
) -> None:
    sandbox, rig = acoustic
    submitted_job(rig)
    # Headers at once, then a body that never ends; a GET is tried 3 times in-call.
    sandbox.inject(Fault.drip(200, endless=True), path_prefix=ACOUSTIC.poll_path or "", times=3)
    elapsed = rig.poll()
    assert elapsed < 3 * TIMEOUT + 1.0
    assert sandbox.pending_faults() == 0
    assert rig.jobs() == [("SUBMITTED", 1, f"acoustic poll: no answer within {TIMEOUT:g}s", True)]
    assert rig.items() == [("SUBMITTED", 0, None)]


# --------------------------------------------------------------------------- bounded bodies


def test_an_oversize_poll_answer_is_a_counted_failure_refused_unread(
    acoustic: tuple[Sandbox, VendorRig],
) -> None:
    sandbox, rig = acoustic
    submitted_job(rig)
    sandbox.inject(Fault.huge_body(512 * 1024 * 1024), path_prefix=ACOUSTIC.poll_path or "")
    assert rig.poll() < 1.0, "a declared 512 MiB body is refused by its header"
    ((_, failures, detail, polled),) = rig.jobs()
    assert (failures, detail, polled) == (
        1,
        "acoustic poll: answer over 10 MiB refused unread",
        True,
    )


_RSS_PROBE = textwrap.dedent(
    """
    import resource, sys
    from devtools.sandbox.server import Fault
    from consumer.vendors.base import RetryableVendorError
    from consumer.vendors.http import VendorHttp
    from devtools.sandbox.acoustic import AcousticSandbox

    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    with AcousticSandbox() as sandbox, VendorHttp("acoustic", timeout_seconds=30) as http:
        url = sandbox.base_url + "/rest/gdpr_jobs/1/status"
        http.call("poll", "GET", url, handled_statuses=(401,))  # warm up
        before = peak_mib()
        sandbox.inject(Fault.huge_body(int(sys.argv[1]), declare_length=False))
        try:
            http.call("poll", "GET", url)
        except RetryableVendorError as error:
            print(before, peak_mib(), error)
    """
)


def test_an_oversize_answer_without_a_length_is_refused_within_the_bound() -> None:
    """512 MiB with no Content-Length, in a process of its own so its peak RSS is ours."""
    probe = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(512 * 1024 * 1024)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    before, after, *message = probe.stdout.split()
    assert " ".join(message) == "acoustic poll: answer over 10 MiB refused unread"
    growth_mib = float(after) - float(before)
    assert growth_mib < 3 * MAX_RESPONSE_BYTES / 2**20, f"peak RSS grew {growth_mib:.0f} MiB"


def test_a_full_acoustic_job_response_fits_the_bound() -> None:
    """5,000 contacts of the longest address an email can be, pretty-printed."""
    address = "a" * 242 + "@example.com"
    contact = {
        "contactFound": True,
        "contactDeleted": True,
        "gdprIdentifiers": [{"name": "EMAIL", "value": address}],
    }
    body = {"databaseId": 1, "timestamp": "2026-11-22T12:00:00.000Z", "contacts": [contact] * 5000}
    assert len(json.dumps(body, indent=4).encode()) < MAX_RESPONSE_BYTES / 3


# --------------------------------------------------------------------------- unexpected exceptions


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.nested_json(), "RecursionError"),
        (Fault.answer(303, b"{}", [("Location", "http://[::1/x")]), "ValueError"),
    ],
    ids=["nested-json", "bad-location"],
)
def test_an_unforeseen_poll_answer_is_counted_then_fails_the_job(
    acoustic: tuple[Sandbox, VendorRig], fault: Fault, error: str
) -> None:
    sandbox, rig = acoustic
    submitted_job(rig)
    sandbox.inject(fault, path_prefix=ACOUSTIC.poll_path or "", times=MAX_ATTEMPTS)
    detail = f"acoustic poll: unexpected {error}"
    for failures in range(1, MAX_ATTEMPTS):
        rig.poll()
        assert rig.jobs() == [("SUBMITTED", failures, detail, True)]
    rig.poll()
    ((status, _, job_detail, polled),) = rig.jobs()
    assert (status, polled) == ("FAILED", False)
    assert job_detail is not None and detail in job_detail
    assert only_item(rig)[:2] == ("QUEUED", 1), "the job failed: its item is sent again, counted"


def test_an_unforeseen_submit_answer_is_a_counted_retry(tmp_path: Path) -> None:
    with ACQUIA.running() as sandbox:
        rig = a_rig(ACQUIA, sandbox, tmp_path)
        rig.record("c-1")
        sandbox.inject(Fault.nested_json(), path_prefix=ACQUIA.submit_path)
        rig.dispatch()
        rig.close()
    assert only_item(rig) == ("QUEUED", 1, "acquia_cdp submit: unexpected RecursionError")


@pytest.mark.parametrize(
    "jid", ["\\ud800", "job\\u0000id", "j" * 201], ids=["lone-surrogate", "nul", "too-long"]
)
def test_an_unusable_job_id_is_a_counted_retry(tmp_path: Path, jid: str) -> None:
    with VOYADO.running() as sandbox:
        rig = a_rig(VOYADO, sandbox, tmp_path)
        rig.record("visitor-1")
        answer = f'{{"jid": "{jid}", "status": "created"}}'.encode()
        sandbox.inject(Fault.answer(200, answer), path_prefix=VOYADO.submit_path)
        rig.dispatch()
        rig.close()
    status, attempts, detail = only_item(rig)
    assert (status, attempts) == ("QUEUED", 1)
    assert detail == "voyado submit: the vendor's job id is unusable; sending again"
    assert rig.jobs() == []


# --------------------------------------------------------------------------- odd vendors


@pytest.mark.parametrize("harness", [ACOUSTIC, MONETATE, ACQUIA], ids=lambda h: h.vendor)
def test_an_html_token_answer_is_a_counted_retry_not_an_auth_failure(
    tmp_path: Path, harness: VendorHarness
) -> None:
    with harness.running() as sandbox:
        rig = a_rig(harness, sandbox, tmp_path)
        rig.record("a@example.com" if harness is ACOUSTIC else "c-1")
        sandbox.inject(Fault.html_page(), path_prefix=harness.auth_path)
        rig.dispatch()
        rig.close()
    assert rig.health.is_up, "an HTML page says nothing about our credentials"
    expected = f"{harness.vendor} auth: token answer is not a JSON object (text/html)"
    assert only_item(rig) == ("QUEUED", 1, f"{expected}; trying again later")


@pytest.mark.parametrize("harness", [ACOUSTIC, VOYADO, MONETATE, ACQUIA], ids=lambda h: h.vendor)
def test_a_redirect_on_submit_is_a_counted_retry(tmp_path: Path, harness: VendorHarness) -> None:
    with harness.running() as sandbox:
        rig = a_rig(harness, sandbox, tmp_path)
        rig.record("a@example.com" if harness is ACOUSTIC else "c-1")
        moved = Fault.answer(302, headers=[("Location", "https://elsewhere.example/")])
        sandbox.inject(moved, path_prefix=harness.submit_path)
        rig.dispatch()
        rig.close()
    status, attempts, detail = only_item(rig)
    assert (status, attempts) == ("QUEUED", 1)
    assert detail.endswith("HTTP 302: redirect not followed")


def _status_answer(harness: VendorHarness, word: str) -> bytes:
    if harness is ACOUSTIC:
        return json.dumps({"meta": {}, "data": {"status": word}}).encode()
    if harness is VOYADO:
        return json.dumps({"jid": "j", "status": word}).encode()
    return json.dumps({"meta": {"code": 200}, "data": {"status": word}}).encode()


@pytest.mark.parametrize("harness", [ACOUSTIC, VOYADO, MONETATE], ids=lambda h: h.vendor)
def test_an_unknown_status_word_keeps_the_job_open_and_is_logged_once(
    tmp_path: Path, harness: VendorHarness, caplog: pytest.LogCaptureFixture
) -> None:
    word = "".join(random.choices(string.ascii_uppercase, k=12))  # unseen by this process
    with harness.running() as sandbox:
        rig = a_rig(harness, sandbox, tmp_path)
        rig.record("a@example.com" if harness is ACOUSTIC else "c-1")
        rig.dispatch()
        sandbox.inject(
            Fault.answer(200, _status_answer(harness, word)),
            path_prefix=harness.poll_path or "",
            times=2,
        )
        with caplog.at_level(logging.WARNING):
            rig.poll()
            rig.poll()
        rig.close()
    assert sandbox.pending_faults() == 0
    # Monetate answers per id, so its uploads are IN_PROGRESS from the first check.
    still_open = "IN_PROGRESS" if harness is MONETATE else "SUBMITTED"
    assert rig.items() == [(still_open, 0, None)], "no resubmission, no attempt spent"
    ((status, failures, _, polled),) = rig.jobs()
    assert (status, failures, polled) == (still_open, 0, True)
    shown = word.lower() if harness is VOYADO else word  # Voyado's words are lower case
    warnings = [r.getMessage() for r in caplog.records if shown in r.getMessage()]
    assert warnings == [
        f"{harness.vendor} answered an unknown status {shown!r}; treating it as still open"
    ]


def test_a_job_open_past_max_job_age_is_failed_with_a_reason(tmp_path: Path) -> None:
    day = 86400.0
    with AcousticSandbox(job_start_after_seconds=3600) as sandbox:
        sandbox.add_database(harness_acoustic.DATABASE, lookup_fields=("EMAIL",))
        rig = a_rig(ACOUSTIC, sandbox, tmp_path, max_job_age_seconds=2 * day)
        (request_id,) = rig.record("a@example.com")
        rig.dispatch()
        expired = ("erasure_vendor_jobs_expired_total", {"vendor": "acoustic"})
        before = REGISTRY.get_sample_value(*expired)
        rig.clock.advance(day)
        rig.poll()
        assert [job[0] for job in rig.jobs()] == ["SUBMITTED"], "younger than max_job_age"
        rig.clock.advance(day)
        rig.poll()
        trail = rig.ledger.trail(request_id)
        rig.close()
    reason = "vendor job still open after 2 days"
    assert rig.jobs() == [("FAILED", 0, reason, False)]
    assert rig.items() == [("FAILED", 0, reason)]
    assert trail is not None and trail.status is Status.FAILED
    assert REGISTRY.get_sample_value(*expired) == (before or 0) + 1


# --------------------------------------------------------------------------- Acquia's bisection


def test_every_call_of_acquias_bisection_is_leased(tmp_path: Path) -> None:
    """(That each of those calls also keeps to the rate is the call gate's, which holds
    back every HTTP exchange: tests/pipeline/test_in_flight.py.)"""
    rate = 20.0
    with AcquiaCdpSandbox() as sandbox:
        rig = a_rig(ACQUIA, sandbox, tmp_path, rate_per_second=rate)
        ids = [f"c-{n}" for n in range(8)]
        rig.record(*ids)
        sandbox.reject("c-5")
        rig.dispatch()
        rig.close()
    erasures = [call.timestamp for call in sandbox.calls if call.path == ACQUIA.submit_path]
    assert len(erasures) == 7, "8 ids, one rejected: 1 + 2 + 2 + 2 calls"
    assert sorted(status for status, _, _ in rig.items()) == ["FAILED"] + ["NOT_FOUND"] * 7
    lease = lease_seconds(rig.settings, rig.settings.calls_per_submit, 1 / rate)
    assert rig.settings.calls_per_submit == 32
    assert lease >= 32 * (rig.settings.timeout_seconds + 1 / rate)
