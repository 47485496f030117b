"""The outbox publisher over a real broker (Tansu) and the real SQLite ledger."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import confluent_kafka
import pytest
from confluent_kafka import KafkaError

from consumer.config import KafkaSettings
from consumer.kafka.client import (
    Config,
    DeliveryCallback,
    Producer,
    ProducerClient,
    producer_config,
)
from consumer.kafka.codec import Codec, decode_status_event
from consumer.ledger import Ledger
from consumer.ledger.records import Change, ItemUpdate
from consumer.model import ErasureRequest, Status, StatusEvent
from consumer.pipeline.fanout import plan_request
from consumer.pipeline.outbox import OutboxPublisher, OutboxTuning, PublishFailed
from consumer.runtime.metrics import REGISTRY
from tests.support.kafka import read_all
from tests.support.pipeline import ENABLED, REQUESTED_AT, a_request, counter
from tests.support.waiting import wait_until

TUNING = OutboxTuning(lease_seconds=5.0, delivery_timeout=3.0, retry_initial=0.05, retry_max=0.2)


def record(ledger: Ledger, *requests: ErasureRequest) -> None:
    ledger.record_requests([plan_request(r, ENABLED) for r in requests], datetime.now(UTC))


def same_event(published: StatusEvent, recorded: StatusEvent) -> bool:
    """Equal, but for changed_at travelling as Avro timestamp-millis."""
    changed_at = recorded.changed_at
    truncated = changed_at.replace(microsecond=changed_at.microsecond // 1000 * 1000)
    return published == dataclasses.replace(recorded, changed_at=truncated)


def a_publisher(
    kafka: KafkaSettings, ledger: Ledger, owner: str, tuning: OutboxTuning = TUNING
) -> OutboxPublisher:
    return OutboxPublisher.create(kafka, ledger, Codec(), owner=owner, tuning=tuning)


def published(kafka: KafkaSettings, count: int) -> list[confluent_kafka.Message]:
    return read_all(kafka.bootstrap_servers, kafka.status_topic, count)


def test_events_are_published_in_order_keyed_by_request_id(
    kafka: KafkaSettings, ledger: Ledger, open_ledgers: Callable[[], Ledger]
) -> None:
    record(ledger, *(a_request(vendors=("voyado", "mailchimp")) for _ in range(5)))
    expected = ledger.pending_events(1000)
    assert len(expected) == 15  # RECEIVED, voyado QUEUED, mailchimp SKIPPED
    statuses = ("RECEIVED", "QUEUED", "SKIPPED")
    counts = {s: counter("erasure_status_events_total", status=s) for s in statuses}
    publisher = a_publisher(kafka, open_ledgers(), "only")

    assert publisher.publish_once() == TUNING.idle_wait
    assert ledger.outbox_backlog() == 0
    assert counter("erasure_outbox_backlog") == 0

    messages = published(kafka, len(expected))
    events = [decode_status_event(m.value() or b"") for m in messages]
    assert [m.key() for m in messages] == [e.event.request_id.encode() for e in expected]
    assert all(same_event(got, want.event) for got, want in zip(events, expected, strict=True))
    assert len({e.event_id for e in events}) == len(events)
    for status, before in counts.items():
        assert counter("erasure_status_events_total", status=status) - before == 5


def test_completion_time_is_observed_for_finished_vendor_scopes(
    kafka: KafkaSettings, ledger: Ledger, open_ledgers: Callable[[], Ledger]
) -> None:
    record(ledger, a_request(vendors=("voyado", "mailchimp")))
    now = datetime.now(UTC)
    (item,) = ledger.claim_items("voyado", now, 10, "test", now + timedelta(minutes=1))
    ledger.apply(Change(items=(ItemUpdate(item.item_id, Status.COMPLETED),)), now)
    finished = counter("erasure_completion_seconds_count", vendor="voyado")
    total = counter("erasure_completion_seconds_sum", vendor="voyado")

    a_publisher(kafka, open_ledgers(), "only").publish_once()

    assert counter("erasure_completion_seconds_count", vendor="voyado") - finished == 1
    elapsed = counter("erasure_completion_seconds_sum", vendor="voyado") - total
    assert elapsed == pytest.approx((now - REQUESTED_AT).total_seconds(), abs=60)
    skipped = REGISTRY.get_sample_value("erasure_completion_seconds_count", {"vendor": "mailchimp"})
    assert skipped is None


def test_only_the_lease_holder_publishes_until_its_lease_expires(
    kafka: KafkaSettings, ledger: Ledger, open_ledgers: Callable[[], Ledger]
) -> None:
    leader = a_publisher(kafka, open_ledgers(), "leader")
    standby = a_publisher(kafka, open_ledgers(), "standby")
    successor = a_publisher(kafka, open_ledgers(), "successor")
    record(ledger, a_request())

    leader.publish_once()
    assert leader.is_leader
    assert ledger.outbox_backlog() == 0
    record(ledger, a_request())
    assert standby.publish_once() == TUNING.standby_wait
    assert not standby.is_leader
    assert ledger.outbox_backlog() == 2

    # The lease runs on the ledger's clock: no replica's clock can end it early.
    wait_until(
        lambda: successor.publish_once() != TUNING.standby_wait,
        TUNING.lease_seconds + 5,
        "the leader's lease to run out",
        interval=0.2,
    )
    assert successor.is_leader
    assert ledger.outbox_backlog() == 0
    assert leader.publish_once() == TUNING.standby_wait
    assert not leader.is_leader

    events = [decode_status_event(m.value() or b"") for m in published(kafka, 4)]
    assert len({e.event_id for e in events}) == 4
    assert_nothing_after(kafka, 4)


def assert_nothing_after(kafka: KafkaSettings, count: int) -> None:
    """No record beyond the first `count` arrives within a second (no duplicates sent)."""
    with pytest.raises(AssertionError, match=f"read {count} of {count + 1}"):
        read_all(kafka.bootstrap_servers, kafka.status_topic, count + 1, timeout=1.0)


def test_two_running_publishers_never_both_publish(
    kafka: KafkaSettings, ledger: Ledger, open_ledgers: Callable[[], Ledger]
) -> None:
    tuning = OutboxTuning(
        batch_size=7, lease_seconds=5.0, delivery_timeout=3.0, idle_wait=0.05, standby_wait=0.05
    )
    publishers = [a_publisher(kafka, open_ledgers(), owner, tuning=tuning) for owner in "ab"]
    for publisher in publishers:
        publisher.start()
    try:
        for _ in range(10):
            record(ledger, a_request())
            for publisher in publishers:
                publisher.notify()
        wait_until(lambda: ledger.outbox_backlog() == 0, 20, "an empty outbox")
        assert sum(p.is_leader for p in publishers) == 1
    finally:
        for publisher in publishers:
            publisher.stop(10)
    assert not any(p.alive() for p in publishers)
    events = [decode_status_event(m.value() or b"") for m in published(kafka, 20)]
    assert len({e.event_id for e in events}) == 20
    assert_nothing_after(kafka, 20)


class FatalOnFlush:
    """Stands in for a librdkafka producer that hit a fatal error: it delivers nothing and
    reports `_FATAL` through the error callback and every delivery report."""

    def __init__(self, config: Config) -> None:
        self._error_cb: Callable[[KafkaError], None] = config["error_cb"]
        self._reports: list[DeliveryCallback] = []

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        on_delivery: DeliveryCallback | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        if on_delivery is not None:
            self._reports.append(on_delivery)

    def poll(self, timeout: float = -1) -> int:
        return 0

    def flush(self, timeout: float = -1) -> int:
        error = KafkaError(KafkaError._FATAL, "simulated UNKNOWN_PRODUCER_ID", fatal=True)
        self._error_cb(error)
        for report in self._reports:
            report(error, confluent_kafka.Message())
        self._reports = []
        return 0

    def purge(self) -> None:
        self._reports = []


def test_the_producer_is_recreated_after_a_fatal_error(
    kafka: KafkaSettings, ledger: Ledger
) -> None:
    record(ledger, a_request(), a_request())
    created: list[ProducerClient] = []

    def factory(config: Config) -> ProducerClient:
        producer = FatalOnFlush(config) if not created else confluent_kafka.Producer(config)
        created.append(producer)
        return producer

    producer = Producer(producer_config(kafka), factory=factory)
    publisher = OutboxPublisher(
        ledger, producer, Codec(), kafka.status_topic, owner="only", tuning=TUNING
    )

    with pytest.raises(PublishFailed, match="_FATAL"):
        publisher.publish_once()
    assert ledger.outbox_backlog() == 4, "nothing unconfirmed may be marked published"
    assert len(created) == 1

    publisher.publish_once()
    assert len(created) == 2
    assert ledger.outbox_backlog() == 0
    assert len(published(kafka, 4)) == 4


def test_notify_wakes_an_idle_publisher_and_stop_flushes(
    kafka: KafkaSettings, ledger: Ledger, open_ledgers: Callable[[], Ledger]
) -> None:
    idle = OutboxTuning(idle_wait=60.0, lease_seconds=5.0, delivery_timeout=3.0)
    publisher = a_publisher(kafka, open_ledgers(), "only", tuning=idle)
    publisher.start()
    try:
        wait_until(lambda: publisher.last_cycle is not None, 10, "a first, empty cycle")
        record(ledger, a_request())
        publisher.notify()
        wait_until(lambda: ledger.outbox_backlog() == 0, 10, "publishing well before idle_wait")
    finally:
        publisher.stop(10)
    assert not publisher.alive()
    assert len(published(kafka, 2)) == 2
