"""Gauges read from the ledger (items per status, oldest open request, outbox backlog).

They describe the whole ledger rather than this replica's work, so one periodic query
refreshes them instead of every loop keeping counts that would drift across replicas.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from consumer.ledger.base import Ledger
from consumer.metrics import ITEMS, OLDEST_OPEN_REQUEST_AGE, OUTBOX_BACKLOG
from consumer.model import Status

REFRESH_SECONDS = 5.0
_ITEM_STATUSES = tuple(status for status in Status if status is not Status.RECEIVED)


class LedgerGauges:
    def __init__(
        self, ledger: Ledger, vendors: Iterable[str], clock: Callable[[], datetime]
    ) -> None:
        self._ledger = ledger
        self._vendors = tuple(vendors)
        self._clock = clock

    def step(self) -> float:
        counts = self._ledger.item_counts()
        for vendor in self._vendors:
            for status in _ITEM_STATUSES:
                ITEMS.labels(vendor=vendor, status=status.value).set(
                    counts.get((vendor, status), 0)
                )
        oldest = self._ledger.oldest_open_request_at()
        age = 0.0 if oldest is None else max(0.0, (self._clock() - oldest).total_seconds())
        OLDEST_OPEN_REQUEST_AGE.set(age)
        OUTBOX_BACKLOG.set(self._ledger.outbox_backlog())
        return REFRESH_SECONDS
