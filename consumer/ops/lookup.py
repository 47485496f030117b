"""`erasure-worker lookup TYPE=VALUE` (contract §5): was this person's erasure requested,
and how did it end?

The value is looked up as given and, for requests whose identity values were minimised,
through its keyed hash (`retention.hash_key`). Output names requests and identifier kinds,
never the value. Lookup finds requests through the identifiers they sent to vendors: an
identity no enabled vendor used was never stored, by design, and cannot be found.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from consumer.config import Settings
from consumer.ledger.protocol import Ledger
from consumer.ledger.records import LookupHit
from consumer.ops.command import EXIT_FAILURE, EXIT_OK, Command, open_current_ledger
from consumer.ops.inputs import BadInput
from consumer.ops.render import iso, minute

MAX_SHOWN_KIND = 40


def identity(argument: str, stdin: TextIO | None = None) -> tuple[str, str]:
    """TYPE=VALUE split in two; one clear line (without the value) when it is not that.
    VALUE `-` reads the value from the first line of `stdin`, which keeps it out of the
    shell's history and the process list."""
    kind, equals, value = argument.partition("=")
    if value == "-" and stdin is not None:
        value = stdin.readline().rstrip("\r\n")
    if not equals or not kind.strip() or not value:
        raise BadInput("lookup takes TYPE=VALUE, e.g. email=<address> or customer_id=<id>")
    return kind.strip(), value


def lookup(
    ledger: Ledger, argument: str, hash_key: bytes | None, stdin: TextIO | None = None
) -> tuple[str, list[LookupHit]]:
    """The identity's kind and the requests that carried it."""
    kind, value = identity(argument, stdin)
    return kind, ledger.lookup(kind, value, hash_key)


def lookup_text(kind: str, hits: list[LookupHit], unreachable: int) -> str:
    """A table of the requests; `unreachable`: minimised requests no key can match here."""
    if hits:
        lines = [
            f"{'REQUEST':<36}  {'REGULATION':<10}  {'STATUS':<11}  {'RECEIVED':<16}  "
            f"{'FINISHED':<16}  MATCHED"
        ]
        lines += [
            f"{hit.request_id:<36}  {hit.regulation.value:<10}  {hit.status.value:<11}  "
            f"{minute(hit.received_at):<16}  "
            f"{minute(hit.finished_at) if hit.finished_at else '-':<16}  "
            f"{'keyed hash' if hit.minimised else 'value'}"
            for hit in hits
        ]
    else:
        # The kind as typed, unless it might be a value typed into the wrong place.
        shown = kind if kind.isidentifier() and len(kind) <= MAX_SHOWN_KIND else "(that type)"
        lines = [f"no request carried this {shown} identifier"]
    if unreachable:
        lines.append(
            f"note: {unreachable} request(s) have minimised identifiers and no"
            " retention.hash_key is configured: they cannot be matched"
        )
    return "\n".join(lines)


def lookup_json(hits: list[LookupHit]) -> list[dict[str, Any]]:
    return [
        {
            "request_id": hit.request_id,
            "regulation": hit.regulation.value,
            "status": hit.status.value,
            "received_at": iso(hit.received_at),
            "finished_at": None if hit.finished_at is None else iso(hit.finished_at),
            "matched": "keyed_hash" if hit.minimised else "value",
        }
        for hit in hits
    ]


def lookup_command(settings: Settings, args: argparse.Namespace) -> int:
    key = settings.retention.hash_key_bytes
    ledger = open_current_ledger(settings)
    try:
        kind, hits = lookup(ledger, args.identity, key, sys.stdin)
        unreachable = ledger.minimised_requests() if key is None else 0
    except BadInput as error:
        print(f"erasure-worker: {error}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        ledger.close()
    print(
        json.dumps(lookup_json(hits), indent=2)
        if args.json
        else lookup_text(kind, hits, unreachable)
    )
    return EXIT_OK


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("identity", metavar="TYPE=VALUE", help="VALUE - reads it from stdin")
    parser.add_argument("--json", action="store_true", help="one JSON array")


COMMAND = Command(
    "lookup",
    "the requests that carried an identity, and how they ended",
    lookup_command,
    _arguments,
    ledger_only=True,
)
