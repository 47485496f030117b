"""`erasure-worker dlq list` and `dlq replay`: the dead letters, and sending them again
once the producer or the worker is fixed (contract §1, §5).

A replay publishes the message to the input topic byte for byte, key and value, with one
header: `erasure.replays`, one more than the dead letter carried. Ingest copies that
header into the headers of a message it dead-letters again, so a replay that fails again
comes back to the dead-letter topic once, marked; `dlq replay --all` skips those and every
dead letter already replayed (recorded in the ledger with who and why), so nothing loops.
See `consumer.ops.dlq_read` for how the topic is read and what is shown of a dead letter,
`consumer.ops.dlq_replay` for the replay.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any, Final

from consumer.config import Settings
from consumer.kafka.errors import KafkaFailure
from consumer.ledger.records import ReplayRecord
from consumer.ops import inputs
from consumer.ops.command import EXIT_OK, Command, open_current_ledger
from consumer.ops.dlq_read import DeadLetter, read_dead_letters, with_replays
from consumer.ops.dlq_replay import dlq_replay, replay_arguments
from consumer.ops.render import iso, minute

_COLUMNS: Final = (
    f"{'POSITION':<12}  {'REASON':<15}  {'REQUEST':<36}  {'REPLAYS':>7}  {'REPLAYED':<28}"
    f"  {'SOURCE':<40}  MESSAGE"
)


def table_lines(entries: Iterable[tuple[DeadLetter, ReplayRecord | None]]) -> Iterator[str]:
    """A table a person can read: the header, then one line per dead letter."""
    yield _COLUMNS
    empty = True
    for letter, replayed in entries:
        empty = False
        shown = "-" if replayed is None else f"{minute(replayed.replayed_at)} {replayed.actor}"
        yield (
            f"{letter.position:<12}  {letter.reason:<15}  {letter.request_id or '-':<36}"
            f"  {letter.replays:>7}  {shown:<28}  {letter.source:<40}  {letter.message}"
        )
    if empty:
        yield "(no dead letters)"


def json_chunks(entries: Iterable[tuple[DeadLetter, ReplayRecord | None]]) -> Iterator[str]:
    """One JSON array, written one element at a time."""
    yield "["
    separator = "\n"
    for letter, replayed in entries:
        yield separator + json.dumps(dead_letter_json(letter, replayed))
        separator = ",\n"
    yield "\n]"


def dead_letter_json(letter: DeadLetter, replayed: ReplayRecord | None) -> dict[str, Any]:
    return {
        "partition": letter.partition,
        "offset": letter.offset,
        "reason": letter.reason,
        "message": letter.message,
        "source": letter.source,
        "request_id": letter.request_id,
        "replays": letter.replays,
        "value_omitted": letter.value_omitted,
        "replayed": None
        if replayed is None
        else {"at": iso(replayed.replayed_at), "actor": replayed.actor, "reason": replayed.reason},
    }


def dlq_list(settings: Settings, args: argparse.Namespace) -> int:
    """`erasure-worker dlq list`: written line by line as the topic is read."""
    ledger = open_current_ledger(settings)
    try:
        letters = read_dead_letters(settings.kafka)
        entries = with_replays(ledger, settings.kafka.dlq_topic, letters)
        if args.json:
            sys.stdout.writelines(json_chunks(entries))
            sys.stdout.write("\n")
        else:
            sys.stdout.writelines(line + "\n" for line in table_lines(entries))
    except KafkaFailure as error:
        return inputs.refused(f"cannot read the dead-letter topic: {error}")
    finally:
        ledger.close()
    return EXIT_OK


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON array")


# Kafka and the ledger, never a vendor: no vendor secret is needed (`ledger_only`).
LIST = Command("dlq list", "show the dead letters", dlq_list, _list_arguments, ledger_only=True)
REPLAY = Command(
    "dlq replay", "publish dead letters again", dlq_replay, replay_arguments, ledger_only=True
)


def _subcommands(parser: argparse.ArgumentParser) -> None:
    """`list` and `replay`, each with its own Command (the one `main` runs)."""
    subcommands = parser.add_subparsers(required=True, metavar="SUBCOMMAND")
    for command in (LIST, REPLAY):
        sub = subcommands.add_parser(command.name.split()[-1], help=command.help)
        # Also after the subcommand; SUPPRESS keeps a --config given before it.
        sub.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sub.set_defaults(command=command)
        command.arguments(sub)


# `dlq` alone is a usage error: the subcommand's own Command replaces this one's `run`.
COMMAND = Command(
    "dlq",
    "dead letters: list them, replay them once fixed",
    dlq_list,
    _subcommands,
    ledger_only=True,
)
