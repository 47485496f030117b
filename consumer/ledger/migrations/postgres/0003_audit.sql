-- Version 3: the tamper-evident audit trail, minimisation and retention.
--
-- The chain: every status event and every operator action is an entry at a position of
-- one sequence, with hash = SHA-256 over its content and the previous entry's hash (see
-- consumer/ledger/audit.py). events.seq is that position: the ledger assigns it under the
-- chain head instead of letting the table pick it (its identity is dropped). Entries at or
-- before `chained_from` (and operator actions up to `actions_from`) were recorded before
-- this version and are not chained. chain_gaps holds, for the newest entry before a run
-- that retention deleted, the hash the entry after the run chains to, and how many entries
-- the run held.
ALTER TABLE events ALTER COLUMN seq DROP IDENTITY IF EXISTS;
ALTER TABLE events ADD COLUMN hash TEXT;
ALTER TABLE operator_actions ADD COLUMN chain_pos BIGINT;
ALTER TABLE operator_actions ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX operator_actions_chain ON operator_actions (chain_pos);

CREATE TABLE chain_head (
    id           SMALLINT PRIMARY KEY CHECK (id = 1),
    pos          BIGINT NOT NULL,         -- position of the newest entry
    hash         TEXT NOT NULL,           -- its hash (the genesis hash before any entry)
    chained_from BIGINT NOT NULL,
    actions_from BIGINT NOT NULL
);
INSERT INTO chain_head (id, pos, hash, chained_from, actions_from)
    SELECT 1, coalesce(max(seq), 0),
           '0000000000000000000000000000000000000000000000000000000000000000',
           coalesce(max(seq), 0), (SELECT coalesce(max(action_id), 0) FROM operator_actions)
    FROM events;

CREATE TABLE chain_gaps (
    after_pos BIGINT PRIMARY KEY,
    hash      TEXT NOT NULL,
    deleted   BIGINT NOT NULL
);

-- minimised_at: when identity values of this request were replaced by keyed hashes.
ALTER TABLE requests ADD COLUMN minimised_at TIMESTAMPTZ;
CREATE INDEX requests_to_minimise ON requests (finished_at)
    WHERE status = 'COMPLETED' AND minimised_at IS NULL;
-- The auditor's report reads requests in order of receipt.
CREATE INDEX requests_received ON requests (received_at, request_id);
