"""What a `erasure-worker` command is, so that `consumer.cli` can list them all in one place.

A command names itself, declares its arguments and runs against loaded settings. Commands
that read or change only the ledger say so (`ledger_only`): the CLI then loads the
configuration without requiring the vendors' secrets, which an operator's laptop or a
one-off job pod should not need to hold.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from consumer.config import Settings
from consumer.errors import FatalError
from consumer.ledger import Ledger, open_ledger

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Run = Callable[[Settings, argparse.Namespace], int]


def _no_arguments(_parser: argparse.ArgumentParser) -> None:
    """Most commands take only --config."""


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Run
    arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    ledger_only: bool = False


class LedgerOutdated(FatalError):
    """The ledger lacks schema versions this erasure-worker needs."""


def open_current_ledger(settings: Settings) -> Ledger:
    """The configured ledger, refused unless its schema is the one this code expects. The
    worker migrates at start; an operator command never does, so it cannot change a
    production schema from a laptop, nor fail half-way on a column that is not there yet."""
    ledger = open_ledger(settings.ledger.url)
    try:
        missing = ledger.missing_migrations()
    except BaseException:
        ledger.close()
        raise
    if missing:
        ledger.close()
        versions = ", ".join(str(version) for version in missing)
        raise LedgerOutdated(
            f"the ledger lacks schema version(s) {versions}: start this version of the worker"
            " (`erasure-worker run` migrates it), then run the command again"
        )
    return ledger
