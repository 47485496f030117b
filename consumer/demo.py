"""`make run`: the whole pipeline on this machine, with live progress and a summary.

Starts an in-memory Kafka-protocol broker (or uses `KAFKA_BOOTSTRAP_SERVERS`), the
Acoustic sandbox, a SQLite ledger and `erasure-worker run` as a real process; feeds a few
hundred sample requests (some unknown to the vendor, a few malformed) and watches the
status topic the way a downstream consumer would, until every request is finished.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from consumer import devstack
from consumer.codec import decode_status_event
from consumer.kafka import Consumer, Message, Partition, consumer_config
from consumer.ledger import Ledger, LedgerUnavailable, open_ledger
from consumer.model import Status
from consumer.sandbox.acoustic import AcousticSandbox
from consumer.sandbox.server import Fault

WORKDIR = Path("var/demo")
SHOWN_STATUSES = (
    Status.QUEUED,
    Status.SUBMITTED,
    Status.IN_PROGRESS,
    Status.COMPLETED,
    Status.NOT_FOUND,
    Status.FAILED,
)


@dataclass
class Downstream:
    """What a consumer of the status and dead-letter topics has seen so far."""

    request_status: dict[str, Status] = field(default_factory=dict)
    vendor_status: dict[tuple[str, str], Status] = field(default_factory=dict)
    event_ids: set[str] = field(default_factory=set)
    dead_letters: Counter[str] = field(default_factory=Counter)

    def take(self, message: Message, status_topic: str) -> None:
        if message.topic != status_topic:
            self.dead_letters[dict(message.headers).get("error.reason", b"?").decode()] += 1
            return
        if message.value is None:
            return
        event = decode_status_event(message.value)
        self.event_ids.add(event.event_id)
        if event.vendor is None:
            self.request_status[event.request_id] = event.status
        else:
            self.vendor_status[(event.request_id, event.vendor)] = event.status

    @property
    def finished(self) -> int:
        return sum(1 for status in self.request_status.values() if status.is_terminal)


class _NoRebalanceHandling:
    def on_assign(self, partitions: list[Partition]) -> None: ...
    def on_revoke(self, partitions: list[Partition]) -> None: ...
    def on_lost(self, partitions: list[Partition]) -> None: ...


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir(parents=True)
    with devstack.kafka_bootstrap(log_path=WORKDIR / "broker.log") as bootstrap:
        return _run(bootstrap, args.requests, args.timeout)


def _run(bootstrap: str, count: int, timeout: float) -> int:
    sandbox = devstack.start_acoustic_sandbox(job_seconds=2.0)
    # A flaky vendor, as in production: the worker must ride these out on its own.
    sandbox.inject(Fault.status(500), path_prefix="/rest/databases", times=1)
    sandbox.inject(Fault.rate_limited(retry_after=1), path_prefix="/rest/databases", times=1)
    sandbox.inject(Fault.reset(), path_prefix="/rest/gdpr_jobs", times=2)
    topics = devstack.Topics.unique("demo")
    devstack.create_worker_topics(bootstrap, topics)
    samples = devstack.sample_requests(count)
    for request in samples.requests:
        email = request.identities[0].value
        if email in samples.known_emails:
            sandbox.add_contact(devstack.ACOUSTIC_DATABASE, {"EMAIL": email})
    ledger_url = f"sqlite:///{WORKDIR / 'ledger.db'}"
    config = devstack.write_config(
        WORKDIR / "config.yaml",
        bootstrap=bootstrap,
        topics=topics,
        ledger_url=ledger_url,
        acoustic=sandbox,
        http_port=0,
    )
    kafka = topics.kafka_settings(bootstrap, **devstack.fast_group_config())
    malformed = devstack.malformed_messages()
    devstack.produce_requests(kafka, samples.requests, malformed)
    print(f"broker {bootstrap}; Acoustic sandbox {sandbox.base_url}; ledger {ledger_url}")
    print("the sandbox will answer one submission with 500, one with 429 and reset two polls")
    print(
        f"fed {count} requests ({len(samples.known_emails)} known to the vendor) "
        f"and {len(malformed)} malformed messages to {topics.input}\n"
    )
    worker = devstack.start_worker(config, WORKDIR / "worker.log")
    downstream = Downstream()
    watcher = Consumer(
        {
            **consumer_config(
                kafka.model_copy(update={"group_id": f"demo-watch-{uuid.uuid4().hex[:6]}"})
            ),
            "enable.partition.eof": False,
        }
    )
    watcher.subscribe([topics.status, topics.dlq], _NoRebalanceHandling())
    started = time.monotonic()
    try:
        _watch(watcher, downstream, topics.status, ledger_url, count, started + timeout, started)
    finally:
        exit_code = devstack.stop_worker(worker)
        watcher.close()
        sandbox.stop()
    _summary(downstream, ledger_url, sandbox, count, exit_code, time.monotonic() - started)
    return 0 if downstream.finished == count and exit_code == 0 else 1


def _watch(
    watcher: Consumer,
    downstream: Downstream,
    status_topic: str,
    ledger_url: str,
    count: int,
    deadline: float,
    started: float,
) -> None:
    ledger = open_ledger(ledger_url)
    ledger.migrate()  # the worker does it too; the watcher may look first
    next_line = 0.0
    while downstream.finished < count and time.monotonic() < deadline:
        for message in watcher.consume(500, 0.2):
            downstream.take(message, status_topic)
        if time.monotonic() >= next_line:
            next_line = time.monotonic() + 1.0
            print(_progress_line(ledger, downstream, count, time.monotonic() - started), flush=True)
    ledger.close()


def _progress_line(ledger: Ledger, downstream: Downstream, count: int, elapsed: float) -> str:
    counts = _item_counts(ledger)
    items = " ".join(f"{status.value} {counts.get(status, 0):>4}" for status in SHOWN_STATUSES)
    return (
        f"{elapsed:6.1f}s  acoustic items: {items} | requests finished "
        f"{downstream.finished:>4}/{count} | dead-lettered {sum(downstream.dead_letters.values())}"
    )


def _item_counts(ledger: Ledger) -> dict[Status, int]:
    try:
        counts = ledger.item_counts()
    except LedgerUnavailable:
        return {}
    return {status: number for (vendor, status), number in counts.items() if vendor == "acoustic"}


def _summary(
    downstream: Downstream,
    ledger_url: str,
    sandbox: AcousticSandbox,
    count: int,
    exit_code: int,
    elapsed: float,
) -> None:
    calls = Counter(f"{call.method} {_route(call.path)}" for call in sandbox.calls)
    example = next(iter(downstream.request_status), "REQUEST_ID")
    rows = [
        ("requests (request scope)", _counts(Counter(downstream.request_status.values()))),
        ("acoustic (vendor scope)", _counts(Counter(downstream.vendor_status.values()))),
        ("dead-lettered", _counts(downstream.dead_letters) or "0"),
        ("status events published", str(len(downstream.event_ids))),
        ("Acoustic API calls", _counts(calls)),
        ("finished", f"{downstream.finished}/{count} in {elapsed:.1f}s"),
        ("worker exit code", str(exit_code)),
    ]
    print("\nsummary")
    for label, value in rows:
        print(f"  {label:<26} {value}")
    print(f"\nledger {ledger_url}; worker log {WORKDIR / 'worker.log'}")
    print(
        "audit trail of one request:\n"
        f"  ERASURE_CONFIG={WORKDIR / 'config.yaml'} ACOUSTIC_CLIENT_SECRET=x "
        f"ACOUSTIC_REFRESH_TOKEN=x .venv/bin/erasure-worker status {example}"
    )


def _counts(counter: Counter[str] | Counter[Status]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(counter.items()))


def _route(path: str) -> str:
    return "/".join("{id}" if part.isdigit() else part for part in path.split("/"))


if __name__ == "__main__":
    sys.exit(main())
