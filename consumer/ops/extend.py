"""`erasure-worker extend REQUEST_ID --days N --reason TEXT`: record a lawful extension of
a request's deadline.

GDPR Art. 12(3) allows two further months, CCPA 45 more days: the regulation's maximum
(`deadlines.*_extension_days`) caps the days added in all, over every extension of the
request. The extension, who made it and why go into the request's audit trail.
"""

from __future__ import annotations

import argparse

from consumer.clock import SYSTEM_CLOCK
from consumer.config import Settings
from consumer.ledger.records import Extended, Refusal
from consumer.ops import inputs
from consumer.ops.command import EXIT_OK, Command, open_current_ledger
from consumer.ops.render import minute


def extend(settings: Settings, args: argparse.Namespace) -> int:
    try:
        request_id = inputs.request_id(args.request_id)
        days = inputs.positive_days(args.days)
        action = inputs.action(args.reason, args.actor)
    except inputs.BadInput as error:
        return inputs.refused(str(error))
    ledger = open_current_ledger(settings)
    try:
        deadlines = settings.deadlines.deadlines()
        result = ledger.extend(request_id, days, action, deadlines, SYSTEM_CLOCK.now())
    finally:
        ledger.close()
    if result.refused is not None:
        return inputs.refused(result_line(result, days))
    print(result_line(result, days))
    return EXIT_OK


def result_line(result: Extended, days: int) -> str:
    """What `Ledger.extend` did, or why it refused, in one line."""
    rid = result.request_id
    used = f"{result.extended_days} of {result.maximum_days} extension days used"
    if result.refused is Refusal.UNKNOWN_REQUEST:
        return f"no request {rid} in the ledger"
    if result.refused is Refusal.COMPLETED:
        return f"request {rid} is COMPLETED: there is no deadline left to extend"
    if result.refused is Refusal.BEYOND_MAXIMUM:
        left = result.maximum_days - result.extended_days
        return f"refused: {days} more days would pass the maximum ({used}; at most {left} more)"
    if result.refused is not None or result.due_at is None or result.previous_due_at is None:
        return f"refused: --days must be 1 or more (got {days})"
    return (
        f"extended {rid} by {days} days: due {minute(result.due_at)} UTC"
        f" (was {minute(result.previous_due_at)}); {used}"
    )


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("request_id", metavar="REQUEST_ID")
    parser.add_argument("--days", metavar="N", default="", help="days to add (1 or more)")
    inputs.add_action_arguments(parser, "why (required; goes into the audit trail)")


COMMAND = Command(
    "extend", "move a request's due date (a lawful extension)", extend, _arguments, ledger_only=True
)
