"""A poll answer the ledger cannot take at once is recorded later, not asked for again.

The real Poller, the real Acoustic adapter and its sandbox, and a real SQLite ledger that
another connection write-locks while the poll is on the wire: the vendor has answered, so
the poller must keep the answer and retry recording it (as dispatch does with a
submission), rather than give up and leave the job leased until its lease runs out and
then poll it again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from consumer.ledger import sqlite as sqlite_ledger
from consumer.model import Status
from devtools.sandbox.acoustic import AcousticSandbox
from devtools.sandbox.server import Fault
from tests.support.vendor_rig import VendorRig, acoustic_sandbox
from tests.support.waiting import wait_until
from tests.vendors.harness_acoustic import DATABASE as DB
from tests.vendors.harness_acoustic import Harness

POLL_PATH = "/rest/gdpr_jobs"
# Long enough for the test to take the write lock between the claim and the answer.
POLL_DELAY_SECONDS = 1.0
# The ledger's wait for a lock, shortened so a failed write costs the test little time.
BUSY_SECONDS = 0.3
SETTINGS: dict[str, object] = {
    "flush_interval_seconds": 30,
    "first_poll_after_seconds": 10,
    "poll_interval_seconds": 60,
    "timeout_seconds": 5,
}


@pytest.fixture
def sandbox() -> Iterator[AcousticSandbox]:
    with acoustic_sandbox(0.01, 0.03) as sandbox:
        sandbox.add_contact(DB, {"EMAIL": "known@example.com"})
        yield sandbox


@pytest.fixture
def rig(
    sandbox: AcousticSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[VendorRig]:
    monkeypatch.setattr(sqlite_ledger, "BUSY_TIMEOUT_SECONDS", BUSY_SECONDS)
    built = VendorRig(Harness(), sandbox, tmp_path / "ledger.db", SETTINGS)
    yield built
    built.close()


def test_a_poll_answer_is_recorded_once_the_ledger_is_back(
    sandbox: AcousticSandbox, rig: VendorRig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    (request_id,) = rig.record("known@example.com")
    rig.dispatch()
    assert rig.counts() == {Status.SUBMITTED: 1}
    leased_before = lease_until(rig.db)
    sandbox.inject(Fault.delay(POLL_DELAY_SECONDS), path_prefix=POLL_PATH)
    rig.clock.advance(10)
    errors: list[BaseException] = []
    poller = threading.Thread(target=step, args=(rig, errors), name="poll-under-test")
    with closing(sqlite3.connect(rig.db, isolation_level=None)) as locker:
        poller.start()
        wait_until(lambda: lease_until(rig.db) != leased_before, 10, "the poller's claim")
        locker.execute("BEGIN IMMEDIATE")
        try:
            wait_until(
                lambda: recording_failed(caplog) or not poller.is_alive(),
                10,
                "a failed attempt to record (or the step's end)",
            )
            assert poller.is_alive(), f"the poller gave up on the answer: {errors}"
            polls_answered = poll_calls(sandbox)
        finally:
            locker.execute("ROLLBACK")
    poller.join(15)
    assert not poller.is_alive() and not errors, errors
    assert rig.counts() == {Status.COMPLETED: 1}, "the answer was recorded once possible"
    assert poll_calls(sandbox) == polls_answered, "the vendor was not asked again"
    trail = rig.ledger.trail(request_id)
    assert trail is not None and trail.status is Status.COMPLETED
    assert rig.jobs()[0][:2] == ("COMPLETED", 0), "no failed poll was counted"


def step(rig: VendorRig, errors: list[BaseException]) -> None:
    """One poller step, as a worker's poll loop runs it on its own thread."""
    try:
        rig.poller.step()
    except BaseException as error:
        errors.append(error)


def lease_until(db: Path) -> object:
    with closing(sqlite3.connect(db)) as connection:
        ((until,),) = connection.execute("SELECT lease_until FROM jobs").fetchall()
        return until


def recording_failed(caplog: pytest.LogCaptureFixture) -> bool:
    return any("ledger unavailable recording" in r.getMessage() for r in caplog.records)


def poll_calls(sandbox: AcousticSandbox) -> int:
    return sum(1 for call in sandbox.calls if call.path.startswith(POLL_PATH))
