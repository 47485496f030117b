"""The Kafka seam never jams (issue 7 items 1, 3 and 4, and rows the ledger refuses).

- A broker restart strands the idempotent producer (Tansu forgets its producer id and
  librdkafka retries UNKNOWN_PRODUCER_ID without end): the producer is rebuilt, and a
  running worker publishes every status event again, with /readyz telling the truth.
- A dead letter over 1,000,000 bytes is delivered whole where the broker takes it, and as
  a pointer (no value, `error.value_omitted: true`) where it is refused; the messages
  behind it are recorded either way.
- A worker that holds a batch exports its `erasure_consumer_lag` series from the start.
- A request the ledger refuses is dead-lettered as `invalid_request`; the rest is recorded.
- A status event Kafka refuses is given up on, counted, and the events behind it go out.

Everything is real: Tansu (a private one where a test restarts it), both ledgers, the
Acoustic sandbox, `erasure-worker run` as a process. Tansu enforces no message size limit
of its own, so where Kafka must refuse a size the producer gets a 1,000,000-byte
`message.max.bytes` (librdkafka's default), which refuses exactly as a broker limit would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import confluent_kafka
import pytest

from consumer.config import KafkaSettings
from consumer.kafka.client import (
    Consumer,
    OutgoingMessage,
    Producer,
    consumer_config,
    create_topics,
    producer_config,
)
from consumer.kafka.codec import (
    Codec,
    CodecError,
    UndecodableMessage,
    decode_status_event,
)
from consumer.ledger import Ledger, open_ledger
from consumer.ledger.deadlines import DEFAULT_DEADLINES
from consumer.ledger.postgres import PostgresLedger
from consumer.ledger.records import NewRequest, RecordResult
from consumer.model import ErasureRequest, Status
from consumer.pipeline.fanout import plan_request
from consumer.pipeline.ingest import LEDGER_REFUSED, Ingest
from consumer.pipeline.outbox import OutboxPublisher, OutboxTuning
from consumer.runtime.metrics import REGISTRY
from devtools import devstack
from devtools.broker import DevBroker, start_broker
from tests.support import pg
from tests.support.contract import TERMINAL, deduplicated, invariant_violations
from tests.support.http import http_status
from tests.support.kafka import committed, kafka_settings, produce, read_all
from tests.support.pipeline import (
    ENABLED,
    FAST_INGEST,
    SECRET,
    OutageLedger,
    a_request,
    counter,
    drive,
    record_of,
    shut_down,
)
from tests.support.topics import StatusReader, as_record
from tests.support.waiting import wait_until
from tests.support.worker import wait_ready, worker_stack

OUTBOX_TUNING = OutboxTuning(lease_seconds=5.0, delivery_timeout=3.0)
KAFKA_DEFAULT_LIMIT = 1_000_000
OVERSIZE = 1_200_000


def produce_large(bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
    """Produce records of any size, in order, to partition 0 (an upstream producer whose
    broker takes large messages)."""
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "message.max.bytes": 2 * OVERSIZE}
    )
    for key, value in records:
        producer.produce(topic, value, key, 0)
    assert producer.flush(10) == 0, "test records not delivered"


@pytest.fixture
def private_broker() -> Iterator[DevBroker]:
    """A Tansu of this test's own, which it may kill and restart (empty) at will."""
    with start_broker() as broker:
        yield broker


# --------------------------------------------------------------------------- item 1


def test_a_producer_stranded_by_a_broker_restart_is_rebuilt(private_broker: DevBroker) -> None:
    kafka = kafka_settings(private_broker.bootstrap_servers)
    producer = Producer(producer_config(kafka), role="restart-test")
    batch = [OutgoingMessage(kafka.status_topic, f"k{i}".encode(), b"v") for i in range(3)]
    assert producer.deliver(batch, 5.0) == [None] * 3

    private_broker.restart()  # empty: topics, groups and producer ids are gone
    create_topics({"bootstrap.servers": private_broker.bootstrap_servers}, [kafka.status_topic], 1)
    wait_until(
        lambda: producer.deliver(batch, 2.0) == [None] * 3, 20, "deliveries after the restart"
    )

    rebuilds = sum(
        counter("erasure_kafka_producer_rebuilds_total", producer="restart-test", reason=reason)
        for reason in ("fatal", "unconfirmed")
    )
    assert rebuilds >= 1, "the stranded producer recovered without being rebuilt?"
    assert len(read_all(private_broker.bootstrap_servers, kafka.status_topic, 3)) == 3
    assert producer.close(5.0) == 0


@pytest.mark.slow
def test_a_broker_restart_under_a_running_worker_loses_nothing(
    tmp_path: Path, private_broker: DevBroker
) -> None:
    bootstrap = private_broker.bootstrap_servers
    with worker_stack(tmp_path, bootstrap, requests=6, job_seconds=0.4) as stack:
        before, after = stack.requests[:3], stack.requests[3:]
        worker = stack.start_worker()
        wait_ready(stack, worker)
        ledger = open_ledger(stack.ledger_url)
        try:
            devstack.produce_requests(stack.kafka, before)
            # Their RECEIVED events are out: the outbox producer has a producer id and
            # sequence numbers the broker is about to forget; their ends are still to come.
            wait_until(
                lambda: (
                    all(ledger.trail(r.request_id) for r in before) and ledger.outbox_backlog() == 0
                ),
                20,
                "the first requests recorded and announced",
            )
            private_broker.stop()
            wait_until(lambda: http_status(stack.http_port, "/readyz") == 503, 10, "/readyz 503")
            assert http_status(stack.http_port, "/healthz") == 200, "the worker itself is fine"

            private_broker.restart()
            devstack.create_worker_topics(bootstrap, stack.topics)
            wait_ready(stack, worker)
            devstack.produce_requests(stack.kafka, after)
            wait_until(
                lambda: all_terminal(ledger, stack.requests) and ledger.outbox_backlog() == 0,
                40,
                "every request terminal and the outbox empty",
            )
        finally:
            ledger.close()
        with StatusReader(bootstrap, stack.topics.status) as reader:
            reader.read_to_end(bootstrap)
            records, problems = deduplicated(reader.status_records())
        after_ids = {r.request_id for r in after}
        announced = [r for r in records if r.event.request_id in after_ids]
        assert not problems
        assert invariant_violations(announced) == []
        finished = {
            r.event.request_id
            for r in announced
            if r.event.vendor is None and r.event.status in TERMINAL
        }
        assert finished == after_ids, "the requests sent after the restart were all announced"
        assert worker.poll() is None


def all_terminal(ledger: Ledger, requests: Sequence[ErasureRequest]) -> bool:
    trails = [ledger.trail(r.request_id) for r in requests]
    return all(trail is not None and trail.status.is_terminal for trail in trails)


# --------------------------------------------------------------------------- item 3


def test_a_dead_letter_over_a_megabyte_is_delivered_whole(
    kafka: KafkaSettings, ledger: Ledger
) -> None:
    """The dead-letter producer takes what the consumer can fetch, not just 1 MB."""
    oversize = b"\x01" * OVERSIZE  # not a request at all
    request = a_request()
    produce_large(
        kafka.bootstrap_servers, kafka.input_topic, [(b"big", oversize), record_of(request)]
    )
    ingest = Ingest.create(kafka, ledger, Codec(), ENABLED, tuning=FAST_INGEST)
    try:
        drive(ingest, lambda: committed(kafka) == {0: 2}, 20, "both messages taken")
    finally:
        shut_down(ingest)
    (letter,) = read_all(kafka.bootstrap_servers, kafka.dlq_topic, 1)
    assert (letter.key(), letter.value()) == (b"big", oversize)
    assert "error.value_omitted" not in as_record(letter).headers


def test_an_oversize_dead_letter_goes_as_a_pointer_and_the_rest_is_recorded(
    kafka: KafkaSettings, ledger: Ledger
) -> None:
    first, last = a_request(), a_request()
    oversize = b"\x01" * OVERSIZE
    with pytest.raises(CodecError) as rejected:
        Codec().decode_request(oversize)
    produce_large(
        kafka.bootstrap_servers,
        kafka.input_topic,
        [record_of(first), (b"too-big", oversize), record_of(last)],
    )
    # Refuses what a broker with the default limit refuses (Tansu has no limit).
    refusing = Producer({**producer_config(kafka), "message.max.bytes": KAFKA_DEFAULT_LIMIT})
    ingest = Ingest(
        Consumer(consumer_config(kafka)),
        refusing,
        ledger,
        Codec(),
        ENABLED,
        input_topic=kafka.input_topic,
        dlq_topic=kafka.dlq_topic,
        tuning=FAST_INGEST,
    )
    try:
        drive(ingest, lambda: committed(kafka) == {0: 3}, 20, "all three messages taken")
        assert ingest.state().held_messages == 0
    finally:
        shut_down(ingest)
    assert ledger.trail(first.request_id) is not None
    assert ledger.trail(last.request_id) is not None
    (letter,) = read_all(kafka.bootstrap_servers, kafka.dlq_topic, 1)
    headers = as_record(letter).headers
    assert (letter.key(), letter.value()) == (b"too-big", None)
    assert headers["error.value_omitted"] == b"true"
    undecodable = isinstance(rejected.value, UndecodableMessage)
    assert headers["error.reason"] == (b"undecodable" if undecodable else b"invalid_request")
    source = (kafka.input_topic.encode(), b"0", b"1")
    assert (
        headers["source.topic"],
        headers["source.partition"],
        headers["source.offset"],
    ) == source
    message = headers["error.message"].decode()
    assert message.startswith(f"{rejected.value}; ")
    assert f"value of {OVERSIZE} bytes was too large for the dead-letter topic" in message
    assert f"still at {kafka.input_topic}/0/1" in message


def test_a_restarted_worker_exports_its_lag_while_it_holds_a_batch(
    kafka: KafkaSettings, ledger_url: str, ledger: Ledger
) -> None:
    series = {"topic": kafka.input_topic, "partition": "0"}
    produce(kafka.bootstrap_servers, kafka.input_topic, [record_of(a_request()) for _ in range(2)])
    ingest = Ingest.create(kafka, ledger, Codec(), ENABLED, tuning=FAST_INGEST)
    try:
        drive(ingest, lambda: committed(kafka) == {0: 2}, 20, "the first run's commit")
    finally:
        shut_down(ingest)
    assert REGISTRY.get_sample_value("erasure_consumer_lag", series) is None

    produce(kafka.bootstrap_servers, kafka.input_topic, [record_of(a_request()) for _ in range(3)])
    outage = OutageLedger(ledger_url.removeprefix("sqlite:///"), outage=True)
    restarted = Ingest.create(kafka, outage, Codec(), ENABLED, tuning=FAST_INGEST)
    try:
        drive(
            restarted,
            lambda: (
                restarted.state().held_messages == 3
                and REGISTRY.get_sample_value("erasure_consumer_lag", series) == 3
            ),
            20,
            "the held batch's lag exported",
        )
        assert committed(kafka) == {0: 2}
    finally:
        shut_down(restarted)
        outage.close()


# --------------------------------------------------------------------------- ledger refusals


class NulSourceLedger(PostgresLedger):
    """The real PostgreSQL ledger, handed a NUL in `source` for the requests in `refused`,
    which PostgreSQL cannot store. (The codec now dead-letters such messages itself; this
    drives the ledger's own refusal, the line of defence for what the codec lets pass.)"""

    def __init__(self, url: str, refused: set[str]) -> None:
        super().__init__(url)
        self.refused = refused
        self.calls = 0

    def record_requests(self, batch: Sequence[NewRequest], now: datetime) -> RecordResult:
        self.calls += 1
        return super().record_requests([self._spoiled(plan) for plan in batch], now)

    def _spoiled(self, plan: NewRequest) -> NewRequest:
        if plan.request.request_id not in self.refused:
            return plan
        return dataclasses.replace(plan, request=dataclasses.replace(plan.request, source="c\x00"))


def test_a_request_the_ledger_refuses_is_dead_lettered_and_the_rest_recorded(
    kafka: KafkaSettings, postgres_dsn: str
) -> None:
    requests = [a_request() for _ in range(5)]
    refused = requests[2]
    positions = produce(
        kafka.bootstrap_servers, kafka.input_topic, [record_of(r) for r in requests]
    )
    accepted = counter("erasure_requests_total", outcome="accepted")
    with pg.fresh_database(postgres_dsn) as dsn:
        ledger = NulSourceLedger(dsn, {refused.request_id})
        ledger.migrate()
        ingest = Ingest.create(kafka, ledger, Codec(), ENABLED, tuning=FAST_INGEST)
        try:
            drive(ingest, lambda: committed(kafka) == {0: 5}, 20, "the batch taken")
            recorded = [r for r in requests if ledger.trail(r.request_id) is not None]
        finally:
            shut_down(ingest)
            ledger.close()
    assert recorded == [r for r in requests if r is not refused]
    assert counter("erasure_requests_total", outcome="accepted") == accepted + 4
    assert ledger.calls <= 7, "bisecting 5 requests takes at most 7 transactions"
    (letter,) = read_all(kafka.bootstrap_servers, kafka.dlq_topic, 1)
    headers = as_record(letter).headers
    assert (letter.key(), letter.value()) == record_of(refused)
    assert headers["error.reason"] == b"invalid_request"
    assert headers["error.message"] == LEDGER_REFUSED.encode()
    assert headers["source.offset"] == str(positions[2][1]).encode()
    assert not any(SECRET.encode() in value for value in headers.values())


# --------------------------------------------------------------------------- item 4


def test_an_undeliverable_status_event_does_not_hold_back_the_rest(
    kafka: KafkaSettings, ledger: Ledger
) -> None:
    # A request naming a 3,000-character vendor (the codec refuses such names now; the
    # outbox must not rely on that): its SKIPPED event names the vendor and is too large.
    huge = a_request(vendors=("v" * 3000,))
    wordy_request = a_request()
    wordy = NewRequest(
        wordy_request,
        items=(),
        skipped=(("braze", "why " * 2000),),
        due_at=DEFAULT_DEADLINES.due_date(wordy_request.regulation, wordy_request.requested_at),
    )
    plans = [plan_request(a_request(), ENABLED), plan_request(huge, ENABLED), wordy]
    plans.append(plan_request(a_request(), ENABLED))
    ledger.record_requests(plans, datetime.now(UTC))
    events = ledger.pending_events(100)
    undeliverable = [e.event for e in events if e.event.vendor == "v" * 3000]
    assert len(undeliverable) == 1
    refused = counter("erasure_outbox_undeliverable_total", reason="MSG_SIZE_TOO_LARGE")
    # librdkafka's smallest limit, so that a 3,000-byte event is refused and the rest fit.
    producer = Producer({**producer_config(kafka), "message.max.bytes": 2000})
    publisher = OutboxPublisher(
        ledger, producer, Codec(), kafka.status_topic, owner="only", tuning=OUTBOX_TUNING
    )
    try:
        publisher.publish_once()
        assert ledger.outbox_backlog() == 0
    finally:
        producer.close(5.0)
    assert counter("erasure_outbox_undeliverable_total", reason="MSG_SIZE_TOO_LARGE") == refused + 1
    published = [
        decode_status_event(m.value() or b"")
        for m in read_all(kafka.bootstrap_servers, kafka.status_topic, len(events) - 1)
    ]
    assert [e.event_id for e in published] == [
        e.event.event_id for e in events if e.event not in undeliverable
    ]
    capped = next(e for e in published if e.vendor == "braze")
    assert capped.status is Status.SKIPPED
    assert capped.detail is not None and len(capped.detail) == 1000
