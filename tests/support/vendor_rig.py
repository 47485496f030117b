"""One vendor's dispatch and poll loops, for real, on a clock the test moves by hand.

The real Dispatcher and Poller over a real SQLite ledger, calling the vendor's real adapter
(built by its contract-suite harness, so in-call sleeps are recorded rather than slept)
against its sandbox over HTTP. The ledger's time (batch age, backoff, next poll) is a
`ManualClock`; the sandboxes run their jobs on their own fast real-time clocks, so waiting
for a vendor job uses a deadline. Rows are read straight from the SQLite file where a test
is about what no ledger query shows (attempt counts, poll failures).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from consumer.config import VendorSettings
from consumer.ledger import Ledger, open_ledger
from consumer.model import ErasureRequest, Identity, Regulation, Status
from consumer.pipeline.dispatch import Dispatcher
from consumer.pipeline.fanout import plan_request
from consumer.pipeline.poller import Poller
from consumer.pipeline.vendor_loop import VendorLoopParts
from consumer.runtime.vendor_health import VendorHealth
from devtools.sandbox.acoustic import AcousticSandbox
from devtools.sandbox.server import Sandbox
from tests.support.clock import ManualClock
from tests.support.waiting import wait_until
from tests.vendors.harness import RecordedSleeps, VendorHarness
from tests.vendors.harness_acoustic import DATABASE as ACOUSTIC_DB

#: Acoustic settings the pipeline rigs start from: nothing flushes or polls until the test
#: moves the clock, and neither the rate nor the timeout is what a test waits on.
ACOUSTIC_RIG_SETTINGS: dict[str, object] = {
    "batch_size": 100,
    "flush_interval_seconds": 30,
    "first_poll_after_seconds": 10,
    "poll_interval_seconds": 60,
    "rate_per_second": 1000,
    "max_attempts": 3,
    "timeout_seconds": 2,
}


@contextmanager
def acoustic_sandbox(
    job_start_after_seconds: float = 0.02, job_duration_seconds: float = 0.05
) -> Iterator[AcousticSandbox]:
    """An Acoustic sandbox with the harness's database (EMAIL lookup), on fast job times."""
    with AcousticSandbox(
        job_start_after_seconds=job_start_after_seconds, job_duration_seconds=job_duration_seconds
    ) as sandbox:
        sandbox.add_database(ACOUSTIC_DB, lookup_fields=("EMAIL",))
        yield sandbox


class VendorRig:
    """A vendor's dispatcher and poller sharing a ledger, a clock, a health flag and a stop
    event, as one worker runs them. A second rig on the same `db` and `clock` is another
    worker process on the same ledger (a restart, a replica)."""

    def __init__(
        self,
        harness: VendorHarness,
        sandbox: Sandbox,
        db: Path,
        settings: Mapping[str, object] | None = None,
        clock: ManualClock | None = None,
    ) -> None:
        """`settings` override the harness's; `clock` is shared with another rig."""
        self.settings: VendorSettings = harness.settings(sandbox, **(settings or {}))
        self.db = db
        self.ledger: Ledger = open_ledger(f"sqlite:///{db}")
        self.ledger.migrate()
        self.clock = clock or ManualClock()
        self.health = VendorHealth(harness.vendor)
        self.stop = threading.Event()
        self.sleeps = RecordedSleeps()
        self.adapter = harness.adapter(self.settings, self.sleeps)
        parts = VendorLoopParts(
            self.settings, self.ledger, self.adapter, "me", self.clock, self.health, self.stop
        )
        self.dispatcher = Dispatcher(parts)
        self.poller = Poller(parts)

    def close(self) -> None:
        self.adapter.close()
        self.ledger.close()

    def record(self, *values: str) -> list[str]:
        """One request per identifier value (of the vendor's first identity type), recorded
        in the ledger as ingest would; their request ids."""
        identity_type = sorted(self.settings.identity_types)[0]
        requests = [
            ErasureRequest(
                str(uuid.uuid4()),
                self.clock.now(),
                Regulation.GDPR,
                (Identity(identity_type, value),),
                None,
                None,
                None,
            )
            for value in values
        ]
        vendors = {self.settings.vendor: self.settings}
        self.ledger.record_requests([plan_request(r, vendors) for r in requests], self.clock.now())
        return [request.request_id for request in requests]

    def dispatch(self) -> float:
        """One dispatcher step once the batch is due; returns how long the step took."""
        self.clock.advance(self.settings.flush_interval_seconds)
        started = time.monotonic()
        self.dispatcher.step()
        return time.monotonic() - started

    def poll(self) -> float:
        """One poller step once the next poll is due; returns how long the step took."""
        self.clock.advance(self.settings.poll_interval_seconds)
        started = time.monotonic()
        self.poller.step()
        return time.monotonic() - started

    def poll_until_settled(self, timeout: float = 10.0) -> None:
        """Step the poller (moving the clock to each next poll) until no item is open."""

        def settled() -> bool:
            self.poll()
            return sum(n for status, n in self.counts().items() if not status.is_terminal) == 0

        wait_until(settled, timeout, "the vendor's jobs to settle")

    def counts(self) -> dict[Status, int]:
        """Items per status."""
        return {status: n for (_, status), n in self.ledger.item_counts().items()}

    def items(self) -> list[tuple[str, int, str | None]]:
        """(status, attempts, detail) of every item."""
        return self._rows("SELECT status, attempts, detail FROM items ORDER BY item_id")

    def jobs(self) -> list[tuple[str, int, str | None, bool]]:
        """(status, poll_failures, detail, still polled) of every job."""
        return self._rows(
            "SELECT status, poll_failures, detail, next_poll_at IS NOT NULL FROM jobs"
            " ORDER BY job_id"
        )

    def _rows(self, sql: str) -> list[Any]:
        with closing(sqlite3.connect(self.db)) as connection:
            return connection.execute(sql).fetchall()
