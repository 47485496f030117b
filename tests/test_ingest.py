"""The consume loop over a real broker (Tansu) and the real SQLite ledger."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from consumer.codec import Codec, CodecError, encode_request
from consumer.config import KafkaSettings, VendorSettings, VoyadoSettings
from consumer.ingest import Ingest, IngestTuning
from consumer.ledger import Ledger, LedgerUnavailable, open_ledger
from consumer.ledger.sqlite import SqliteLedger
from consumer.metrics import REGISTRY
from consumer.model import ErasureRequest, Identity, Regulation
from consumer.work import NewRequest, RecordResult
from tests.kafka_helpers import (
    FAST_GROUP_CONFIG,
    committed_offsets,
    kafka_settings,
    produce,
    read_all,
    wait_until,
)

ENABLED: dict[str, VendorSettings] = {
    "voyado": VoyadoSettings(base_url="https://voyado.example", api_key=SecretStr("k"))
}
FAST = IngestTuning(batch_size=500, retry_initial=0.1, retry_max=0.5, delivery_timeout=5.0)
SECRET = "jane.doe@example.com"


def a_request(request_id: str | None = None, **changes: object) -> ErasureRequest:
    values: dict[str, object] = {
        "request_id": request_id or str(uuid.uuid4()),
        "requested_at": datetime(2024, 5, 1, tzinfo=UTC),
        "regulation": Regulation.GDPR,
        "identities": (Identity("customer_key", "K-1"), Identity("email", SECRET)),
        "vendors": None,
        "source": "crm",
        "trace_id": None,
    }
    values.update(changes)
    return ErasureRequest(**values)  # type: ignore[arg-type]


def record_of(request: ErasureRequest) -> tuple[bytes, bytes]:
    return request.request_id.encode(), encode_request(request)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class OutageLedger(SqliteLedger):
    """The real SQLite ledger, whose `record_requests` fails while `outage` is set; it
    notes the group's committed offsets at each call (to prove the order of things)."""

    def __init__(self, path: str, kafka: KafkaSettings, outage: bool = False) -> None:
        super().__init__(path)
        self.outage = threading.Event()
        if outage:
            self.outage.set()
        self.failures = 0
        self.committed_at_calls: list[dict[int, int]] = []
        self._kafka = kafka

    def record_requests(self, batch: Sequence[NewRequest], now: datetime) -> RecordResult:
        self.committed_at_calls.append(committed(self._kafka))
        if self.outage.is_set():
            self.failures += 1
            raise LedgerUnavailable("simulated outage")
        return super().record_requests(batch, now)


@pytest.fixture
def ledger_path(tmp_path: Path) -> str:
    path = str(tmp_path / "ledger.db")
    ledger = open_ledger(f"sqlite:///{path}")
    ledger.migrate()
    ledger.close()
    return path


@pytest.fixture
def opened() -> Iterator[list[Ledger]]:
    """Ledger objects a test opened, closed at its end."""
    ledgers: list[Ledger] = []
    yield ledgers
    for ledger in ledgers:
        ledger.close()


@pytest.fixture
def ledger(ledger_path: str, opened: list[Ledger]) -> Ledger:
    """The test's own view of the ledger (each loop opens its own, as in the worker)."""
    opened.append(open_ledger(f"sqlite:///{ledger_path}"))
    return opened[-1]


@pytest.fixture
def own_ledger(ledger_path: str, opened: list[Ledger]) -> Ledger:
    """A ledger object for a loop under test."""
    opened.append(open_ledger(f"sqlite:///{ledger_path}"))
    return opened[-1]


@contextmanager
def running(ingest: Ingest) -> Iterator[Ingest]:
    """Run the loop on a thread; stop it and re-raise its error at the end."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ingest.run()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run, name="ingest-under-test")
    thread.start()
    try:
        yield ingest
    finally:
        ingest.stop()
        thread.join(30)
        assert not thread.is_alive(), "the ingest loop did not stop"
    if errors:
        raise errors[0]


def committed(kafka: KafkaSettings) -> dict[int, int]:
    return committed_offsets(kafka.bootstrap_servers, kafka.group_id, kafka.input_topic)


def test_a_valid_batch_is_recorded_then_committed(
    kafka: KafkaSettings, ledger_path: str, ledger: Ledger, opened: list[Ledger]
) -> None:
    requests = [a_request() for _ in range(50)]
    produce(kafka.bootstrap_servers, kafka.input_topic, [record_of(r) for r in requests])
    accepted = metric("erasure_requests_total", outcome="accepted")
    spy = OutageLedger(ledger_path, kafka)
    opened.append(spy)

    with running(Ingest.create(kafka, spy, Codec(), ENABLED, tuning=FAST)) as ingest:
        wait_until(lambda: committed(kafka) == {0: 50}, 20, "the batch's commit")
        assert ingest.state().in_group
        lag = {"topic": kafka.input_topic, "partition": "0"}
        wait_until(
            lambda: REGISTRY.get_sample_value("erasure_consumer_lag", lag) == 0.0, 10, "lag"
        )
    assert REGISTRY.get_sample_value("erasure_consumer_lag", lag) is None, "revoked: not ours"

    assert spy.committed_at_calls[0] == {}
    assert all(ledger.trail(r.request_id) is not None for r in requests)
    assert metric("erasure_requests_total", outcome="accepted") - accepted == 50


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
        reason: metric("erasure_dlq_messages_total", reason=reason)
        for reason in ("undecodable", "invalid_request")
    }
    invalid = metric("erasure_requests_total", outcome="invalid")

    with running(Ingest.create(kafka, own_ledger, Codec(), ENABLED, tuning=FAST)):
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
        reason: metric("erasure_dlq_messages_total", reason=reason) - count
        for reason, count in before.items()
    }
    assert dead_letters == {"undecodable": 3, "invalid_request": 8}
    assert metric("erasure_requests_total", outcome="invalid") - invalid == 11
    assert ledger.trail(valid.request_id) is not None


def test_duplicates_are_counted_and_not_recorded_again(
    kafka: KafkaSettings, ledger: Ledger, own_ledger: Ledger
) -> None:
    first, second = a_request(), a_request()
    again = a_request(first.request_id, identities=(Identity("customer_key", "K-2"),))
    records = [record_of(r) for r in (first, second, first)]
    produce(kafka.bootstrap_servers, kafka.input_topic, records)
    accepted = metric("erasure_requests_total", outcome="accepted")
    duplicates = metric("erasure_requests_total", outcome="duplicate")

    with running(Ingest.create(kafka, own_ledger, Codec(), ENABLED, tuning=FAST)):
        wait_until(lambda: committed(kafka) == {0: 3}, 20, "the first commit")
        backlog = ledger.outbox_backlog()
        trail = ledger.trail(first.request_id)
        produce(kafka.bootstrap_servers, kafka.input_topic, [record_of(again)])
        wait_until(lambda: committed(kafka) == {0: 4}, 20, "the second commit")

    assert metric("erasure_requests_total", outcome="accepted") - accepted == 2
    assert metric("erasure_requests_total", outcome="duplicate") - duplicates == 2
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
    errors = metric("erasure_ledger_unavailable_total", loop="ingest")

    with running(Ingest.create(kafka, flaky, Codec(), ENABLED, tuning=FAST)) as ingest:
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
    assert metric("erasure_ledger_unavailable_total", loop="ingest") - errors == flaky.failures


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

    with running(Ingest.create(kafka, stuck, Codec(), ENABLED, tuning=FAST)) as a:
        wait_until(lambda: a.state().held_messages > 0, 20, "A holding a batch")
        with running(Ingest.create(kafka, healthy, Codec(), ENABLED, tuning=FAST)) as b:
            wait_until(lambda: b.state().partitions > 0, 20, "B joining the group")
            wait_until(lambda: a.state().partitions < 4, 20, "A giving partitions up")
            stuck.outage.clear()
            wait_until(lambda: sum(committed(kafka).values()) == 100, 30, "all 100 committed")
        wait_until(lambda: a.state().partitions == 4, 20, "A taking every partition back")
        produce(kafka_bootstrap, kafka.input_topic, [record_of(r) for r in later])
        wait_until(lambda: sum(committed(kafka).values()) == 150, 30, "all 150 committed")

    missing = [r.request_id for r in first + later if ledger.trail(r.request_id) is None]
    assert missing == []
