-- Version 4: vendor limits shared by every replica on this ledger (CONTRACT.md section 4).
-- One token bucket per (vendor, operation): `tokens` as of `updated_at` (microseconds since
-- the epoch, on the database's clock), below zero while calls already granted wait their turn.
CREATE TABLE rate_buckets (
    vendor     TEXT NOT NULL,
    operation  TEXT NOT NULL,
    tokens     REAL NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (vendor, operation)
) WITHOUT ROWID;

-- One row per vendor with a rolling quota, locked by every reservation so that the
-- reservations of one vendor count the window one after the other.
CREATE TABLE quota_locks (
    vendor TEXT PRIMARY KEY
) WITHOUT ROWID;
