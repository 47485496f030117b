"""Vendor throughput at real latency (`make bench`): does the worker use the rates it is
allowed when every vendor answers in ~150 ms, alone and as a fleet?

    python -m bench.throughput [--requests 2000] [--latency-ms 150] [--job-seconds 1]
                               [--rate-scale 1]
                               [--runs sqlite:1,postgresql:1,postgresql:3]

Each run: the four vendor sandboxes, fresh, each in its own process
(`bench.sandbox_processes`), answering every call `--latency-ms` late (the Monetate one
refusing with 429 status checks faster than the configured status rate, with room for one
early call); a fresh Tansu topic and consumer group; a fresh ledger (a SQLite
file, or a new database in a private PostgreSQL cluster); then `erasure-worker run` as N
real processes on that ledger. Once every worker is ready, `--requests` requests (every
subject with an email, every second a Voyado customer key, every fourth a customer id for
Monetate and Acquia CDP) are produced, and the run ends when the status topic holds a
terminal status for every request.
`--rate-scale K` multiplies Voyado's submission rate and Monetate's status rate, and the
calls in flight they need, by K: at rates one process cannot reach, it shows whether more
processes on one PostgreSQL ledger finish sooner.

Reported per vendor operation, from the sandboxes' own logs (`bench.throughput_stats`):
calls, configured rate, achieved calls/s, busiest second, limit violations, the floor
those calls allow, and the calls in each second (where a rate was lost); per run, the wall
time against the largest floor (the least time the configured rates allow) and Monetate's
status checks per customer id. And where the CPU went over the backfill
(`bench.cpu_time`): the cores the workers kept busy and their CPU per vendor call (steadier
than a rate on a shared machine), PostgreSQL's backends, and the whole machine, which tells
whether a rate was bound by the machine or by the worker.
Results: a table on stdout, JSON in `bench/results/throughput.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cpu_time import MachineTicks, backend_cpu_seconds, process_cpu_seconds
from bench.sandbox_processes import SandboxProcess
from bench.throughput_stats import Operation, figures
from consumer.kafka.codec import decode_status_event
from consumer.model import ErasureRequest
from devtools import devstack
from devtools.devstack import Topics, create_worker_topics
from devtools.sandbox.fleet import MEMBERS, MONETATE_DATASET
from tests.support import pg
from tests.support.contract import TERMINAL
from tests.support.http import http_get
from tests.support.topics import TopicReader

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
COMMON: dict[str, Any] = {
    "flush_interval_seconds": 1,
    "first_poll_after_seconds": 1,
    "poll_interval_seconds": 1,
    "timeout_seconds": 10,
    "max_attempts": 4,
    "rate_per_second": 1,
}
# The example: 100 Voyado jobs/s and 40 Monetate status checks/s, with enough
# calls in flight for 150 ms answers (rate x latency: 15 and 6), shared by the processes.
VENDORS: dict[str, dict[str, Any]] = {
    "voyado": {"rate_per_second": 100, "max_in_flight": 20},
    "monetate": {"status_rate_per_second": 40, "max_in_flight": 8},
    "acquia_cdp": {},
    "acoustic": {},
}
LEAD = COMMON["flush_interval_seconds"] + COMMON["first_poll_after_seconds"]
SCALED = (("voyado", "rate_per_second"), ("monetate", "status_rate_per_second"))
"""The rates `--rate-scale` multiplies: the issue's example, the two a backfill is held to."""
MOST_IN_FLIGHT = 64
"""The most calls in flight a vendor's configuration allows (`VendorSettings.max_in_flight`)."""


def scaled_vendors(scale: float) -> dict[str, dict[str, Any]]:
    """The vendors' settings with the rates of `SCALED` times `scale`, and as many more
    calls in flight (for the fleet), which the latency needs at those rates."""
    out = {name: dict(settings) for name, settings in VENDORS.items()}
    for name, key in SCALED:
        out[name][key] = VENDORS[name][key] * scale
        out[name]["max_in_flight"] = math.ceil(VENDORS[name]["max_in_flight"] * scale)
    return out


def operations(vendors: Mapping[str, Mapping[str, Any]]) -> tuple[Operation, ...]:
    """The operations the sandboxes log, with the rates `vendors` configure."""
    return (
        Operation(
            "voyado", "submit", "create-remove-customer-job", vendors["voyado"]["rate_per_second"]
        ),
        Operation("voyado", "poll", "job-status", None),
        Operation("monetate", "submit", f"/data/{MONETATE_DATASET}/", 1),
        Operation(
            "monetate", "status", "/status/", vendors["monetate"]["status_rate_per_second"], LEAD
        ),
        Operation("acquia_cdp", "submit", "/dataerasure", 1),
        Operation("acoustic", "submit", "/gdpr_erasure", 1),
        Operation("acoustic", "poll", "/gdpr_jobs/", None),
    )


PG_OPTIONS = (*pg.FAST_OPTIONS, "-c max_connections=200")


@contextlib.contextmanager
def sandboxes(
    latency: float, job_seconds: float, status_rate: float
) -> Iterator[dict[str, SandboxProcess]]:
    """Every vendor's sandbox, each in its own process, started and set up, answering
    `latency` late (Monetate's refusing status checks faster than `status_rate`)."""
    boxes: dict[str, SandboxProcess] = {}
    try:
        for name in MEMBERS:
            boxes[name] = SandboxProcess(name, job_seconds, latency, status_rate)
        yield boxes
    finally:
        for box in boxes.values():
            box.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class CpuReading:
    """CPU time so far of the workers, of PostgreSQL's backends (None on SQLite) and of the
    machine: two readings give the cores each kept busy over a backfill."""

    workers: float
    server: float | None
    machine: MachineTicks

    @classmethod
    def now(cls, workers: Sequence[subprocess.Popen[bytes]], url: str) -> CpuReading:
        own = sum(process_cpu_seconds(process.pid) for process in workers)
        return cls(own, backend_cpu_seconds(url), MachineTicks.now())

    def since(self, earlier: CpuReading, wall: float) -> dict[str, Any]:
        server = None
        if self.server is not None and earlier.server is not None:
            server = (self.server - earlier.server) / wall
        return {
            "worker_seconds": self.workers - earlier.workers,
            "worker_cores": (self.workers - earlier.workers) / wall,
            "server_cores": server,
            "machine_cores": self.machine.busy_cores_since(earlier.machine),
        }


def per_process(settings: Mapping[str, Any], processes: int) -> dict[str, Any]:
    """A vendor's settings for one of `processes` workers: the calls in flight the rates
    need are the fleet's, so each process gets its share of `max_in_flight` (at most what
    the configuration allows)."""
    out = dict(settings)
    if "max_in_flight" in out:
        out["max_in_flight"] = min(MOST_IN_FLIGHT, math.ceil(out["max_in_flight"] / processes))
    return out


def start_workers(
    count: int,
    work: Path,
    bootstrap: str,
    topics: Topics,
    url: str,
    boxes: Mapping[str, SandboxProcess],
    settings: Mapping[str, Mapping[str, Any]],
) -> list[subprocess.Popen[bytes]]:
    vendors = {
        name: box.section({**COMMON, **per_process(settings[name], count)})
        for name, box in boxes.items()
    }
    workers = []
    for n in range(count):
        port = free_port()
        config = devstack.write_config(
            work / f"worker{n}.yaml",
            bootstrap=bootstrap,
            topics=topics,
            ledger_url=url,
            vendors=vendors,
            http_port=port,
        )
        process = devstack.start_worker(config, work / f"worker{n}.log")
        workers.append((process, port))
    deadline = time.monotonic() + 60
    for process, port in workers:
        while (answer := http_get(port, "/readyz", timeout=2.0)) is None or answer[0] != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"a worker did not get ready; see {work}/worker*.log")
            time.sleep(0.1)
    return [process for process, _ in workers]


def wait_for_terminals(reader: TopicReader, requests: list[ErasureRequest], timeout: float) -> None:
    wanted = {request.request_id for request in requests}
    finished: set[str] = set()
    deadline = time.monotonic() + timeout
    while not wanted <= finished:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(wanted - finished)} requests not finished in {timeout:.0f} s")
        for record in reader.poll():
            event = decode_status_event(record.value or b"")
            if event.vendor is None and event.status in TERMINAL:
                finished.add(event.request_id)


def monetate_ids(requests: list[ErasureRequest]) -> int:
    return len(
        {
            identity.value
            for request in requests
            if request.vendors is None or "monetate" in request.vendors
            for identity in request.identities
            if identity.type == "customer_id"
        }
    )


def run(
    label: str, processes: int, url: str, bootstrap: str, args: argparse.Namespace
) -> dict[str, Any]:
    samples = devstack.fleet_sample_requests(args.requests, seed=11)
    requests = list(samples.requests)
    topics = Topics.unique("bench")
    create_worker_topics(bootstrap, topics)
    vendors = scaled_vendors(args.rate_scale)
    status_rate = vendors["monetate"]["status_rate_per_second"]
    with (
        sandboxes(args.latency_ms / 1000, args.job_seconds, status_rate) as boxes,
        tempfile.TemporaryDirectory() as work,
    ):
        for box in boxes.values():
            box.seed([(identity.type, identity.value) for identity in samples.known])
        workers = start_workers(processes, Path(work), bootstrap, topics, url, boxes, vendors)
        reader = TopicReader(bootstrap, topics.status)
        try:
            before = CpuReading.now(workers, url)
            started = time.monotonic()
            devstack.produce_requests(topics.kafka_settings(bootstrap), requests)
            wait_for_terminals(reader, requests, timeout=900)
            wall = time.monotonic() - started
            cpu = CpuReading.now(workers, url).since(before, wall)
        finally:
            for process in workers:
                devstack.stop_worker(process)
        logs = {name: box.calls() for name, box in boxes.items()}
        figs = [figures(op, logs[op.vendor]) for op in operations(vendors)]
    floor = max(fig.floor_seconds for fig in figs)
    calls = max(1, sum(fig.calls for fig in figs))
    status = next(fig for fig in figs if fig.vendor == "monetate" and fig.name == "status")
    return {
        "run": label,
        "processes": processes,
        "requests": args.requests,
        "latency_ms": args.latency_ms,
        "rate_scale": args.rate_scale,
        "wall_seconds": wall,
        "floor_seconds": floor,
        "monetate_ids": monetate_ids(requests),
        "monetate_status_checks": status.calls,
        "operations": [vars(fig) for fig in figs],
        "cpu": {**cpu, "worker_ms_per_call": 1000 * cpu["worker_seconds"] / calls},
        "_figures": figs,
    }


def print_run(result: dict[str, Any]) -> None:
    print(
        f"\n{result['run']}: {result['requests']} requests, {result['latency_ms']:g} ms latency,"
        f" rates x{result['rate_scale']:g}:"
        f" wall {result['wall_seconds']:.1f} s, floor {result['floor_seconds']:.1f} s"
        f" ({result['wall_seconds'] / result['floor_seconds']:.2f}x);"
        f" Monetate {result['monetate_status_checks']} status checks for"
        f" {result['monetate_ids']} ids"
    )
    cpu = result["cpu"]
    server = "" if cpu["server_cores"] is None else f", PostgreSQL {cpu['server_cores']:.2f}"
    print(
        f"  CPU (cores busy on average): workers {cpu['worker_cores']:.2f}"
        f" ({cpu['worker_ms_per_call']:.2f} ms per vendor call){server},"
        f" machine {cpu['machine_cores']:.2f} of {os.cpu_count()}"
    )
    header = ["operation", "calls", "rate/s", "achieved/s", "busiest s", "violations", "floor s"]
    rows = [header] + [fig.as_row() for fig in result["_figures"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print("  calls in each second from the first, rated operations:")
    for fig in result["_figures"]:
        if fig.rate is not None and fig.calls > 1:
            print(f"  {fig.vendor} {fig.name}: {' '.join(map(str, fig.per_second))}")


def positive(text: str) -> float:
    """A command-line number above zero (argparse says what was wrong, in one line)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above zero, not {text}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=150.0)
    parser.add_argument("--job-seconds", type=float, default=1.0)
    parser.add_argument("--runs", default="sqlite:1,postgresql:1,postgresql:3")
    parser.add_argument(
        "--rate-scale",
        type=positive,
        default=1.0,
        help="multiply Voyado's submission rate and Monetate's status rate (and the calls in"
        " flight they need) by this: rates that one process cannot reach",
    )
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        bootstrap = stack.enter_context(devstack.kafka_bootstrap())
        server: str | None = None
        for spec in args.runs.split(","):
            backend, _, count = spec.partition(":")
            processes = int(count or 1)
            label = f"{backend} x{processes}"
            if backend == "sqlite":
                folder = stack.enter_context(tempfile.TemporaryDirectory())
                url = f"sqlite:///{folder}/ledger.db"
            else:
                server = server or stack.enter_context(pg.private_cluster(PG_OPTIONS))
                url = stack.enter_context(pg.fresh_database(server))
            results.append(run(label, processes, url, bootstrap, args))
            print_run(results[-1])
    RESULTS.mkdir(parents=True, exist_ok=True)
    clean = [{k: v for k, v in result.items() if not k.startswith("_")} for result in results]
    (RESULTS / "throughput.json").write_text(json.dumps(clean, indent=2) + "\n")


if __name__ == "__main__":
    main()
