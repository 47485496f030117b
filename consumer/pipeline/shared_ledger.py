"""The ledger calls a vendor loop makes, and a few ledger objects shared by a vendor's slots.

A vendor runs `max_in_flight` loops of each kind; a database connection each would cost
every replica `2 x sum(max_in_flight)` connections (36 with the defaults, and PostgreSQL
allows 100 in all by default), though a loop holds the database for a few milliseconds per
vendor call that takes a hundred or more. One connection for all of them is too few: the
slots then queue for it (measured: Voyado at 100 calls/s with 20 slots reached half that).
So the slots of one vendor and operation share a pool of one ledger object per
`SLOTS_PER_CONNECTION` slots, each used by one slot at a time for one transaction.
"""

from __future__ import annotations

import math
import queue
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from consumer.ledger.limit_records import QuotaReservation
from consumer.ledger.protocol import Ledger
from consumer.ledger.records import Applied, Change, DueJob, ReadySummary, WorkItem

SLOTS_PER_CONNECTION = 2
T = TypeVar("T")


def connections_for(slots: int) -> int:
    """Ledger objects a pool for `slots` call slots holds."""
    return math.ceil(slots / SLOTS_PER_CONNECTION)


class LoopLedger(Protocol):
    """What dispatch and polling ask of the ledger (see `Ledger` for each method)."""

    def ready_items(self, vendor: str, now: datetime, limit: int) -> ReadySummary: ...

    def claim_items(
        self, vendor: str, now: datetime, limit: int, owner: str, lease_until: datetime
    ) -> list[WorkItem]: ...

    def next_poll_due(self, vendor: str) -> datetime | None: ...

    def claim_due_jobs(
        self, vendor: str, now: datetime, limit: int, owner: str, lease_until: datetime
    ) -> list[DueJob]: ...

    def apply(self, change: Change, now: datetime) -> Applied: ...

    def quota_used(self, vendor: str, since: datetime) -> int: ...

    def reserve_quota(
        self, vendor: str, wanted: int, quota: int, window: timedelta, now: datetime
    ) -> QuotaReservation: ...

    def settle_quota(self, reservation: QuotaReservation, spent: int) -> None: ...


class SharedLedger:
    """A `LoopLedger` over a pool of ledger objects for several threads: each call takes a
    free one for its transaction (or waits for one) and gives it back."""

    def __init__(self, ledgers: Sequence[Ledger]) -> None:
        if not ledgers:
            raise ValueError("a shared ledger needs at least one ledger object")
        self._free: queue.SimpleQueue[Ledger] = queue.SimpleQueue()
        for ledger in ledgers:
            self._free.put(ledger)

    def _call(self, method: Callable[[Ledger], T]) -> T:
        ledger = self._free.get()
        try:
            return method(ledger)
        finally:
            self._free.put(ledger)

    def ready_items(self, vendor: str, now: datetime, limit: int) -> ReadySummary:
        return self._call(lambda ledger: ledger.ready_items(vendor, now, limit))

    def claim_items(
        self, vendor: str, now: datetime, limit: int, owner: str, lease_until: datetime
    ) -> list[WorkItem]:
        return self._call(lambda ledger: ledger.claim_items(vendor, now, limit, owner, lease_until))

    def next_poll_due(self, vendor: str) -> datetime | None:
        return self._call(lambda ledger: ledger.next_poll_due(vendor))

    def claim_due_jobs(
        self, vendor: str, now: datetime, limit: int, owner: str, lease_until: datetime
    ) -> list[DueJob]:
        return self._call(
            lambda ledger: ledger.claim_due_jobs(vendor, now, limit, owner, lease_until)
        )

    def apply(self, change: Change, now: datetime) -> Applied:
        return self._call(lambda ledger: ledger.apply(change, now))

    def quota_used(self, vendor: str, since: datetime) -> int:
        return self._call(lambda ledger: ledger.quota_used(vendor, since))

    def reserve_quota(
        self, vendor: str, wanted: int, quota: int, window: timedelta, now: datetime
    ) -> QuotaReservation:
        return self._call(lambda ledger: ledger.reserve_quota(vendor, wanted, quota, window, now))

    def settle_quota(self, reservation: QuotaReservation, spent: int) -> None:
        self._call(lambda ledger: ledger.settle_quota(reservation, spent))
