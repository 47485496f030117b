"""Contract §3 and §7 as the tests read them, written out here rather than taken from the
worker's own model: the status order, the invariants of the status topic, how redelivered
events are told apart, the metrics every worker exports, and the check that no identity
value leaks into what the worker writes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from consumer.model import Status, StatusEvent

if TYPE_CHECKING:  # topics reads TERMINAL from here
    from tests.support.topics import StatusRecord

# Contract §3: open statuses in their forward order, and the end states.
OPEN_ORDER = {Status.RECEIVED: 0, Status.QUEUED: 1, Status.SUBMITTED: 2, Status.IN_PROGRESS: 3}
TERMINAL = frozenset(
    {Status.ACCEPTED, Status.COMPLETED, Status.NOT_FOUND, Status.SKIPPED, Status.FAILED}
)
VENDOR_SCOPE_STATUSES = frozenset({Status.QUEUED, Status.SUBMITTED, Status.IN_PROGRESS}) | TERMINAL
REQUEST_TERMINAL = frozenset({Status.COMPLETED, Status.FAILED})

# Contract §7: every metric (as exposed: counters with `_total`, histograms by `_count`).
CONTRACT_METRICS = (
    "erasure_requests_total",
    "erasure_vendor_calls_total",
    "erasure_vendor_call_duration_seconds_count",
    "erasure_vendor_batch_size_count",
    "erasure_items",
    "erasure_completion_seconds_count",
    "erasure_oldest_open_request_age_seconds",
    "erasure_status_events_total",
    "erasure_dlq_messages_total",
)


def rank(status: Status) -> int:
    """Position in the forward order; every terminal status ranks above every open one."""
    return OPEN_ORDER.get(status, len(OPEN_ORDER))


def invariant_violations(records: Sequence[StatusRecord]) -> list[str]:
    """Contract §3 (and §1's keying) over status events in topic order, one per event_id.

    Per request: every event keyed by its request_id, all on one partition, the request's
    RECEIVED first; per (request, vendor) scope: `previous_status` is the previous status
    of that scope (None first), statuses strictly forward and never repeated, nothing after
    a terminal one; request scope only RECEIVED then COMPLETED or FAILED, the terminal only
    after every vendor scope is terminal, FAILED exactly when a vendor failed, its detail
    naming the failed vendors.
    """
    problems: list[str] = []
    ids = Counter(r.event.event_id for r in records)
    problems += [f"event_id {i} published {n} times" for i, n in ids.items() if n > 1]
    by_request: defaultdict[str, list[StatusRecord]] = defaultdict(list)
    for record in records:
        by_request[record.event.request_id].append(record)
    for request_id, rows in sorted(by_request.items()):
        problems += _request_violations(request_id, rows)
    return problems


def _request_violations(request_id: str, rows: list[StatusRecord]) -> list[str]:
    problems: list[str] = []
    where = f"request {request_id}"
    partitions = {r.record.partition for r in rows}
    if len(partitions) != 1:
        problems.append(f"{where}: events spread over partitions {sorted(partitions)}")
    if any(r.record.key != request_id.encode() for r in rows):
        problems.append(f"{where}: an event is not keyed by its request_id")
    if any((r.record.value or b"")[:5] != b"\x00\x00\x00\x00\x00" for r in rows):
        problems.append(f"{where}: an event is not framed with schema id 0")
    rows = sorted(rows, key=lambda r: (r.record.partition, r.record.offset))
    events = [r.event for r in rows]
    if events[0].vendor is not None or events[0].status is not Status.RECEIVED:
        problems.append(f"{where}: first event is {events[0].vendor} {events[0].status}")
    scopes: defaultdict[str | None, list[StatusEvent]] = defaultdict(list)
    requeued = False  # a vendor scope went back to QUEUED since the request's last event
    for event in events:
        history = scopes[event.vendor]
        scope = f"{where} scope {event.vendor or '(request)'}"
        previous = history[-1].status if history else None
        if event.previous_status != previous:
            problems.append(
                f"{scope}: {event.status} says previous {event.previous_status}, was {previous}"
            )
        if _way_back(event, previous, requeued):
            requeued = True  # contract §3's one way back: requeue
        elif previous is not None and previous in TERMINAL:
            problems.append(f"{scope}: {event.status} after terminal {previous}")
        elif previous is not None and rank(event.status) <= rank(previous):
            problems.append(f"{scope}: {previous} -> {event.status} is not forward")
        if event.vendor is None:
            problems += _request_scope_violations(scope, event, scopes)
        elif event.status not in VENDOR_SCOPE_STATUSES:
            problems.append(f"{scope}: {event.status} is not a vendor-scope status")
        history.append(event)
        requeued = requeued and event.vendor is not None
    request_now = scopes[None][-1].status if scopes[None] else None
    if request_now not in TERMINAL and all(
        h[-1].status in TERMINAL for v, h in scopes.items() if v is not None
    ):
        problems.append(f"{where}: every vendor scope is terminal but the request is not")
    return problems


def _way_back(event: StatusEvent, previous: Status | None, requeued: bool) -> bool:
    """Requeue (contract §3): a FAILED vendor scope back to QUEUED, detail "requeued: ...";
    then, once a vendor scope was requeued since, its FAILED request's new terminal status."""
    if previous is not Status.FAILED:
        return False
    if event.vendor is not None:
        return event.status is Status.QUEUED and (event.detail or "").startswith("requeued: ")
    return requeued and event.status in REQUEST_TERMINAL


def _request_scope_violations(
    scope: str, event: StatusEvent, scopes: dict[str | None, list[StatusEvent]]
) -> list[str]:
    if event.status is Status.RECEIVED:
        return []
    if event.status not in REQUEST_TERMINAL:
        return [f"{scope}: {event.status} is not a request-scope status"]
    vendors = {vendor: history[-1].status for vendor, history in scopes.items() if vendor}
    open_vendors = sorted(vendor for vendor, status in vendors.items() if status not in TERMINAL)
    if open_vendors or not vendors:
        return [f"{scope}: {event.status} while vendor scopes {open_vendors or 'none'} open"]
    failed = sorted(vendor for vendor, status in vendors.items() if status is Status.FAILED)
    if (event.status is Status.FAILED) != bool(failed):
        return [f"{scope}: {event.status} but failed vendors are {failed}"]
    if failed and not all(vendor in (event.detail or "") for vendor in failed):
        return [f"{scope}: FAILED detail {event.detail!r} does not name {failed}"]
    return []


def deduplicated(records: Sequence[StatusRecord]) -> tuple[list[StatusRecord], list[str]]:
    """First delivery of each event_id, and the problems of redeliveries: a redelivered
    event must be the same event (same key and value bytes)."""
    first: dict[str, StatusRecord] = {}
    problems: list[str] = []
    for record in sorted(records, key=lambda r: (r.record.partition, r.record.offset)):
        seen = first.setdefault(record.event.event_id, record)
        if seen is not record and (seen.record.key, seen.record.value) != (
            record.record.key,
            record.record.value,
        ):
            problems.append(
                f"event_id {record.event.event_id} redelivered with other content: "
                f"{seen.event} vs {record.event}"
            )
    return list(first.values()), problems


def scope_statuses(records: Iterable[StatusRecord]) -> dict[tuple[str, str | None], list[Status]]:
    out: defaultdict[tuple[str, str | None], list[Status]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.record.partition, r.record.offset)):
        out[record.event.request_id, record.event.vendor].append(record.event.status)
    return dict(out)


def leaked(values: Iterable[str], haystacks: dict[str, bytes]) -> list[str]:
    """`where: value[:3]...` for every value found in a haystack (no full value in output)."""
    found = []
    for value in values:
        needle = value.encode("utf-8")
        for where, haystack in haystacks.items():
            if needle in haystack:
                found.append(f"{where}: {value[:3]}... ({len(value)} chars)")
    return found
