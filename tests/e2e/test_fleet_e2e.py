"""Two workers sharing a PostgreSQL ledger and a consumer group, against all four vendors.

The multi-replica deployment: replicas split the partitions, share the vendor work through
leased claims, share Acquia CDP's quota through the ledger, and only one publishes status
events. Every request must finish, each vendor must be called within its limits, and no
identifier may be sent twice.
"""

from __future__ import annotations

import math
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.ledger import open_ledger
from consumer.model import Status
from devtools import devstack
from devtools.sandbox.acoustic import AcousticSandbox
from devtools.sandbox.acquia_cdp import AcquiaCdpSandbox
from devtools.sandbox.fleet import SandboxFleet
from tests.support import pg
from tests.support.contract import deduplicated, invariant_violations
from tests.support.topics import StatusReader
from tests.support.waiting import wait_until
from tests.support.worker import worker_setup

pytestmark = pytest.mark.slow
REQUESTS = 60


@pytest.fixture
def ledger_url(postgres_dsn: str) -> Iterator[str]:
    with pg.fresh_database(postgres_dsn) as dsn:
        yield dsn


@pytest.fixture
def fleet() -> Iterator[SandboxFleet]:
    with SandboxFleet(job_seconds=0.5) as fleet:
        yield fleet


def test_two_replicas_on_postgresql_finish_every_request_within_vendor_limits(
    tmp_path: Path, kafka_bootstrap: str, ledger_url: str, fleet: SandboxFleet
) -> None:
    samples = devstack.fleet_sample_requests(REQUESTS, seed=11)
    for identity in samples.known:
        fleet.seed(identity.type, identity.value)
    vendors = fleet.vendors_config(devstack.FLEET_VENDOR_SETTINGS)
    # The fleet's rate is shared by both replicas; half the sandbox's strict 1/s leaves room
    # for an answer's jitter (a check arriving a millisecond early would be refused).
    vendors["monetate"]["status_rate_per_second"] = 0.5
    # Two workers at once: each serves its probes on a port of the system's choosing.
    setup = worker_setup(
        tmp_path, kafka_bootstrap, "fleet", ledger_url=ledger_url, http_port=0, vendors=vendors
    )
    devstack.produce_requests(setup.kafka, samples.requests)
    workers: list[subprocess.Popen[bytes]] = []
    with StatusReader(kafka_bootstrap, setup.topics.status) as reader:
        try:
            workers = [
                devstack.start_worker(setup.config_path, tmp_path / f"w{n}.log") for n in (1, 2)
            ]

            def all_finished() -> bool:
                reader.poll()
                return len(reader.request_terminals()) == REQUESTS

            wait_until(all_finished, 120, "every request finished")
            assert [devstack.stop_worker(worker) for worker in workers] == [0, 0]
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
        reader.poll()
        terminals = reader.request_terminals()
        records = reader.status_records()

    logs = "\n".join((tmp_path / f"w{n}.log").read_text() for n in (1, 2))
    assert {tuple(statuses) for statuses in terminals.values()} == {(Status.COMPLETED,)}, logs[
        -3000:
    ]
    assert "Traceback" not in logs
    unique, _redelivered = deduplicated(records)
    assert invariant_violations(unique) == []

    ledger = open_ledger(ledger_url)
    try:
        items = Counter[str]()
        for (vendor, status), number in ledger.item_counts().items():
            assert status.is_terminal, (vendor, status)
            items[vendor] += number
    finally:
        ledger.close()
    _assert_within_limits(fleet, items)


def _assert_within_limits(fleet: SandboxFleet, items: Counter[str]) -> None:
    refused = [
        (vendor, call.path, call.status)
        for vendor, sandbox in fleet.all.items()
        for call in sandbox.calls
        if call.status is not None and call.status >= 400 and call.status != 404
    ]
    assert refused == [], "a sandbox refused a call the worker should never have made"
    voyado_jobs = [c for c in fleet.all["voyado"].calls if "create-remove-customer-job" in c.path]
    assert len(voyado_jobs) == items["voyado"], "one job per customer key, each sent once"
    cdp_calls = [c for c in fleet.all["acquia_cdp"].calls if c.path.endswith("/dataerasure")]
    assert len(cdp_calls) <= math.ceil(items["acquia_cdp"] / 200) + 2  # replicas may each flush
    erasures = fleet.sandbox(AcquiaCdpSandbox).erasures()
    sent = [customer for call in erasures for customer in call.customer_ids]
    assert len(sent) == len(set(sent)) == items["acquia_cdp"], "every customer id sent once"
    bodies = fleet.sandbox(AcousticSandbox).submitted_bodies(10091)
    acoustic_lines = sum(len(body.splitlines()) for body in bodies)
    assert acoustic_lines == items["acoustic"], "every email sent exactly once"
