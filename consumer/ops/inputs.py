"""An operator's arguments, checked before anything is done with them.

Each check returns the value to use or raises `BadInput`, whose message is the one line
the command prints (then exit 1). Messages never echo a value that could be personal data:
a request id that is not a UUID might be an e-mail address typed into the wrong place.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
import unicodedata
from collections.abc import Collection
from datetime import UTC, date, datetime, time
from typing import Final

from consumer.ledger.records import OperatorAction
from consumer.ops.command import EXIT_FAILURE

MAX_REASON_LENGTH: Final = 500
MAX_ACTOR_LENGTH: Final = 100
_CANONICAL_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


class BadInput(ValueError):
    """An argument the command cannot use; `str()` is the one line to print."""


def refused(message: str) -> int:
    """Say on one line why nothing (more) was done; the exit code for it."""
    print(f"erasure-worker: {message}", file=sys.stderr)
    return EXIT_FAILURE


def add_action_arguments(parser: argparse.ArgumentParser, reason_help: str) -> None:
    """`--reason` and `--actor`, checked by `action` (so a missing reason exits 1 with one
    line like every other bad value, not with argparse's usage error)."""
    parser.add_argument("--reason", metavar="TEXT", help=reason_help)
    parser.add_argument("--actor", metavar="NAME", help="who acts (default: the OS user)")


def is_request_id(text: str) -> bool:
    """Whether `text` has the form of a request id: a UUID in its canonical 8-4-4-4-12
    form, as the contract has it."""
    return _CANONICAL_UUID.fullmatch(text) is not None


def request_id(text: str) -> str:
    """A request id (`is_request_id`)."""
    if not is_request_id(text):
        raise BadInput("a request id is a UUID (8-4-4-4-12 hex digits); this is not one")
    return text


def vendor(name: str, known: Collection[str]) -> str:
    """One of the vendor names the worker knows (contract §3)."""
    if name not in known:
        shown = name if name.isidentifier() and len(name) <= 40 else "(that name)"
        raise BadInput(f"unknown vendor {shown}; known vendors: {', '.join(sorted(known))}")
    return name


def positive_days(text: str) -> int:
    """A number of days to add: a whole number, 1 or more."""
    if not text:
        raise BadInput("--days N is required: a whole number of days, 1 or more")
    if re.fullmatch(r"-?[0-9]{1,6}", text) is None or int(text) < 1:
        shown = text if len(text) <= 12 and text.isprintable() else "that"
        raise BadInput(f"--days must be a whole number of days, 1 or more (got {shown})")
    return int(text)


def moment(text: str, option: str) -> datetime:
    """A date (`YYYY-MM-DD`, midnight UTC) or an ISO 8601 time (UTC unless it says)."""
    try:
        if len(text) == len("YYYY-MM-DD"):
            return datetime.combine(date.fromisoformat(text), time(), UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{option} takes a date, YYYY-MM-DD (or an ISO 8601 time)") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def action(reason: str | None, actor: str | None) -> OperatorAction:
    """Who acts (`actor`, else the OS user) and why, as the audit trail records them."""
    return OperatorAction(
        _one_line(actor, "--actor", MAX_ACTOR_LENGTH) if actor is not None else os_user(),
        _one_line(reason, "--reason", MAX_REASON_LENGTH),
    )


def os_user() -> str:
    """The operator's login name; the numeric uid where the system has no name for it (a
    container running as an arbitrary uid)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid {os.getuid()}"


def _one_line(text: str | None, option: str, limit: int) -> str:
    if text is None or not text.strip():
        raise BadInput(f"{option} is required: it goes into the audit trail")
    text = text.strip()
    if len(text) > limit:
        raise BadInput(f"{option} is {len(text)} characters long; at most {limit}")
    if any(unicodedata.category(char) == "Cc" for char in text):
        raise BadInput(f"{option} must be one line of text, without control characters")
    return text
