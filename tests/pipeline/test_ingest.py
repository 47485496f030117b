"""The consume loop over a real broker (Tansu) and the real SQLite ledger."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from consumer.config import KafkaSettings
from consumer.kafka.codec import Codec, CodecError, encode_request
from consumer.ledger import Ledger
from consumer.model import Identity
from consumer.pipeline.ingest import Ingest
from consumer.runtime.metrics import REGISTRY
from tests.support.kafka import FAST_GROUP_CONFIG, committed, kafka_settings, produce, read_all
from tests.support.pipeline import (
    ENABLED,
    FAST_INGEST,
    SECRET,
    OutageLedger,
    a_request,
    counter,
    record_of,
    running,
)
from tests.support.waiting import wait_until


@pytest.fixture
def ledger_path(ledger_url: str, ledger: Ledger) -> str:
    """The file of the test's (migrated) SQLite ledger."""
    return ledger_url.removeprefix("sqlite:///")


@pytest.fixture
def opened() -> Iterator[list[Ledger]]:
    """Ledger objects a test made itself, closed at its end."""
    ledgers: list[Ledger] = []
    yield ledgers
    for ledger in ledgers:
        ledger.close()


@pytest.fixture
def own_ledger(open_ledgers: Callable[[], Ledger]) -> Ledger:
    """A ledger object for a loop under test (each loop opens its own, as in the worker)."""
    return open_ledgers()


def test_a_valid_batch_is_recorded_then_committed(
    kafka: KafkaSettings, ledger_path: str, ledger: Ledger, opened: list[Ledger]
) -> None:
    requests = [a_request() for _ in range(50)]
    produce(kafka.bootstrap_servers, kafka.input_topic, [record_of(r) for r in requests])
    accepted = counter("erasure_requests_total", outcome="accepted")
    spy = OutageLedger(ledger_path, kafka)
    opened.append(spy)

    with running(Ingest.create(kafka, spy, Codec(), ENABLED, tuning=FAST_INGEST)) as ingest:
        wait_until(lambda: committed(kafka) == {0: 50}, 20, "the batch's commit")
        assert ingest.state().in_group
        lag = {"topic": kafka.input_topic, "partition": "0"}
        wait_until(lambda: REGISTRY.get_sample_value("erasure_consumer_lag", lag) == 0.0, 10, "lag")
    assert REGISTRY.get_sample_value("erasure_consumer_lag", lag) is None, "revoked: not ours"

    assert spy.committed_at_calls[0] == {}
    assert all(ledger.trail(r.request_id) is not None for r in requests)
    assert counter("erasure_requests_total", outcome="accepted") - accepted == 50


def rejection(value: bytes | None) -> str:
    """What the codec says about a value it rejects (the expected `error.message`)."""
    with pytest.raises(CodecError) as raised:
        Codec().decode_request(value)
    return str(raised.value)


def test_rejected_messages_are_dead_lettered_byte_for_byte_with_exact_headers(
    kafka: KafkaSettings, ledger: Ledger, own_ledger: Ledger
) -> None:
    valid = a_request()
    cases: list[tuple[bytes | None, bytes | None, str, str]] = [
        (b"not-avro", b"\x07garbage", "undecodable", "framing"),
        (None, b"\x00\x00\x00\x00\x01", "undecodable", "Avro body"),
        (b"tombstone", None, "undecodable", "tombstone"),
        (b"bad-id", encode_request(a_request("nope")), "invalid_request", "request_id"),
        (b"k", encode_request(a_request(vendors=())), "invalid_request", "vendors"),
        (b"k", encode_request(a_request(identities=())), "invalid_request", "identities"),
    ]
    for bad in ["", SECRET + "x" * 1024, SECRET + "\t", SECRET + "\n", SECRET + "\x85"]:
        request = a_request(identities=(Identity("customer_key", "K-1"), Identity("email", bad)))
        cases.append((*record_of(request), "invalid_request", "identities[1].value"))
    records = [(key, value) for key, value, _, _ in cases] + [record_of(valid)]
    positions = produce(kafka.bootstrap_servers, kafka.input_topic, records)
    before = {
        reason: counter("erasure_dlq_messages_total", reason=reason)
        for reason in ("undecodable", "invalid_request")
    }
    invalid = counter("erasure_requests_total", outcome="invalid")

    with running(Ingest.create(kafka, own_ledger, Codec(), ENABLED, tuning=FAST_INGEST)):
        wait_until(lambda: committed(kafka) == {0: len(records)}, 20, "the commit")

    dead = read_all(kafka.bootstrap_servers, kafka.dlq_topic, len(cases))
    rejected_positions = positions[: len(cases)]
    for message, (key, value, reason, field), (_, offset) in zip(
        dead, cases, rejected_positions, strict=True
    ):
        assert message.key() == key
        assert message.value() == value
        error_message = rejection(value)
        assert message.headers() == [
            ("error.reason", reason.encode()),
            ("error.message", error_message.encode()),
            ("source.topic", kafka.input_topic.encode()),
            ("source.partition", b"0"),
            ("source.offset", str(offset).encode()),
        ]
        assert field in error_message
        assert "jane" not in error_message
    dead_letters = {
        reason: counter("erasure_dlq_messages_total", reason=reason) - count
        for reason, count in before.items()
    }
    assert dead_letters == {"undecodable": 3, "invalid_request": 8}
    assert counter("erasure_requests_total", outcome="invalid") - invalid == 11
    assert ledger.trail(valid.request_id) is not None


def test_duplicates_are_counted_and_not_recorded_again(
    kafka: KafkaSettings, ledger: Ledger, own_ledger: Ledger
) -> None:
    first, second = a_request(), a_request()
    again = a_request(first.request_id, identities=(Identity("customer_key", "K-2"),))
    records = [record_of(r) for r in (first, second, first)]
    produce(kafka.bootstrap_servers, kafka.input_topic, records)
    accepted = counter("erasure_requests_total", outcome="accepted")
    duplicates = counter("erasure_requests_total", outcome="duplicate")

    with running(Ingest.create(kafka, own_ledger, Codec(), ENABLED, tuning=FAST_INGEST)):
        wait_until(lambda: committed(kafka) == {0: 3}, 20, "the first commit")
        backlog = ledger.outbox_backlog()
        trail = ledger.trail(first.request_id)
        produce(kafka.bootstrap_servers, kafka.input_topic, [record_of(again)])
        wait_until(lambda: committed(kafka) == {0: 4}, 20, "the second commit")

    assert counter("erasure_requests_total", outcome="accepted") - accepted == 2
    assert counter("erasure_requests_total", outcome="duplicate") - duplicates == 2
    assert ledger.outbox_backlog() == backlog
    assert ledger.trail(first.request_id) == trail


def test_ledger_outage_pauses_commits_nothing_and_loses_nothing(
    kafka: KafkaSettings, ledger_path: str, ledger: Ledger, opened: list[Ledger]
) -> None:
    first = [a_request() for _ in range(20)]
    later = [a_request() for _ in range(10)]
    produce(kafka.bootstrap_servers, kafka.input_topic, [record_of(r) for r in first])
    flaky = OutageLedger(ledger_path, kafka, outage=True)
    opened.append(flaky)
    errors = counter("erasure_ledger_unavailable_total", loop="ingest")

    with running(Ingest.create(kafka, flaky, Codec(), ENABLED, tuning=FAST_INGEST)) as ingest:
        wait_until(lambda: flaky.failures >= 1, 20, "the first failed write")
        assert ingest.state().held_messages == 20
        assert not ingest.state().ledger_available
        produce(kafka.bootstrap_servers, kafka.input_topic, [record_of(r) for r in later])
        wait_until(lambda: flaky.failures >= 4, 20, "more retries")
        state = ingest.state()
        assert state.held_messages == 20, "paused partitions must not deliver more"
        assert state.in_group
        assert committed(kafka) == {}
        flaky.outage.clear()
        wait_until(lambda: committed(kafka) == {0: 30}, 20, "the commit after recovery")
        assert ingest.state().ledger_available

    assert all(offsets == {} for offsets in flaky.committed_at_calls[: flaky.failures])
    assert all(ledger.trail(r.request_id) is not None for r in first + later)
    assert counter("erasure_ledger_unavailable_total", loop="ingest") - errors == flaky.failures


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_a_rebalance_loses_nothing(
    strategy: str,
    kafka_bootstrap: str,
    ledger_path: str,
    ledger: Ledger,
    own_ledger: Ledger,
    opened: list[Ledger],
) -> None:
    """A holds a batch it cannot write when B joins; after the rebalance and after A
    leaves again, every request is in the ledger and every offset committed."""
    config = {**FAST_GROUP_CONFIG, "partition.assignment.strategy": strategy}
    kafka = kafka_settings(kafka_bootstrap, partitions=4, config=config)
    first = [a_request() for _ in range(100)]
    later = [a_request() for _ in range(50)]
    produce(kafka_bootstrap, kafka.input_topic, [record_of(r) for r in first])
    stuck = OutageLedger(ledger_path, kafka, outage=True)
    opened.append(stuck)
    healthy = own_ledger

    with running(Ingest.create(kafka, stuck, Codec(), ENABLED, tuning=FAST_INGEST)) as a:
        wait_until(lambda: a.state().held_messages > 0, 20, "A holding a batch")
        with running(Ingest.create(kafka, healthy, Codec(), ENABLED, tuning=FAST_INGEST)) as b:
            wait_until(lambda: b.state().partitions > 0, 20, "B joining the group")
            wait_until(lambda: a.state().partitions < 4, 20, "A giving partitions up")
            stuck.outage.clear()
            wait_until(lambda: sum(committed(kafka).values()) == 100, 30, "all 100 committed")
        wait_until(lambda: a.state().partitions == 4, 20, "A taking every partition back")
        produce(kafka_bootstrap, kafka.input_topic, [record_of(r) for r in later])
        wait_until(lambda: sum(committed(kafka).values()) == 150, 30, "all 150 committed")

    missing = [r.request_id for r in first + later if ledger.trail(r.request_id) is None]
    assert missing == []
