"""A whole worker environment on this machine: broker, vendor sandbox, config, sample
requests, and the worker as a real subprocess.

Used by `make run`, the end-to-end and crash tests and the benchmark, so all of them
exercise the same thing an operator would run. Never imported by the worker itself.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from consumer.config import KafkaSettings
from consumer.kafka.client import (
    OutgoingMessage,
    Producer,
    client_config,
    create_topics,
    producer_config,
)
from consumer.kafka.codec import encode_request
from consumer.model import ErasureRequest, Identity, Regulation
from devtools.broker import start_broker
from devtools.sandbox.acoustic import AcousticSandbox
from devtools.sandbox.fleet import MEMBERS, vendor_section
from devtools.sandbox.fleet import SECRETS as SANDBOX_SECRETS

FAST_VENDOR_SETTINGS: dict[str, Any] = {
    "batch_size": 100,
    "flush_interval_seconds": 0.5,
    "first_poll_after_seconds": 0.2,
    "poll_interval_seconds": 0.3,
    "rate_per_second": 20,
    "timeout_seconds": 2,
    "max_attempts": 4,
}


@contextmanager
def kafka_bootstrap(log_path: Path | None = None) -> Iterator[str]:
    """`KAFKA_BOOTSTRAP_SERVERS` when set, else a fresh in-memory Tansu broker."""
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing
        return
    with start_broker(log_path=log_path) as broker:
        yield broker.bootstrap_servers
        if not broker.alive():
            raise RuntimeError("the Kafka-protocol broker died while in use")


@dataclass(frozen=True)
class Topics:
    input: str
    status: str
    dlq: str
    group_id: str

    @classmethod
    def unique(cls, prefix: str = "erasure") -> Topics:
        suffix = uuid.uuid4().hex[:8]
        return cls(
            input=f"{prefix}.requested.{suffix}",
            status=f"{prefix}.status.{suffix}",
            dlq=f"{prefix}.requested.dlq.{suffix}",
            group_id=f"{prefix}-worker-{suffix}",
        )

    def kafka_settings(self, bootstrap: str, **config: str | int | float | bool) -> KafkaSettings:
        return KafkaSettings(
            bootstrap_servers=bootstrap,
            group_id=self.group_id,
            input_topic=self.input,
            status_topic=self.status,
            dlq_topic=self.dlq,
            config=dict(config),
        )


def create_worker_topics(bootstrap: str, topics: Topics, partitions: int = 4) -> None:
    config = client_config(topics.kafka_settings(bootstrap))
    create_topics(config, (topics.input, topics.status, topics.dlq), partitions)


def fast_group_config() -> dict[str, int]:
    """Tansu holds a group join for ~max(1 s, session timeout / 2): keep both short here."""
    return {"session.timeout.ms": 1000, "heartbeat.interval.ms": 100}


def write_config(
    path: Path,
    *,
    bootstrap: str,
    topics: Topics,
    ledger_url: str,
    acoustic: AcousticSandbox | None = None,
    vendors: Mapping[str, Any] | None = None,
    http_port: int = 0,
    vendor_overrides: dict[str, Any] | None = None,
) -> Path:
    """A worker config for this stack: the given `vendors:` section (e.g. a sandbox fleet's),
    or Acoustic alone; secrets come from the environment, as in production."""
    if vendors is None:
        if acoustic is None:
            raise ValueError("pass the vendors section or the Acoustic sandbox")
        vendors = {
            "acoustic": vendor_section(
                "acoustic", acoustic, {**FAST_VENDOR_SETTINGS, **(vendor_overrides or {})}
            )
        }
    config = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": topics.group_id,
            "input_topic": topics.input,
            "status_topic": topics.status,
            "dlq_topic": topics.dlq,
            "config": fast_group_config(),
        },
        "ledger": {"url": ledger_url},
        "http": {"port": http_port},
        "vendors": dict(vendors),
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def worker_environment() -> dict[str, str]:
    """The environment a worker of this stack needs: the sandboxes' credentials."""
    return {**os.environ, **SANDBOX_SECRETS}


def start_acoustic_sandbox(job_seconds: float = 0.5) -> AcousticSandbox:
    sandbox = AcousticSandbox(
        job_start_after_seconds=job_seconds / 2, job_duration_seconds=job_seconds
    )
    sandbox.start()
    MEMBERS["acoustic"].prepare(sandbox, True)
    return sandbox


@dataclass(frozen=True)
class SampleSet:
    requests: tuple[ErasureRequest, ...]
    known_emails: frozenset[str]
    known: frozenset[Identity] = frozenset()  # identifiers the vendors hold (every type)


def sample_requests(count: int, known_fraction: float = 0.8, seed: int = 7) -> SampleSet:
    """Requests with one email each (some with a second, non-vendor identity); a share of
    the emails exist in the sandbox so both COMPLETED and NOT_FOUND outcomes show."""
    rng = random.Random(seed)
    requests = []
    known = set()
    for index in range(count):
        email = f"subject{index}.{uuid.UUID(int=rng.getrandbits(128)).hex[:6]}@example.com"
        identities = [Identity("email", email)]
        if index % 3 == 0:
            identities.append(Identity("loyalty_id", f"L{index:06d}"))
        if rng.random() < known_fraction:
            known.add(email)
        requests.append(_sample_request(rng, identities, vendors=None))
    return SampleSet(tuple(requests), frozenset(known))


def _sample_request(
    rng: random.Random, identities: Sequence[Identity], vendors: tuple[str, ...] | None
) -> ErasureRequest:
    return ErasureRequest(
        request_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        requested_at=datetime.now(UTC).replace(microsecond=0),
        regulation=rng.choice(list(Regulation)),
        identities=tuple(identities),
        vendors=vendors,
        source="devstack",
        trace_id=None,
    )


FLEET_VENDOR_SETTINGS: dict[str, Any] = {
    "flush_interval_seconds": 2,
    "first_poll_after_seconds": 1,
    "poll_interval_seconds": 1,
    "rate_per_second": 20,
    "timeout_seconds": 5,
    "max_attempts": 4,
}
"""Every vendor at its production batch size and limits, on a demo's clock."""


def fleet_sample_requests(count: int, known_fraction: float = 0.8, seed: int = 7) -> SampleSet:
    """Subjects for all four vendors: every one has an email (Acoustic), every second a
    customer key (Voyado), every fourth a customer id (Monetate, Acquia CDP); every tenth
    request names only Acoustic and Voyado, every 25th names a vendor that is not enabled.
    A share of the identifiers are held by the vendors."""
    rng = random.Random(seed)
    requests: list[ErasureRequest] = []
    known: set[Identity] = set()
    for index in range(count):
        tag = uuid.UUID(int=rng.getrandbits(128)).hex[:8]
        identities = [Identity("email", f"subject{index}.{tag}@example.com")]
        if index % 2 == 0:
            identities.append(Identity("customer_key", f"visitor-{tag}"))
        if index % 4 == 0:
            identities.append(Identity("customer_id", f"cust-{index:06d}-{tag}"))
        known.update(identity for identity in identities if rng.random() < known_fraction)
        vendors: tuple[str, ...] | None = None
        if index % 10 == 9:
            vendors = ("acoustic", "voyado")
        elif index % 25 == 24:
            vendors = ("acoustic", "braze")
        requests.append(_sample_request(rng, identities, vendors))
    emails = frozenset(i.value for i in known if i.type == "email")
    return SampleSet(tuple(requests), emails, frozenset(known))


def malformed_messages() -> list[tuple[bytes | None, bytes]]:
    """Messages the worker must dead-letter: bad framing, bad Avro, and rule breakers."""
    bad_id = ErasureRequest(
        "not-a-uuid",
        datetime.now(UTC),
        Regulation.GDPR,
        (Identity("email", "x@example.com"),),
        None,
        None,
        None,
    )
    no_identities = ErasureRequest(
        str(uuid.uuid4()), datetime.now(UTC), Regulation.CCPA, (), None, None, None
    )
    control_char = ErasureRequest(
        str(uuid.uuid4()),
        datetime.now(UTC),
        Regulation.GDPR,
        (Identity("email", "a\tb@example.com"),),
        None,
        None,
        None,
    )
    return [
        (b"garbage-1", b"not avro at all"),
        (None, b"\x00\x00\x00\x00\x01\xff\xff\xff"),
        (bad_id.request_id.encode(), encode_request(bad_id)),
        (no_identities.request_id.encode(), encode_request(no_identities)),
        (control_char.request_id.encode(), encode_request(control_char)),
    ]


def produce_requests(
    kafka: KafkaSettings,
    requests: Sequence[ErasureRequest],
    extra: Sequence[tuple[bytes | None, bytes]] = (),
) -> None:
    messages = [
        OutgoingMessage(kafka.input_topic, request.request_id.encode(), encode_request(request))
        for request in requests
    ]
    messages += [OutgoingMessage(kafka.input_topic, key, value) for key, value in extra]
    producer = Producer(producer_config(kafka))
    try:
        failures = [outcome for outcome in producer.deliver(messages, 30.0) if outcome is not None]
    finally:
        producer.close(5.0)
    if failures:
        raise RuntimeError(f"{len(failures)} sample requests were not delivered: {failures[0]}")


def start_worker(config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """`erasure-worker run` as a real process (its own signals, its own crash)."""
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--config", str(config_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=worker_environment(),
        )


def stop_worker(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.wait(timeout)
