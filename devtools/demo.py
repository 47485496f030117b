"""`make run`: the whole pipeline on this machine, with live progress and a summary.

Starts an in-memory Kafka-protocol broker (or uses `KAFKA_BOOTSTRAP_SERVERS`), the four
vendor sandboxes, a SQLite ledger and `erasure-worker run` as a real process; feeds sample
requests (some identifiers unknown to the vendors, a few malformed messages) and watches
the status topic the way a downstream consumer would, until every request is finished.
The summary counts each vendor's calls against the fewest its limits allow.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from consumer.kafka.client import Consumer, Message, Partition, consumer_config
from consumer.kafka.codec import decode_status_event
from consumer.ledger import Ledger, LedgerUnavailable, open_ledger
from consumer.model import Status
from consumer.vendors import registry
from devtools import devstack
from devtools.sandbox.fleet import MEMBERS, CallTally, SandboxFleet
from devtools.sandbox.server import Call, Fault

WORKDIR = Path("var/demo")
SHOWN = (Status.QUEUED, Status.SUBMITTED, Status.IN_PROGRESS)


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

    def vendor_outcomes(self, vendor: str) -> Counter[Status]:
        return Counter(s for (_, v), s in self.vendor_status.items() if v == vendor)


class _NoRebalanceHandling:
    def on_assign(self, partitions: list[Partition]) -> None: ...
    def on_revoke(self, partitions: list[Partition]) -> None: ...
    def on_lost(self, partitions: list[Partition]) -> None: ...


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir(parents=True)
    with devstack.kafka_bootstrap(log_path=WORKDIR / "broker.log") as bootstrap:
        return _run(bootstrap, args.requests, args.timeout)


def _run(bootstrap: str, count: int, timeout: float) -> int:
    fleet = SandboxFleet(job_seconds=2.0)
    fleet.start()
    # A flaky vendor, as in production: the worker must ride these out on its own.
    fleet.all["acoustic"].inject(Fault.status(500), path_prefix="/rest/databases")
    fleet.all["acoustic"].inject(Fault.reset(), path_prefix="/rest/gdpr_jobs", times=2)
    fleet.all["acquia_cdp"].inject(Fault.rate_limited(retry_after=1), path_prefix="/v2/")
    topics = devstack.Topics.unique("demo")
    devstack.create_worker_topics(bootstrap, topics)
    samples = devstack.fleet_sample_requests(count)
    for identity in samples.known:
        fleet.seed(identity.type, identity.value)
    ledger_url = f"sqlite:///{WORKDIR / 'ledger.db'}"
    config = devstack.write_config(
        WORKDIR / "config.yaml",
        bootstrap=bootstrap,
        topics=topics,
        ledger_url=ledger_url,
        vendors=fleet.vendors_config(devstack.FLEET_VENDOR_SETTINGS),
    )
    kafka = topics.kafka_settings(bootstrap, **devstack.fast_group_config())
    malformed = devstack.malformed_messages()
    devstack.produce_requests(kafka, samples.requests, malformed)
    print(f"broker {bootstrap}; ledger {ledger_url}; sandboxes:")
    for vendor, sandbox in fleet.all.items():
        print(f"  {vendor:<11} {sandbox.base_url}")
    print("faults: Acoustic answers one submission 500 and resets two polls; Acquia CDP 429s once")
    print(f"fed {count} requests and {len(malformed)} malformed messages to {topics.input}\n")
    worker = devstack.start_worker(config, WORKDIR / "worker.log")
    downstream = Downstream()
    watcher = Consumer(
        consumer_config(kafka.model_copy(update={"group_id": f"demo-watch-{uuid.uuid4().hex[:6]}"}))
    )
    watcher.subscribe([topics.status, topics.dlq], _NoRebalanceHandling())
    started = time.monotonic()
    ledger = open_ledger(ledger_url)
    ledger.migrate()  # the worker does it too; the watcher may look first
    try:
        _watch(watcher, downstream, topics.status, ledger, count, started + timeout, started)
        exit_code = devstack.stop_worker(worker)
        _summary(downstream, ledger, fleet, count, exit_code, time.monotonic() - started)
    finally:
        if worker.poll() is None:
            worker.kill()
        watcher.close()
        ledger.close()
        fleet.stop()
    print(f"\nledger {ledger_url}; worker log {WORKDIR / 'worker.log'}")
    example = next(iter(downstream.request_status), "REQUEST_ID")
    print(
        "audit trail of one request (status and the other ledger commands need no vendor"
        f" secret):\n  ERASURE_CONFIG={WORKDIR / 'config.yaml'}"
        f" .venv/bin/erasure-worker status {example}"
    )
    return 0 if downstream.finished == count and exit_code == 0 else 1


def _watch(
    watcher: Consumer,
    downstream: Downstream,
    status_topic: str,
    ledger: Ledger,
    count: int,
    deadline: float,
    started: float,
) -> None:
    next_line = 0.0
    while downstream.finished < count and time.monotonic() < deadline:
        for message in watcher.consume(500, 0.2):
            downstream.take(message, status_topic)
        if time.monotonic() >= next_line:
            next_line = time.monotonic() + 2.0
            print(_progress_line(ledger, downstream, count, time.monotonic() - started), flush=True)


def _progress_line(ledger: Ledger, downstream: Downstream, count: int, elapsed: float) -> str:
    try:
        counts = ledger.item_counts()
    except LedgerUnavailable:
        counts = {}
    vendors = "  ".join(
        f"{vendor} "
        + "/".join(str(counts.get((vendor, status), 0)) for status in SHOWN)
        + f" done {sum(n for (v, s), n in counts.items() if v == vendor and s.is_terminal)}"
        for vendor in registry.names()
    )
    return (
        f"{elapsed:6.1f}s  finished {downstream.finished:>4}/{count}  "
        f"[queued/submitted/in progress]  {vendors}"
    )


@dataclass(frozen=True)
class CallCount:
    label: str
    calls: int
    minimum: int
    faulted: int = 0  # calls the sandbox answered with an injected fault (and were retried)


def _summary(
    downstream: Downstream,
    ledger: Ledger,
    fleet: SandboxFleet,
    count: int,
    exit_code: int,
    elapsed: float,
) -> None:
    items = Counter[str]()
    for (vendor, _status), number in ledger.item_counts().items():
        items[vendor] += number
    print("\nsummary")
    rows = [
        ("requests", _counts(Counter(downstream.request_status.values()))),
        *((vendor, _counts(downstream.vendor_outcomes(vendor))) for vendor in registry.names()),
        ("dead-lettered", _counts(downstream.dead_letters) or "0"),
        ("status events published", str(len(downstream.event_ids))),
        ("finished", f"{downstream.finished}/{count} in {elapsed:.1f}s (worker exit {exit_code})"),
    ]
    for label, value in rows:
        print(f"  {label:<24} {value}")
    print("\nvendor calls (identifiers at the vendor; fewest calls its limits allow)")
    tallied = [
        (name, tally, fleet.all[name]) for name in MEMBERS for tally in MEMBERS[name].tallies
    ]
    for name, tally, sandbox in tallied:
        row = _call_count(name, tally, _calls(sandbox.calls, tally), items[name])
        faulted = f" (incl. {row.faulted} injected fault)" if row.faulted else ""
        print(f"  {row.label:<44} {row.calls:>5}   minimum {row.minimum}{faulted}")
    for name, tally, sandbox in tallied:
        if tally.per_second_limit is not None:
            label = f"{name} {tally.label.format(items=items[name])}, most in any 1 s"
            busiest = _most_in_one_second(_calls(sandbox.calls, tally))
            print(f"  {label:<44} {busiest:>5}   limit {tally.per_second_limit}")


def _calls(calls: list[Call], tally: CallTally) -> list[Call]:
    """The calls of the tally's kind."""
    return [
        call
        for call in calls
        if tally.path_part in call.path and tally.method in (None, call.method)
    ]


def _call_count(vendor: str, tally: CallTally, calls: list[Call], items: int) -> CallCount:
    return CallCount(
        f"{vendor} {tally.label.format(items=items)}",
        len(calls),
        math.ceil(items / tally.ids_per_call),
        sum(1 for call in calls if call.fault),
    )


def _most_in_one_second(calls: list[Call]) -> int:
    times = sorted(call.timestamp for call in calls)
    most, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def _counts(counter: Counter[str] | Counter[Status]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(counter.items()))


if __name__ == "__main__":
    sys.exit(main())
