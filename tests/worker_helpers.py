"""Helpers for the end-to-end and crash tests: a whole stack per test (own topics and group,
own SQLite ledger, own Acoustic sandbox, `erasure-worker run` as a real subprocess), readers
for the status and dead-letter topics, the contract §3 invariants, and the worker's /metrics.

Everything here reads the worker from the outside, the way a downstream consumer or an
operator would: Kafka through `confluent_kafka` directly, HTTP through `urllib`, the CLI as a
subprocess. The only worker modules used are the dev stack (the same one `make run` uses),
the status-event decoder (a consumer needs one) and the ledger's read side.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka
import fastavro
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from consumer import devstack
from consumer.codec import decode_status_event
from consumer.config import KafkaSettings
from consumer.devbroker import free_port
from consumer.ledger import Ledger, open_ledger
from consumer.model import ErasureRequest, Status, StatusEvent
from consumer.sandbox.acoustic import AcousticSandbox
from consumer.sandbox.fleet import ACOUSTIC_DATABASE
from tests.kafka_helpers import wait_until

VENDOR = "acoustic"
SUBMIT_PATH = f"/rest/databases/{ACOUSTIC_DATABASE}/gdpr_erasure"
JOBS_PATH = "/rest/gdpr_jobs/"
TOKEN_PATH = "/oauth/token"
SENTINEL_KEY = b"__end-of-test-read__"
LOG_TAIL_LINES = 60
LOG_MARKER = "--- worker log: "

# Contract §3, written out here rather than taken from the worker's own model.
OPEN_ORDER = {Status.RECEIVED: 0, Status.QUEUED: 1, Status.SUBMITTED: 2, Status.IN_PROGRESS: 3}
TERMINAL = frozenset(
    {Status.ACCEPTED, Status.COMPLETED, Status.NOT_FOUND, Status.SKIPPED, Status.FAILED}
)
VENDOR_SCOPE_STATUSES = frozenset({Status.QUEUED, Status.SUBMITTED, Status.IN_PROGRESS}) | TERMINAL
REQUEST_TERMINAL = frozenset({Status.COMPLETED, Status.FAILED})

# Contract §7: every metric (as exposed: counters with `_total`, histograms by `_count`).
CONTRACT_METRICS = (
    "erasure_requests_total",
    "erasure_vendor_calls_total",
    "erasure_vendor_call_duration_seconds_count",
    "erasure_vendor_batch_size_count",
    "erasure_items",
    "erasure_completion_seconds_count",
    "erasure_oldest_open_request_age_seconds",
    "erasure_status_events_total",
    "erasure_dlq_messages_total",
)

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def _plain_strings(node: Any) -> Any:
    """The schema without `uuid` logical types, so a malformed request_id reads as a string
    (the worker must see it and call it an invalid request, not an undecodable one)."""
    if isinstance(node, dict):
        if node.get("logicalType") == "uuid":
            return {key: value for key, value in node.items() if key != "logicalType"}
        return {key: _plain_strings(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain_strings(value) for value in node]
    return node


REQUEST_SCHEMA = fastavro.parse_schema(
    _plain_strings(
        json.loads((SCHEMAS / "subject_erasure_requested.avsc").read_text(encoding="utf-8"))
    )
)


def rank(status: Status) -> int:
    """Position in the forward order; every terminal status ranks above every open one."""
    return OPEN_ORDER.get(status, len(OPEN_ORDER))


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """One test's worker environment."""

    bootstrap: str
    topics: devstack.Topics
    kafka: KafkaSettings
    sandbox: AcousticSandbox
    samples: devstack.SampleSet
    config_path: Path
    log_path: Path
    ledger_url: str
    http_port: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

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

    def diagnostics(self) -> str:
        """What an assertion message should carry: ledger counts and the worker's log."""
        return f"\nledger items: {ledger_item_counts(self.ledger_url)}{self.log_tail()}"

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
    topics = devstack.Topics.unique("e2e")
    devstack.create_worker_topics(bootstrap, topics)
    samples = devstack.sample_requests(
        requests, seed=seed if seed is not None else uuid.uuid4().int % 10**6
    )
    sandbox = devstack.start_acoustic_sandbox(job_seconds)
    try:
        for request in samples.requests:
            for identity in request.identities:
                if identity.type == "email" and identity.value in samples.known_emails:
                    sandbox.add_contact(ACOUSTIC_DATABASE, {"EMAIL": identity.value})
        ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
        http_port = free_port()
        config_path = devstack.write_config(
            tmp_path / "config.yaml",
            bootstrap=bootstrap,
            topics=topics,
            ledger_url=ledger_url,
            acoustic=sandbox,
            http_port=http_port,
            vendor_overrides=vendor_overrides,
        )
        stack = Stack(
            bootstrap=bootstrap,
            topics=topics,
            kafka=topics.kafka_settings(bootstrap, **devstack.fast_group_config()),
            sandbox=sandbox,
            samples=samples,
            config_path=config_path,
            log_path=tmp_path / "worker.log",
            ledger_url=ledger_url,
            http_port=http_port,
        )
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


def read_request_record(value: bytes | None) -> dict[str, Any]:
    """Decode a framed request value with the schema file; ValueError if it is undecodable
    (no Confluent framing, a broken Avro body or trailing bytes)."""
    if value is None or len(value) < 5 or value[0] != 0:
        raise ValueError("not Confluent-framed")
    buffer = io.BytesIO(value[5:])
    try:
        record: Any = fastavro.schemaless_reader(buffer, REQUEST_SCHEMA, None)
    except Exception as error:
        raise ValueError(f"undecodable: {type(error).__name__}") from None
    if buffer.tell() != len(value) - 5 or not isinstance(record, dict):
        raise ValueError("trailing bytes")
    return record


def expected_dlq_reason(value: bytes | None) -> str:
    try:
        read_request_record(value)
    except ValueError:
        return "undecodable"
    return "invalid_request"


# --------------------------------------------------------------------------- Kafka reading


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    header_names: tuple[str, ...] = ()

    def header(self, name: str) -> str | None:
        raw = self.headers.get(name)
        return None if raw is None else raw.decode("utf-8")


@dataclass(frozen=True)
class StatusRecord:
    record: Record
    event: StatusEvent


def _record(message: confluent_kafka.Message) -> Record:
    raw = message.headers() or []
    pairs = list(raw.items()) if isinstance(raw, dict) else raw
    headers = {
        name: value if isinstance(value, bytes) else (value or "").encode() for name, value in pairs
    }
    return Record(
        message.partition() or 0,
        message.offset() or 0,
        message.key(),
        message.value(),
        headers,
        tuple(name for name, _ in pairs),
    )


class TopicReader:
    """Reads every partition of a topic from the beginning, without a group (`assign`),
    keeping what it has read; `poll()` fetches whatever has arrived since."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"e2e-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
            }
        )
        metadata = self._consumer.list_topics(topic, timeout=10)
        self.partitions = sorted(metadata.topics[topic].partitions)
        self._consumer.assign(
            [TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in self.partitions]
        )
        self.records: list[Record] = []

    def poll(self, timeout: float = 0.2) -> list[Record]:
        """What arrived since the last poll (waits at most `timeout` when nothing has)."""
        new: list[Record] = []
        while True:
            batch = [m for m in self._consumer.consume(1000, timeout) if m.error() is None]
            new.extend(_record(m) for m in batch)
            if len(batch) < 1000:
                break
        self.records.extend(new)
        return new

    def read_to_end(self, bootstrap: str, timeout: float = 20.0) -> list[Record]:
        """Everything in the topic: write a sentinel to each partition and read until all of
        them are back. Only meaningful once nobody else writes to the topic any more."""
        producer = Producer({"bootstrap.servers": bootstrap})
        for partition in self.partitions:
            producer.produce(self.topic, b"", SENTINEL_KEY, partition)
        assert producer.flush(10) == 0, f"sentinels to {self.topic} not delivered"
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            ends = {r.partition for r in self.records if r.key == SENTINEL_KEY}
            if ends >= set(self.partitions):
                break
            assert time.monotonic() < deadline, f"sentinels of {self.topic} not read back"
        self.records = [r for r in self.records if r.key != SENTINEL_KEY]
        return self.records

    def close(self) -> None:
        self._consumer.close()


class StatusReader(TopicReader):
    """The status topic as a downstream consumer sees it."""

    def status_records(self) -> list[StatusRecord]:
        return [StatusRecord(r, decode_status_event(r.value or b"")) for r in self.records]

    def events(self) -> list[StatusEvent]:
        return [s.event for s in self.status_records()]

    def request_terminals(self) -> dict[str, list[Status]]:
        """Terminal request-scope statuses seen, per request."""
        out: defaultdict[str, list[Status]] = defaultdict(list)
        for event in self.events():
            if event.vendor is None and event.status in TERMINAL:
                out[event.request_id].append(event.status)
        return dict(out)


@contextmanager
def status_reader(bootstrap: str, topic: str) -> Iterator[StatusReader]:
    reader = StatusReader(bootstrap, topic)
    try:
        yield reader
    finally:
        reader.close()


@contextmanager
def topic_reader(bootstrap: str, topic: str) -> Iterator[TopicReader]:
    reader = TopicReader(bootstrap, topic)
    try:
        yield reader
    finally:
        reader.close()


def wait_for_terminals(
    reader: StatusReader,
    request_ids: Iterable[str],
    timeout: float,
    diagnostics: Callable[[], str],
) -> dict[str, list[Status]]:
    """Read the status topic until every request has a terminal request-scope event."""
    wanted = set(request_ids)
    deadline = time.monotonic() + timeout
    while True:
        reader.poll()
        terminals = reader.request_terminals()
        missing = wanted - terminals.keys()
        if not missing:
            return terminals
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{len(missing)} of {len(wanted)} requests have no terminal request status "
                f"after {timeout:.0f} s (e.g. {sorted(missing)[:3]}){diagnostics()}"
            )


# --------------------------------------------------------------------------- invariants


def invariant_violations(records: Sequence[StatusRecord]) -> list[str]:
    """Contract §3 (and §1's keying) over status events in topic order, one per event_id.

    Per request: every event keyed by its request_id, all on one partition, the request's
    RECEIVED first; per (request, vendor) scope: `previous_status` is the previous status
    of that scope (None first), statuses strictly forward and never repeated, nothing after
    a terminal one; request scope only RECEIVED then COMPLETED or FAILED, the terminal only
    after every vendor scope is terminal, FAILED exactly when a vendor failed, its detail
    naming the failed vendors.
    """
    problems: list[str] = []
    ids = Counter(r.event.event_id for r in records)
    problems += [f"event_id {i} published {n} times" for i, n in ids.items() if n > 1]
    by_request: defaultdict[str, list[StatusRecord]] = defaultdict(list)
    for record in records:
        by_request[record.event.request_id].append(record)
    for request_id, rows in sorted(by_request.items()):
        problems += _request_violations(request_id, rows)
    return problems


def _request_violations(request_id: str, rows: list[StatusRecord]) -> list[str]:
    problems: list[str] = []
    where = f"request {request_id}"
    partitions = {r.record.partition for r in rows}
    if len(partitions) != 1:
        problems.append(f"{where}: events spread over partitions {sorted(partitions)}")
    if any(r.record.key != request_id.encode() for r in rows):
        problems.append(f"{where}: an event is not keyed by its request_id")
    if any((r.record.value or b"")[:5] != b"\x00\x00\x00\x00\x00" for r in rows):
        problems.append(f"{where}: an event is not framed with schema id 0")
    rows = sorted(rows, key=lambda r: (r.record.partition, r.record.offset))
    events = [r.event for r in rows]
    if events[0].vendor is not None or events[0].status is not Status.RECEIVED:
        problems.append(f"{where}: first event is {events[0].vendor} {events[0].status}")
    scopes: defaultdict[str | None, list[StatusEvent]] = defaultdict(list)
    for event in events:
        history = scopes[event.vendor]
        scope = f"{where} scope {event.vendor or '(request)'}"
        previous = history[-1].status if history else None
        if event.previous_status != previous:
            problems.append(
                f"{scope}: {event.status} says previous {event.previous_status}, was {previous}"
            )
        if previous is not None and previous in TERMINAL:
            problems.append(f"{scope}: {event.status} after terminal {previous}")
        elif previous is not None and rank(event.status) <= rank(previous):
            problems.append(f"{scope}: {previous} -> {event.status} is not forward")
        if event.vendor is None:
            problems += _request_scope_violations(scope, event, scopes)
        elif event.status not in VENDOR_SCOPE_STATUSES:
            problems.append(f"{scope}: {event.status} is not a vendor-scope status")
        history.append(event)
    if not any(e.vendor is None and e.status in TERMINAL for e in events) and all(
        h[-1].status in TERMINAL for v, h in scopes.items() if v is not None
    ):
        problems.append(f"{where}: every vendor scope is terminal but the request is not")
    return problems


def _request_scope_violations(
    scope: str, event: StatusEvent, scopes: dict[str | None, list[StatusEvent]]
) -> list[str]:
    if event.status is Status.RECEIVED:
        return []
    if event.status not in REQUEST_TERMINAL:
        return [f"{scope}: {event.status} is not a request-scope status"]
    vendors = {vendor: history[-1].status for vendor, history in scopes.items() if vendor}
    open_vendors = sorted(vendor for vendor, status in vendors.items() if status not in TERMINAL)
    if open_vendors or not vendors:
        return [f"{scope}: {event.status} while vendor scopes {open_vendors or 'none'} open"]
    failed = sorted(vendor for vendor, status in vendors.items() if status is Status.FAILED)
    if (event.status is Status.FAILED) != bool(failed):
        return [f"{scope}: {event.status} but failed vendors are {failed}"]
    if failed and not all(vendor in (event.detail or "") for vendor in failed):
        return [f"{scope}: FAILED detail {event.detail!r} does not name {failed}"]
    return []


def deduplicated(records: Sequence[StatusRecord]) -> tuple[list[StatusRecord], list[str]]:
    """First delivery of each event_id, and the problems of redeliveries: a redelivered
    event must be the same event (same key and value bytes)."""
    first: dict[str, StatusRecord] = {}
    problems: list[str] = []
    for record in sorted(records, key=lambda r: (r.record.partition, r.record.offset)):
        seen = first.setdefault(record.event.event_id, record)
        if seen is not record and (seen.record.key, seen.record.value) != (
            record.record.key,
            record.record.value,
        ):
            problems.append(
                f"event_id {record.event.event_id} redelivered with other content: "
                f"{seen.event} vs {record.event}"
            )
    return list(first.values()), problems


def scope_statuses(records: Iterable[StatusRecord]) -> dict[tuple[str, str | None], list[Status]]:
    out: defaultdict[tuple[str, str | None], list[Status]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.record.partition, r.record.offset)):
        out[record.event.request_id, record.event.vendor].append(record.event.status)
    return dict(out)


def leaked(values: Iterable[str], haystacks: dict[str, bytes]) -> list[str]:
    """`where: value[:3]...` for every value found in a haystack (no full value in output)."""
    found = []
    for value in values:
        needle = value.encode("utf-8")
        for where, haystack in haystacks.items():
            if needle in haystack:
                found.append(f"{where}: {value[:3]}... ({len(value)} chars)")
    return found


# --------------------------------------------------------------------------- ledger


def open_test_ledger(url: str) -> Ledger:
    return open_ledger(url)


def ledger_item_counts(url: str) -> dict[str, int] | str:
    """Items per status for the log of a failing test (the ledger may not exist yet)."""
    ledger = open_ledger(url)
    try:
        return {f"{v}/{s.value}": n for (v, s), n in sorted(ledger.item_counts().items())}
    except Exception as error:  # LedgerUnavailable, or no tables before the worker migrates
        return f"unavailable ({type(error).__name__})"
    finally:
        ledger.close()


# --------------------------------------------------------------------------- HTTP


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str] | None:
    """(status, body) of `GET http://127.0.0.1:port/path`, None if nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as reply:
            return reply.status, reply.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode("utf-8")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


MetricKey = tuple[str, frozenset[tuple[str, str]]]


def parse_metrics(text: str) -> dict[MetricKey, float]:
    samples: dict[MetricKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def metric(samples: dict[MetricKey, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def metric_names(samples: dict[MetricKey, float]) -> set[str]:
    return {name for name, _ in samples}


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


def wait_ready(stack: Stack, process: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    """Wait until `/readyz` answers 200 (failing at once if the worker died); its body."""

    def ready() -> str | None:
        if process.poll() is not None:
            raise AssertionError(
                f"worker exited with {process.returncode} before it was ready{stack.log_tail()}"
            )
        answer = http_get(stack.http_port, "/readyz", timeout=2.0)
        return answer[1] if answer is not None and answer[0] == 200 else None

    try:
        return wait_until(ready, timeout, "/readyz to answer 200", interval=0.1)
    except AssertionError as error:
        raise AssertionError(f"{error}{stack.log_tail()}") from None


def erased_lines(bodies: Iterable[str]) -> list[Counter[str]]:
    """The values of each CSV body the sandbox took (`COLUMN,value` lines)."""
    return [Counter(row[1] for row in csv.reader(io.StringIO(body)) if row) for body in bodies]
