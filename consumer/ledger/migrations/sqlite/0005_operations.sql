-- Version 5: what the operator commands need (requeue, list, dlq replay).

-- Vendor scopes left FAILED: the ones `requeue --failed`, `list --failed` and the
-- erasure_requests_with_failed_scope gauge look for. Partial, so it holds only the
-- failures still waiting for an operator, and ingest (which writes QUEUED and SKIPPED
-- scopes) never touches it.
CREATE INDEX vendor_scopes_failed ON vendor_scopes (request_id) WHERE status = 'FAILED';

-- Every request by due date, for `list` without a filter: read a page at a time, it walks
-- this index instead of sorting the whole table for each page (with a filter, requests_due
-- of version 2 serves). Measured: no ingest cost beyond the noise of 3 runs of 20,000.
CREATE INDEX requests_by_due ON requests (due_at, request_id);

-- Dead letters `dlq replay` published again to the input topic: who, when and why, and
-- so that `dlq replay --all` never sends one twice.
CREATE TABLE dlq_replays (
    dlq_topic     TEXT NOT NULL,
    dlq_partition INTEGER NOT NULL,
    dlq_offset    INTEGER NOT NULL,
    actor         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    replayed_at   INTEGER NOT NULL,
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
) WITHOUT ROWID;
