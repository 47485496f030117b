"""Vendor limits that hold for the whole fleet: every replica on one ledger takes its calls
from the same token buckets and its identifiers from the same rolling quota (CONTRACT.md
section 4: three replicas configured with 1 status check per second make 1 between them).

Call rates: one `rate_buckets` row per (vendor, operation), taken with one atomic upsert
on the database's clock, so replicas whose clocks disagree still share one rate and no two
takers ever read the same level. A take never fails: the level may go below zero, and a
taker whose token is not there yet is told how long to wait for it (the calls already
granted are ahead of it). Every replica thus gets calls in the order it asked, spaced
`1 / rate` apart once the burst (`capacity`) is spent, with one statement per take (of one
call or of several) and no retry loop. A vendor's 429 pushes the level down so that
nobody's next call goes before its Retry-After has passed (`pause_bucket`).

Rolling quotas (Acquia CDP: identifiers per 7 days): a send reserves its identifiers before
the call, in a transaction that first locks the vendor's `quota_locks` row, then counts the
window and records the reservation in `vendor_sends`: two replicas can never both see the
last identifiers free. The window follows the caller's clock, like every other due time
the caller sets: replicas' clocks that disagree by seconds move the edge of a 7-day window
by seconds. A reservation counts as spent unless its caller gives it back with
`settle_quota` (dispatch does when the vendor surely did not count the call). A replica
that dies between reserving and sending leaves its reservation counted: the quota is
under-used by one batch until the window passes, never overrun.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from consumer.ledger.backend import SqlBackend
from consumer.ledger.limit_records import CallSlot, QuotaReservation, RateBucket


@dataclass(frozen=True)
class _Spelling:
    """How a dialect says what the bucket statement needs; `elapsed` is formatted with the
    database's clock as {now}."""

    least: str
    greatest: str
    elapsed: str


_SPELLINGS = {
    "sqlite": _Spelling("min", "max", "(({now} - rate_buckets.updated_at) / 1000000.0)"),
    "postgres": _Spelling(
        "least",
        "greatest",
        "CAST(extract(epoch FROM {now} - rate_buckets.updated_at) AS DOUBLE PRECISION)",
    ),
}
# The level refills at the bucket's rate up to its capacity and never above `ceiling`, then
# `spent` tokens are taken. `updated_at` never moves back: a statement that started before
# the last one (it waited for the row lock) or a database clock stepped back refills nothing.
_TAKE = (
    "INSERT INTO rate_buckets (vendor, operation, tokens, updated_at) VALUES (?, ?, ?, {now})"
    " ON CONFLICT (vendor, operation) DO UPDATE SET tokens = {least}(?,"
    " rate_buckets.tokens + {greatest}(0, {elapsed}) * ?, ?) - ?,"
    " updated_at = {greatest}(rate_buckets.updated_at, {now}) RETURNING tokens, updated_at"
)


class SqlLimits(SqlBackend):
    """The `Ledger`'s fleet-wide limits: call rates and rolling quotas."""

    def take_call_slots(self, bucket: RateBucket, count: int) -> list[CallSlot]:
        if count < 1:
            raise ValueError("a take is of one call slot or more")
        tokens, taken_at = self._upsert_bucket(bucket, bucket.capacity, spent=float(count))
        # The level each slot left behind, as if taken one after the other: the last took it
        # to `tokens`, the one before to `tokens + 1`, ...
        return [
            CallSlot(max(0.0, -(tokens + later) / bucket.rate_per_second), taken_at)
            for later in range(count - 1, -1, -1)
        ]

    def pause_bucket(self, bucket: RateBucket, seconds: float) -> None:
        # A level of 1 - seconds * rate: the next take, `seconds` from now, finds exactly
        # the one token it needs; deeper debt (calls already granted) is kept.
        self._upsert_bucket(bucket, 1.0 - seconds * bucket.rate_per_second, spent=0.0)

    def _upsert_bucket(
        self, bucket: RateBucket, ceiling: float, spent: float
    ) -> tuple[float, datetime]:
        spelling = _SPELLINGS[self.dialect]
        sql = _TAKE.format(
            now=self.db_now,
            least=spelling.least,
            greatest=spelling.greatest,
            elapsed=spelling.elapsed.format(now=self.db_now),
        )
        fresh = min(bucket.capacity, ceiling) - spent
        params = (
            bucket.vendor,
            bucket.operation,
            fresh,
            bucket.capacity,
            bucket.rate_per_second,
            ceiling,
            spent,
        )
        ((tokens, updated_at),) = self._alone(sql, params, write=True)
        return float(tokens), self._from_db(updated_at)

    def reserve_quota(
        self, vendor: str, wanted: int, quota: int, window: timedelta, now: datetime
    ) -> QuotaReservation:
        with self._transaction(write=True) as tx:
            tx.rows(
                "INSERT INTO quota_locks (vendor) VALUES (?)"
                " ON CONFLICT (vendor) DO UPDATE SET vendor = excluded.vendor",
                (vendor,),
            )
            ((used,),) = tx.rows(
                "SELECT coalesce(sum(identifiers), 0) FROM vendor_sends"
                " WHERE vendor = ? AND sent_at > ?",
                (vendor, self._to_db(now - window)),
            )
            free = max(0, quota - int(used))
            granted = min(wanted, free)
            if granted <= 0:
                return QuotaReservation(vendor, None, 0, free)
            ((send_id,),) = tx.rows(
                "INSERT INTO vendor_sends (vendor, sent_at, identifiers)"
                " VALUES (?, ?, ?) RETURNING send_id",
                (vendor, self._to_db(now), granted),
            )
        return QuotaReservation(vendor, send_id, granted, free - granted)

    def settle_quota(self, reservation: QuotaReservation, spent: int) -> None:
        if not 0 <= spent <= reservation.identifiers:
            raise ValueError("a reservation can only be settled at 0 up to what it reserved")
        if reservation.send_id is None or spent == reservation.identifiers:
            return
        with self._transaction(write=True) as tx:
            tx.rows(
                "UPDATE vendor_sends SET identifiers = ? WHERE send_id = ?",
                (spent, reservation.send_id),
            )
