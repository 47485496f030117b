"""Every metric the worker exports, defined once (contract §7 plus operator extras).

Label values are bounded sets (vendor names, operations, outcomes, statuses): never a
request id or an identity value.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 200, 500, 1000, 2500, 5000)
_COMPLETION_BUCKETS = tuple(
    float(hours * 3600) for hours in (0.01, 0.1, 1, 6, 24, 48, 72, 120, 168, 336, 720, 1080)
)

REQUESTS = Counter(
    "erasure_requests",
    "Erasure requests consumed, by outcome (accepted, duplicate, invalid).",
    ["outcome"],
    registry=REGISTRY,
)
VENDOR_CALLS = Counter(
    "erasure_vendor_calls",
    "HTTP calls to vendors, by vendor, operation (submit, poll, auth) and outcome.",
    ["vendor", "operation", "outcome"],
    registry=REGISTRY,
)
VENDOR_CALL_DURATION = Histogram(
    "erasure_vendor_call_duration_seconds",
    "Duration of HTTP calls to vendors.",
    ["vendor", "operation"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
VENDOR_BATCH_SIZE = Histogram(
    "erasure_vendor_batch_size",
    "Identifiers per submission batch.",
    ["vendor"],
    buckets=_BATCH_BUCKETS,
    registry=REGISTRY,
)
ITEMS = Gauge(
    "erasure_items",
    "Items (one identifier at one vendor destination) in the ledger, by vendor and status.",
    ["vendor", "status"],
    registry=REGISTRY,
)
COMPLETION_SECONDS = Histogram(
    "erasure_completion_seconds",
    "Time from requested_at to a vendor scope's terminal status.",
    ["vendor"],
    buckets=_COMPLETION_BUCKETS,
    registry=REGISTRY,
)
OLDEST_OPEN_REQUEST_AGE = Gauge(
    "erasure_oldest_open_request_age_seconds",
    "Age (since requested_at) of the oldest request without a terminal status; 0 when none.",
    registry=REGISTRY,
)
STATUS_EVENTS = Counter(
    "erasure_status_events",
    "Status events published, by status.",
    ["status"],
    registry=REGISTRY,
)
DLQ_MESSAGES = Counter(
    "erasure_dlq_messages",
    "Messages sent to the dead-letter topic, by error.reason.",
    ["reason"],
    registry=REGISTRY,
)
OUTBOX_BACKLOG = Gauge(
    "erasure_outbox_backlog",
    "Status events recorded in the ledger but not yet published.",
    registry=REGISTRY,
)
OUTBOX_UNDELIVERABLE = Counter(
    "erasure_outbox_undeliverable",
    "Status events given up on because they can never be delivered, by reason (Kafka's"
    " error, e.g. MSG_SIZE_TOO_LARGE, or unencodable).",
    ["reason"],
    registry=REGISTRY,
)
PRODUCER_REBUILDS = Counter(
    "erasure_kafka_producer_rebuilds",
    "Kafka producers replaced after they stopped delivering, by producer (outbox, dlq) and"
    " reason (fatal: a fatal error or lost producer state; unconfirmed: a batch unconfirmed"
    " at its deadline, e.g. while the broker is down).",
    ["producer", "reason"],
    registry=REGISTRY,
)
LEDGER_ERRORS = Counter(
    "erasure_ledger_unavailable",
    "Times a ledger operation failed because the database was unavailable, by loop.",
    ["loop"],
    registry=REGISTRY,
)
LEASE_LOST = Counter(
    "erasure_lease_lost",
    "Items and jobs whose result was not recorded because their lease had passed to another"
    " replica (a vendor call outlived its lease), by vendor.",
    ["vendor"],
    registry=REGISTRY,
)
INGEST_BATCH_SECONDS = Histogram(
    "erasure_ingest_batch_duration_seconds",
    "Time to decode, record and commit one consumed batch.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
VENDOR_UP = Gauge(
    "erasure_vendor_up",
    "1 while the vendor accepts our credentials, 0 after it refused them (403).",
    ["vendor"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "erasure_consumer_lag",
    "Messages in the input topic not yet committed by this worker, per assigned partition.",
    ["topic", "partition"],
    registry=REGISTRY,
)
VENDOR_QUOTA_REMAINING = Gauge(
    "erasure_vendor_quota_remaining",
    "Identifiers the vendor still accepts in its rolling quota window (Acquia CDP: 7 days).",
    ["vendor"],
    registry=REGISTRY,
)
OVERDUE_ITEMS = Gauge(
    "erasure_overdue_items",
    "Items still open past the vendor's expected completion time (Monetate: 48 h).",
    ["vendor"],
    registry=REGISTRY,
)
VENDOR_JOBS_EXPIRED = Counter(
    "erasure_vendor_jobs_expired",
    "Vendor jobs FAILED because they were still open max_job_age_seconds after submission.",
    ["vendor"],
    registry=REGISTRY,
)
REQUESTS_AT_RISK = Gauge(
    "erasure_requests_at_risk",
    "Requests not COMPLETED (FAILED ones included) in the last quarter of their legal"
    " deadline or past it, against each request's own (possibly extended) due date.",
    ["regulation"],
    registry=REGISTRY,
)
REQUESTS_OVERDUE = Gauge(
    "erasure_requests_overdue",
    "Requests not COMPLETED (FAILED ones included) past their own (possibly extended) due date.",
    ["regulation"],
    registry=REGISTRY,
)
REQUESTS_WITH_FAILED_SCOPE = Gauge(
    "erasure_requests_with_failed_scope",
    "Requests with a FAILED vendor scope: dead ends until an operator runs"
    " `erasure-worker requeue`.",
    registry=REGISTRY,
)
RETENTION_ROWS = Counter(
    "erasure_retention_rows",
    "Requests whose identity values retention replaced by keyed hashes (action=minimised)"
    " or that it deleted with everything they held (action=deleted).",
    ["action"],
    registry=REGISTRY,
)


def _start_counters_at_zero() -> None:
    """Counters appear on their first increment otherwise, and alerts built on
    `increase()` cannot see the first dead letter of a fresh pod."""
    for outcome in ("accepted", "duplicate", "invalid"):
        REQUESTS.labels(outcome=outcome)
    for reason in ("undecodable", "invalid_request"):
        DLQ_MESSAGES.labels(reason=reason)
    for action in ("minimised", "deleted"):
        RETENTION_ROWS.labels(action=action)


_start_counters_at_zero()
