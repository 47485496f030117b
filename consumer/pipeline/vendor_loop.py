"""What each of a vendor's dispatch and poll loops runs with.

A vendor has `max_in_flight` loops of each kind (its call slots). Each loop gets its own
adapter, so its own HTTP session: a `requests.Session` is not safe for concurrent requests.
The slots of one vendor and operation share one ledger object, a transaction at a time
(`shared_ledger`); the health flag, the stop event and the vendor's call gate (on the
adapter's HTTP) are shared by all of a vendor's loops.
"""

from __future__ import annotations

import logging
import threading
import traceback
from dataclasses import dataclass, replace

from consumer.backoff import BackoffPolicy, backoff_delay
from consumer.clock import Clock
from consumer.config import VendorSettings
from consumer.ledger.protocol import LedgerUnavailable
from consumer.ledger.records import Change
from consumer.pipeline.shared_ledger import LoopLedger
from consumer.runtime.metrics import LEASE_LOST
from consumer.runtime.vendor_health import VendorHealth
from consumer.vendors.base import VendorAdapter, unexpected
from consumer.vendors.http import RetryPolicy

RECORD_BACKOFF = BackoffPolicy(base_seconds=2.0, cap_seconds=10.0, jitter="equal")
"""Between attempts to record what a vendor answered: short, since until it is recorded
the rows stay leased."""


@dataclass(frozen=True)
class VendorLoopParts:
    settings: VendorSettings
    ledger: LoopLedger
    adapter: VendorAdapter
    owner: str
    clock: Clock
    health: VendorHealth
    stop: threading.Event


class VendorLoop:
    """What a vendor's dispatch or poll loop holds; its logs carry the vendor as a field."""

    def __init__(self, parts: VendorLoopParts) -> None:
        self.vendor = parts.settings.vendor
        logger = logging.getLogger(type(self).__module__)
        self._log = logging.LoggerAdapter(logger, {"vendor": self.vendor})
        self._settings = parts.settings
        self._ledger = parts.ledger
        self._adapter = parts.adapter
        self._owner = parts.owner
        self._clock = parts.clock
        self._health = parts.health
        self._stop = parts.stop

    def _apply(self, change: Change) -> None:
        """Record a change under this loop's leases: rows whose lease passed to another
        replica (a vendor call outlived its lease) are left alone, logged and counted."""
        applied = self._ledger.apply(replace(change, owner=self._owner), self._clock.now())
        if applied.lease_lost:
            self._log.warning(
                "%d item(s)/job(s) were re-claimed by another worker after their lease ran"
                " out; this result was not recorded",
                applied.lease_lost,
            )
            LEASE_LOST.labels(vendor=self.vendor).inc(applied.lease_lost)

    def _record(self, change: Change) -> None:
        """The vendor has acted: keep trying to record it while the ledger is away, or the
        rows stay leased until the lease runs out (then a submission is sent again, a poll
        made again)."""
        failures = 0
        while True:
            try:
                self._apply(change)
                return
            except LedgerUnavailable as error:
                failures += 1
                if self._stop.is_set() and failures > 3:
                    self._log.error(
                        "could not record a %s answer before stopping: %s", self.vendor, error
                    )
                    raise
                self._log.warning(
                    "ledger unavailable recording a %s answer: %s", self.vendor, error
                )
                self._stop.wait(backoff_delay(RECORD_BACKOFF, failures))

    def _unexpected(self, operation: str, error: Exception) -> str:
        """The detail recorded for an exception nobody foresaw, logged with where it was
        raised but not its message (it may quote a vendor's answer or an identifier)."""
        detail = str(unexpected(f"{self.vendor} {operation}", error))
        frames = traceback.extract_tb(error.__traceback__)
        where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        self._log.error("%s%s; counted as a failed attempt", detail, where)
        return detail


def lease_seconds(settings: VendorSettings, calls: int = 1, spacing_seconds: float = 0.0) -> float:
    """Long enough for `calls` vendor calls, each bounded by `timeout_seconds` with its
    in-call retries and spaced `spacing_seconds` apart (a rate limit), and a token fetch;
    short enough that a dead worker's items come back soon."""
    policy = RetryPolicy()
    waits = (policy.attempts - 1) * policy.cap_seconds
    per_call = policy.attempts * settings.timeout_seconds + waits + spacing_seconds
    return calls * per_call + settings.timeout_seconds
