"""`erasure-worker status REQUEST_ID`: one request's audit trail, as text or JSON."""

from __future__ import annotations

import argparse
import json
import sys

from consumer.config import Settings
from consumer.ops.command import EXIT_FAILURE, EXIT_OK, Command, open_current_ledger
from consumer.ops.trail import trail_json, trail_text


def status(settings: Settings, args: argparse.Namespace) -> int:
    ledger = open_current_ledger(settings)
    try:
        trail = ledger.trail(args.request_id)
    finally:
        ledger.close()
    if trail is None:
        print(f"erasure-worker: no request {args.request_id} in the ledger", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(trail_json(trail), indent=2) if args.json else trail_text(trail))
    return EXIT_OK


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("request_id")
    parser.add_argument("--json", action="store_true", help="one JSON object")


COMMAND = Command("status", "print a request's audit trail", status, _arguments, ledger_only=True)
