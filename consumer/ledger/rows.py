"""How recorded requests and applied changes become rows, scope statuses and status events.

Pure functions, no database: both backends feed them the rows they loaded and write back the
rows they return, so SQLite and PostgreSQL derive exactly the same events, by the rules of
`consumer.ledger.rollup`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

from consumer.ledger.records import NewRequest
from consumer.ledger.rollup import (
    is_forward,
    request_is_open,
    request_scope_status,
    vendor_scope_status,
)
from consumer.model import Status

Row = tuple[Any, ...]
ToDb = Callable[[datetime], object]

# Columns of the rows that the functions below return for insertion.
REQUEST_COLUMNS = (
    "request_id",
    "regulation",
    "requested_at",
    "received_at",
    "source",
    "trace_id",
    "status",
    "due_at",
    "finished_at",
)
SCOPE_COLUMNS = ("request_id", "vendor", "status", "updated_at")
ITEM_COLUMNS = (
    "request_id",
    "vendor",
    "identity_type",
    "identity_value",
    "destination",
    "status",
    "next_attempt_at",
    "created_at",
    "updated_at",
)
EVENT_COLUMNS = (
    "event_id",
    "request_id",
    "vendor",
    "status",
    "previous_status",
    "vendor_job_id",
    "changed_at",
    "detail",
)
# uuid4 text: 122 random bits, version nibble 4, RFC 4122 variant (first nibble of the
# fourth group is 8, 9, a or b: its two low bits stay random, the two high ones are 10).
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
_ID_CHUNK = 256
MAX_DETAIL_LENGTH: Final = 1000


def bounded_detail(detail: str | None) -> str | None:
    """An event's `detail`, cut to MAX_DETAIL_LENGTH characters: it joins item reasons and
    vendor answers, and a status event must stay small whatever they say (an oversize one
    is refused by Kafka and cannot be published)."""
    if detail is None or len(detail) <= MAX_DETAIL_LENGTH:
        return detail
    return detail[: MAX_DETAIL_LENGTH - 1] + "\u2026"


def new_event_ids(count: int) -> list[str]:
    """`count` ids as str(uuid.uuid4()) makes them (from os.urandom too), with one urandom
    call for all of them: ingest makes two or more per request, and one at a time (with
    int arithmetic) cost ~1.5 µs each."""
    digits = os.urandom(16 * count).hex()
    variant = _VARIANT
    return [
        f"{digits[i : i + 8]}-{digits[i + 8 : i + 12]}-4{digits[i + 13 : i + 16]}"
        f"-{variant[digits[i + 16]]}{digits[i + 17 : i + 20]}-{digits[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


def new_event_id() -> str:
    return new_event_ids(1)[0]


def _id_stream(chunk: int) -> Iterator[str]:
    """Fresh ids without end, made `chunk` at a time. One stream per call of the functions
    below (a generator is not to be shared between threads)."""
    while True:
        yield from new_event_ids(chunk)


# Status values by member: `member.value` goes through the enum descriptor, ~3x slower.
_VALUE: dict[Status, str] = {status: status.value for status in Status}
STATUS_OF: Final[Mapping[str, Status]] = MappingProxyType({s.value: s for s in Status})
"""Statuses by their value, for reading rows: `Status(value)` goes through the enum's call
machinery, ~5x slower, and the hot reads convert many (a roll-up every item and scope of
the requests a change touched; the outbox two per event, 28% of a worker's GIL time in a
backfill's first seconds)."""
_QUEUED = Status.QUEUED
_SKIPPED = Status.SKIPPED
_RECEIVED = Status.RECEIVED.value


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
        new_event_id(),
        request_id,
        vendor,
        status.value,
        None if previous is None else previous.value,
        vendor_job_id,
        changed_at,
        bounded_detail(detail),
    )


def requeued_event(request_id: str, vendor: str, reason: str, changed_at: object) -> Row:
    """The event of a FAILED vendor scope an operator sends again (contract §3: QUEUED,
    previous_status FAILED, detail "requeued: <operator's reason>")."""
    detail = f"requeued: {reason}"
    return _event(request_id, vendor, Status.QUEUED, Status.FAILED, None, detail, changed_at)


@dataclass(slots=True)
class Records:
    requests: list[Row] = field(default_factory=list)
    scopes: list[Row] = field(default_factory=list)
    items: list[Row] = field(default_factory=list)
    events: list[Row] = field(default_factory=list)


def plan_records(batch: Sequence[NewRequest], now: datetime, to_db: ToDb) -> Records:
    """The rows that record new requests: RECEIVED, each vendor scope QUEUED or SKIPPED,
    and the terminal request status right away when no vendor scope is left open; with the
    due date the caller computed (the contract's default days without one).

    Events rows are (event_id, request_id, vendor, status, previous_status, vendor_job_id,
    changed_at, detail); every event gets a fresh id, which consumers dedupe on. Written for
    speed (ingest runs it for every request): tuples built inline, names bound locally.
    """
    at = to_db(now)
    queued = _QUEUED.value
    value = _VALUE
    next_id = _id_stream(2 * len(batch) + 8).__next__
    out = Records()
    requests, scope_rows, items, events = out.requests, out.scopes, out.items, out.events
    for new in batch:
        req = new.request
        rid = req.request_id
        new_items = new.items
        scopes = dict.fromkeys([item.vendor for item in new_items], _QUEUED)
        events.append((next_id(), rid, None, _RECEIVED, None, None, at, None))
        if new.skipped or not scopes:
            # A vendor that has items to send is not skipped, whatever ingest says.
            skipped = {vendor: detail for vendor, detail in new.skipped if vendor not in scopes}
            scopes.update(dict.fromkeys(skipped, _SKIPPED))
            for vendor, status in scopes.items():
                scope_rows.append((rid, vendor, value[status], at))
                detail = bounded_detail(skipped.get(vendor))
                events.append((next_id(), rid, vendor, value[status], None, None, at, detail))
            final = request_scope_status(scopes)
        else:  # every scope QUEUED: the request stays open
            for vendor in scopes:
                scope_rows.append((rid, vendor, queued, at))
                events.append((next_id(), rid, vendor, queued, None, None, at, None))
            final = None
        items += [
            (rid, i.vendor, i.identity_type, i.identity_value, i.destination, queued, at, at, at)
            for i in new_items
        ]
        if final is None:
            request_status = _RECEIVED
            finished_at = None
        else:
            request_status = value[final[0]]
            finished_at = at
            detail = bounded_detail(final[1])
            events.append((next_id(), rid, None, request_status, _RECEIVED, None, at, detail))
        requests.append(
            (
                rid,
                req.regulation._value_,
                to_db(req.requested_at),
                at,
                req.source,
                req.trace_id,
                request_status,
                to_db(new.due_at),
                finished_at,
            )
        )
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
    a request still open (`request_is_open`: a requeued FAILED one included) whose vendor
    scopes are then all terminal gets its terminal event.
    """
    by_scope: defaultdict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in items:
        by_scope[row[0], row[1]].append(row)
    status_of = STATUS_OF
    vendors: defaultdict[str, dict[str, Status]] = defaultdict(dict)
    for rid, vendor, status in scopes:
        vendors[rid][vendor] = status_of[status]
    # Scopes as last emitted, before this change: an open one in a FAILED request was requeued.
    was_open = {rid for rid, _, status in scopes if not status_of[status].is_terminal}
    out = RollUp()
    for (rid, vendor), rows in sorted(by_scope.items()):
        new = vendor_scope_status([status_of[row[2]] for row in rows])
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
        is_open = request_is_open(status, rid in was_open)
        final = request_scope_status(vendors[rid]) if is_open else None
        if final is not None:
            out.request_updates.append((final[0].value, changed_at, rid))
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
