-- Version 2: what the operator commands and the auditor's report need.
-- due_at: the legal deadline (requested_at + the regulation's days, moved by `extend`);
-- rows recorded before this version get the contract's default days. finished_at: when the
-- request reached its terminal status (retention counts from it), taken from its events.

ALTER TABLE requests ADD COLUMN due_at TIMESTAMPTZ;
ALTER TABLE requests ADD COLUMN extended_days INTEGER NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN finished_at TIMESTAMPTZ;
UPDATE requests SET due_at = requested_at
    + (CASE regulation WHEN 'CCPA' THEN 45 ELSE 30 END) * INTERVAL '1 day';
UPDATE requests SET finished_at = (
    SELECT max(e.changed_at) FROM events e
    WHERE e.request_id = requests.request_id AND e.vendor IS NULL AND e.status = requests.status
) WHERE status IN ('COMPLETED', 'FAILED');
CREATE INDEX requests_due ON requests (due_at) WHERE status <> 'COMPLETED';
CREATE INDEX requests_finished ON requests (finished_at) WHERE finished_at IS NOT NULL;

-- What an operator did (requeue, extend): who, when, why, for the audit trail.
CREATE TABLE operator_actions (
    action_id  BIGSERIAL PRIMARY KEY,
    request_id TEXT NOT NULL,
    vendor     TEXT,
    action     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    detail     TEXT,
    at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX operator_actions_request ON operator_actions (request_id, action_id);
