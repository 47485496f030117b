"""A worker under test, run the way operators run it: `erasure-worker run` as a real
subprocess on a config file of its own (fresh topics and group, own SQLite ledger, own
HTTP port), its log kept for the assertion messages. `worker_setup` is that for any test;
`worker_stack` adds the Acoustic sandbox and sample requests the end-to-end and crash tests
feed it.

The worker is read from the outside: HTTP through `urllib` (tests.support.http), Kafka
through `confluent_kafka` (tests.support.topics), the CLI as a subprocess. The only worker
modules used are the dev stack (the same one `make run` uses) and the ledger's read side.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from consumer.config import KafkaSettings
from consumer.ledger import open_ledger
from consumer.model import ErasureRequest
from devtools import devstack
from devtools.broker import free_port
from devtools.sandbox.acoustic import AcousticSandbox
from devtools.sandbox.fleet import ACOUSTIC_DATABASE
from tests.support.http import http_get
from tests.support.topics import read_request_record
from tests.support.waiting import wait_until

VENDOR = "acoustic"
SUBMIT_PATH = f"/rest/databases/{ACOUSTIC_DATABASE}/gdpr_erasure"
JOBS_PATH = "/rest/gdpr_jobs/"
TOKEN_PATH = "/oauth/token"
LOG_TAIL_LINES = 60
LOG_MARKER = "--- worker log: "


# --------------------------------------------------------------------------- one worker


@dataclass
class WorkerSetup:
    """A worker's configuration on fresh topics, and the worker processes started on it."""

    bootstrap: str
    topics: devstack.Topics
    config_path: Path
    log_path: Path
    ledger_url: str
    http_port: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def kafka(self) -> KafkaSettings:
        """Settings on the worker's topics (and group), for producing to and reading them."""
        return self.topics.kafka_settings(self.bootstrap, **devstack.fast_group_config())

    def start_worker(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f'{{"test": "starting worker #{len(self.processes) + 1}"}}\n')
        process = devstack.start_worker(self.config_path, self.log_path)
        self.processes.append(process)
        return process

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            tail = self.log_text().splitlines()[-lines:]
        except OSError as error:
            return f"(no worker log: {error})"
        return f"\n{LOG_MARKER}{self.log_path}, last {len(tail)} lines ---\n" + "\n".join(tail)

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`erasure-worker ARGS --config CONFIG` with the worker's environment."""
        return subprocess.run(
            [sys.executable, "-m", "consumer", *args, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            env=devstack.worker_environment(),
            timeout=timeout,
            check=False,
        )


def worker_setup(
    tmp_path: Path,
    bootstrap: str,
    prefix: str,
    *,
    partitions: int = 4,
    ledger_url: str | None = None,
    http_port: int | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
    **vendors: Any,
) -> WorkerSetup:
    """Fresh topics named after `prefix` and a config file for them: `vendors` are
    `devstack.write_config`'s (`vendors=`, or `acoustic=` and `vendor_overrides=`); the
    ledger a SQLite file in `tmp_path` unless `ledger_url` names one; the HTTP port a free
    one unless given (0: any, for several workers at once); `edit` changes the config
    before it is written back."""
    topics = devstack.Topics.unique(prefix)
    devstack.create_worker_topics(bootstrap, topics, partitions=partitions)
    setup = WorkerSetup(
        bootstrap=bootstrap,
        topics=topics,
        config_path=tmp_path / "config.yaml",
        log_path=tmp_path / "worker.log",
        ledger_url=ledger_url or f"sqlite:///{tmp_path / 'ledger.db'}",
        http_port=free_port() if http_port is None else http_port,
    )
    devstack.write_config(
        setup.config_path,
        bootstrap=bootstrap,
        topics=topics,
        ledger_url=setup.ledger_url,
        http_port=setup.http_port,
        **vendors,
    )
    if edit is not None:
        config = yaml.safe_load(setup.config_path.read_text(encoding="utf-8"))
        edit(config)
        setup.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return setup


def wait_ready(setup: WorkerSetup, process: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    """Wait until `/readyz` answers 200 (failing at once if the worker died); its body."""

    def ready() -> str | None:
        if process.poll() is not None:
            raise AssertionError(
                f"worker exited with {process.returncode} before it was ready{setup.log_tail()}"
            )
        answer = http_get(setup.http_port, "/readyz", timeout=2.0)
        return answer[1] if answer is not None and answer[0] == 200 else None

    try:
        return wait_until(ready, timeout, "/readyz to answer 200", interval=0.1)
    except AssertionError as error:
        raise AssertionError(f"{error}{setup.log_tail()}") from None


def log_lines(text: str) -> list[dict[str, Any] | str]:
    """The worker's log, JSON entries as dicts and anything else as raw lines."""
    out: list[dict[str, Any] | str] = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        out.append(entry if isinstance(entry, dict) else line)
    return out


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack(WorkerSetup):
    """One end-to-end test's environment: a worker setup with the Acoustic sandbox it
    calls and the sample requests (some emails known to the sandbox) fed to it."""

    sandbox: AcousticSandbox = field(kw_only=True)
    samples: devstack.SampleSet = field(kw_only=True)

    @property
    def requests(self) -> tuple[ErasureRequest, ...]:
        return self.samples.requests

    @property
    def request_ids(self) -> set[str]:
        return {request.request_id for request in self.requests}

    def email(self, request: ErasureRequest) -> str:
        return next(i.value for i in request.identities if i.type == "email")

    def identity_values(self, malformed: Iterable[tuple[bytes | None, bytes]]) -> set[str]:
        """Every identity value the test fed in, valid requests and malformed ones alike."""
        values = {i.value for r in self.requests for i in r.identities}
        for _, value in malformed:
            values.update(_identity_values_in(value))
        return values

    def diagnostics(self) -> str:
        """What an assertion message should carry: ledger counts and the worker's log."""
        return f"\nledger items: {ledger_item_counts(self.ledger_url)}{self.log_tail()}"


@contextmanager
def worker_stack(
    tmp_path: Path,
    bootstrap: str,
    *,
    requests: int,
    job_seconds: float = 0.5,
    vendor_overrides: dict[str, Any] | None = None,
    seed: int | None = None,
) -> Iterator[Stack]:
    """A fresh stack; on the way out every worker process is killed and the sandbox stopped.
    A failed assertion inside gets the tail of the worker's log (JSON lines) attached."""
    samples = devstack.sample_requests(
        requests, seed=seed if seed is not None else uuid.uuid4().int % 10**6
    )
    sandbox = devstack.start_acoustic_sandbox(job_seconds)
    try:
        for request in samples.requests:
            for identity in request.identities:
                if identity.type == "email" and identity.value in samples.known_emails:
                    sandbox.add_contact(ACOUSTIC_DATABASE, {"EMAIL": identity.value})
        setup = worker_setup(
            tmp_path, bootstrap, "e2e", acoustic=sandbox, vendor_overrides=vendor_overrides
        )
        stack = Stack(**vars(setup), sandbox=sandbox, samples=samples)
        try:
            yield stack
        except AssertionError as error:
            if LOG_MARKER in str(error):
                raise
            raise AssertionError(f"{error}{stack.log_tail()}") from error
        finally:
            for process in stack.processes:
                if process.poll() is None:
                    process.kill()
                with suppress(subprocess.TimeoutExpired):
                    process.wait(10)
    finally:
        sandbox.stop()


def _identity_values_in(value: bytes) -> list[str]:
    """Identity values inside a framed request value, if it decodes at all."""
    try:
        record = read_request_record(value)
    except ValueError:
        return []
    return [identity["value"] for identity in record["identities"]]


def ledger_item_counts(url: str) -> dict[str, int] | str:
    """Items per status for the log of a failing test (the ledger may not exist yet)."""
    ledger = open_ledger(url)
    try:
        return {f"{v}/{s.value}": n for (v, s), n in sorted(ledger.item_counts().items())}
    except Exception as error:  # LedgerUnavailable, or no tables before the worker migrates
        return f"unavailable ({type(error).__name__})"
    finally:
        ledger.close()


def sandbox_calls(sandbox: AcousticSandbox) -> Counter[tuple[str, int | None]]:
    """Calls per (operation, HTTP status) as the worker's metrics name them."""
    out: Counter[tuple[str, int | None]] = Counter()
    for call in sandbox.calls:
        if call.path == TOKEN_PATH:
            out["auth", call.status] += 1
        elif call.path.startswith(JOBS_PATH):
            out["poll", call.status] += 1
        else:
            out["submit", call.status] += 1
    return out


def erased_lines(bodies: Iterable[str]) -> list[Counter[str]]:
    """The values of each CSV body the sandbox took (`COLUMN,value` lines)."""
    return [Counter(row[1] for row in csv.reader(io.StringIO(body)) if row) for body in bodies]
