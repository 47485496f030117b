"""`erasure-worker dlq replay`: publish chosen dead letters again to the input topic.

Each one goes byte for byte (same key, same value) with `erasure.replays` set to one more
than the dead letter carried (see `consumer.ops.dlq`), and is recorded in the ledger with
who replayed it and why once the broker confirmed it: a replay that fails is not recorded
and can be tried again; one confirmed but not recorded (the ledger went away in between)
could be replayed twice, which the worker absorbs (a duplicate request_id is not fanned out
again; an invalid message comes back once more, marked).

`--all` picks every dead letter not replayed yet and not come back after a replay;
`--offsets` picks positions, and refuses those that hold no dead letter, were replayed
already or lost their value (too large for the dead-letter topic).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from consumer.clock import SYSTEM_CLOCK, Clock
from consumer.config import KafkaSettings, Settings
from consumer.kafka.errors import KafkaFailure
from consumer.kafka.messages import OutgoingMessage
from consumer.kafka.producer import Producer
from consumer.kafka.properties import dead_letter_producer_config
from consumer.ledger.protocol import Ledger
from consumer.ledger.records import OperatorAction, ReplayRecord
from consumer.ops import inputs
from consumer.ops.command import EXIT_FAILURE, EXIT_OK, open_current_ledger
from consumer.ops.dlq_read import DeadLetter, batched, read_dead_letters, with_replays
from consumer.ops.inputs import BadInput
from consumer.ops.render import minute
from consumer.pipeline.dead_letters import REPLAYS

DELIVERY_TIMEOUT_SECONDS: Final = 30.0
DEFAULT_REASON: Final = "replayed from the dead-letter topic"
ALREADY_REPLAYED: Final = "already replayed"
CAME_BACK: Final = "came back after a replay (replay it by --offsets once the cause is fixed)"
NO_VALUE: Final = "value too large for the dead-letter topic (it is at its source position)"


def positions(text: str) -> list[tuple[int, int]]:
    """`PARTITION:OFFSET,...` as (partition, offset) pairs, in the order given, once each."""
    chosen: list[tuple[int, int]] = []
    for part in text.split(","):
        partition, colon, offset = part.strip().partition(":")
        if not (colon and partition.isdecimal() and offset.isdecimal()):
            raise BadInput("--offsets takes PARTITION:OFFSET pairs, comma-separated: 0:12,1:7")
        chosen.append((int(partition), int(offset)))
    return list(dict.fromkeys(chosen))


@dataclass(slots=True)
class ReplayReport:
    """The dead letters published again, the chosen ones refused (position, why) and, for
    `--all`, how many were left out, by why."""

    replayed: list[DeadLetter] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


def replay(
    settings: KafkaSettings,
    ledger: Ledger,
    producer: Producer,
    chosen: Sequence[tuple[int, int]] | None,
    action: OperatorAction,
    clock: Clock = SYSTEM_CLOCK,
) -> ReplayReport:
    """Replay the dead letters at the `chosen` positions, or (None) every one `--all`
    picks, through `producer` (the caller's, to the input topic)."""
    report = ReplayReport()
    wanted = None if chosen is None else set(chosen)
    letters: Iterable[DeadLetter] = read_dead_letters(settings, clock=clock)
    if wanted is not None:
        letters = (letter for letter in letters if (letter.partition, letter.offset) in wanted)
    seen: set[tuple[int, int]] = set()
    selected = _selected(with_replays(ledger, settings.dlq_topic, letters), wanted, seen, report)
    for batch in batched(selected):
        _deliver(settings, ledger, producer, batch, action, clock, report)
    for partition, offset in sorted((wanted or set()) - seen):
        report.refused.append((f"{partition}:{offset}", "no dead letter at this position"))
    return report


def _selected(
    entries: Iterable[tuple[DeadLetter, ReplayRecord | None]],
    wanted: set[tuple[int, int]] | None,
    seen: set[tuple[int, int]],
    report: ReplayReport,
) -> Iterator[DeadLetter]:
    """The dead letters to publish; the others go into the report as refused (chosen by
    position) or skipped (`--all`)."""
    for letter, replayed in entries:
        seen.add((letter.partition, letter.offset))
        if replayed is not None:
            why = ALREADY_REPLAYED
            detail = f"{why} {minute(replayed.replayed_at)} UTC by {replayed.actor}"
        elif letter.value_omitted:
            why = detail = NO_VALUE
        elif wanted is None and letter.replays:
            why = detail = CAME_BACK
        else:
            yield letter
            continue
        if wanted is None:
            report.skipped[why] += 1
        else:
            report.refused.append((letter.position, detail))


def _deliver(
    settings: KafkaSettings,
    ledger: Ledger,
    producer: Producer,
    batch: list[DeadLetter],
    action: OperatorAction,
    clock: Clock,
    report: ReplayReport,
) -> None:
    """Publish a batch, then record each confirmed one in the ledger."""
    messages = [
        OutgoingMessage(
            settings.input_topic,
            letter.key,
            letter.value,
            ((REPLAYS, str(letter.replays + 1).encode()),),
        )
        for letter in batch
    ]
    outcomes = producer.deliver(messages, DELIVERY_TIMEOUT_SECONDS)
    for letter, failure in zip(batch, outcomes, strict=True):
        if failure is not None:
            report.refused.append((letter.position, f"not delivered: {failure}"))
            continue
        topic = settings.dlq_topic
        ledger.record_replay(topic, letter.partition, letter.offset, action, clock.now())
        report.replayed.append(letter)


def report_lines(report: ReplayReport, input_topic: str) -> list[str]:
    """One line per reason for skipping, then the total (refusals: `ReplayReport.refused`)."""
    lines = [f"skipped {count}: {why}" for why, count in sorted(report.skipped.items())]
    lines.append(f"replayed {len(report.replayed)} dead letter(s) to {input_topic}")
    return lines


def dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    """`erasure-worker dlq replay`: refused positions one line each on stderr, then what
    was skipped and the count."""
    try:
        if args.all == (args.offsets is not None):
            raise BadInput("choose the dead letters: --offsets PARTITION:OFFSET,... or --all")
        chosen = None if args.all else positions(args.offsets)
        action = inputs.action(args.reason or DEFAULT_REASON, args.actor)
    except BadInput as error:
        return inputs.refused(str(error))
    ledger = open_current_ledger(settings)
    producer = Producer(dead_letter_producer_config(settings.kafka), role="dlq-replay")
    try:
        report = replay(settings.kafka, ledger, producer, chosen, action)
    except KafkaFailure as error:
        return inputs.refused(f"dead-letter replay stopped: {error}")
    finally:
        producer.close(DELIVERY_TIMEOUT_SECONDS)
        ledger.close()
    for position, why in report.refused:
        print(f"erasure-worker: {position}: {why}", file=sys.stderr)
    print("\n".join(report_lines(report, settings.kafka.input_topic)))
    return EXIT_FAILURE if report.refused else EXIT_OK


def replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--offsets", metavar="PARTITION:OFFSET,...", help="these dead letters")
    parser.add_argument(
        "--all", action="store_true", help="every one not replayed yet nor come back after one"
    )
    inputs.add_action_arguments(parser, f"why (default: {DEFAULT_REASON!r})")
