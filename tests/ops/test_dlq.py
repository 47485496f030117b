"""`erasure-worker dlq list` and `dlq replay` over the real broker and a real ledger: the
dead-letter topic read to its end, nothing of a message's bytes shown, replays byte for
byte with their counter, recorded, and never repeated by `--all`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence

import pytest
from confluent_kafka import Producer as RawProducer

from consumer.config import KafkaSettings
from consumer.kafka.codec import encode_request
from consumer.kafka.errors import KafkaFailure
from consumer.kafka.producer import Producer
from consumer.kafka.properties import dead_letter_producer_config
from consumer.ledger import Ledger
from consumer.ledger.records import OperatorAction
from consumer.model import ErasureRequest, Identity, Regulation
from consumer.ops.dlq import json_chunks, table_lines
from consumer.ops.dlq_read import DeadLetter, read_dead_letters, with_replays
from consumer.ops.dlq_replay import positions, replay, report_lines
from consumer.ops.inputs import BadInput
from tests.ledger.test_ledger_contract import T0
from tests.support.kafka import create_topic, read_all

ANNA = OperatorAction("anna", "producer fixed")
SECRET = "dlq-secret@example.com"
Headers = Sequence[tuple[str, bytes]]


def _request(identity: str = SECRET) -> tuple[str, bytes]:
    rid = str(uuid.uuid4())
    request = ErasureRequest(
        rid, T0, Regulation.GDPR, (Identity("email", identity),), None, "crm", None
    )
    return rid, encode_request(request)


def _headers(reason: str, offset: int, *extra: tuple[str, bytes]) -> Headers:
    return (
        ("error.reason", reason.encode()),
        ("error.message", f"rule broken at {offset}".encode()),
        ("source.topic", b"subject.erasure.requested"),
        ("source.partition", b"0"),
        ("source.offset", str(offset).encode()),
        *extra,
    )


@pytest.fixture
def dlq(kafka: KafkaSettings) -> KafkaSettings:
    """Settings whose dead-letter topic has two partitions."""
    return kafka.model_copy(update={"dlq_topic": create_topic(kafka.bootstrap_servers, "dlq", 2)})


@pytest.fixture
def letters(dlq: KafkaSettings) -> dict[str, tuple[int, str | None, bytes | None]]:
    """Dead letters as ingest writes them, produced in one batch: name -> (partition,
    request_id, value)."""
    valid_id, valid = _request()
    invalid_id, invalid = _request(identity="")
    back_id, back = _request()
    omitted, replayed = ("error.value_omitted", b"true"), ("erasure.replays", b"1")
    plan: list[tuple[str, int, bytes | None, bytes | None, Headers]] = [
        ("garbage", 0, valid_id.encode(), b"\x07not avro " + SECRET.encode(),
         _headers("undecodable", 1)),
        ("invalid", 0, invalid_id.encode(), invalid, _headers("invalid_request", 2)),
        ("pointer", 1, b"k", None, _headers("invalid_request", 3, omitted)),
        ("came_back", 1, back_id.encode(), back, _headers("invalid_request", 4, replayed)),
        ("keyless", 1, None, valid, _headers("invalid_request", 5)),
    ]  # fmt: skip
    producer = RawProducer({"bootstrap.servers": dlq.bootstrap_servers, "linger.ms": 50})
    for _, partition, key, value, headers in plan:
        producer.produce(dlq.dlq_topic, value, key, partition, headers=list(headers))
    assert producer.flush(10) == 0
    ids = {"garbage": valid_id, "invalid": invalid_id, "pointer": None, "came_back": back_id}
    ids["keyless"] = valid_id
    return {name: (part, ids[name], value) for name, part, _, value, _ in plan}


def _read(dlq: KafkaSettings) -> list[DeadLetter]:
    """The dead letters in position order (partitions may interleave as they are read)."""
    return sorted(read_dead_letters(dlq, timeout=10), key=lambda d: (d.partition, d.offset))


def test_list_reads_every_dead_letter_and_shows_no_message_bytes(
    dlq: KafkaSettings, letters: dict[str, tuple[int, str | None, bytes | None]], ledger: Ledger
) -> None:
    found = _read(dlq)

    assert [letter.position for letter in found] == ["0:0", "0:1", "1:0", "1:1", "1:2"]
    assert [letter.reason for letter in found] == ["undecodable"] + ["invalid_request"] * 4
    assert [letter.request_id for letter in found] == [letters[name][1] for name in letters]
    assert [(letter.replays, letter.value_omitted) for letter in found] == [
        (0, False), (0, False), (0, True), (1, False), (0, False)
    ]  # fmt: skip
    assert found[0].source == "subject.erasure.requested/0/1"
    shown = "\n".join(table_lines(with_replays(ledger, dlq.dlq_topic, found)))
    shown += "".join(json_chunks(with_replays(ledger, dlq.dlq_topic, found)))
    assert SECRET not in shown and "not avro" not in shown
    assert json.loads(shown[shown.index("[") :])[3]["replays"] == 1


def test_an_empty_dead_letter_topic_lists_nothing_and_a_missing_one_says_so(
    kafka: KafkaSettings, ledger: Ledger
) -> None:
    assert _read(kafka) == []
    assert list(table_lines(iter(())))[1:] == ["(no dead letters)"]
    missing = kafka.model_copy(update={"dlq_topic": f"missing-{uuid.uuid4().hex}"})
    with pytest.raises(KafkaFailure, match="does not exist"):
        _read(missing)


@pytest.fixture
def producer(dlq: KafkaSettings) -> Iterator[Producer]:
    replayer = Producer(dead_letter_producer_config(dlq), role="dlq-replay")
    yield replayer
    replayer.close(5)


def test_replay_all_republishes_byte_for_byte_once(
    dlq: KafkaSettings,
    letters: dict[str, tuple[int, str | None, bytes | None]],
    ledger: Ledger,
    producer: Producer,
) -> None:
    report = replay(dlq, ledger, producer, None, ANNA)

    assert sorted(letter.position for letter in report.replayed) == ["0:0", "0:1", "1:2"]
    sent = read_all(dlq.bootstrap_servers, dlq.input_topic, 3)
    expected = [letters[name][2] for name in ("garbage", "invalid", "keyless")]
    assert sorted(message.value() for message in sent) == sorted(expected)  # type: ignore[type-var]
    assert {tuple(message.headers() or ()) for message in sent} == {(("erasure.replays", b"1"),)}
    assert sorted(message.key() or b"" for message in sent) == sorted(
        [letters["garbage"][1].encode(), letters["invalid"][1].encode(), b""]  # type: ignore[union-attr]
    )
    again = replay(dlq, ledger, producer, None, ANNA)
    assert report_lines(again, dlq.input_topic) == [
        "skipped 3: already replayed",
        "skipped 1: came back after a replay (replay it by --offsets once the cause is fixed)",
        "skipped 1: value too large for the dead-letter topic (it is at its source position)",
        f"replayed 0 dead letter(s) to {dlq.input_topic}",
    ]
    recorded = ledger.replays(dlq.dlq_topic, 0, [0, 1])
    assert {(r.actor, r.reason) for r in recorded.values()} == {("anna", "producer fixed")}


def test_replay_by_position_counts_replays_and_refuses_the_rest(
    dlq: KafkaSettings,
    letters: dict[str, tuple[int, str | None, bytes | None]],
    ledger: Ledger,
    producer: Producer,
) -> None:
    chosen = positions("1:1, 1:0,7:3,1:1")
    assert chosen == [(1, 1), (1, 0), (7, 3)]

    report = replay(dlq, ledger, producer, chosen, ANNA)

    (sent,) = read_all(dlq.bootstrap_servers, dlq.input_topic, 1)
    assert (sent.value(), sent.headers()) == (letters["came_back"][2], [("erasure.replays", b"2")])
    assert report.refused == [
        ("1:0", "value too large for the dead-letter topic (it is at its source position)"),
        ("7:3", "no dead letter at this position"),
    ]
    (refused,) = replay(dlq, ledger, producer, [(1, 1)], ANNA).refused
    assert refused[0] == "1:1" and refused[1].startswith("already replayed ")
    assert refused[1].endswith(" UTC by anna")


@pytest.mark.parametrize("text", ["", "1", "a:1", "1:-2", "1:2;3:4"])
def test_bad_positions_are_one_line(text: str) -> None:
    with pytest.raises(BadInput, match="^--offsets takes PARTITION:OFFSET pairs"):
        positions(text)
