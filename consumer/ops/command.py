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
