"""No dead ends (issue 9), end to end: a real worker process, the Tansu broker, a SQLite
ledger and the strict Acoustic sandbox; the operator commands run as `erasure-worker` runs
them (`consumer.cli.main`, in this process, whose environment holds no vendor secret).

A vendor refuses a batch for good, so the request ends FAILED; `list --failed` shows it,
`requeue --failed` sends it again, the sandbox now accepts, and the request ends COMPLETED
with the contract's event sequence and a trail that says who requeued it and why. A dead
letter is replayed after the fix and recorded, and one that fails again is never looped.
Every operator command refuses bad input with one line and exit 1.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer as RawProducer

from consumer.cli import main
from consumer.kafka.codec import encode_request
from consumer.ledger import open_ledger
from consumer.model import ErasureRequest, Identity, Regulation, Status
from devtools import devstack
from devtools.sandbox.fleet import SECRETS as SANDBOX_SECRETS
from devtools.sandbox.server import Fault
from tests.support.contract import invariant_violations
from tests.support.topics import StatusReader, TopicReader, wait_for_terminals
from tests.support.waiting import wait_until
from tests.support.worker import SUBMIT_PATH, VENDOR, Stack, wait_ready, worker_stack

pytestmark = pytest.mark.slow

FINISH_SECONDS = 30.0
S = Status
SUBJECTS = ("json@example.com", "old-subject@example.com")  # in the dead letters' values


@pytest.fixture
def stack(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Stack]:
    assert not set(SANDBOX_SECRETS) & set(os.environ), "the test process must hold no secret"
    with worker_stack(tmp_path, kafka_bootstrap, requests=1, seed=9) as running:
        yield running


def run(capsys: pytest.CaptureFixture[str], stack: Stack, *args: str) -> tuple[int, str, str]:
    """`erasure-worker ARGS --config CONFIG`: exit code, stdout, stderr."""
    capsys.readouterr()
    code = main([*args, "--config", str(stack.config_path)])
    out, err = capsys.readouterr()
    return code, out, err


def arrived(reader: TopicReader) -> int:
    reader.poll()
    return len(reader.records)


def history(status: StatusReader, rid: str) -> list[tuple[str | None, S, S | None, str | None]]:
    return [
        (e.vendor, e.status, e.previous_status, e.detail)
        for e in status.events()
        if e.request_id == rid
    ]


def test_a_failed_request_is_listed_requeued_and_completed(
    stack: Stack, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (request,) = stack.requests
    rid = request.request_id
    stack.sandbox.inject(Fault.status(400), path_prefix=SUBMIT_PATH)  # one batch, refused
    with StatusReader(kafka_bootstrap, stack.topics.status) as status:
        devstack.produce_requests(stack.kafka, stack.requests)
        wait_ready(stack, stack.start_worker())
        assert wait_for_terminals(status, {rid}, FINISH_SECONDS, stack.diagnostics) == {
            rid: [S.FAILED]
        }

        code, out, _ = run(capsys, stack, "list", "--failed")
        header, line = out.splitlines()
        assert code == 0 and header.startswith("REQUEST ")
        assert line.split()[:3] == [rid, request.regulation.value, "FAILED"]
        assert line.split()[-1] == VENDOR

        code, out, _ = run(capsys, stack, "requeue", "--failed", "--dry-run", "--reason", "x")
        assert (code, out) == (0, "would requeue 1 vendor scope(s) of 1 request(s)"
                                  " (dry run: nothing changed)\n")  # fmt: skip
        args = ("requeue", "--failed", "--reason", "sandbox fixed", "--actor", "ops")
        assert run(capsys, stack, *args)[:2] == (0, "requeued 1 vendor scope(s) of 1 request(s)\n")

        def completed() -> bool:
            status.poll()
            return status.request_terminals().get(rid) == [S.FAILED, S.COMPLETED]

        wait_until(completed, FINISH_SECONDS, "the requeued request to complete")
        assert run(capsys, stack, *args)[0] == 0  # nothing FAILED left: a harmless no-op
        events = history(status, rid)
        assert events[:4] == [
            (None, S.RECEIVED, None, None),
            (VENDOR, S.QUEUED, None, None),
            (VENDOR, S.FAILED, S.QUEUED, "acoustic submit: HTTP 400 (injected_fault)"),
            (None, S.FAILED, S.RECEIVED, f"failed at: {VENDOR}"),
        ]
        assert events[4] == (VENDOR, S.QUEUED, S.FAILED, "requeued: sandbox fixed")
        assert events[-2][:2] in ((VENDOR, S.COMPLETED), (VENDOR, S.NOT_FOUND))
        assert events[-1] == (None, S.COMPLETED, S.FAILED, None)
        assert invariant_violations(status.status_records()) == []

    code, out, _ = run(capsys, stack, "status", rid, "--json")
    trail = json.loads(out)
    (action,) = trail["actions"]
    assert (action["action"], action["vendor"], action["actor"], action["reason"]) == (
        "requeue",
        VENDOR,
        "ops",
        "sandbox fixed",
    )
    assert trail["status"] == "COMPLETED" and trail["due_at"]

    code, _, err = run(capsys, stack, "extend", rid, "--days", "5", "--reason", "x")
    assert (code, err) == (1, f"erasure-worker: request {rid} is COMPLETED: there is no"
                              " deadline left to extend\n")  # fmt: skip


def _dead_letter_of_an_old_worker(stack: Stack) -> ErasureRequest:
    """A valid request in the dead-letter topic, as a worker with a bug left it there."""
    request = ErasureRequest(
        str(uuid.uuid4()),
        stack.requests[0].requested_at,
        Regulation.CCPA,
        (Identity("email", SUBJECTS[1]),),
        None,
        "crm",
        None,
    )
    headers: list[tuple[str, str | bytes | None]] = [
        ("error.reason", b"invalid_request"),
        ("error.message", b"vendors list is empty"),
        ("source.topic", stack.topics.input.encode()),
        ("source.partition", b"0"),
        ("source.offset", b"41"),
    ]
    producer = RawProducer({"bootstrap.servers": stack.bootstrap})
    producer.produce(stack.topics.dlq, encode_request(request), request.request_id.encode(),
                     headers=headers)  # fmt: skip
    assert producer.flush(10) == 0
    return request


def _dead_letters(capsys: pytest.CaptureFixture[str], stack: Stack) -> list[dict[str, Any]]:
    """`dlq list --json`, by position; it shows none of the SUBJECTS' addresses."""
    code, out, _ = run(capsys, stack, "dlq", "list", "--json")
    assert code == 0 and not any(value in out for value in SUBJECTS), out
    letters: list[dict[str, Any]] = json.loads(out)
    return sorted(letters, key=lambda letter: (letter["partition"], letter["offset"]))


def test_dead_letters_are_replayed_once_and_never_looped(
    stack: Stack, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _dead_letter_of_an_old_worker(stack)
    broken = b'{"request_id": "a JSON producer", "email": "json@example.com"}'
    with StatusReader(kafka_bootstrap, stack.topics.status) as status:
        devstack.produce_requests(stack.kafka, (), extra=[(b"json-producer", broken)])
        wait_ready(stack, stack.start_worker())
        with TopicReader(kafka_bootstrap, stack.topics.dlq) as dlq:
            wait_until(lambda: arrived(dlq) >= 2, FINISH_SECONDS, "two dead letters")
            listed = _dead_letters(capsys, stack)
            assert [(d["reason"], d["request_id"], d["replays"]) for d in listed] in (
                [("invalid_request", old.request_id, 0), ("undecodable", None, 0)],
                [("undecodable", None, 0), ("invalid_request", old.request_id, 0)],
            )
            replay = ("dlq", "replay", "--all", "--reason", "fixed", "--actor", "ops")
            code, out, _ = run(capsys, stack, *replay)
            assert (code, out) == (0, f"replayed 2 dead letter(s) to {stack.topics.input}\n")

            def recorded() -> bool:
                status.poll()
                return any(e.request_id == old.request_id for e in status.events())

            wait_until(recorded, FINISH_SECONDS, "the replayed request recorded")
            wait_until(lambda: arrived(dlq) >= 3, FINISH_SECONDS, "the undecodable one back")
        again = [d for d in _dead_letters(capsys, stack) if d["replays"] == 1]
        assert [(d["reason"], d["replayed"]) for d in again] == [("undecodable", None)]

        code, out, _ = run(capsys, stack, "dlq", "replay", "--all")
        assert code == 0 and out.splitlines() == [
            "skipped 2: already replayed",
            "skipped 1: came back after a replay (replay it by --offsets once the cause is fixed)",
            f"replayed 0 dead letter(s) to {stack.topics.input}",
        ]
        replayed = [d["replayed"] for d in _dead_letters(capsys, stack) if d["replayed"]]
        assert [(r["actor"], r["reason"]) for r in replayed] == [("ops", "fixed")] * 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("requeue", "--failed"), "--reason is required"),
        (
            ("requeue", "--failed", "--since", "last tuesday", "--reason", "r"),
            "--since takes a date",
        ),
        (("requeue", "--failed", "--vendor", "braze", "--reason", "r"), "unknown vendor braze"),
        (("requeue", str(uuid.UUID(int=1)), "--reason", "r"), "no request 00000000-"),
        (("requeue", "someone@example.com", "--reason", "r"), "a request id is a UUID"),
        (("requeue", "--reason", "r"), "name the requests to requeue"),
        (("extend", str(uuid.UUID(int=1)), "--days", "-3", "--reason", "r"), "--days must be"),
        (("extend", str(uuid.UUID(int=1)), "--days", "3"), "--reason is required"),
        (("extend", str(uuid.UUID(int=1)), "--days", "3", "--reason", "r"), "no request"),
        (("status", str(uuid.UUID(int=1))), "no request"),
        (("dlq", "replay", "--offsets", "0:x"), "--offsets takes PARTITION:OFFSET"),
        (("dlq", "replay"), "choose the dead letters"),
    ],
)
def test_bad_operator_input_is_one_line_and_exit_1(
    tmp_path: Path,
    kafka_bootstrap: str,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    message: str,
) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(ledger_url)
    ledger.migrate()  # as the worker leaves it
    ledger.close()
    unset = {
        name: f"${{{name}_NOT_SET}}" for name in ("client_id", "client_secret", "refresh_token")
    }
    config = devstack.write_config(
        tmp_path / "config.yaml",
        bootstrap=kafka_bootstrap,
        topics=devstack.Topics.unique("badinput"),
        ledger_url=ledger_url,
        vendors={"acoustic": {"base_url": "https://example.com", "database_ids": [1], **unset}},
    )
    capsys.readouterr()
    code = main([*args, "--config", str(config)])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err.startswith("erasure-worker: ") and message in err and err.count("\n") == 1
