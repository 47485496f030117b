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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from consumer import devstack
from consumer.codec import decode_status_event
from consumer.kafka import Consumer, Message, Partition, consumer_config
from consumer.ledger import Ledger, LedgerUnavailable, open_ledger
from consumer.model import VENDOR_NAMES, Status
from consumer.sandbox.fleet import SandboxFleet
from consumer.sandbox.server import Call, Fault

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
    fleet.acoustic.inject(Fault.status(500), path_prefix="/rest/databases")
    fleet.acoustic.inject(Fault.reset(), path_prefix="/rest/gdpr_jobs", times=2)
    fleet.acquia_cdp.inject(Fault.rate_limited(retry_after=1), path_prefix="/v2/")
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
        "audit trail of one request:\n"
        f"  ERASURE_CONFIG={WORKDIR / 'config.yaml'} ACOUSTIC_CLIENT_SECRET=x "
        f"ACOUSTIC_REFRESH_TOKEN=x VOYADO_API_KEY=x MONETATE_PRIVATE_KEY=x CDP_PASSWORD=x "
        f".venv/bin/erasure-worker status {example}"
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
        for vendor in VENDOR_NAMES
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
        *((vendor, _counts(downstream.vendor_outcomes(vendor))) for vendor in VENDOR_NAMES),
        ("dead-lettered", _counts(downstream.dead_letters) or "0"),
        ("status events published", str(len(downstream.event_ids))),
        ("finished", f"{downstream.finished}/{count} in {elapsed:.1f}s (worker exit {exit_code})"),
    ]
    for label, value in rows:
        print(f"  {label:<24} {value}")
    print("\nvendor calls (identifiers at the vendor; fewest calls its limits allow)")
    for call_count in _call_counts(fleet, items):
        faulted = f" (incl. {call_count.faulted} injected fault)" if call_count.faulted else ""
        label, calls, minimum = call_count.label, call_count.calls, call_count.minimum
        print(f"  {label:<44} {calls:>5}   minimum {minimum}{faulted}")
    checks = [c for c in fleet.monetate.calls if "/status/" in c.path]
    label = "monetate status checks, most in any 1 s"
    print(f"  {label:<44} {_most_in_one_second(checks):>5}   limit 1")


def _call_counts(fleet: SandboxFleet, items: Counter[str]) -> list[CallCount]:
    def posts(calls: list[Call], test: Callable[[str], bool]) -> list[Call]:
        return [call for call in calls if call.method == "POST" and test(call.path)]

    acoustic = posts(fleet.acoustic.calls, lambda p: p.endswith("/gdpr_erasure"))
    cdp = posts(fleet.acquia_cdp.calls, lambda p: p.endswith("/dataerasure"))
    return [
        CallCount(
            f"acoustic uploads ({items['acoustic']} ids)",
            len(acoustic),
            math.ceil(items["acoustic"] / 5000),
            sum(1 for call in acoustic if call.fault),
        ),
        CallCount(
            f"voyado remove jobs ({items['voyado']} keys)",
            len(posts(fleet.voyado.calls, lambda p: "create-remove-customer-job" in p)),
            items["voyado"],
        ),
        CallCount(
            f"monetate uploads ({items['monetate']} ids)",
            len(posts(fleet.monetate.calls, lambda p: "/data/" in p)),
            math.ceil(items["monetate"] / 500),
        ),
        CallCount(
            "monetate status checks",
            sum(1 for call in fleet.monetate.calls if "/status/" in call.path),
            items["monetate"],
        ),
        CallCount(
            f"acquia_cdp erasure calls ({items['acquia_cdp']} ids)",
            len(cdp),
            math.ceil(items["acquia_cdp"] / 200),
            sum(1 for call in cdp if call.fault),
        ),
    ]


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
