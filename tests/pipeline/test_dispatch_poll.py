"""Dispatch and polling over a real SQLite ledger, the real Acoustic adapter and its sandbox.

Time in the ledger is a test clock moved by hand (batch age, backoff, next poll); the
sandbox's jobs run on its own fast real-time clock, so waits on them use deadlines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from consumer.model import Status
from consumer.pipeline.poller import IDLE_WAIT_SECONDS
from consumer.runtime.metrics import REGISTRY
from devtools.sandbox.acoustic import AcousticSandbox
from devtools.sandbox.server import Fault
from tests.support.vendor_rig import ACOUSTIC_RIG_SETTINGS, VendorRig, acoustic_sandbox
from tests.support.waiting import wait_until
from tests.vendors.harness_acoustic import DATABASE as DB
from tests.vendors.harness_acoustic import Harness

ACOUSTIC = Harness()
RigFactory = Callable[..., VendorRig]
SETTINGS = ACOUSTIC_RIG_SETTINGS


@pytest.fixture
def sandbox() -> Iterator[AcousticSandbox]:
    with acoustic_sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def rig_for(sandbox: AcousticSandbox, tmp_path: Path) -> Iterator[RigFactory]:
    """Builds the test's rig (Acoustic, `SETTINGS` with the test's overrides)."""
    rigs: list[VendorRig] = []

    def build(**overrides: object) -> VendorRig:
        rigs.append(VendorRig(ACOUSTIC, sandbox, tmp_path / "ledger.db", SETTINGS | overrides))
        return rigs[-1]

    yield build
    for rig in rigs:
        rig.close()


def submissions(sandbox: AcousticSandbox) -> int:
    return sum(
        1 for call in sandbox.calls if call.method == "POST" and call.path.endswith("gdpr_erasure")
    )


def test_full_batches_go_at_once_and_the_rest_waits_for_the_flush_interval(
    sandbox: AcousticSandbox, rig_for: RigFactory
) -> None:
    rig = rig_for()
    rig.record(*(f"user{i}@example.com" for i in range(250)))
    rig.dispatcher.step()
    rig.dispatcher.step()
    assert submissions(sandbox) == 2
    assert rig.dispatcher.step() > 0, "a partial batch younger than the flush interval waits"
    assert submissions(sandbox) == 2
    rig.clock.advance(30)
    rig.dispatcher.step()
    assert submissions(sandbox) == 3
    assert rig.counts() == {Status.SUBMITTED: 250}
    bodies = sandbox.submitted_bodies(DB)
    assert [len(body.splitlines()) for body in bodies] == [100, 100, 50]


def test_a_batch_is_batch_size_lines_to_each_database(
    sandbox: AcousticSandbox, rig_for: RigFactory
) -> None:
    """Two databases and batch_size 100: each call carries 100 lines to one database, not
    a batch of 100 items split between them."""
    other = DB + 1
    sandbox.add_database(other, lookup_fields=("EMAIL",))
    rig = rig_for(database_ids=(DB, other))
    rig.record(*(f"user{i}@example.com" for i in range(150)))
    rig.dispatcher.step()
    assert submissions(sandbox) == 2
    rig.clock.advance(30)
    rig.dispatcher.step()
    assert submissions(sandbox) == 4
    for database in (DB, other):
        bodies = sandbox.submitted_bodies(database)
        assert sorted(len(body.splitlines()) for body in bodies) == [50, 100]


def test_jobs_are_polled_to_per_contact_outcomes(
    sandbox: AcousticSandbox, rig_for: RigFactory
) -> None:
    sandbox.add_contact(DB, {"EMAIL": "known@example.com"})
    sandbox.add_contact(DB, {"EMAIL": "stuck@example.com"})
    sandbox.set_undeletable(DB, "EMAIL", "stuck@example.com")
    rig = rig_for()
    known, unknown, stuck = rig.record(
        "known@example.com", "nobody@example.com", "stuck@example.com"
    )
    rig.clock.advance(30)
    rig.dispatcher.step()
    # An idle poller sleeps until the job is due (first_poll_after_seconds), at most 1 s.
    assert rig.poller.step() == IDLE_WAIT_SECONDS
    rig.clock.advance(rig.settings.first_poll_after_seconds - 0.3)
    assert rig.poller.step() == pytest.approx(0.3)
    assert len(sandbox.calls) == 2, "no poll before first_poll_after"
    rig.poll_until_settled()
    statuses = {rid: rig.ledger.trail(rid).status for rid in (known, unknown, stuck)}  # type: ignore[union-attr]
    assert statuses == {known: Status.COMPLETED, unknown: Status.COMPLETED, stuck: Status.FAILED}
    vendor = {rid: rig.ledger.trail(rid).vendors[0].status for rid in (known, unknown, stuck)}  # type: ignore[union-attr]
    assert vendor == {known: Status.COMPLETED, unknown: Status.NOT_FOUND, stuck: Status.FAILED}
    assert not sandbox.contact_exists(DB, "EMAIL", "known@example.com")


def test_server_errors_requeue_with_backoff_until_attempts_run_out(
    sandbox: AcousticSandbox, rig_for: RigFactory
) -> None:
    rig = rig_for(max_attempts=2)
    (request_id,) = rig.record("a@example.com")
    sandbox.inject(Fault.status(500), path_prefix="/rest/databases", times=2)
    rig.clock.advance(30)
    rig.dispatcher.step()
    assert rig.counts() == {Status.QUEUED: 1}
    assert rig.dispatcher.step() > 0, "backing off: nothing is due yet"
    assert submissions(sandbox) == 1
    rig.clock.advance(60)
    rig.dispatcher.step()
    assert submissions(sandbox) == 2
    trail = rig.ledger.trail(request_id)
    assert trail is not None and trail.status is Status.FAILED
    assert trail.vendors[0].items[0].detail is not None
    assert trail.vendors[0].items[0].detail.startswith("gave up after 2 attempts")


def test_failed_job_is_resubmitted(sandbox: AcousticSandbox, rig_for: RigFactory) -> None:
    sandbox.add_contact(DB, {"EMAIL": "a@example.com"})
    sandbox.fail_next_jobs(1)
    rig = rig_for()
    (request_id,) = rig.record("a@example.com")
    rig.clock.advance(30)
    rig.dispatcher.step()

    def requeued() -> bool:
        rig.clock.advance(60)
        rig.poller.step()
        return rig.counts().get(Status.QUEUED) == 1

    wait_until(requeued, timeout=10, message="the failed job's item was not requeued")
    rig.clock.advance(3600)
    rig.dispatcher.step()
    assert submissions(sandbox) == 2
    rig.poll_until_settled()
    trail = rig.ledger.trail(request_id)
    assert trail is not None and trail.vendors[0].status is Status.COMPLETED
    history = [event.status for event in trail.events if event.vendor]
    assert history[:2] == [Status.QUEUED, Status.SUBMITTED] and history[-1] is Status.COMPLETED
    assert history == sorted(set(history), key=lambda s: s.rank), "a resubmission moved it back"


def test_refused_credentials_stop_calls_and_items_wait(
    sandbox: AcousticSandbox, rig_for: RigFactory
) -> None:
    rig = rig_for(client_secret=SecretStr("wrong"))
    rig.record("a@example.com")
    rig.clock.advance(30)
    rig.stop.set()  # the next step must not wait out the probe interval
    rig.dispatcher.step()
    assert rig.counts() == {Status.QUEUED: 1}, "items wait for fixed credentials"
    assert not rig.health.is_up
    assert REGISTRY.get_sample_value("erasure_vendor_up", {"vendor": "acoustic"}) == 0
    assert submissions(sandbox) == 0


def test_poll_errors_back_off_without_touching_items(
    sandbox: AcousticSandbox, rig_for: RigFactory
) -> None:
    rig = rig_for()
    rig.record("a@example.com")
    rig.clock.advance(30)
    rig.dispatcher.step()
    sandbox.inject(Fault.status(503), path_prefix="/rest/gdpr_jobs", times=3)
    rig.clock.advance(10)
    rig.poller.step()
    assert rig.counts() == {Status.SUBMITTED: 1}
    assert len(rig.sleeps.waits) == 2, "a GET is retried in-call before the poller backs off"
    rig.poll_until_settled()
    assert rig.counts() == {Status.NOT_FOUND: 1}


def test_rate_limited_submissions_cost_no_attempt(
    sandbox: AcousticSandbox, rig_for: RigFactory
) -> None:
    rig = rig_for(max_attempts=1)
    (request_id,) = rig.record("a@example.com")
    # Longer than the in-call cap: the dispatcher, not the HTTP layer, waits it out.
    sandbox.inject(Fault.rate_limited(retry_after=120), path_prefix="/rest/databases")
    rig.clock.advance(30)
    rig.dispatcher.step()
    assert rig.counts() == {Status.QUEUED: 1}, "with max_attempts=1 a counted attempt would fail it"
    rig.clock.advance(60)
    rig.dispatcher.step()
    assert submissions(sandbox) == 1, "Retry-After is honoured"
    rig.clock.advance(120)
    rig.dispatcher.step()
    assert submissions(sandbox) == 2
    trail = rig.ledger.trail(request_id)
    assert trail is not None and trail.vendors[0].status is Status.SUBMITTED
