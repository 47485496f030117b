"""Ingest throughput of the worker against a bare baseline, on SQLite and PostgreSQL, and
whether the worker's memory grows with the backlog (`make bench`).

    python -m bench.ingest [--events 50000] [--repeat 3] [--backends sqlite,postgresql]
                           [--backlog-factor 4] [--kafka-config KEY=VALUE ...]
                           [--pg-fast] [--profile]

Throughput is events/s from the input topic to committed ledger rows with committed
offsets. Each measurement gets a fresh Tansu broker with a fresh 4-partition topic holding
the same N pre-produced events, a fresh database (SQLite file in a temporary directory, or
a new database in a private PostgreSQL cluster), a fresh consumer group, and its own child
process (`bench.baseline` or `bench.worker`), so that its peak RSS (VmHWM) is its own. The
clock runs from the first non-empty consume to the commit covering the last event, for
both sides alike. Afterwards the parent checks, against the broker and the database, that
every offset was committed and every request and item row is there. CPU time per event
(the child's, plus its PostgreSQL backend's) is reported next to the rates: other jobs on
this shared machine move wall-clock rates far more than CPU time.

Measurements are repeated `--repeat` times, interleaved (baseline and worker side by side
in each round) so that drift of this shared machine hits both; medians are reported. The
worker and the baseline are also run with `--backlog-factor` times the events on SQLite:
with memory bounded by the batch, not the backlog, peak RSS should not grow with it.

Results: a table on stdout, JSON in `bench/results/ingest.json`; with `--profile`, one
extra cProfile'd worker run per backend in `bench/results/profile-<backend>.pstats`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import pstats
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import confluent_kafka
import fastavro
import psycopg

from bench.common import IDENTITY_TYPE, Job, Result
from consumer.kafka.codec import encode_request
from consumer.ledger import open_ledger
from consumer.model import ErasureRequest, Identity, Regulation
from devtools.broker import start_broker
from devtools.devstack import Topics, create_worker_topics, fast_group_config
from tests.support import pg

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PARTITIONS = 4
TARGET_RATIO = 0.8
BACKENDS = ("sqlite", "postgresql")
KINDS = ("baseline", "worker")
KafkaConfig = dict[str, str | int | float | bool]


Messages = list[tuple[bytes, bytes]]


def emails_of(index: int) -> int:
    """Email identities of the `index`-th request: 1 to 3, so 1 to 3 Acoustic items."""
    return 1 + index % 3


def expected_items(events: int) -> int:
    return sum(emails_of(index) for index in range(events))


def make_dataset(count: int, seed: int = 7) -> Messages:
    """Framed request values (key, value) as an upstream producer writes them, ~200 bytes:
    1 to 3 email identities each (2 items on average) and, on every fourth, a loyalty id
    that no enabled vendor erases by."""
    rng = random.Random(seed)
    start = datetime(2024, 5, 1, tzinfo=UTC)
    messages: Messages = []
    for index in range(count):
        identities = [
            Identity(IDENTITY_TYPE, f"subject{index}.{n}.{rng.getrandbits(24):06x}@example.com")
            for n in range(emails_of(index))
        ]
        if index % 4 == 0:
            identities.append(Identity("loyalty_id", f"L{index:08d}"))
        digits = f"{rng.getrandbits(128) & ~(0xF << 76) | (0x4 << 76):032x}"  # a uuid4
        request = ErasureRequest(
            request_id=f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}",
            requested_at=start + timedelta(milliseconds=index),
            regulation=(Regulation.GDPR, Regulation.CCPA, Regulation.OTHER)[index % 3],
            identities=tuple(identities),
            vendors=None,
            source="bench",
            trace_id=f"trace-{index}" if index % 2 else None,
        )
        messages.append((request.request_id.encode(), encode_request(request)))
    return messages


def produce(bootstrap: str, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> dict[int, int]:
    """Produce and wait for every delivery report; returns, per partition, the offset
    after its last message (from the reports: Tansu's high watermarks are wrong after
    batched produce, see TANSU.md)."""
    ends: dict[int, int] = {}
    failures: list[str] = []

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            failures.append(str(error))
        else:
            partition = message.partition()
            ends[partition] = max(ends.get(partition, 0), message.offset() + 1)

    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)  # wait for room: returns as soon as a report frees some
        producer.poll(0)
    left = producer.flush(120)
    if left or failures or sum(ends.values()) != len(messages):
        raise RuntimeError(
            f"produce to {topic}: {left} left, {len(failures)} failed"
            f" ({failures[:1]}), {sum(ends.values())}/{len(messages)} confirmed"
        )
    return ends


@contextlib.contextmanager
def fresh_ledger(backend: str, server_dsn: str | None) -> Iterator[str]:
    """A migrated, empty ledger for one measurement, gone afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench-ledger-") as directory:
            url = f"sqlite:///{directory}/ledger.db"
            _migrate(url)
            yield url
    else:
        assert server_dsn is not None
        with pg.fresh_database(server_dsn) as url:
            _migrate(url)
            yield url


def _migrate(url: str) -> None:
    ledger = open_ledger(url)
    try:
        ledger.migrate()
    finally:
        ledger.close()


def count_rows(url: str) -> tuple[int, int]:
    """Rows in `requests` and `items`."""
    sql = "SELECT (SELECT count(*) FROM requests), (SELECT count(*) FROM items)"
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            requests, items = conn.execute(sql).fetchone()
        finally:
            conn.close()
    else:
        with psycopg.connect(url) as pconn:
            row = pconn.execute(sql).fetchone()
            assert row is not None
            requests, items = row
    return int(requests), int(items)


def committed_offsets(job: Job) -> dict[int, int]:
    """The group's committed offsets, as the broker has them."""
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": job.bootstrap, "group.id": job.group_id, "enable.auto.commit": False}
    )
    try:
        partitions = [confluent_kafka.TopicPartition(job.input_topic, p) for p in job.targets]
        return {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
    finally:
        consumer.close()


def run_child(kind: str, job: Job) -> Result:
    completed = subprocess.run(
        [sys.executable, "-m", f"bench.{kind}", job.to_json()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=job.timeout + 60,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"bench.{kind} failed ({completed.returncode}):\n{completed.stderr}")
    if completed.stderr.strip():
        sys.stderr.write(completed.stderr)
    return Result(**json.loads(completed.stdout.strip().splitlines()[-1]))


def measure(
    kind: str,
    backend: str,
    dataset: Messages,
    events: int,
    server_dsn: str | None,
    kafka_config: KafkaConfig,
    profile_path: str | None = None,
) -> Result:
    """One measurement from scratch: broker, topic, data, database, child, checks."""
    with start_broker() as broker, fresh_ledger(backend, server_dsn) as url:
        bootstrap = broker.bootstrap_servers
        topics = Topics.unique("bench")
        create_worker_topics(bootstrap, topics, PARTITIONS)
        targets = produce(bootstrap, topics.input, dataset[:events])
        job = Job(
            bootstrap=bootstrap,
            input_topic=topics.input,
            status_topic=topics.status,
            dlq_topic=topics.dlq,
            group_id=topics.group_id,
            ledger_url=url,
            events=events,
            targets=targets,
            kafka_config={**fast_group_config(), **kafka_config},
            timeout=120 + events / 500,
            profile_path=profile_path,
        )
        result = run_child(kind, job)
        offsets = committed_offsets(job)
        if offsets != targets:
            raise RuntimeError(f"{kind}/{backend}: committed {offsets}, produced {targets}")
        rows = count_rows(url)
        expected = (events, expected_items(events))
        if rows != expected:
            raise RuntimeError(f"{kind}/{backend}: (requests, items) {rows} != {expected}")
        if not broker.alive():
            raise RuntimeError("the broker died during the measurement")
    return result


def summary(results: Sequence[Result]) -> dict[str, Any]:
    """Medians over the repeats, and every run."""
    rates = [r.rate for r in results]
    return {
        "events_per_s": statistics.median(rates),
        "peak_rss_mib": statistics.median(r.peak_rss_mib for r in results),
        "rss_before_mib": statistics.median(r.rss_before_mib for r in results),
        "wall_us_per_event": statistics.median(1e6 * r.seconds / r.events for r in results),
        "cpu_us_per_event": statistics.median(1e6 * r.cpu_seconds / r.events for r in results),
        "total_cpu_us_per_event": statistics.median(
            1e6 * r.total_cpu_seconds / r.events for r in results
        ),
        "runs": [{**asdict(r), "events_per_s": r.rate} for r in results],
    }


def backlog_report(
    results: dict[tuple[str, str, int], list[Result]], events: int, factor: int
) -> dict[str, Any]:
    """Peak RSS and rate of both sides on SQLite at N and factor x N events. The baseline
    tells what is not the worker's doing: librdkafka's prefetch queue, which holds up to
    `queued.max.messages.kbytes` of backlog whatever the application does, and the
    database slowing down as it grows."""
    report: dict[str, Any] = {"backend": "sqlite", "factor": factor}
    for kind in KINDS:
        sizes: list[dict[str, Any]] = []
        for count in (events, events * factor):
            medians = summary(results[(kind, "sqlite", count)])
            sizes.append({"events": count, **{k: v for k, v in medians.items() if k != "runs"}})
        report[kind] = {
            "sizes": sizes,
            "peak_rss_growth_mib": sizes[1]["peak_rss_mib"] - sizes[0]["peak_rss_mib"],
            "runs": [asdict(r) for r in results[(kind, "sqlite", events * factor)]],
        }
    return report


def machine_info(server_dsn: str | None) -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        None,
    )
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "fastavro": fastavro.__version__,
        "sqlite": sqlite3.sqlite_version,
        "psycopg": psycopg.__version__,
    }
    if server_dsn is not None:
        with psycopg.connect(server_dsn) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            info["postgresql"] = None if row is None else row[0]
    return info


def parse_kafka_config(pairs: Sequence[str]) -> KafkaConfig:
    config: KafkaConfig = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--kafka-config wants KEY=VALUE, got {pair!r}")
        config[key] = value
    return config


def log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def print_report(report: dict[str, Any]) -> None:
    events = report["config"]["events"]
    print(
        f"\nIngest throughput, {events:,} events, median of {report['config']['repeat']}"
        f" (machine: {report['machine']['cpu_count']} CPUs, Python"
        f" {report['machine']['python']})"
    )
    header = (
        f"{'backend':<11} {'baseline ev/s':>13} {'worker ev/s':>11} {'ratio':>6}"
        f" {'base CPU µs/ev':>14} {'work CPU µs/ev':>14} {'CPU ratio':>9}"
        f" {'base RSS':>9} {'work RSS':>9}"
    )
    print(header)
    print("-" * len(header))
    for backend, entry in report["backends"].items():
        base, work = entry["baseline"], entry["worker"]
        print(
            f"{backend:<11} {base['events_per_s']:>13,.0f} {work['events_per_s']:>11,.0f}"
            f" {entry['ratio']:>6.2f} {base['total_cpu_us_per_event']:>14.1f}"
            f" {work['total_cpu_us_per_event']:>14.1f} {entry['cpu_ratio']:>9.2f}"
            f" {base['peak_rss_mib']:>5.0f} MiB {work['peak_rss_mib']:>5.0f} MiB"
        )
        ratios = ", ".join(f"{r:.2f}" for r in entry["ratios_per_round"])
        verdict = "meets" if entry["ratio"] >= TARGET_RATIO else "BELOW"
        print(f"{'':<11} per-round ratios: {ratios}; {verdict} the {TARGET_RATIO}x target")
    print(
        "ratio: worker/baseline events/s (medians). CPU µs/ev: the measuring process, plus"
        " its PostgreSQL\nbackend; CPU ratio = baseline/worker CPU per event, steadier than"
        " wall time on a busy machine."
    )
    backlog = report.get("backlog")
    if backlog:
        print(f"\nMemory against backlog ({backlog['backend']}), medians:")
        for kind in KINDS:
            for row in backlog[kind]["sizes"]:
                print(
                    f"  {kind:<8} {row['events']:>9,} events: peak RSS"
                    f" {row['peak_rss_mib']:6.1f} MiB (before consuming"
                    f" {row['rss_before_mib']:5.1f} MiB), {row['events_per_s']:>7,.0f} ev/s"
                )
            print(
                f"  {kind:<8} growth for {backlog['factor']}x the backlog:"
                f" {backlog[kind]['peak_rss_growth_mib']:+.1f} MiB"
            )


def print_profile(path: Path, backend: str, events: int) -> None:
    stats = pstats.Stats(str(path))
    print(f"\ncProfile of one worker run on {backend} ({events:,} events), by own time:")
    stats.sort_stats("tottime").print_stats(20)


Results = dict[tuple[str, str, int], list[Result]]


def run_rounds(
    args: argparse.Namespace,
    backends: Sequence[str],
    kafka_config: KafkaConfig,
    server_dsn: str | None,
) -> Results:
    """Every measurement, `args.repeat` times; baseline and worker side by side in each
    round so that the machine's drift hits both alike."""
    events: int = args.events
    backlog_events = events * args.backlog_factor
    log(f"encoding {max(events, backlog_events):,} requests")
    dataset = make_dataset(max(events, backlog_events))
    plan = [(kind, backend, events) for backend in backends for kind in KINDS]
    if args.backlog_factor > 1 and "sqlite" in backends:
        plan += [(kind, "sqlite", backlog_events) for kind in KINDS]
    results: Results = {}
    for round_ in range(1, args.repeat + 1):
        for kind, backend, count in plan:
            result = measure(kind, backend, dataset, count, server_dsn, kafka_config)
            results.setdefault((kind, backend, count), []).append(result)
            log(
                f"round {round_}/{args.repeat}: {kind:<8} {backend:<10} {count:>8,} events:"
                f" {result.rate:8,.0f} ev/s, peak RSS {result.peak_rss_mib:.0f} MiB"
            )
    if args.profile:
        RESULTS.mkdir(parents=True, exist_ok=True)
        for backend in backends:
            path = RESULTS / f"profile-{backend}.pstats"
            measure("worker", backend, dataset, events, server_dsn, kafka_config, str(path))
    return results


def build_report(
    args: argparse.Namespace,
    backends: Sequence[str],
    kafka_config: KafkaConfig,
    machine: dict[str, Any],
    results: Results,
) -> dict[str, Any]:
    events: int = args.events
    report: dict[str, Any] = {
        "machine": machine,
        "config": {
            "events": events,
            "repeat": args.repeat,
            "partitions": PARTITIONS,
            "batch_size": 1000,
            "kafka_config": {**fast_group_config(), **kafka_config},
            "postgresql_options": (
                list(pg.FAST_OPTIONS)
                if args.pg_fast
                else "defaults (fsync and synchronous_commit on)"
            ),
            "sqlite": "WAL, synchronous=FULL, file in " + tempfile.gettempdir(),
            "items_per_event": expected_items(events) / events,
            "clock": "first non-empty consume -> commit covering the last event",
        },
        "target_ratio": TARGET_RATIO,
        "backends": {},
    }
    for backend in backends:
        base = results[("baseline", backend, events)]
        work = results[("worker", backend, events)]
        entry: dict[str, Any] = {"baseline": summary(base), "worker": summary(work)}
        entry["ratio"] = entry["worker"]["events_per_s"] / entry["baseline"]["events_per_s"]
        entry["ratios_per_round"] = [w.rate / b.rate for b, w in zip(base, work, strict=True)]
        entry["cpu_ratio"] = (
            entry["baseline"]["total_cpu_us_per_event"] / entry["worker"]["total_cpu_us_per_event"]
        )
        entry["meets_target"] = entry["ratio"] >= TARGET_RATIO
        report["backends"][backend] = entry
    if args.backlog_factor > 1 and "sqlite" in backends:
        report["backlog"] = backlog_report(results, events, args.backlog_factor)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument(
        "--backlog-factor",
        type=int,
        default=4,
        help="both sides on SQLite with this many times the events (0: skip)",
    )
    parser.add_argument(
        "--kafka-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="librdkafka setting for both consumers (e.g. to try a fix)",
    )
    parser.add_argument(
        "--pg-fast",
        action="store_true",
        help="PostgreSQL with fsync and synchronous_commit off (as in tests)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also one cProfile'd worker run per backend"
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "ingest.json")
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    if unknown := set(backends) - set(BACKENDS):
        parser.error(f"unknown backends: {sorted(unknown)}")
    if args.events < 1 or args.repeat < 1:
        parser.error("--events and --repeat must be at least 1")
    kafka_config = parse_kafka_config(args.kafka_config)
    with contextlib.ExitStack() as stack:
        server_dsn = None
        if "postgresql" in backends:
            options = pg.FAST_OPTIONS if args.pg_fast else ()
            server_dsn = stack.enter_context(pg.private_cluster(options))
        machine = machine_info(server_dsn)
        results = run_rounds(args, backends, kafka_config, server_dsn)
    report = build_report(args, backends, kafka_config, machine, results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_report(report)
    if args.profile:
        for backend in backends:
            print_profile(RESULTS / f"profile-{backend}.pstats", backend, args.events)
    print(f"\nJSON: {args.output}")


if __name__ == "__main__":
    main()
