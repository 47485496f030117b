"""`erasure-worker requeue`: send FAILED vendor scopes again (contract §3, §5).

By request id, or in bulk (`--failed`): the bulk form walks the requests with a FAILED
scope in pages of request ids and requeues each in a transaction of its own, so it never
holds the whole list or a long lock, and workers keep running beside it. A request that
another operator (or an earlier run) requeued meanwhile is simply found with nothing left
to send: requeueing twice is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from consumer.ledger.protocol import Ledger
from consumer.ledger.records import OperatorAction, Refusal, Requeued, RequeueFilter

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
