"""The auditor's report over a large ledger: time and peak memory (`make bench`).

    python -m bench.report [--requests 1000000] [--small 100000] [--repeat 1]

Builds a SQLite ledger by SQL in the database (recording a million requests through the
ledger would take many minutes): the requests (regulations, statuses, due and finished
dates mixed, some finished late, some still open), two vendor scopes each (Voyado and
Acoustic) and one item per scope on a vendor job of 1,000 items. Then `erasure-worker
report` runs over the whole window as a child process, the real command writing CSV and
then JSON to a file, so that its peak RSS (VmHWM) is its own. The same runs over the first
`--small` requests show whether memory grows with the window: it should not, the rows
stream.

Results: a table on stdout, JSON in `bench/results/report.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import memory_mib
from consumer.ledger import open_ledger

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
FORMATS = ("csv", "json")
START = datetime(2024, 1, 1, tzinfo=UTC)
STEP_MICROS = 10_000_000  # one request every 10 s
ITEMS_PER_JOB = 1000
_DAY_MICROS = 86_400_000_000

# Request i: received START + 10 i s; regulation and status cycle; due 30 days (45 for
# CCPA) after requested_at; finished (i mod 40) days after it, so some finish late.
_REQUESTS = f"""
INSERT INTO requests (request_id, regulation, requested_at, received_at, source, status,
                      due_at, extended_days, finished_at)
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :count)
SELECT printf('%08x-0000-4000-8000-%012x', i, i),
       CASE i % 3 WHEN 0 THEN 'GDPR' WHEN 1 THEN 'CCPA' ELSE 'OTHER' END,
       :start + i * {STEP_MICROS}, :start + i * {STEP_MICROS}, 'bench',
       CASE WHEN i % 97 = 0 THEN 'RECEIVED' WHEN i % 50 = 0 THEN 'FAILED' ELSE 'COMPLETED' END,
       :start + i * {STEP_MICROS} + (CASE i % 3 WHEN 1 THEN 45 ELSE 30 END) * {_DAY_MICROS},
       CASE WHEN i % 11 = 0 THEN 14 ELSE 0 END,
       CASE WHEN i % 97 = 0 THEN NULL ELSE :start + i * {STEP_MICROS} + (i % 40) * {_DAY_MICROS} END
FROM n
"""
_JOBS = f"""
INSERT INTO jobs (job_id, vendor, vendor_job_id, destination, status, submitted_at)
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :jobs)
SELECT i + 1, CASE i % 2 WHEN 0 THEN 'voyado' ELSE 'acoustic' END, printf('job-%d', i),
       CASE i % 2 WHEN 0 THEN NULL ELSE '10091' END, 'COMPLETED',
       :start + (i / 2) * {ITEMS_PER_JOB} * {STEP_MICROS}
FROM n
"""
_SCOPES = """
INSERT INTO vendor_scopes (request_id, vendor, status, updated_at)
SELECT request_id, :vendor, CASE status WHEN 'RECEIVED' THEN 'SUBMITTED' ELSE status END,
       coalesce(finished_at, received_at)
FROM requests
"""
_ITEMS = f"""
INSERT INTO items (request_id, vendor, identity_type, identity_value, destination, status,
                   next_attempt_at, job_id, created_at, updated_at)
SELECT s.request_id, s.vendor, 'email', 'bench-' || substr(s.request_id, 1, 8) || '@example.com',
       CASE s.vendor WHEN 'acoustic' THEN '10091' END, s.status, r.received_at,
       2 * ((r.received_at - :start) / {STEP_MICROS} / {ITEMS_PER_JOB})
         + CASE s.vendor WHEN 'voyado' THEN 1 ELSE 2 END,
       r.received_at, s.updated_at
FROM vendor_scopes s JOIN requests r ON r.request_id = s.request_id
"""


def build_ledger(path: Path, count: int) -> float:
    """A migrated SQLite ledger holding `count` requests, written with SQL straight into
    the file (the ledger has no bulk path, nor should it); the seconds it took."""
    started = time.perf_counter()
    ledger = open_ledger(f"sqlite:///{path}")
    ledger.migrate()
    ledger.close()
    start = (START - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    jobs = 2 * (-(-count // ITEMS_PER_JOB))
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute(_REQUESTS, {"count": count, "start": start})
        conn.execute(_JOBS, {"jobs": jobs, "start": start})
        for vendor in ("voyado", "acoustic"):
            conn.execute(_SCOPES, {"vendor": vendor})
        conn.execute(_ITEMS, {"start": start})
        conn.execute("ANALYZE")
    return time.perf_counter() - started


def window(count: int) -> tuple[str, str]:
    """--from and --to covering the first `count` requests."""
    end = START + timedelta(microseconds=count * STEP_MICROS)
    return START.isoformat(), end.isoformat()


def measure(config: Path, count: int, fmt: str, output: Path) -> dict[str, Any]:
    """One `report` in a child process: its wall time, CPU time and peak RSS."""
    start, end = window(count)
    child = [sys.executable, "-m", "bench.report", "--child", str(config), start, end, fmt]
    result = subprocess.run(
        [*child, str(output)], capture_output=True, text=True, check=True, timeout=3600
    )
    measured: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    if measured["exit"] != 0:
        raise RuntimeError(f"report exited {measured['exit']}: {result.stderr.strip()}")
    measured["output_mib"] = output.stat().st_size / 2**20
    return measured


def child(config: str, start: str, end: str, fmt: str, output: str) -> None:
    """Run the real command in this process; print what it cost as one JSON line."""
    from consumer.cli import main  # noqa: PLC0415 (imported before the clock starts)

    rss_before = memory_mib("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    args = ["report", "--config", config, "--from", start, "--to", end, "--format", fmt]
    code = main([*args, "--output", output])
    measured = {
        "exit": code,
        "seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
        "rss_before_mib": rss_before,
        "peak_rss_mib": memory_mib("VmHWM"),
    }
    print(json.dumps(measured))


def write_config(directory: Path, ledger: Path) -> Path:
    config = directory / "config.yaml"
    text = json.dumps(
        {
            "kafka": {"bootstrap_servers": "127.0.0.1:9"},
            "ledger": {"url": f"sqlite:///{ledger}"},
            "vendors": {
                "voyado": {"base_url": "https://voyado.example", "api_key": "k"},
                "acoustic": {
                    "base_url": "https://acoustic.example",
                    "client_id": "c",
                    "client_secret": "s",
                    "refresh_token": "r",
                    "database_ids": [10091],
                },
            },
        }
    )
    config.write_text(text, encoding="utf-8")
    return config


def run(requests: int, small: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        directory = Path(tmp)
        ledger = directory / "ledger.db"
        build_seconds = build_ledger(ledger, requests)
        config = write_config(directory, ledger)
        runs: dict[str, list[dict[str, Any]]] = {}
        for _ in range(repeat):
            for count in (requests, small):
                for fmt in FORMATS:
                    output = directory / f"report.{fmt}"
                    runs.setdefault(f"{fmt}-{count}", []).append(
                        measure(config, count, fmt, output)
                    )
        database_mib = ledger.stat().st_size / 2**20
    return {
        "config": {"requests": requests, "small": small, "repeat": repeat},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "build_seconds": build_seconds,
        "database_mib": database_mib,
        "runs": runs,
        "medians": {name: _medians(measured) for name, measured in runs.items()},
    }


def _medians(measured: list[dict[str, Any]]) -> dict[str, float]:
    keys = [key for key in measured[0] if key != "exit"]
    return {key: statistics.median(m[key] for m in measured) for key in keys}


def print_table(report: dict[str, Any]) -> None:
    print(
        f"ledger: {report['config']['requests']:,} requests, "
        f"{report['database_mib']:.0f} MiB (built by SQL in {report['build_seconds']:.0f} s)"
    )
    print(
        f"{'format':<6} {'requests':>10} {'seconds':>8} {'req/s':>9} {'CPU s':>7} "
        f"{'RSS before':>10} {'peak RSS':>9} {'output':>9}"
    )
    for name, median in report["medians"].items():
        fmt, count = name.split("-")
        print(
            f"{fmt:<6} {int(count):>10,} {median['seconds']:>8.1f} "
            f"{int(count) / median['seconds']:>9,.0f} {median['cpu_seconds']:>7.1f} "
            f"{median['rss_before_mib']:>7.0f} MiB {median['peak_rss_mib']:>5.0f} MiB "
            f"{median['output_mib']:>5.0f} MiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000, help="the smaller window")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    report = run(args.requests, args.small, args.repeat)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(report)


if __name__ == "__main__":
    main()
