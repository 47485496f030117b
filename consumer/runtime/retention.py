"""The retention loop (contract §4 `retention`): replaces the identity values of finished
requests by keyed hashes and deletes expired requests, on one replica at a time.

Every replica runs the loop; a named lease in the ledger picks the one that works, so two
replicas never work over the same rows, and another takes over within a few rounds when
that one dies. Work goes a batch at a time, each batch one short transaction
(`Ledger.minimise`, `Ledger.delete_expired`): over a backlog (the first run on an old
ledger) the loop takes one batch of each per step with a short pause between, so ingest
and the vendor loops get the write lock in between and /healthz sees the loop step. Once
nothing is left it scrubs what the backend keeps of the old values (SQLite's WAL) and
looks again a round later. Finding nothing costs two index probes, so rounds are short.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Final

from consumer.clock import SYSTEM_CLOCK, Clock
from consumer.config import RetentionSettings
from consumer.ledger import Ledger
from consumer.runtime.metrics import RETENTION_ROWS

log = logging.getLogger(__name__)

LEASE_NAME: Final = "retention"
ROUND_SECONDS: Final = 60.0
BATCH_SIZE: Final = 500
PAUSE_SECONDS: Final = 0.05
"""Between two batches of a backlog: the other loops' writes get the lock in between."""
LEASE_ROUNDS: Final = 3
"""The lease outlives a round, so the replica that holds it keeps it from round to round."""


class RetentionLoop:
    """`step` for a `LoopThread`: one batch of each kind of work, or the wait till the next
    round."""

    def __init__(
        self,
        ledger: Ledger,
        settings: RetentionSettings,
        owner: str,
        clock: Clock = SYSTEM_CLOCK,
        *,
        round_seconds: float = ROUND_SECONDS,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self._ledger = ledger
        self._settings = settings
        self._owner = owner
        self._clock = clock
        self._round = round_seconds
        self._batch = batch_size
        self._done = {"minimised": 0, "deleted": 0}

    def step(self) -> float:
        now = self._clock.now()
        until = now + timedelta(seconds=LEASE_ROUNDS * self._round)
        if not self._ledger.try_lease(LEASE_NAME, self._owner, now, until):
            return self._round  # another replica does it
        done = {"minimised": self._minimise(now), "deleted": self._delete(now)}
        for action, count in done.items():
            RETENTION_ROWS.labels(action=action).inc(count)
            self._done[action] += count
        if any(done.values()):
            return PAUSE_SECONDS
        if any(self._done.values()) and self._ledger.scrub():
            log.info(
                "retention: identity values of %d request(s) replaced by keyed hashes,"
                " %d expired request(s) deleted",
                self._done["minimised"],
                self._done["deleted"],
            )
            self._done = dict.fromkeys(self._done, 0)
        return self._round

    def _minimise(self, now: datetime) -> int:
        after, key = self._settings.identifiers_after_days, self._settings.hash_key_bytes
        if after is None or key is None:
            return 0
        return self._ledger.minimise(now, key, timedelta(days=after), self._batch)

    def _delete(self, now: datetime) -> int:
        expired = timedelta(days=self._settings.requests_days)
        return self._ledger.delete_expired(now, expired, self._batch)
