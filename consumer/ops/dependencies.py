"""`erasure-worker setup` and `check`: the commands that reach every dependency.

`setup` runs each enabled vendor's one-time setup (the registry says which have one);
`check` validates the configuration and reaches Kafka, the ledger and each vendor's auth
endpoint. Whatever they print about a dependency goes through `consumer.redaction`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from consumer.config import Settings, VendorSettings
from consumer.kafka.client import KafkaFailure, client_config, ping
from consumer.ledger import LedgerUnavailable, open_ledger
from consumer.ops.command import EXIT_FAILURE, EXIT_OK, Command
from consumer.redaction import redact_text, redact_url
from consumer.vendors import build_adapter, registry
from consumer.vendors.base import VendorError

CHECK_TIMEOUT_SECONDS = 10.0


def setup(settings: Settings, _args: argparse.Namespace) -> int:
    """Run the one-time setup of every enabled vendor that has one (see the registry)."""
    enabled = settings.vendors.enabled()
    setups = {name: registry.entry_for(section).setup for name, section in enabled.items()}
    results = [_set_up(name, enabled[name], run) for name, run in setups.items() if run]
    if not results:
        print(f"nothing to set up for the enabled vendors ({', '.join(enabled) or 'none'})")
    _print_results(results)
    return EXIT_OK if all(ok for _, ok, _ in results) else EXIT_FAILURE


def _set_up(
    name: str, section: VendorSettings, run: Callable[[VendorSettings], str]
) -> tuple[str, bool, str]:
    try:
        return name, True, run(section)
    except VendorError as error:
        return name, False, redact_text(str(error))


def check(settings: Settings, _args: argparse.Namespace) -> int:
    results = [("config", True, "valid")]
    results.append(_check_kafka(settings))
    results.append(_check_ledger(settings))
    results.extend(_check_vendor(*vendor) for vendor in settings.vendors.enabled().items())
    _print_results(results)
    return EXIT_OK if all(ok for _, ok, _ in results) else EXIT_FAILURE


def _print_results(results: list[tuple[str, bool, str]]) -> None:
    for name, ok, detail in results:
        print(f"{name:<12} {'ok' if ok else 'FAILED':<7} {detail}")


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


def _check_vendor(name: str, section: VendorSettings) -> tuple[str, bool, str]:
    adapter = build_adapter(section, time.sleep)
    try:
        adapter.check()
    except VendorError as error:
        return name, False, redact_text(str(error))
    finally:
        adapter.close()
    detail = f"authenticated at {redact_url(section.base_url)}"
    note = registry.entry_for(section).check_note
    return name, True, detail if note is None else f"{detail}; {note(section)}"


SETUP = Command("setup", "one-time vendor setup (idempotent)", setup)
CHECK = Command("check", "validate the config and reach Kafka, the ledger and each vendor", check)
