"""`erasure-worker verify` (contract §5): is the ledger's audit trail intact?

One line either way. Intact: how many entries were checked, how many retention deleted
(vouched for by checkpoints) and how many predate the chain, and the head hash, which an
auditor can note: a later verify whose chain still runs through it shows that nothing
recorded before was rewritten. Broken: the first entry that does not match, by position,
event id (or action id) and request id, and why.
"""

from __future__ import annotations

import argparse

from consumer.config import Settings
from consumer.ledger.records import ChainBreak, ChainReport
from consumer.ops.command import EXIT_FAILURE, EXIT_OK, Command, open_current_ledger


def verify_text(report: ChainReport) -> tuple[str, int]:
    """The line to print and the exit code."""
    if report.broken is not None:
        return f"audit trail broken: {describe(report.broken)}", EXIT_FAILURE
    notes = [f"{report.checked} entries verified"]
    if report.deleted:
        notes.append(f"{report.deleted} deleted by retention, vouched for by checkpoints")
    if report.unchained:
        notes.append(f"{report.unchained} recorded before the trail was chained, not checked")
    head = f"head at position {report.head_position}: {report.head_hash}"
    return f"audit trail intact: {'; '.join(notes)}; {head}", EXIT_OK


def describe(broken: ChainBreak) -> str:
    """Where the chain breaks and why, naming the entry as an auditor can look it up."""
    if broken.kind == "event":
        where = f"event seq {broken.position} (event_id {broken.ref}, request {broken.request_id})"
    elif broken.kind == "action":
        where = f"operator action {broken.ref} (request {broken.request_id})"
    elif broken.kind == "checkpoint":
        where = f"the retention checkpoint after position {broken.position}"
    else:
        where = f"the chain head (position {broken.position})"
    return f"{where}: {broken.reason}"


def verify(settings: Settings, _args: argparse.Namespace) -> int:
    ledger = open_current_ledger(settings)
    try:
        line, code = verify_text(ledger.verify_chain())
    finally:
        ledger.close()
    print(line)
    return code


COMMAND = Command(
    "verify", "check that the ledger's audit trail is intact", verify, ledger_only=True
)
