"""Gauges read from the ledger (items per status, oldest open request, outbox backlog).

They describe the whole ledger rather than this replica's work, so one periodic query
refreshes them instead of every loop keeping counts that would drift across replicas.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from consumer.config import DeadlineSettings, VendorSettings
from consumer.ledger.base import Ledger
from consumer.metrics import (
    ITEMS,
    OLDEST_OPEN_REQUEST_AGE,
    OUTBOX_BACKLOG,
    OVERDUE_ITEMS,
    REQUESTS_AT_RISK,
    REQUESTS_OVERDUE,
)
from consumer.model import Status

REFRESH_SECONDS = 5.0
AT_RISK_SHARE = 0.75
_ITEM_STATUSES = tuple(status for status in Status if status is not Status.RECEIVED)


class LedgerGauges:
    def __init__(
        self,
        ledger: Ledger,
        vendors: Mapping[str, VendorSettings],
        deadlines: DeadlineSettings,
        clock: Callable[[], datetime],
    ) -> None:
        self._ledger = ledger
        self._vendors = vendors
        self._deadline_days = deadlines.days()
        self._clock = clock

    def step(self) -> float:
        now = self._clock()
        counts = self._ledger.item_counts()
        for vendor in self._vendors:
            for status in _ITEM_STATUSES:
                ITEMS.labels(vendor=vendor, status=status.value).set(
                    counts.get((vendor, status), 0)
                )
        oldest = self._ledger.oldest_open_request_at()
        age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
        OLDEST_OPEN_REQUEST_AGE.set(age)
        OUTBOX_BACKLOG.set(self._ledger.outbox_backlog())
        self._refresh_overdue_items(now)
        self._refresh_deadline_risk(now)
        return REFRESH_SECONDS

    def _refresh_overdue_items(self, now: datetime) -> None:
        for vendor, settings in self._vendors.items():
            overdue_after = settings.overdue_after
            if overdue_after is not None:
                cutoff = now - timedelta(seconds=overdue_after)
                OVERDUE_ITEMS.labels(vendor=vendor).set(self._ledger.overdue_items(vendor, cutoff))

    def _refresh_deadline_risk(self, now: datetime) -> None:
        """Open requests past 75% of their legal deadline, and past all of it."""
        for gauge, share in ((REQUESTS_AT_RISK, AT_RISK_SHARE), (REQUESTS_OVERDUE, 1.0)):
            cutoffs = {
                regulation: now - timedelta(days=days * share)
                for regulation, days in self._deadline_days.items()
            }
            for regulation, count in self._ledger.open_requests_before(cutoffs).items():
                gauge.labels(regulation=regulation.value).set(count)
