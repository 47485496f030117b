"""The auditor's report (contract §5 `report`): one row per request received in a window,
then totals, as CSV or as one JSON document, written as the ledger streams the rows, so a
report over millions of requests needs the memory of one.

CSV has one row per request with a column group (status, job ids, finished) per vendor
named by the caller (the enabled ones), and one `other_vendors` cell for any other scope
(a vendor a request named that is not enabled, say); after a blank row, the totals as a
second small table with its own header. Cells that a spreadsheet would run as a formula
(starting with = + - @, a tab or a carriage return) are prefixed with a quote: job ids come
from vendors and vendor names from requests.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from consumer.config import Settings
from consumer.ledger.records import ReportRow, VendorOutcome
from consumer.ops.command import EXIT_FAILURE, EXIT_OK, Command, open_current_ledger
from consumer.ops.inputs import BadInput, moment
from consumer.ops.render import iso

FORMATS = ("csv", "json")
REQUEST_COLUMNS = (
    "request_id",
    "regulation",
    "received_at",
    "due_at",
    "extended_days",
    "status",
    "finished_at",
    "finished_after_due",
)
VENDOR_COLUMNS = ("status", "job_ids", "finished_at")
TOTAL_COLUMNS = ("regulation", "status", "requests", "finished_after_due")
ALL = "ALL"
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(cell: object) -> object:
    """A text cell a spreadsheet shows as text, never evaluates."""
    if isinstance(cell, str) and cell.startswith(_FORMULA_STARTS):
        return "'" + cell
    return cell


def finished_late(row: ReportRow) -> bool | None:
    """Whether the request finished after its due date; None while either is unknown."""
    if row.finished_at is None or row.due_at is None:
        return None
    return row.finished_at > row.due_at


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso(moment)


@dataclass
class Totals:
    """Requests and late finishes per (regulation, status), summed as rows go by."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    late: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, row: ReportRow) -> None:
        key = (row.regulation.value, row.status.value)
        self.requests[key] += 1
        self.late[key] += bool(finished_late(row))

    def rows(self) -> list[tuple[str, str, int, int]]:
        """(regulation, status, requests, finished after due): each pair, then per
        regulation (status ALL), per status (regulation ALL), and overall (ALL, ALL)."""
        requests: Counter[tuple[str, str]] = Counter({(ALL, ALL): 0})
        late: Counter[tuple[str, str]] = Counter({(ALL, ALL): 0})
        for (regulation, status), count in self.requests.items():
            for key in ((regulation, status), (regulation, ALL), (ALL, status), (ALL, ALL)):
                requests[key] += count
                late[key] += self.late[regulation, status]
        order = sorted(requests, key=lambda key: (2 * (key[0] == ALL) + (key[1] == ALL), key))
        return [(*key, requests[key], late[key]) for key in order]

    def as_json(self) -> dict[str, Any]:
        rows = self.rows()
        return {
            **_counts(rows[-1]),
            "by_regulation": {
                row[0]: _counts(row) for row in rows if row[0] != ALL and row[1] == ALL
            },
            "by_status": {row[1]: _counts(row) for row in rows if row[0] == ALL and row[1] != ALL},
            "by_regulation_and_status": [
                dict(zip(TOTAL_COLUMNS, row, strict=True)) for row in rows if ALL not in row[:2]
            ],
        }


def _counts(row: tuple[str, str, int, int]) -> dict[str, int]:
    return {"requests": row[2], "finished_after_due": row[3]}


def write_report(
    rows: Iterable[ReportRow],
    fmt: str,
    vendors: Sequence[str],
    window: tuple[datetime, datetime],
    out: TextIO,
) -> Totals:
    """Write the report in `fmt` (csv or json) to `out`; its totals."""
    if fmt == "csv":
        return write_csv(rows, vendors, out)
    return write_json(rows, window, out)


def write_csv(rows: Iterable[ReportRow], vendors: Sequence[str], out: TextIO) -> Totals:
    writer = csv.writer(out, lineterminator="\n")
    header = [*REQUEST_COLUMNS]
    header += [f"{vendor}_{column}" for vendor in vendors for column in VENDOR_COLUMNS]
    writer.writerow([*header, "other_vendors"])
    totals = Totals()
    for row in rows:
        totals.add(row)
        writer.writerow([csv_safe(cell) for cell in _csv_cells(row, vendors)])
    writer.writerow([])
    writer.writerow(TOTAL_COLUMNS)
    writer.writerows(totals.rows())
    return totals


def _csv_cells(row: ReportRow, vendors: Sequence[str]) -> list[object]:
    late = finished_late(row)
    cells: list[object] = [
        row.request_id,
        row.regulation.value,
        iso(row.received_at),
        _iso(row.due_at) or "",
        row.extended_days,
        row.status.value,
        _iso(row.finished_at) or "",
        "" if late is None else ("yes" if late else "no"),
    ]
    by_vendor = {outcome.vendor: outcome for outcome in row.vendors}
    for vendor in vendors:
        outcome = by_vendor.get(vendor)
        if outcome is None:
            cells += ["", "", ""]
        else:
            job_ids = " ".join(outcome.vendor_job_ids)
            cells += [outcome.status.value, job_ids, _iso(outcome.finished_at) or ""]
    others = [o for o in row.vendors if o.vendor not in vendors]
    cells.append("; ".join(f"{o.vendor}: {o.status.value}" for o in others))
    return cells


def write_json(rows: Iterable[ReportRow], window: tuple[datetime, datetime], out: TextIO) -> Totals:
    """One JSON document, written a request at a time."""
    out.write(f'{{"from": "{iso(window[0])}", "to": "{iso(window[1])}", "requests": [')
    totals = Totals()
    separator = "\n"
    for row in rows:
        totals.add(row)
        out.write(separator + json.dumps(report_json(row)))
        separator = ",\n"
    out.write(f'\n], "totals": {json.dumps(totals.as_json())}}}\n')
    return totals


def report_json(row: ReportRow) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "regulation": row.regulation.value,
        "received_at": iso(row.received_at),
        "due_at": _iso(row.due_at),
        "extended_days": row.extended_days,
        "status": row.status.value,
        "finished_at": _iso(row.finished_at),
        "finished_after_due": finished_late(row),
        "vendors": [_vendor_json(outcome) for outcome in row.vendors],
    }


def _vendor_json(outcome: VendorOutcome) -> dict[str, Any]:
    return {
        "vendor": outcome.vendor,
        "status": outcome.status.value,
        "vendor_job_ids": list(outcome.vendor_job_ids),
        "finished_at": _iso(outcome.finished_at),
    }


def report(settings: Settings, args: argparse.Namespace) -> int:
    """`erasure-worker report`: the window's requests to stdout or --output, then a line on
    stderr saying where they went."""
    try:
        start, end, fmt = _window(args)
    except BadInput as error:
        print(f"erasure-worker: {error}", file=sys.stderr)
        return EXIT_FAILURE
    vendors = tuple(settings.vendors.enabled())
    ledger = open_current_ledger(settings)
    try:
        with _output(args.output) as out, ledger.report(start, end) as rows:
            totals = write_report(rows, fmt, vendors, (start, end), out)
    except OSError as error:
        print(f"erasure-worker: cannot write {args.output}: {error.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        ledger.close()
    if args.output:
        count = totals.rows()[-1][2]
        print(f"report: {count} request(s) written to {args.output}", file=sys.stderr)
    return EXIT_OK


def _window(args: argparse.Namespace) -> tuple[datetime, datetime, str]:
    start, end = moment(args.start, "--from"), moment(args.end, "--to")
    if end <= start:
        raise BadInput("--to must come after --from (the window is [from, to))")
    if args.format not in FORMATS:
        raise BadInput(f"--format is one of {', '.join(FORMATS)}")
    return start, end, args.format


@contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    """Standard output, or the file, written under a temporary name and renamed once the
    report is whole: a report cut short by an error never passes for a complete one."""
    if path is None:
        yield sys.stdout
        return
    partial = Path(f"{path}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as out:
            yield out
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="start", required=True, metavar="DATE", help="YYYY-MM-DD")
    parser.add_argument(
        "--to", dest="end", required=True, metavar="DATE", help="YYYY-MM-DD, excluded"
    )
    parser.add_argument("--format", default="csv", help="csv (default) or json")
    parser.add_argument("--output", metavar="FILE", help="write here instead of standard output")


COMMAND = Command(
    "report",
    "the auditor's report: requests received in [--from, --to), then totals",
    report,
    _arguments,
    ledger_only=True,
)
