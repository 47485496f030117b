"""The crash test: `erasure-worker run` is SIGKILLed twice while work is in flight, and a
fresh process on the same configuration carries on. Nothing may be lost: every valid request
ends in a terminal request status (on the topic and in the ledger), every malformed message
is in the dead-letter topic, every contact the vendor held is gone, and the status topic
still keeps contract §3 once redelivered events (same event_id, same content) are dropped.

Submissions are slowed down (the sandbox answers each after a short delay) and the first
kill lands while a batch is at the vendor (checked with the worker frozen by SIGSTOP): the
vendor acts, the worker never learns of it, and the items come back after their lease
(timeout_seconds=1 keeps that at ~24 s) to be sent again, which Acoustic answers with "not
found" (contract §3). The second kill comes once some requests are finished and others not.

A second test kills the worker while it polls a vendor job (again checked while frozen): the
job must be polled again, and its requests finished, once a dead worker's lease is over.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from consumer.ledger import open_ledger
from consumer.model import Status
from devtools import devstack
from devtools.sandbox.fleet import ACOUSTIC_DATABASE
from devtools.sandbox.server import Fault
from tests.support.contract import (
    TERMINAL,
    deduplicated,
    invariant_violations,
    leaked,
    scope_statuses,
)
from tests.support.topics import (
    StatusReader,
    StatusRecord,
    TopicReader,
    expected_dlq_reason,
    wait_for_terminals,
)
from tests.support.waiting import wait_until
from tests.support.worker import (
    JOBS_PATH,
    SUBMIT_PATH,
    VENDOR,
    Stack,
    erased_lines,
    wait_ready,
    worker_stack,
)

pytestmark = pytest.mark.slow

REQUESTS = 300
JOB_SECONDS = 1.5
SUBMIT_DELAY_SECONDS = 0.4
SUBMIT_FAULTS = 1000  # more than the submissions the test makes: every one is slow
POLL_DELAY_SECONDS = 0.5
POLL_FAULTS = 1000
# One call's lease with timeout_seconds=1 (3 x 1 s + 2 x 10 s of in-call retries + 1 s),
# the outbox lease a new worker waits out (15 s), and time to poll and publish.
POLL_RECOVERY_SECONDS = 24 + 15 + 10
VENDOR_OVERRIDES = {"timeout_seconds": 1, "batch_size": 25, "rate_per_second": 4}
BUDGET_SECONDS = 85.0


def test_sigkill_twice_loses_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    started = time.monotonic()
    with (
        worker_stack(
            tmp_path,
            kafka_bootstrap,
            requests=REQUESTS,
            job_seconds=JOB_SECONDS,
            vendor_overrides=VENDOR_OVERRIDES,
            seed=31,
        ) as stack,
        StatusReader(kafka_bootstrap, stack.topics.status) as status,
        TopicReader(kafka_bootstrap, stack.topics.dlq) as dlq,
    ):
        stack.sandbox.inject(
            Fault.delay(SUBMIT_DELAY_SECONDS), path_prefix=SUBMIT_PATH, times=SUBMIT_FAULTS
        )
        malformed = devstack.malformed_messages()
        devstack.produce_requests(stack.kafka, stack.requests, malformed)

        # 1. Kill while batches are being submitted: some identifiers are submitted, some
        # still queued, and one batch is at the vendor right now (the sandbox took it and is
        # still "working" on it). The worker is frozen (SIGSTOP) while this is checked, so
        # it cannot have heard back when it dies.
        first = stack.start_worker()
        at_first_kill = kill_when(
            stack,
            status,
            first,
            "identifiers submitted and queued, and one batch at the vendor",
            lambda counts: counts[VENDOR, Status.QUEUED] > 0 and progressed(counts) > 0,
            frozen=lambda: in_flight(stack, SUBMIT_PATH, SUBMIT_FAULTS),
        )

        # 2. Kill again once some requests are finished and others are not.
        second = stack.start_worker()
        at_second_kill = kill_when(
            stack,
            status,
            second,
            "some requests finished, others not",
            lambda counts: 0 < counts[None, Status.COMPLETED] < REQUESTS,
            timeout=45.0,
        )

        # 3. A last worker finishes the work and stops gracefully.
        third = stack.start_worker()
        wait_ready(stack, third)
        left = BUDGET_SECONDS - (time.monotonic() - started)
        wait_for_terminals(status, stack.request_ids, left, stack.diagnostics)
        third.send_signal(signal.SIGTERM)
        try:
            assert third.wait(30) == 0, f"last worker failed to stop cleanly{stack.log_tail()}"
        except subprocess.TimeoutExpired:
            pytest.fail(f"last worker still running 30 s after SIGTERM{stack.log_tail()}")

        status.read_to_end(kafka_bootstrap)
        dead_letters = dlq.read_to_end(kafka_bootstrap)
        records = status.status_records()
        context = (
            f"\nkilled at {at_first_kill} then at {at_second_kill}; "
            f"{len(records)} status records{stack.log_tail()}"
        )

        # Redeliveries are the same events; without them contract §3 holds.
        unique, problems = deduplicated(records)
        assert not problems, "\n".join(problems[:10]) + context
        problems = invariant_violations(unique)
        assert not problems, "\n".join(problems[:20]) + context

        # Every valid request is finished, on the topic and in the ledger.
        final = scope_statuses(unique)
        request_final = {rid: final[rid, None][-1] for rid in stack.request_ids}
        assert Counter(request_final.values()) == {Status.COMPLETED: REQUESTS}, context
        assert {rid for rid, _ in final} == stack.request_ids, "events of unknown requests"
        check_ledger(stack, unique, request_final)

        # Vendor side: every contact the vendor held is gone, every identifier it did not
        # hold is NOT_FOUND.
        for request in stack.requests:
            email = stack.email(request)
            if email in stack.samples.known_emails:
                assert not stack.sandbox.contact_exists(ACOUSTIC_DATABASE, "EMAIL", email), (
                    f"{request.request_id}: contact still held by the vendor"
                )
            else:
                vendor_status = final[request.request_id, VENDOR][-1]
                assert vendor_status is Status.NOT_FOUND, (request.request_id, vendor_status)
        sent: Counter[str] = Counter()
        for body in erased_lines(stack.sandbox.received_bodies(ACOUSTIC_DATABASE)):
            sent.update(body)
        assert set(sent) == {stack.email(r) for r in stack.requests}
        # The batch the first kill caught at the vendor was erased there, unbeknown to the
        # worker, and sent again after its lease: the resend finds nothing (NOT_FOUND),
        # while identifiers sent once report what the vendor erased.
        resent = {email for email, times in sent.items() if times > 1}
        print(f"killed at {at_first_kill} and {at_second_kill}; {len(resent)} identifiers resent")
        assert resent, "no batch was sent again after the kill: was one really in flight?"
        for request in stack.requests:
            email = stack.email(request)
            if email in stack.samples.known_emails:
                want = Status.NOT_FOUND if email in resent else Status.COMPLETED
                got = final[request.request_id, VENDOR][-1]
                assert got is want, (request.request_id, sent[email], got)

        # Every malformed message was dead-lettered (more than once is allowed after a
        # crash), with its reason, and nothing else was.
        letters = Counter((r.key, r.value) for r in dead_letters)
        assert set(letters) == set(malformed), context
        for record in dead_letters:
            assert record.header("error.reason") == expected_dlq_reason(record.value)
            assert record.header("source.topic") == stack.topics.input

        haystacks = {
            "status events": b"\n".join(r.record.value or b"" for r in records),
            "dlq headers": b"\n".join(v for r in dead_letters for v in r.headers.values()),
            "worker log": stack.log_text().encode(),
        }
        found = leaked(stack.identity_values(malformed), haystacks)
        assert not found, f"identity values leaked: {found[:10]}"
    assert time.monotonic() - started < BUDGET_SECONDS + 15


def test_sigkill_during_a_poll_does_not_strand_the_job(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A worker killed while it polls a vendor job: the job must be polled again once the
    dead worker's lease is over, like the items of a submission (one call's lease: ~24 s
    with timeout_seconds=1), and its requests finish."""
    with (
        worker_stack(
            tmp_path,
            kafka_bootstrap,
            requests=10,
            job_seconds=JOB_SECONDS,
            vendor_overrides={"timeout_seconds": 1},
            seed=37,
        ) as stack,
        StatusReader(kafka_bootstrap, stack.topics.status) as status,
    ):
        stack.sandbox.inject(
            Fault.delay(POLL_DELAY_SECONDS), path_prefix=JOBS_PATH, times=POLL_FAULTS
        )
        devstack.produce_requests(stack.kafka, stack.requests)
        first = stack.start_worker()
        kill_when(
            stack,
            status,
            first,
            "a job submitted and being polled",
            lambda counts: progressed(counts) > 0,
            frozen=lambda: in_flight(stack, JOBS_PATH, POLL_FAULTS),
        )
        second = stack.start_worker()
        wait_for_terminals(
            status,
            stack.request_ids,
            POLL_RECOVERY_SECONDS,
            lambda: f"{jobs_diagnostics(stack)}{stack.diagnostics()}",
        )
        assert devstack.stop_worker(second) == 0, stack.log_tail()
        unique, problems = deduplicated(status.status_records())
        problems += invariant_violations(unique)
        assert not problems, "\n".join(problems[:20])


Counts = Counter[tuple[str | None, Status]]


def kill_when(
    stack: Stack,
    status: StatusReader,
    worker: subprocess.Popen[bytes],
    what: str,
    condition: Callable[[Counts], bool],
    frozen: Callable[[], bool] = lambda: True,
    timeout: float = 30.0,
) -> dict[str, int]:
    """SIGKILL `worker` once the status topic shows `condition(counts)` (counts: scopes by
    (vendor or None, last status)) and, with the worker frozen by SIGSTOP, `frozen()` holds;
    return the counts at that moment."""

    def reached() -> dict[str, int] | None:
        if worker.poll() is not None:
            raise AssertionError(f"worker exited with {worker.returncode}{stack.log_tail()}")
        status.poll()
        counts: Counts = Counter()
        for (_, vendor), statuses in scope_statuses(status.status_records()).items():
            counts[vendor, statuses[-1]] += 1
        if not condition(counts):
            return None
        worker.send_signal(signal.SIGSTOP)
        if not frozen():
            worker.send_signal(signal.SIGCONT)
            return None
        worker.kill()
        return {f"{vendor or 'request'}/{s.value}": n for (vendor, s), n in counts.items()}

    try:
        seen = wait_until(reached, timeout, what, interval=0.02)
    except AssertionError as error:
        raise AssertionError(f"{error}{stack.diagnostics()}") from None
    assert worker.wait(10) == -signal.SIGKILL
    return seen


def progressed(counts: Counts) -> int:
    """Acoustic scopes past QUEUED."""
    return sum(n for (vendor, s), n in counts.items() if vendor == VENDOR and s != Status.QUEUED)


def in_flight(stack: Stack, path_prefix: str, injected: int) -> bool:
    """A call under `path_prefix` has reached the sandbox and not been answered yet: the
    delay faults (`injected` of them, the only faults queued) are taken when a request
    arrives, and a call is logged just before its answer leaves."""
    taken = injected - stack.sandbox.pending_faults()
    answered = sum(1 for c in stack.sandbox.calls if c.path.startswith(path_prefix) and c.fault)
    return taken > answered


def jobs_diagnostics(stack: Stack) -> str:
    """The ledger's open jobs and their leases, for the message of a stranded job."""
    path = stack.ledger_url.removeprefix("sqlite:///")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT job_id, status, lease_until FROM jobs WHERE next_poll_at IS NOT NULL"
            ).fetchall()
    except sqlite3.Error as error:
        return f"\nopen jobs: unavailable ({error})"
    now = time.time()
    leases = [
        f"job {job_id} {status} leased for {until / 1e6 - now:.0f} s more"
        if until
        else f"job {job_id} {status} not leased"
        for job_id, status, until in rows
    ]
    return f"\nopen jobs: {leases}"


def check_ledger(
    stack: Stack, unique: list[StatusRecord], request_final: dict[str, Status]
) -> None:
    """The ledger knows every request, finished as the topic says, and every event it
    recorded was published (the outbox is empty after the graceful stop)."""
    ledger = open_ledger(stack.ledger_url)
    try:
        assert ledger.outbox_backlog() == 0
        recorded: set[str] = set()
        for request_id, status in request_final.items():
            trail = ledger.trail(request_id)
            assert trail is not None, f"request {request_id} missing from the ledger"
            assert trail.status is status, (request_id, trail.status, status)
            assert all(vendor.status in TERMINAL for vendor in trail.vendors), trail
            recorded.update(event.event_id for event in trail.events)
        assert recorded == {r.event.event_id for r in unique}, (
            "the ledger's status history and the published events differ"
        )
    finally:
        ledger.close()
