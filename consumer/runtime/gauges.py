"""Gauges read from the ledger (items per status, oldest open request, outbox backlog).

They describe the whole ledger rather than this replica's work, so one periodic query
refreshes them instead of every loop keeping counts that would drift across replicas.

A refresh reads open rows only, through partial indexes (items that can still change, open
requests, unpublished events), so its cost follows the backlog, not years of history.
Outcome counts (items COMPLETED, FAILED, ...) need every item counted; they are refreshed
every OUTCOMES_REFRESH_SECONDS, and sooner once the open counts show that items have moved
(an item only reaches an outcome by leaving an open status). Both intervals stretch with
the time a refresh takes, so the gauges keep the database busy at most BUSY_SHARE of the
time, however big the ledger.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from consumer.clock import SYSTEM_CLOCK, Clock
from consumer.config import DeadlineSettings, VendorSettings
from consumer.ledger.protocol import Ledger
from consumer.model import Status
from consumer.runtime.metrics import (
    ITEMS,
    OLDEST_OPEN_REQUEST_AGE,
    OUTBOX_BACKLOG,
    OVERDUE_ITEMS,
    REQUESTS_AT_RISK,
    REQUESTS_OVERDUE,
    REQUESTS_WITH_FAILED_SCOPE,
)

REFRESH_SECONDS = 5.0
OUTCOMES_REFRESH_SECONDS = 15.0
BUSY_SHARE = 0.02
_ITEM_STATUSES = tuple(status for status in Status if status is not Status.RECEIVED)
_OPEN_ITEM_STATUSES = tuple(status for status in _ITEM_STATUSES if not status.is_terminal)


class LedgerGauges:
    def __init__(
        self,
        ledger: Ledger,
        vendors: Mapping[str, VendorSettings],
        deadlines: DeadlineSettings,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._ledger = ledger
        self._vendors = vendors
        self._deadlines = deadlines.deadlines()
        self._clock = clock
        self._outcomes_due = clock.monotonic()  # the first refresh counts everything
        self._outcomes_counted = clock.monotonic()
        self._outcomes_gap = 0.0  # shortest wait between full counts, from their cost
        self._open_counts: Mapping[tuple[str, Status], int] | None = None

    def step(self) -> float:
        """Refresh the gauges; return how long to wait before the next refresh."""
        started = self._clock.monotonic()
        now = self._clock.now()
        counting_all = 0.0
        if started >= self._outcomes_due:
            self._set_items(self._ledger.item_counts(), _ITEM_STATUSES)
            counting_all = self._clock.monotonic() - started
            self._outcomes_gap = counting_all / BUSY_SHARE
            self._outcomes_counted = started
            self._outcomes_due = started + max(OUTCOMES_REFRESH_SECONDS, self._outcomes_gap)
            self._open_counts = None
        else:
            open_counts = self._ledger.item_counts(open_only=True)
            self._set_items(open_counts, _OPEN_ITEM_STATUSES)
            if self._open_counts is not None and open_counts != self._open_counts:
                self._outcomes_due = min(
                    self._outcomes_due, self._outcomes_counted + self._outcomes_gap
                )
            self._open_counts = open_counts
        oldest = self._ledger.oldest_open_request_at()
        age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
        OLDEST_OPEN_REQUEST_AGE.set(age)
        OUTBOX_BACKLOG.set(self._ledger.outbox_backlog())
        self._refresh_overdue_items(now)
        self._refresh_deadline_risk(now)
        took = self._clock.monotonic() - started - counting_all
        return max(REFRESH_SECONDS, took / BUSY_SHARE)

    def _set_items(
        self, counts: Mapping[tuple[str, Status], int], statuses: tuple[Status, ...]
    ) -> None:
        for vendor in self._vendors:
            for status in statuses:
                ITEMS.labels(vendor=vendor, status=status.value).set(
                    counts.get((vendor, status), 0)
                )

    def _refresh_overdue_items(self, now: datetime) -> None:
        for vendor, settings in self._vendors.items():
            overdue_after = settings.overdue_after
            if overdue_after is not None:
                cutoff = now - timedelta(seconds=overdue_after)
                OVERDUE_ITEMS.labels(vendor=vendor).set(self._ledger.overdue_items(vendor, cutoff))

    def _refresh_deadline_risk(self, now: datetime) -> None:
        """Requests not COMPLETED, FAILED ones included, in the last quarter of their own
        (possibly extended) deadline or past it, and past it (the work list's `--at-risk`
        and `--overdue`); and the requests with a FAILED vendor scope."""
        counts = self._ledger.deadline_counts(now, self._deadlines)
        for regulation, count in counts.at_risk.items():
            REQUESTS_AT_RISK.labels(regulation=regulation.value).set(count)
        for regulation, count in counts.overdue.items():
            REQUESTS_OVERDUE.labels(regulation=regulation.value).set(count)
        REQUESTS_WITH_FAILED_SCOPE.set(counts.with_failed_scope)
