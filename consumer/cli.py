"""`erasure-worker` (contract §5): the one place that lists every command.

Each command lives in its own module under `consumer.ops` and is described by a `Command`.
User mistakes (a bad config, an unknown request id, an unreachable dependency) end with
one clear line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from consumer.config import ConfigError, Settings, load_settings
from consumer.ledger import LedgerUnavailable
from consumer.ops import dependencies, dlq, extend, listing, lookup, report, requeue, status, verify
from consumer.ops.command import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Command, LedgerOutdated
from consumer.redaction import redact_text
from consumer.runtime.logs import configure_logging


def run(settings: Settings, _args: argparse.Namespace) -> int:
    from consumer.runtime.worker import Worker  # noqa: PLC0415 (other commands needn't pay for it)

    configure_logging()
    Worker(settings).run()
    return EXIT_OK


COMMANDS: tuple[Command, ...] = (
    Command("run", "consume requests and carry them out until SIGTERM", run),
    status.COMMAND,
    dependencies.SETUP,
    dependencies.CHECK,
    report.COMMAND,
    lookup.COMMAND,
    verify.COMMAND,
    requeue.COMMAND,
    extend.COMMAND,
    listing.COMMAND,
    dlq.COMMAND,
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command: Command = args.command
    try:
        settings = load_settings(_config_path(args), vendor_secrets=not command.ledger_only)
        return command.run(settings, args)
    except ConfigError as error:
        print(f"erasure-worker: {error}", file=sys.stderr)
        return EXIT_USAGE
    except LedgerOutdated as error:
        print(f"erasure-worker: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except LedgerUnavailable as error:
        print(f"erasure-worker: ledger unavailable: {redact_text(str(error))}", file=sys.stderr)
        return EXIT_FAILURE


def _config_path(args: argparse.Namespace) -> Path:
    path = args.config or os.environ.get("ERASURE_CONFIG")
    if not path:
        raise ConfigError("no configuration: pass --config FILE or set ERASURE_CONFIG")
    return Path(path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="erasure-worker",
        description="Fans GDPR/CCPA erasure requests from Kafka out to marketing vendors.",
    )
    subparsers = parser.add_subparsers(required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help)
        sub.add_argument("--config", help="YAML configuration (default: $ERASURE_CONFIG)")
        sub.set_defaults(command=command)
        command.arguments(sub)
    return parser
