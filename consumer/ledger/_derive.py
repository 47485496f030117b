"""How recorded requests and applied changes become rows, scope statuses and status events.

Pure functions, no database: both backends feed them the rows they loaded and write back the
rows they return, so SQLite and PostgreSQL derive exactly the same events, by the rules of
`consumer.status`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from consumer.model import Status
from consumer.status import is_forward, request_scope_status, vendor_scope_status
from consumer.work import NewRequest

Row = tuple[Any, ...]
ToDb = Callable[[datetime], object]

# Columns of the rows that the functions below return for insertion.
REQUEST_COLUMNS = (
    "request_id", "regulation", "requested_at", "received_at", "source", "trace_id", "status"
)
SCOPE_COLUMNS = ("request_id", "vendor", "status", "updated_at")
ITEM_COLUMNS = (
    "request_id", "vendor", "identity_type", "identity_value", "destination", "status",
    "next_attempt_at", "created_at", "updated_at",
)
EVENT_COLUMNS = (
    "event_id", "request_id", "vendor", "status", "previous_status", "vendor_job_id",
    "changed_at", "detail",
)
# uuid4 layout: random bits, version 4, RFC 4122 variant.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_event_id() -> str:
    """What str(uuid.uuid4()) returns (from os.urandom too), at a third of the cost: ingest
    makes four per request and this was a tenth of its time."""
    digits = f"{int.from_bytes(os.urandom(16)) & _UUID4_CLEAR | _UUID4_SET:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def _event(
    request_id: str,
    vendor: str | None,
    status: Status,
    previous: Status | None,
    vendor_job_id: str | None,
    detail: str | None,
    changed_at: object,
) -> Row:
    """An events row; every event gets a fresh id, which consumers dedupe on."""
    return (
        new_event_id(), request_id, vendor, status.value,
        None if previous is None else previous.value, vendor_job_id, changed_at, detail,
    )


@dataclass(slots=True)
class Records:
    requests: list[Row] = field(default_factory=list)
    scopes: list[Row] = field(default_factory=list)
    items: list[Row] = field(default_factory=list)
    events: list[Row] = field(default_factory=list)


def plan_records(batch: Sequence[NewRequest], now: datetime, to_db: ToDb) -> Records:
    """The rows that record new requests: RECEIVED, each vendor scope QUEUED or SKIPPED,
    and the terminal request status right away when no vendor scope is left open."""
    at = to_db(now)
    queued = Status.QUEUED.value
    out = Records()
    for new in batch:
        req = new.request
        rid = req.request_id
        scopes = dict.fromkeys((item.vendor for item in new.items), Status.QUEUED)
        # A vendor that has items to send is not skipped, whatever ingest says.
        skipped = {vendor: detail for vendor, detail in new.skipped if vendor not in scopes}
        scopes.update(dict.fromkeys(skipped, Status.SKIPPED))
        out.events.append(_event(rid, None, Status.RECEIVED, None, None, None, at))
        for vendor, status in scopes.items():
            out.scopes.append((rid, vendor, status.value, at))
            out.events.append(_event(rid, vendor, status, None, None, skipped.get(vendor), at))
        out.items.extend(
            (rid, i.vendor, i.identity_type, i.identity_value, i.destination, queued, at, at, at)
            for i in new.items
        )
        final = request_scope_status(scopes)
        status = Status.RECEIVED if final is None else final[0]
        if final is not None:
            out.events.append(_event(rid, None, status, Status.RECEIVED, None, final[1], at))
        out.requests.append((rid, req.regulation.value, to_db(req.requested_at), at,
                             req.source, req.trace_id, status.value))
    return out


@dataclass(slots=True)
class RollUp:
    scope_updates: list[Row] = field(default_factory=list)
    request_updates: list[Row] = field(default_factory=list)
    events: list[Row] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)


def roll_up(
    items: Sequence[Row],
    scopes: Sequence[Row],
    request_status: dict[str, Status],
    changed_at: object,
) -> RollUp:
    """Scope statuses and events after a change.

    `items` are (request_id, vendor, status, job_id, vendor_job_id, detail) for every item
    of the touched requests, `scopes` (request_id, vendor, status) their vendor scopes. Every
    scope is recomputed over all its items and moves only forward (a scope whose items did
    not change recomputes to what it already showed, or to a step it could not take then);
    a request whose vendor scopes are then all terminal gets its terminal event.
    """
    by_scope: defaultdict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in items:
        by_scope[row[0], row[1]].append(row)
    vendors: defaultdict[str, dict[str, Status]] = defaultdict(dict)
    for rid, vendor, status in scopes:
        vendors[rid][vendor] = Status(status)
    out = RollUp()
    for (rid, vendor), rows in sorted(by_scope.items()):
        new = vendor_scope_status([Status(row[2]) for row in rows])
        current = vendors[rid].get(vendor)
        if is_forward(current, new):
            vendors[rid][vendor] = new
            # The event names the newest job among the items that reached the new status.
            jobs = [(row[3], row[4]) for row in rows if row[2] == new and row[3] is not None]
            job_ref = max(jobs)[1] if jobs else None
            out.scope_updates.append((new.value, changed_at, rid, vendor))
            detail = _terminal_detail(rows, new)
            out.events.append(_event(rid, vendor, new, current, job_ref, detail, changed_at))
            out.statuses.append(new)
    for rid, status in sorted(request_status.items()):
        final = None if status.is_terminal else request_scope_status(vendors[rid])
        if final is not None:
            out.request_updates.append((final[0].value, rid))
            out.events.append(_event(rid, None, final[0], status, None, final[1], changed_at))
            out.statuses.append(final[0])
    return out


def _terminal_detail(rows: Sequence[Row], status: Status) -> str | None:
    """Why a scope ended as it did (e.g. why it FAILED), from its items' details; open
    scopes carry none."""
    if not status.is_terminal:
        return None
    details = sorted({row[5] for row in rows if row[2] == status and row[5]})
    return "; ".join(details) or None
