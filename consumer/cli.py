"""`erasure-worker` commands (contract §5): run, status, setup, check.

User mistakes (a bad config, an unknown request id, an unreachable dependency) end with
one clear line on stderr and a non-zero exit code, never a traceback. Whatever a command
prints about a dependency goes through `consumer.redaction`: URLs lose their passwords
(userinfo or query parameter) and error texts their secret-looking values.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from consumer.config import ConfigError, MonetateSettings, Settings, load_settings
from consumer.kafka import KafkaFailure, client_config, ping
from consumer.ledger import LedgerUnavailable, open_ledger
from consumer.logs import configure_logging
from consumer.redaction import redact_text, redact_url
from consumer.trail import trail_json, trail_text
from consumer.vendors import build_adapter
from consumer.vendors.base import VendorError
from consumer.vendors.monetate import MonetateAdapter

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
CHECK_TIMEOUT_SECONDS = 10.0
# Monetate documents no read of a dataset: only an upload would tell, and check never writes.
_MONETATE_DATASET_NOTE = (
    "dataset {dataset} not checked (no documented read-only call can tell; "
    "`erasure-worker setup` creates it, idempotently)"
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.serves_sandboxes:
        return serve_sandboxes(args)  # needs no configuration
    command: Callable[[Settings, argparse.Namespace], int] = args.command
    try:
        settings = load_settings(_config_path(args))
        return command(settings, args)
    except ConfigError as error:
        print(f"erasure-worker: {error}", file=sys.stderr)
        return EXIT_USAGE
    except LedgerUnavailable as error:
        print(f"erasure-worker: ledger unavailable: {redact_text(str(error))}", file=sys.stderr)
        return EXIT_FAILURE


def run(settings: Settings, _args: argparse.Namespace) -> int:
    from consumer.worker import Worker  # noqa: PLC0415 (other commands needn't pay for it)

    configure_logging()
    Worker(settings).run()
    return EXIT_OK


def status(settings: Settings, args: argparse.Namespace) -> int:
    ledger = open_ledger(settings.ledger.url)
    try:
        trail = ledger.trail(args.request_id)
    finally:
        ledger.close()
    if trail is None:
        print(f"erasure-worker: no request {args.request_id} in the ledger", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(trail_json(trail), indent=2) if args.json else trail_text(trail))
    return EXIT_OK


def setup(settings: Settings, _args: argparse.Namespace) -> int:
    """Only Monetate needs one-time setup: its `customer_data_privacy` dataset."""
    monetate = settings.vendors.monetate
    if monetate is None:
        enabled = ", ".join(settings.vendors.enabled()) or "none"
        print(f"nothing to set up for the enabled vendors ({enabled})")
        return EXIT_OK
    adapter = MonetateAdapter(monetate)
    try:
        created = adapter.create_dataset()
    except VendorError as error:
        print(f"monetate     FAILED  {error}")
        return EXIT_FAILURE
    finally:
        adapter.close()
    outcome = "created" if created else "already exists"
    print(f"monetate     ok      dataset {monetate.dataset} {outcome}")
    return EXIT_OK


def check(settings: Settings, _args: argparse.Namespace) -> int:
    results = [("config", True, "valid")]
    results.append(_check_kafka(settings))
    results.append(_check_ledger(settings))
    results.extend(_check_vendor(name, settings) for name in settings.vendors.enabled())
    for name, ok, detail in results:
        print(f"{name:<12} {'ok' if ok else 'FAILED':<7} {detail}")
    return EXIT_OK if all(ok for _, ok, _ in results) else EXIT_FAILURE


def _check_kafka(settings: Settings) -> tuple[str, bool, str]:
    try:
        ping(client_config(settings.kafka), CHECK_TIMEOUT_SECONDS)
    except KafkaFailure as error:
        return "kafka", False, redact_text(str(error))
    return "kafka", True, settings.kafka.bootstrap_servers


def _check_ledger(settings: Settings) -> tuple[str, bool, str]:
    ledger = open_ledger(settings.ledger.url)
    try:
        ledger.ping()
    except LedgerUnavailable as error:
        return "ledger", False, redact_text(str(error))
    finally:
        ledger.close()
    return "ledger", True, settings.ledger.redacted_url


def _check_vendor(name: str, settings: Settings) -> tuple[str, bool, str]:
    vendor_settings = settings.vendors.enabled()[name]
    adapter = build_adapter(vendor_settings, time.sleep)
    try:
        adapter.check()
    except VendorError as error:
        return name, False, redact_text(str(error))
    finally:
        adapter.close()
    detail = f"authenticated at {redact_url(vendor_settings.base_url)}"
    if isinstance(vendor_settings, MonetateSettings):
        detail += f"; {_MONETATE_DATASET_NOTE.format(dataset=vendor_settings.dataset)}"
    return name, True, detail


def serve_sandboxes(args: argparse.Namespace) -> int:
    """Serve all four vendor sandboxes on loopback ports until SIGTERM/SIGINT, printing the
    `vendors:` config section and the environment a worker needs to use them."""
    from consumer.sandbox.fleet import SECRETS, SandboxFleet  # noqa: PLC0415 (dev only)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with SandboxFleet(job_seconds=args.job_seconds) as fleet:
        for identity_type, value in (tuple(seed.split("=", 1)) for seed in args.seed):
            fleet.seed(identity_type, value)
        print("# vendor sandboxes serving; put this in the worker's config:")
        print(yaml.safe_dump({"vendors": fleet.vendors_config()}, sort_keys=False), end="")
        print("# and export these (sandbox credentials, not secrets):")
        for name, value in SECRETS.items():
            print(f"export {name}={shlex.quote(value)}")
        sys.stdout.flush()
        stop.wait()
    return EXIT_OK


def _seed(value: str) -> str:
    if "=" not in value:
        raise argparse.ArgumentTypeError("use TYPE=VALUE, e.g. email=jane@example.com")
    return value


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
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    for name, function, help_text in (
        ("run", run, "consume requests and carry them out until SIGTERM"),
        ("status", status, "print a request's audit trail"),
        ("setup", setup, "one-time vendor setup (idempotent)"),
        ("check", check, "validate the config and reach Kafka, the ledger and each vendor"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--config", help="YAML configuration (default: $ERASURE_CONFIG)")
        command.set_defaults(command=function, serves_sandboxes=False)
        if name == "status":
            command.add_argument("request_id")
            command.add_argument("--json", action="store_true", help="one JSON object")
    fleet = commands.add_parser("sandbox", help="serve all four vendor sandboxes on loopback")
    fleet.add_argument("--job-seconds", type=float, default=5.0, help="how long vendor jobs take")
    fleet.add_argument(
        "--seed",
        action="append",
        default=[],
        type=_seed,
        metavar="TYPE=VALUE",
        help="an identifier the vendors hold (email, customer_id, customer_key); repeatable",
    )
    fleet.set_defaults(serves_sandboxes=True)
    return parser
