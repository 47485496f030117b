"""`erasure-worker requeue`: send FAILED vendor scopes again (contract §3, §5).

By request id, or in bulk (`--failed`): the bulk form walks the requests with a FAILED
scope in pages of request ids and requeues each in a transaction of its own, so it never
holds the whole list or a long lock, and workers keep running beside it. A request that
another operator (or an earlier run) requeued meanwhile is simply found with nothing left
to send: requeueing twice is harmless.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from consumer.clock import SYSTEM_CLOCK
from consumer.config import Settings
from consumer.ledger.protocol import Ledger
from consumer.ledger.records import OperatorAction, Refusal, Requeued, RequeueFilter
from consumer.ops import inputs
from consumer.ops.command import EXIT_FAILURE, EXIT_OK, Command, open_current_ledger
from consumer.vendors import registry

PAGE_SIZE: Final = 500


@dataclass(slots=True)
class RequeueReport:
    """What a requeue did (or, in a dry run, would do), and what it refused."""

    scopes: int = 0
    requests: int = 0
    dry_run: bool = False
    refused: list[Requeued] = field(default_factory=list)

    def add(self, result: Requeued) -> None:
        if result.refused is None:
            self.scopes += len(result.vendors)
            self.requests += 1
        else:
            self.refused.append(result)


def requeue_requests(
    ledger: Ledger,
    request_ids: Sequence[str],
    which: RequeueFilter,
    action: OperatorAction,
    now: datetime,
) -> RequeueReport:
    """Requeue the FAILED scopes (`which.vendor`'s, or all) of each named request; each
    request without one is refused."""
    report = RequeueReport()
    for request_id in dict.fromkeys(request_ids):
        report.add(ledger.requeue(request_id, which, action, now))
    return report


def requeue_failed(
    ledger: Ledger,
    which: RequeueFilter,
    action: OperatorAction,
    now: datetime,
    dry_run: bool = False,
) -> RequeueReport:
    """Requeue every FAILED scope `which` picks; a dry run only counts them. Requests
    found with nothing left to send (requeued meanwhile) are not refusals here."""
    if dry_run:
        scopes, requests = ledger.count_failed(which)
        return RequeueReport(scopes, requests, dry_run=True)
    report = RequeueReport()
    after: str | None = None
    while page := ledger.failed_request_ids(which, after, PAGE_SIZE):
        for request_id in page:
            result = ledger.requeue(request_id, which, action, now)
            if result.refused is None:
                report.add(result)
        after = page[-1]
    return report


def summary_line(report: RequeueReport) -> str:
    """The line the command ends with: how many scopes of how many requests."""
    counts = f"{report.scopes} vendor scope(s) of {report.requests} request(s)"
    if report.dry_run:
        return f"would requeue {counts} (dry run: nothing changed)"
    return f"requeued {counts}"


def refusal_line(result: Requeued, which: RequeueFilter) -> str:
    """Why one request was not requeued, in one line."""
    if result.refused is Refusal.UNKNOWN_REQUEST:
        return f"no request {result.request_id} in the ledger"
    scope = f"{which.vendor} vendor scope" if which.vendor else "vendor scope"
    return f"request {result.request_id} has no FAILED {scope}: nothing to requeue"


def requeue(settings: Settings, args: argparse.Namespace) -> int:
    """`erasure-worker requeue`: refusals one line each on stderr, then the count (unless
    every named request was refused: then the refusals say it all)."""
    try:
        ids, which, action = _parsed(args)
    except inputs.BadInput as error:
        return inputs.refused(str(error))
    ledger = open_current_ledger(settings)
    try:
        now = SYSTEM_CLOCK.now()
        if args.failed:
            report = requeue_failed(ledger, which, action, now, dry_run=args.dry_run)
        else:
            report = requeue_requests(ledger, ids, which, action, now)
    finally:
        ledger.close()
    for result in report.refused:
        print(f"erasure-worker: {refusal_line(result, which)}", file=sys.stderr)
    if report.requests or not report.refused:
        print(summary_line(report))
    return EXIT_FAILURE if report.refused else EXIT_OK


def _parsed(args: argparse.Namespace) -> tuple[list[str], RequeueFilter, OperatorAction]:
    if args.failed == bool(args.request_ids):
        raise inputs.BadInput("name the requests to requeue (REQUEST_ID...) or give --failed")
    if not args.failed and (args.since is not None or args.dry_run):
        raise inputs.BadInput("--since and --dry-run go with --failed")
    which = RequeueFilter(
        None if args.vendor is None else inputs.vendor(args.vendor, registry.names()),
        None if args.since is None else inputs.moment(args.since, "--since"),
    )
    ids = [inputs.request_id(text) for text in args.request_ids]
    return ids, which, inputs.action(args.reason, args.actor)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("request_ids", nargs="*", metavar="REQUEST_ID")
    parser.add_argument("--failed", action="store_true", help="every request with a FAILED scope")
    parser.add_argument("--vendor", metavar="V", help="only this vendor's scopes")
    parser.add_argument("--since", metavar="DATE", help="with --failed: scopes failed since")
    parser.add_argument("--dry-run", action="store_true", help="with --failed: only count")
    inputs.add_action_arguments(parser, "why (required; goes into the audit trail)")


COMMAND = Command(
    "requeue", "send FAILED vendor scopes again", requeue, _arguments, ledger_only=True
)
