"""Forgetting on schedule (contract §4 `retention`): identity values of finished requests
are replaced by keyed hashes, and old requests are deleted with everything they hold;
`lookup` still answers "was this person's erasure requested, and how did it end?".

Each batch is one short transaction over at most `batch_size` requests, oldest first,
claimed with SKIP LOCKED where the backend has it, so the worker and the operator
commands never wait long behind retention. Only COMPLETED requests are minimised: an open
or FAILED one keeps its values, which a requeue sends to the vendor again.

A minimised value is HMAC-SHA256(hash_key, type + value) in hex: the same person's
identity always hashes alike, so lookup finds their requests, and without the key nobody
can test a guessed address against the ledger. `scrub` then removes the old bytes where
the backend keeps them (SQLite's WAL; freed space is zeroed by `secure_delete`).
PostgreSQL keeps old row versions in its files until (auto)vacuum reuses the space; no
query, replica or dump can read them.
"""

from __future__ import annotations

import hashlib
import hmac
from abc import abstractmethod
from collections.abc import Sequence
from datetime import datetime, timedelta

from consumer.ledger.backend import SqlBackend, Tx
from consumer.ledger.records import LookupHit
from consumer.model import Regulation, Status

# Spelt as the partial index requests_to_minimise says (SQLite needs it word for word).
_TO_MINIMISE = (
    "SELECT r.request_id FROM requests r WHERE r.status = 'COMPLETED'"
    " AND r.minimised_at IS NULL AND r.finished_at <= ? ORDER BY r.finished_at LIMIT ?"
)
# Spelt as the partial index requests_finished says. A request whose events are not all
# published yet is kept: deleting it would drop status events nobody has seen.
_EXPIRED = (
    "SELECT r.request_id FROM requests r WHERE r.finished_at IS NOT NULL"
    " AND r.finished_at <= ? AND r.status IN ('COMPLETED', 'FAILED') AND NOT EXISTS"
    " (SELECT 1 FROM events e WHERE e.request_id = r.request_id AND e.published_at IS NULL)"
    " ORDER BY r.finished_at LIMIT ?"
)
_LOOKUP = (
    "SELECT r.request_id, r.regulation, r.received_at, r.status, r.finished_at,"
    " r.minimised_at FROM requests r WHERE r.request_id IN (SELECT i.request_id FROM items i"
    " JOIN requests m ON m.request_id = i.request_id WHERE i.identity_type = ?"
    " AND ((m.minimised_at IS NULL AND i.identity_value = ?)"
    " OR (m.minimised_at IS NOT NULL AND i.identity_value = ?)))"
    " ORDER BY r.received_at, r.request_id"
)


def identity_hash(hash_key: bytes, identity_type: str, value: str) -> str:
    """What a minimised identity value becomes: HMAC-SHA256(hash_key, type + value), hex."""
    return hmac.new(hash_key, (identity_type + value).encode(), hashlib.sha256).hexdigest()


class SqlRetention(SqlBackend):
    """Minimisation, deletion of expired requests, and lookup by identity."""

    @abstractmethod
    def _unchain(self, tx: Tx, request_ids: Sequence[str]) -> None:
        """Checkpoints for the chain entries about to be deleted (`SqlAudit._unchain`)."""

    def minimise(self, now: datetime, hash_key: bytes, after: timedelta, batch_size: int) -> int:
        with self._transaction(write=True) as tx:
            ids = self._claim(tx, _TO_MINIMISE, now - after, batch_size)
            if not ids:
                return 0
            items = tx.rows(
                "SELECT item_id, identity_type, identity_value FROM items"
                f" WHERE request_id {self.in_array} ORDER BY item_id",
                (self._array(ids),),
            )
            tx.many(
                "UPDATE items SET identity_value = ? WHERE item_id = ?",
                [(identity_hash(hash_key, kind, value), item) for item, kind, value in items],
            )
            tx.rows(
                f"UPDATE requests SET minimised_at = ? WHERE request_id {self.in_array}",
                (self._to_db(now), self._array(ids)),
            )
        return len(ids)

    def delete_expired(self, now: datetime, after: timedelta, batch_size: int) -> int:
        with self._transaction(write=True) as tx:
            ids = self._claim(tx, _EXPIRED, now - after, batch_size)
            if ids:
                self._unchain(tx, ids)
                self._delete(tx, self._array(ids))
        return len(ids)

    def _claim(self, tx: Tx, sql: str, before: datetime, limit: int) -> list[str]:
        """Lock up to `limit` requests that `sql` picks, skipping those another transaction
        holds (a requeue, say: it may change whether they qualify)."""
        locked = sql + self.skip_locked.format("r")
        return [row[0] for row in tx.rows(locked, (self._to_db(before), limit))]

    def _delete(self, tx: Tx, ids: object) -> None:
        """The requests and everything recorded for them; their vendor jobs once no other
        item refers to them (items are deleted before, for their foreign key)."""
        jobs = tx.rows(
            f"SELECT DISTINCT job_id FROM items WHERE request_id {self.in_array}"
            " AND job_id IS NOT NULL",
            (ids,),
        )
        for table in ("events", "operator_actions", "vendor_scopes", "items"):
            tx.rows(f"DELETE FROM {table} WHERE request_id {self.in_array}", (ids,))
        if jobs:
            tx.rows(
                f"DELETE FROM jobs WHERE job_id {self.in_array} AND NOT EXISTS"
                " (SELECT 1 FROM items i WHERE i.job_id = jobs.job_id)",
                (self._array([job_id for (job_id,) in jobs]),),
            )
        tx.rows(f"DELETE FROM requests WHERE request_id {self.in_array}", (ids,))

    def lookup(self, identity_type: str, value: str, hash_key: bytes | None) -> list[LookupHit]:
        hashed = None if hash_key is None else identity_hash(hash_key, identity_type, value)
        with self._transaction(write=False) as tx:
            rows = tx.rows(_LOOKUP, (identity_type, value, hashed))
        return [
            LookupHit(
                request_id,
                Regulation(regulation),
                self._from_db(received_at),
                Status(status),
                None if finished_at is None else self._from_db(finished_at),
                minimised_at is not None,
            )
            for request_id, regulation, received_at, status, finished_at, minimised_at in rows
        ]

    def minimised_requests(self) -> int:
        with self._transaction(write=False) as tx:
            ((count,),) = tx.rows("SELECT count(*) FROM requests WHERE minimised_at IS NOT NULL")
        return int(count)

    def scrub(self) -> bool:
        """Nothing to do where the backend keeps no readable copy of removed values."""
        return True
