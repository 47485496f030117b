"""Vendor rates held by a fleet, not per process: three replicas, each with several call
slots and its own call gate, share one PostgreSQL ledger and reach real sandboxes that
answer after a real latency. The calls per second are counted where the vendor would count
them: in the sandbox's own log.

Each replica is what one worker process runs for the vendor (tests/support/call_slots.py);
three of them with limits of their own would make three times the rate.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.throughput_stats import busiest_second
from devtools.sandbox.monetate import MonetateSandbox
from devtools.sandbox.voyado import VoyadoSandbox
from tests.support import pg
from tests.support.call_slots import Replica, calls_to, record_requests
from tests.support.waiting import wait_until
from tests.vendors.harness_monetate import Harness as MonetateHarness
from tests.vendors.harness_voyado import Harness as VoyadoHarness

REPLICAS = 3
LATENCY = 0.05
# A call's slot comes from one bucket spaced 1 / rate; the log adds each answer's jitter.
JITTER_CALLS = 1


@pytest.fixture
def ledger_url(postgres_dsn: str) -> Iterator[str]:
    with pg.fresh_database(postgres_dsn) as dsn:
        yield dsn


def run_fleet(replicas: list[Replica], done: object, timeout: float) -> None:
    for replica in replicas:
        replica.start()
    try:
        wait_until(done, timeout, "the fleet's work")  # type: ignore[arg-type]
    finally:
        for replica in replicas:
            replica.close()


def test_replicas_share_the_submission_rate(ledger_url: str, tmp_path: Path) -> None:
    rate, items = 20.0, 60
    with VoyadoSandbox() as sandbox:
        sandbox.set_latency(LATENCY)
        settings = VoyadoHarness().settings(
            sandbox,
            rate_per_second=rate,
            max_in_flight=3,
            flush_interval_seconds=0.01,
            first_poll_after_seconds=3600,
        )
        record_requests(ledger_url, settings, [f"key-{n}" for n in range(items)])
        fleet = [Replica(settings, ledger_url) for _ in range(REPLICAS)]
        calls = lambda: calls_to(sandbox.calls, "create-remove-customer-job")  # noqa: E731
        run_fleet(fleet, lambda: len(calls()) >= items, 60)
        stamps = sorted(call.timestamp for call in calls())
    assert len(stamps) == items
    assert busiest_second(stamps) <= rate + 1 + JITTER_CALLS, "over the rate"
    achieved = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert achieved >= 0.7 * rate, f"{achieved:.1f} calls/s of {rate:g} allowed"


def test_replicas_share_monetates_status_rate_at_one_check_per_id(ledger_url: str) -> None:
    """Monetate's sandbox refuses (429) status checks that come faster than its rate (with
    room for one early call): none may be refused, and each id costs about one check."""
    rate, ids = 10.0, 30
    with MonetateSandbox(
        deletion_delay_seconds=0.2, data_get_rate_per_second=rate, data_get_burst=2
    ) as sandbox:
        sandbox.add_dataset("erasure_requests")
        sandbox.set_latency(LATENCY)
        settings = MonetateHarness().settings(
            sandbox,
            status_rate_per_second=rate,
            max_in_flight=2,
            batch_size=5,
            flush_interval_seconds=0.01,
            first_poll_after_seconds=0.5,
            poll_interval_seconds=1.0,
        )
        values = [f"C-{n}" for n in range(ids)]
        for value in values:
            sandbox.add_customer(value)
        record_requests(ledger_url, settings, values)
        fleet = [Replica(settings, ledger_url, polls=True) for _ in range(REPLICAS)]
        checks = lambda: calls_to(sandbox.calls, "/status/")  # noqa: E731
        run_fleet(fleet, lambda: sum(c.status == 200 for c in checks()) >= ids, 60)
        answered = checks()
    assert [call for call in answered if call.status != 200] == [], "checks refused"
    assert busiest_second([call.timestamp for call in answered]) <= rate + 2
    assert len(answered) <= ids + 2 * (ids // 5), "about one check per id"
