"""`erasure-worker list`: the privacy team's work list (contract §5).

Requests by due date, with regulation, status, received and due dates, days left and the
vendors still open or FAILED; filtered to open, failed, at-risk or overdue ones (see
`RequestFilter`). The ledger is read a page at a time and every line is written as soon as
its page is read, so a list of a million requests needs the memory of one page, as text or
as one JSON array.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, Final

from consumer.clock import SYSTEM_CLOCK
from consumer.config import Settings
from consumer.ledger.deadlines import Deadlines
from consumer.ledger.protocol import Ledger
from consumer.ledger.records import RequestFilter, RequestSummary
from consumer.ops.command import EXIT_OK, Command, open_current_ledger
from consumer.ops.render import days_left, iso, minute

PAGE_SIZE: Final = 500
_COLUMNS: Final = (
    f"{'REQUEST':<36}  {'REGULATION':<10}  {'STATUS':<9}  {'RECEIVED':<16}  {'DUE':<16}"
    f"  {'EXT':>3}  {'DAYS LEFT':>9}  {'OPEN VENDORS':<24}  FAILED VENDORS"
)


def requests(
    ledger: Ledger, which: RequestFilter, now: datetime, deadlines: Deadlines
) -> Iterator[RequestSummary]:
    """Every request `which` picks, by due date, read from the ledger page by page."""
    after: RequestSummary | None = None
    while page := ledger.list_requests(which, now, deadlines, after, PAGE_SIZE):
        yield from page
        after = page[-1]


def table_lines(rows: Iterable[RequestSummary], now: datetime) -> Iterator[str]:
    """A table a person can read: the header, then one line per request."""
    yield _COLUMNS
    empty = True
    for row in rows:
        empty = False
        yield (
            f"{row.request_id:<36}  {row.regulation.value:<10}  {row.status.value:<9}"
            f"  {minute(row.received_at):<16}  {minute(row.due_at):<16}"
            f"  {_extension(row):>3}  {days_left(row.due_at, now):>9.1f}"
            f"  {','.join(row.open_vendors) or '-':<24}  {','.join(row.failed_vendors) or '-'}"
        )
    if empty:
        yield "(no requests)"


def json_chunks(rows: Iterable[RequestSummary], now: datetime) -> Iterator[str]:
    """One JSON array, written one element at a time."""
    yield "["
    separator = "\n"
    for row in rows:
        yield separator + json.dumps(summary_json(row, now))
        separator = ",\n"
    yield "\n]"


def summary_json(row: RequestSummary, now: datetime) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "regulation": row.regulation.value,
        "status": row.status.value,
        "received_at": iso(row.received_at),
        "due_at": iso(row.due_at),
        "extended_days": row.extended_days,
        "days_left": days_left(row.due_at, now),
        "open_vendors": list(row.open_vendors),
        "failed_vendors": list(row.failed_vendors),
    }


def _extension(row: RequestSummary) -> str:
    return f"+{row.extended_days}" if row.extended_days else "-"


def list_requests(settings: Settings, args: argparse.Namespace) -> int:
    """`erasure-worker list`: written line by line as the pages are read."""
    which = RequestFilter(args.open, args.failed, args.at_risk, args.overdue)
    now = SYSTEM_CLOCK.now()
    ledger = open_current_ledger(settings)
    try:
        rows = requests(ledger, which, now, settings.deadlines.deadlines())
        if args.json:
            sys.stdout.writelines(json_chunks(rows, now))
            sys.stdout.write("\n")
        else:
            sys.stdout.writelines(line + "\n" for line in table_lines(rows, now))
    finally:
        ledger.close()
    return EXIT_OK


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--open", action="store_true", help="not COMPLETED (FAILED included)")
    parser.add_argument("--failed", action="store_true", help="with a FAILED vendor scope")
    parser.add_argument(
        "--at-risk", action="store_true", help="in the last quarter of the deadline"
    )
    parser.add_argument("--overdue", action="store_true", help="past the due date")
    parser.add_argument("--json", action="store_true", help="one JSON array")


COMMAND = Command(
    "list",
    "requests by due date: open, failed, at risk or overdue (filters narrow each other)",
    list_requests,
    _arguments,
    ledger_only=True,
)
