"""Dispatch and polling over a real SQLite ledger, the real Acoustic adapter and its sandbox.

Time in the ledger is a test clock moved by hand (batch age, backoff, next poll); the
sandbox's jobs run on its own fast real-time clock, so waits on them use deadlines.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from consumer.config import AcousticSettings
from consumer.dispatch import Dispatcher, RateLimiter
from consumer.fanout import plan_request
from consumer.ledger import Ledger, open_ledger
from consumer.metrics import REGISTRY
from consumer.model import ErasureRequest, Identity, Regulation, Status
from consumer.poller import Poller
from consumer.sandbox.acoustic import AcousticSandbox
from consumer.sandbox.server import Fault
from consumer.vendor_health import VendorHealth
from consumer.vendor_loop import VendorLoopParts
from consumer.vendors.acoustic import AcousticAdapter
from consumer.vendors.http import VendorHttp
from tests.kafka_helpers import wait_until

DB = 10091


class ManualClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def sandbox() -> Iterator[AcousticSandbox]:
    with AcousticSandbox(job_start_after_seconds=0.02, job_duration_seconds=0.05) as sandbox:
        sandbox.add_database(DB, lookup_fields=("EMAIL",))
        yield sandbox


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.migrate()
    yield ledger
    ledger.close()


def settings_for(sandbox: AcousticSandbox, **overrides: object) -> AcousticSettings:
    values: dict[str, object] = {
        "base_url": sandbox.base_url,
        "client_id": "sandbox-client",
        "client_secret": SecretStr("sandbox-secret"),
        "refresh_token": SecretStr("sandbox-refresh"),
        "database_ids": (DB,),
        "batch_size": 100,
        "flush_interval_seconds": 30,
        "first_poll_after_seconds": 10,
        "poll_interval_seconds": 60,
        "rate_per_second": 1000,
        "max_attempts": 3,
        "timeout_seconds": 2,
    }
    values.update(overrides)
    return AcousticSettings.model_validate(values)


class Stage:
    """One vendor's dispatcher and poller sharing a ledger, a clock and a health flag."""

    def __init__(self, settings: AcousticSettings, ledger: Ledger, clock: ManualClock) -> None:
        self.settings, self.ledger, self.clock = settings, ledger, clock
        self.stop = threading.Event()
        self.health = VendorHealth("acoustic")
        self.waits: list[float] = []
        http = VendorHttp(
            "acoustic", timeout_seconds=settings.timeout_seconds, sleep=self.waits.append
        )
        adapter = AcousticAdapter(settings, http)
        parts = VendorLoopParts(settings, ledger, adapter, "me", clock, self.health, self.stop)
        self.dispatcher = Dispatcher(parts)
        self.poller = Poller(parts)

    def record(self, emails: list[str]) -> list[str]:
        requests = [
            ErasureRequest(
                str(uuid.uuid4()),
                self.clock(),
                Regulation.GDPR,
                (Identity("email", email),),
                None,
                None,
                None,
            )
            for email in emails
        ]
        plans = [plan_request(request, {"acoustic": self.settings}) for request in requests]
        self.ledger.record_requests(plans, self.clock())
        return [request.request_id for request in requests]

    def counts(self) -> dict[Status, int]:
        return {status: n for (_, status), n in self.ledger.item_counts().items()}

    def poll_until_settled(self) -> None:
        """Step the poller (moving the clock to each next poll) until no job is open."""

        def settled() -> bool:
            self.clock.advance(self.settings.poll_interval_seconds)
            self.poller.step()
            open_items = sum(n for s, n in self.counts().items() if not s.is_terminal)
            return open_items == 0

        wait_until(settled, timeout=10, message="jobs did not settle")


def submissions(sandbox: AcousticSandbox) -> int:
    return sum(
        1 for call in sandbox.calls if call.method == "POST" and call.path.endswith("gdpr_erasure")
    )


def test_full_batches_go_at_once_and_the_rest_waits_for_the_flush_interval(
    sandbox: AcousticSandbox, ledger: Ledger
) -> None:
    stage = Stage(settings_for(sandbox), ledger, ManualClock())
    stage.record([f"user{i}@example.com" for i in range(250)])
    stage.dispatcher.step()
    stage.dispatcher.step()
    assert submissions(sandbox) == 2
    assert stage.dispatcher.step() > 0, "a partial batch younger than the flush interval waits"
    assert submissions(sandbox) == 2
    stage.clock.advance(30)
    stage.dispatcher.step()
    assert submissions(sandbox) == 3
    assert stage.counts() == {Status.SUBMITTED: 250}
    bodies = sandbox.submitted_bodies(DB)
    assert [len(body.splitlines()) for body in bodies] == [100, 100, 50]


def test_jobs_are_polled_to_per_contact_outcomes(sandbox: AcousticSandbox, ledger: Ledger) -> None:
    sandbox.add_contact(DB, {"EMAIL": "known@example.com"})
    sandbox.add_contact(DB, {"EMAIL": "stuck@example.com"})
    sandbox.set_undeletable(DB, "EMAIL", "stuck@example.com")
    stage = Stage(settings_for(sandbox), ledger, ManualClock())
    known, unknown, stuck = stage.record(
        ["known@example.com", "nobody@example.com", "stuck@example.com"]
    )
    stage.clock.advance(30)
    stage.dispatcher.step()
    assert stage.poller.step() > 0 and len(sandbox.calls) == 2, "no poll before first_poll_after"
    stage.poll_until_settled()
    statuses = {rid: ledger.trail(rid).status for rid in (known, unknown, stuck)}  # type: ignore[union-attr]
    assert statuses == {known: Status.COMPLETED, unknown: Status.COMPLETED, stuck: Status.FAILED}
    vendor = {rid: ledger.trail(rid).vendors[0].status for rid in (known, unknown, stuck)}  # type: ignore[union-attr]
    assert vendor == {known: Status.COMPLETED, unknown: Status.NOT_FOUND, stuck: Status.FAILED}
    assert not sandbox.contact_exists(DB, "EMAIL", "known@example.com")


def test_server_errors_requeue_with_backoff_until_attempts_run_out(
    sandbox: AcousticSandbox, ledger: Ledger
) -> None:
    stage = Stage(settings_for(sandbox, max_attempts=2), ledger, ManualClock())
    (request_id,) = stage.record(["a@example.com"])
    sandbox.inject(Fault.status(500), path_prefix="/rest/databases", times=2)
    stage.clock.advance(30)
    stage.dispatcher.step()
    assert stage.counts() == {Status.QUEUED: 1}
    assert stage.dispatcher.step() > 0, "backing off: nothing is due yet"
    assert submissions(sandbox) == 1
    stage.clock.advance(60)
    stage.dispatcher.step()
    assert submissions(sandbox) == 2
    trail = ledger.trail(request_id)
    assert trail is not None and trail.status is Status.FAILED
    assert trail.vendors[0].items[0].detail is not None
    assert trail.vendors[0].items[0].detail.startswith("gave up after 2 attempts")


def test_failed_job_is_resubmitted(sandbox: AcousticSandbox, ledger: Ledger) -> None:
    sandbox.add_contact(DB, {"EMAIL": "a@example.com"})
    sandbox.fail_next_jobs(1)
    stage = Stage(settings_for(sandbox), ledger, ManualClock())
    (request_id,) = stage.record(["a@example.com"])
    stage.clock.advance(30)
    stage.dispatcher.step()

    def requeued() -> bool:
        stage.clock.advance(60)
        stage.poller.step()
        return stage.counts().get(Status.QUEUED) == 1

    wait_until(requeued, timeout=10, message="the failed job's item was not requeued")
    stage.clock.advance(3600)
    stage.dispatcher.step()
    assert submissions(sandbox) == 2
    stage.poll_until_settled()
    trail = ledger.trail(request_id)
    assert trail is not None and trail.vendors[0].status is Status.COMPLETED
    history = [event.status for event in trail.events if event.vendor]
    assert history[:2] == [Status.QUEUED, Status.SUBMITTED] and history[-1] is Status.COMPLETED
    assert history == sorted(set(history), key=lambda s: s.rank), "a resubmission moved it back"


def test_refused_credentials_stop_calls_and_items_wait(
    sandbox: AcousticSandbox, ledger: Ledger
) -> None:
    settings = settings_for(sandbox).model_copy(update={"client_secret": SecretStr("wrong")})
    stage = Stage(settings, ledger, ManualClock())
    stage.record(["a@example.com"])
    stage.clock.advance(30)
    stage.stop.set()  # the next step must not wait out the probe interval
    stage.dispatcher.step()
    assert stage.counts() == {Status.QUEUED: 1}, "items wait for fixed credentials"
    assert not stage.health.is_up
    assert REGISTRY.get_sample_value("erasure_vendor_up", {"vendor": "acoustic"}) == 0
    assert submissions(sandbox) == 0


def test_poll_errors_back_off_without_touching_items(
    sandbox: AcousticSandbox, ledger: Ledger
) -> None:
    stage = Stage(settings_for(sandbox), ledger, ManualClock())
    stage.record(["a@example.com"])
    stage.clock.advance(30)
    stage.dispatcher.step()
    sandbox.inject(Fault.status(503), path_prefix="/rest/gdpr_jobs", times=3)
    stage.clock.advance(10)
    stage.poller.step()
    assert stage.counts() == {Status.SUBMITTED: 1}
    assert len(stage.waits) == 2, "a GET is retried in-call before the poller backs off"
    stage.poll_until_settled()
    assert stage.counts() == {Status.NOT_FOUND: 1}


def test_rate_limiter_spaces_calls() -> None:
    now = [100.0]
    limiter = RateLimiter(rate_per_second=2, monotonic=lambda: now[0])
    assert limiter.wait_seconds() == 0
    limiter.spend(1)
    assert limiter.wait_seconds() == pytest.approx(0.5)
    now[0] += 0.5
    limiter.spend(3)
    assert limiter.wait_seconds() == pytest.approx(1.5)


def test_rate_limited_submissions_cost_no_attempt(sandbox: AcousticSandbox, ledger: Ledger) -> None:
    stage = Stage(settings_for(sandbox, max_attempts=1), ledger, ManualClock())
    (request_id,) = stage.record(["a@example.com"])
    # Longer than the in-call cap: the dispatcher, not the HTTP layer, waits it out.
    sandbox.inject(Fault.rate_limited(retry_after=120), path_prefix="/rest/databases")
    stage.clock.advance(30)
    stage.dispatcher.step()
    assert stage.counts() == {Status.QUEUED: 1}, (
        "with max_attempts=1 a counted attempt would fail it"
    )
    stage.clock.advance(60)
    stage.dispatcher.step()
    assert submissions(sandbox) == 1, "Retry-After is honoured"
    stage.clock.advance(120)
    stage.dispatcher.step()
    assert submissions(sandbox) == 2
    trail = ledger.trail(request_id)
    assert trail is not None and trail.vendors[0].status is Status.SUBMITTED
