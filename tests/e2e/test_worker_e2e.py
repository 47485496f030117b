"""`erasure-worker run` end to end: a real worker process against the Tansu broker, a SQLite
ledger and the strict Acoustic sandbox, checked from the outside (status and dead-letter
topics, /metrics, /healthz, /readyz, the `status` command, the vendor's own records).

One stack per test: own topics and consumer group, own ledger file, own sandbox, own HTTP
port. Failures carry the worker's log (JSON lines).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from consumer.kafka.codec import encode_request
from consumer.ledger import open_ledger
from consumer.model import ErasureRequest, Identity, Regulation, Status
from devtools import devstack
from devtools.sandbox.fleet import ACOUSTIC_DATABASE
from devtools.sandbox.fleet import SECRETS as SANDBOX_SECRETS
from devtools.sandbox.server import Fault
from tests.support.contract import CONTRACT_METRICS, invariant_violations, leaked, scope_statuses
from tests.support.http import MetricKey, http_get, metric, metric_names, parse_metrics
from tests.support.kafka import committed_offsets, read_all
from tests.support.topics import (
    StatusReader,
    StatusRecord,
    TopicReader,
    expected_dlq_reason,
    read_request_record,
    wait_for_terminals,
)
from tests.support.waiting import wait_until
from tests.support.worker import (
    JOBS_PATH,
    SUBMIT_PATH,
    VENDOR,
    Stack,
    erased_lines,
    log_lines,
    sandbox_calls,
    wait_ready,
    worker_stack,
)

pytestmark = pytest.mark.slow

REQUESTS = 100
FINISH_SECONDS = 60.0
STOP_LIMIT_SECONDS = 30.0  # contract §5
# Contract §5, with `due_at`; `extended_days` and the operator `actions` are the trail's own.
TRAIL_KEYS = {
    "request_id",
    "status",
    "regulation",
    "received_at",
    "due_at",
    "extended_days",
    "actions",
    "vendors",
}
TRAIL_VENDOR_KEYS = {"vendor", "status", "items"}
TRAIL_ITEM_KEYS = {
    "identity_type",
    "destination",
    "status",
    "vendor_job_id",
    "updated_at",
    "detail",
}


def test_happy_path_end_to_end(kafka_bootstrap: str, tmp_path: Path) -> None:
    with (
        worker_stack(tmp_path, kafka_bootstrap, requests=REQUESTS, seed=11) as stack,
        StatusReader(kafka_bootstrap, stack.topics.status) as status,
        TopicReader(kafka_bootstrap, stack.topics.dlq) as dlq,
    ):
        requests = stack.requests
        known = [r for r in requests if stack.email(r) in stack.samples.known_emails]
        unknown = [r for r in requests if stack.email(r) not in stack.samples.known_emails]
        assert len(known) >= 3 and unknown, "the sample set needs both outcomes"
        undeletable = known[0]
        stack.sandbox.set_undeletable(ACOUSTIC_DATABASE, "EMAIL", stack.email(undeletable))
        duplicate = known[1]
        malformed = devstack.malformed_messages()
        again = (duplicate.request_id.encode(), encode_request(duplicate))
        # Requests that exercise the vendor list and the skipping rules (contract §2, §3).
        named_both = a_request(("email", unique_email()), vendors=(VENDOR, "voyado"))
        no_email = a_request(("customer_id", f"CUST-{uuid.uuid4().hex[:12]}"))
        other_only = a_request(("email", unique_email()), vendors=("monetate",))
        extras = [named_both, no_email, other_only]
        for extra in (named_both, other_only):
            stack.sandbox.add_contact(ACOUSTIC_DATABASE, {"EMAIL": email_of(extra)})
        valid = [*requests, *extras]
        valid_ids = {r.request_id for r in valid}

        worker = stack.start_worker()
        readiness = wait_ready(stack, worker)
        health = http_get(stack.http_port, "/healthz")
        assert health is not None and health[0] == 200, f"/healthz: {health}{stack.log_tail()}"
        assert json.loads(readiness)["ok"] is True

        devstack.produce_requests(stack.kafka, valid, [*malformed, again])
        terminals = wait_for_terminals(status, valid_ids, FINISH_SECONDS, stack.diagnostics)

        # Every input message is handled (the duplicate last): the counters say so, and the
        # ledger-fed gauges catch up within their refresh period.
        samples = wait_for_metrics(stack, len(valid), len(malformed), len(unknown))
        health = http_get(stack.http_port, "/healthz")
        assert health is not None and health[0] == 200, f"/healthz: {health}{stack.log_tail()}"
        metrics_text = metrics_body(stack)

        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        try:
            exit_code = worker.wait(STOP_LIMIT_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"worker still running {STOP_LIMIT_SECONDS} s after SIGTERM{stack.log_tail()}"
            )
        stopped_in = time.monotonic() - started
        assert exit_code == 0, f"worker exited {exit_code} after SIGTERM{stack.log_tail()}"
        assert stopped_in < STOP_LIMIT_SECONDS

        # The worker is gone: both topics are complete now.
        status.read_to_end(kafka_bootstrap)
        records = status.status_records()
        dead_letters = dlq.read_to_end(kafka_bootstrap)
        log_text = stack.log_text()
        context = stack.log_tail()

        # --- contract §3 on the status topic
        problems = invariant_violations(records)
        assert not problems, "\n".join(problems[:20]) + context
        assert {rid: len(found) for rid, found in terminals.items()} == dict.fromkeys(
            valid_ids, 1
        ), f"requests without exactly one terminal request status{context}"
        assert all(r.event.request_id in valid_ids for r in records), (
            "events for a request that was never valid (a malformed message?)"
        )
        by_scope = scope_statuses(records)
        expected_vendor = {
            r.request_id: Status.COMPLETED if r in known else Status.NOT_FOUND for r in requests
        }
        expected_vendor[undeletable.request_id] = Status.FAILED
        vendor_final = {r.request_id: by_scope[r.request_id, VENDOR][-1] for r in requests}
        wrong = {
            rid: (vendor_final[rid], want)
            for rid, want in expected_vendor.items()
            if vendor_final[rid] is not want
        }
        assert not wrong, f"vendor outcomes (got, wanted): {list(wrong.items())[:5]}{context}"
        assert all(by_scope[r.request_id, VENDOR][0] is Status.QUEUED for r in requests)
        assert all(
            by_scope[r.request_id, None] == [Status.RECEIVED, terminals[r.request_id][0]]
            for r in requests
        )
        request_final = {rid: found[0] for rid, found in terminals.items()}
        assert request_final.pop(undeletable.request_id) is Status.FAILED
        assert set(request_final.values()) == {Status.COMPLETED}
        (failed_event,) = [
            r.event
            for r in records
            if r.event.request_id == undeletable.request_id
            and r.event.vendor is None
            and r.event.status is Status.FAILED
        ]
        assert VENDOR in (failed_event.detail or ""), failed_event
        # The vendor scope's FAILED says why, as its SKIPPED says which (contract §3).
        (vendor_failed,) = [
            r.event
            for r in records
            if r.event.request_id == undeletable.request_id
            and r.event.vendor == VENDOR
            and r.event.status is Status.FAILED
        ]
        assert vendor_failed.detail, f"the acoustic FAILED event does not say why: {vendor_failed}"

        # --- vendor lists and skipped vendors
        events_of = {(r.event.request_id, r.event.vendor, r.event.status): r.event for r in records}
        assert {v for rid, v in by_scope if rid == named_both.request_id} == {
            None,
            VENDOR,
            "voyado",
        }
        assert by_scope[named_both.request_id, VENDOR][-1] is Status.COMPLETED
        assert by_scope[named_both.request_id, "voyado"] == [Status.SKIPPED]
        assert events_of[named_both.request_id, "voyado", Status.SKIPPED].detail
        assert by_scope[no_email.request_id, VENDOR] == [Status.SKIPPED]
        assert events_of[no_email.request_id, VENDOR, Status.SKIPPED].detail
        assert {v for rid, v in by_scope if rid == other_only.request_id} == {None, "monetate"}
        assert by_scope[other_only.request_id, "monetate"] == [Status.SKIPPED]
        assert stack.sandbox.contact_exists(ACOUSTIC_DATABASE, "EMAIL", email_of(other_only)), (
            "a request that does not name acoustic must not erase anything there"
        )
        assert all(terminals[r.request_id] == [Status.COMPLETED] for r in extras)

        # --- the duplicate: no second fan-out, no extra events, no second vendor call
        duplicate_events = [r.event for r in records if r.event.request_id == duplicate.request_id]
        assert Counter(e.status for e in duplicate_events if e.vendor is None) == Counter(
            {Status.RECEIVED: 1, Status.COMPLETED: 1}
        )
        assert sum(1 for e in duplicate_events if e.status is Status.QUEUED) == 1
        sent: Counter[str] = Counter()
        for body in erased_lines(stack.sandbox.submitted_bodies(ACOUSTIC_DATABASE)):
            sent.update(body)
        assert sent == Counter({email_of(r): 1 for r in [*requests, named_both]}), (
            "every valid email goes to Acoustic exactly once (the duplicate not again)"
        )

        # --- the dead-letter topic: exactly the malformed messages, byte for byte
        check_dead_letters(stack, dead_letters, malformed, valid, again, context)

        # --- personal data and secrets stay out of events, headers, logs and metrics
        haystacks = {
            "status events": b"\n".join(r.record.value or b"" for r in records),
            "status keys": b"\n".join(r.record.key or b"" for r in records),
            "dlq headers": b"\n".join(
                value for record in dead_letters for value in record.headers.values()
            ),
            "worker log": log_text.encode(),
            "/metrics": metrics_text.encode(),
        }
        identity_values = stack.identity_values(malformed) | {
            i.value for r in extras for i in r.identities
        }
        found = leaked(identity_values, haystacks)
        assert not found, f"identity values leaked: {found[:10]}"
        found = leaked(SANDBOX_SECRETS.values(), haystacks)
        assert not found, f"secrets leaked: {found}"
        entries = log_lines(log_text)
        assert all(isinstance(e, dict) for e in entries), (
            f"log lines that are not JSON: {[e for e in entries if not isinstance(e, dict)][:5]}"
        )
        bad = [
            e
            for e in entries
            if isinstance(e, dict) and (e.get("level") in ("ERROR", "CRITICAL") or "exception" in e)
        ]
        assert not bad, f"errors logged on the happy path: {bad[:5]}"

        # --- /metrics, contract §7
        check_metrics(
            stack, samples, records, malformed, sent=len(requests) + 1, unknown=len(unknown)
        )

        # --- the ledger: everything published, nothing missing, offsets committed
        check_ledger_matches_topic(stack, records, valid_ids, malformed)
        ends = end_offsets(stack, len(valid) + len(malformed) + 1)
        committed = committed_offsets(kafka_bootstrap, stack.topics.group_id, stack.topics.input)
        assert committed == ends, f"committed {committed}, input ends at {ends}{context}"

        # --- `erasure-worker status`
        check_status_command(stack, records, undeletable, known[2], unknown[0])
        check_skipped_in_status_command(stack, named_both, other_only)


def test_flaky_vendor_still_finishes_every_request(kafka_bootstrap: str, tmp_path: Path) -> None:
    with (
        worker_stack(tmp_path, kafka_bootstrap, requests=40, seed=23) as stack,
        StatusReader(kafka_bootstrap, stack.topics.status) as status,
    ):
        sandbox = stack.sandbox
        sandbox.inject(Fault.status(500), path_prefix=SUBMIT_PATH)
        sandbox.inject(Fault.rate_limited(retry_after=1), path_prefix=SUBMIT_PATH)
        sandbox.inject(Fault.reset(), path_prefix=JOBS_PATH)
        sandbox.fail_next_jobs(1)
        worker = stack.start_worker()
        wait_ready(stack, worker)
        devstack.produce_requests(stack.kafka, stack.requests)
        terminals = wait_for_terminals(status, stack.request_ids, FINISH_SECONDS, stack.diagnostics)
        samples = parse_metrics(metrics_body(stack))
        records = status.status_records()
        context = stack.log_tail()

        problems = invariant_violations(records)
        assert not problems, "\n".join(problems[:20]) + context
        outcomes = Counter(tuple(found) for found in terminals.values())
        assert outcomes == {(Status.COMPLETED,): len(stack.request_ids)}, f"{outcomes}{context}"
        by_scope = scope_statuses(records)
        for request in stack.requests:
            known = stack.email(request) in stack.samples.known_emails
            want = Status.COMPLETED if known else Status.NOT_FOUND
            assert by_scope[request.request_id, VENDOR][-1] is want, (request.request_id, context)

        # Every scripted fault was met, and each was survived in its own way.
        assert sandbox.pending_faults() == 0, "an injected fault was never reached"
        calls = sandbox.calls
        submits = [c for c in calls if c.path == SUBMIT_PATH]
        assert [c.status for c in submits if c.fault] == [500, 429], submits
        assert any(c.path.startswith(JOBS_PATH) and c.fault == "reset" for c in calls)
        retried_after_429 = [c for c in submits if c.status == 202]
        assert retried_after_429 and retried_after_429[0].timestamp - submits[1].timestamp >= 1.0, (
            "the 429's Retry-After was not honoured"
        )
        # The job that failed at the vendor: its identifiers were submitted again.
        bodies = erased_lines(sandbox.submitted_bodies(ACOUSTIC_DATABASE))
        assert len(bodies) >= 2, f"the failed job was never resubmitted: {len(bodies)} job(s)"
        resent = sum(bodies[1:], Counter())
        assert set(bodies[0]) <= set(resent), "items of the failed job were not sent again"

        for outcome, operation in (
            ("server_error", "submit"),
            ("rate_limited", "submit"),
            ("connection_error", "poll"),
        ):
            value = metric(
                samples,
                "erasure_vendor_calls_total",
                vendor=VENDOR,
                operation=operation,
                outcome=outcome,
            )
            assert value is not None and value >= 1, (outcome, operation)
        exceptions = [
            e for e in log_lines(stack.log_text()) if isinstance(e, dict) and "exception" in e
        ]
        assert not exceptions, f"unexpected exceptions: {exceptions[:3]}"
        assert devstack.stop_worker(worker) == 0, stack.log_tail()


# --------------------------------------------------------------------------- checks


def metrics_body(stack: Stack) -> str:
    answer = http_get(stack.http_port, "/metrics")
    assert answer is not None and answer[0] == 200, f"/metrics: {answer}{stack.log_tail()}"
    return answer[1]


def wait_for_metrics(
    stack: Stack, valid: int, malformed: int, unknown: int
) -> dict[MetricKey, float]:
    """/metrics once ingest has counted every message and the gauges show the final state."""
    wanted = {
        ("erasure_requests_total", "accepted"): valid,
        ("erasure_requests_total", "duplicate"): 1,
        ("erasure_requests_total", "invalid"): malformed,
    }
    last: dict[MetricKey, float] = {}

    def settled() -> dict[MetricKey, float] | None:
        nonlocal last
        last = parse_metrics(metrics_body(stack))
        counted = all(
            metric(last, name, outcome=outcome) == value
            for (name, outcome), value in wanted.items()
        )
        gauges = (
            metric(last, "erasure_items", vendor=VENDOR, status="NOT_FOUND") == unknown
            and metric(last, "erasure_oldest_open_request_age_seconds") == 0
        )
        return last if counted and gauges else None

    try:
        return wait_until(settled, 20.0, "the metrics to settle", interval=0.25)
    except AssertionError as error:
        shown = {
            f"{n}{dict(labels)}": v
            for (n, labels), v in last.items()
            if n in ("erasure_requests_total", "erasure_items") or n.startswith("erasure_oldest")
        }
        raise AssertionError(f"{error}: {shown}{stack.log_tail()}") from None


def check_metrics(
    stack: Stack,
    samples: dict[MetricKey, float],
    records: list[StatusRecord],
    malformed: list[tuple[bytes | None, bytes]],
    *,
    sent: int,
    unknown: int,
) -> None:
    """`sent` identifiers went to Acoustic (once each), `unknown` of them unknown there, one
    undeletable."""
    missing = [name for name in CONTRACT_METRICS if name not in metric_names(samples)]
    assert not missing, f"contract §7 metrics missing from /metrics: {missing}"

    reasons = Counter(expected_dlq_reason(value) for _, value in malformed)
    for reason in ("undecodable", "invalid_request"):
        got = metric(samples, "erasure_dlq_messages_total", reason=reason)
        assert got == reasons[reason], (reason, got, reasons)

    # One counted status event per published one, by status.
    published = Counter(r.event.status.value for r in records)
    counted = {
        dict(labels)["status"]: value
        for (name, labels), value in samples.items()
        if name == "erasure_status_events_total"
    }
    assert {s: v for s, v in counted.items() if v} == dict(published)

    # Vendor calls as the sandbox saw them, by operation.
    calls = sandbox_calls(stack.sandbox)
    for operation in ("submit", "poll", "auth"):
        made = sum(n for (op, status), n in calls.items() if op == operation)
        assert made > 0, f"no {operation} call reached the sandbox"
        ok = metric(
            samples, "erasure_vendor_calls_total", vendor=VENDOR, operation=operation, outcome="ok"
        )
        assert ok == made, (operation, ok, made)
        timed = metric(
            samples,
            "erasure_vendor_call_duration_seconds_count",
            vendor=VENDOR,
            operation=operation,
        )
        assert timed == made, (operation, timed, made)

    # Each identifier went out in exactly one batch.
    assert metric(samples, "erasure_vendor_batch_size_sum", vendor=VENDOR) == sent
    assert metric(samples, "erasure_vendor_batch_size_count", vendor=VENDOR) == calls["submit", 202]

    items = {
        dict(labels)["status"]: value
        for (name, labels), value in samples.items()
        if name == "erasure_items" and dict(labels).get("vendor") == VENDOR
    }
    assert {s: v for s, v in items.items() if v} == {
        "COMPLETED": sent - unknown - 1,
        "NOT_FOUND": unknown,
        "FAILED": 1,
    }, items
    # SKIPPED scopes did nothing: no completion time.
    terminal_vendor_events = sum(
        1
        for r in records
        if r.event.vendor is not None
        and r.event.status.is_terminal
        and r.event.status is not Status.SKIPPED
    )
    assert metric(samples, "erasure_completion_seconds_count", vendor=VENDOR) == (
        terminal_vendor_events
    )
    assert metric(samples, "erasure_oldest_open_request_age_seconds") == 0


def check_dead_letters(
    stack: Stack,
    dead_letters: list[Any],
    malformed: list[tuple[bytes | None, bytes]],
    requests: list[ErasureRequest],
    again: tuple[bytes, bytes],
    context: str,
) -> None:
    assert Counter((r.key, r.value) for r in dead_letters) == Counter(malformed), (
        f"the DLQ must hold exactly the malformed messages{context}"
    )
    total = len(requests) + len(malformed) + 1
    inputs = {
        (m.partition(), m.offset()): (m.key(), m.value())
        for m in read_all(stack.bootstrap, stack.topics.input, total)
    }
    sources = set()
    for record in dead_letters:
        assert sorted(record.header_names) == sorted(
            ["error.reason", "error.message", "source.topic", "source.partition", "source.offset"]
        ), record.header_names
        assert record.header("error.reason") == expected_dlq_reason(record.value)
        assert record.header("error.message"), "error.message is empty"
        assert record.header("source.topic") == stack.topics.input
        partition, offset = record.header("source.partition"), record.header("source.offset")
        assert partition is not None and partition.isdigit(), partition
        assert offset is not None and offset.isdigit(), offset
        source = (int(partition), int(offset))
        assert inputs.get(source) == (record.key, record.value), (
            f"DLQ record names {source}, which holds something else"
        )
        sources.add(source)
    assert len(sources) == len(malformed), "two dead letters name the same source message"


def check_ledger_matches_topic(
    stack: Stack,
    records: list[StatusRecord],
    request_ids: set[str],
    rejected: list[tuple[bytes | None, bytes]],
) -> None:
    """Every event the ledger recorded was published (same id, same content), and the
    outbox is empty after a graceful stop."""
    ledger = open_ledger(stack.ledger_url)
    try:
        assert ledger.outbox_backlog() == 0, "events left unpublished after SIGTERM"
        published = {r.event.event_id: r.event for r in records}
        recorded = {}
        for request_id in request_ids:
            trail = ledger.trail(request_id)
            assert trail is not None, f"request {request_id} missing from the ledger"
            assert trail.status.is_terminal
            recorded.update({event.event_id: event for event in trail.events})
        assert recorded.keys() == published.keys()
        # A message that was dead-lettered never reached the ledger, even with a fine UUID.
        for _, value in rejected:
            with contextlib.suppress(ValueError):
                rejected_id = read_request_record(value)["request_id"]
                assert ledger.trail(rejected_id) is None, f"{rejected_id} was recorded"
        for event_id, event in recorded.items():
            millis = event.changed_at.replace(
                microsecond=event.changed_at.microsecond // 1000 * 1000
            )
            assert published[event_id] == event.__class__(
                event.event_id,
                event.request_id,
                event.vendor,
                event.status,
                event.previous_status,
                event.vendor_job_id,
                millis,
                event.detail,
            ), (published[event_id], event)
    finally:
        ledger.close()


def end_offsets(stack: Stack, total: int) -> dict[int, int]:
    """Where the input topic ends, per partition that has messages (read, not asked: Tansu's
    high watermarks are wrong for batched produce)."""
    ends: dict[int, int] = {}
    for message in read_all(stack.bootstrap, stack.topics.input, total):
        partition, offset = message.partition() or 0, message.offset() or 0
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


def check_status_command(
    stack: Stack,
    records: list[StatusRecord],
    failed: ErasureRequest,
    completed: ErasureRequest,
    not_found: ErasureRequest,
) -> None:
    for request, request_status, vendor_status in (
        (completed, Status.COMPLETED, Status.COMPLETED),
        (failed, Status.FAILED, Status.FAILED),
        (not_found, Status.COMPLETED, Status.NOT_FOUND),
    ):
        result = stack.cli("status", request.request_id, "--json")
        assert result.returncode == 0, result.stderr
        assert stack.email(request) not in result.stdout + result.stderr
        trail = json.loads(result.stdout)
        assert set(trail) == TRAIL_KEYS, trail
        assert trail["request_id"] == request.request_id
        assert trail["status"] == request_status.value
        assert trail["regulation"] == request.regulation.value
        assert_utc_iso(trail["received_at"])
        assert_utc_iso(trail["due_at"])
        (vendor,) = trail["vendors"]
        assert set(vendor) == TRAIL_VENDOR_KEYS, vendor
        assert (vendor["vendor"], vendor["status"]) == (VENDOR, vendor_status.value)
        (item,) = vendor["items"]
        assert set(item) == TRAIL_ITEM_KEYS, item
        assert item["identity_type"] == "email"
        assert str(item["destination"]) == str(ACOUSTIC_DATABASE)
        assert item["status"] == vendor_status.value
        job_ids = {
            r.event.vendor_job_id
            for r in records
            if r.event.request_id == request.request_id and r.event.vendor_job_id
        }
        assert item["vendor_job_id"] in job_ids, (item, job_ids)
        assert_utc_iso(item["updated_at"])
        if vendor_status is Status.FAILED:
            assert item["detail"], "a failed item's trail says why"

        text = stack.cli("status", request.request_id)
        assert text.returncode == 0, text.stderr
        assert request.request_id in text.stdout
        assert stack.email(request) not in text.stdout

    unknown_id = str(uuid.uuid4())
    result = stack.cli("status", unknown_id, "--json")
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert unknown_id in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""


def check_skipped_in_status_command(
    stack: Stack, named_both: ErasureRequest, other_only: ErasureRequest
) -> None:
    """`vendors` lists every vendor scope, SKIPPED ones included (contract §5)."""
    for request, scopes in (
        (named_both, {VENDOR: Status.COMPLETED, "voyado": Status.SKIPPED}),
        (other_only, {"monetate": Status.SKIPPED}),
    ):
        result = stack.cli("status", request.request_id, "--json")
        assert result.returncode == 0, result.stderr
        trail = json.loads(result.stdout)
        assert trail["status"] == Status.COMPLETED.value
        shown = {vendor["vendor"]: vendor["status"] for vendor in trail["vendors"]}
        assert shown == {vendor: status.value for vendor, status in scopes.items()}, trail


def a_request(
    *identities: tuple[str, str], vendors: tuple[str, ...] | None = None
) -> ErasureRequest:
    return ErasureRequest(
        request_id=str(uuid.uuid4()),
        requested_at=datetime.now(UTC).replace(microsecond=0),
        regulation=Regulation.CCPA,
        identities=tuple(Identity(kind, value) for kind, value in identities),
        vendors=vendors,
        source="e2e-test",
        trace_id=None,
    )


def unique_email() -> str:
    return f"extra.{uuid.uuid4().hex[:10]}@example.org"


def email_of(request: ErasureRequest) -> str:
    return next(i.value for i in request.identities if i.type == "email")


def assert_utc_iso(text: str) -> None:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert moment.utcoffset() is not None and moment.utcoffset() == UTC.utcoffset(None), text
