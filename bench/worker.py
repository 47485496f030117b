"""The worker side: the real `Ingest` loop (real Codec, fan-out, ledger backend and DLQ
producer), driven with `poll_once()` until the group's commits cover every event.

The only addition is `_ObservedConsumer`, a subclass of the worker's own `Consumer` that
notes when the first batch arrived and what was committed, so the clock stops exactly at
the commit that covered the last event without asking the broker (a round trip per loop
would be charged to the worker). Everything else is what `Ingest.create` builds.

Run by `bench.ingest` as `python -m bench.worker JOB_JSON`.
"""

from __future__ import annotations

import cProfile
import logging
import time
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from bench.common import (
    DATABASE_ID,
    IDENTITY_TYPE,
    Deadline,
    Job,
    Result,
    child_main,
    memory_mib,
    reached,
)
from bench.cpu_time import backend_cpu_seconds
from consumer.config import KafkaSettings, VendorSettings
from consumer.kafka.client import (
    Consumer,
    Message,
    Partition,
    Producer,
    consumer_config,
    producer_config,
)
from consumer.kafka.codec import Codec
from consumer.ledger import open_ledger
from consumer.pipeline.ingest import Ingest
from consumer.vendors.acoustic import AcousticSettings


class _ObservedConsumer(Consumer):
    """The worker's consumer, noting the first non-empty batch and every successful commit."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.first_batch_at: float | None = None
        self.first_batch_cpu = 0.0
        self.batches = 0
        self.committed: dict[int, int] = {}

    def consume(self, max_messages: int, timeout: float) -> list[Message]:
        messages = super().consume(max_messages, timeout)
        if messages:
            self.batches += 1
            if self.first_batch_at is None:
                self.first_batch_at = time.perf_counter()
                self.first_batch_cpu = time.process_time()
        return messages

    def commit(self, positions: Mapping[Partition, int]) -> None:
        super().commit(positions)
        for partition, position in positions.items():
            self.committed[partition.partition] = position


def enabled_vendors() -> dict[str, VendorSettings]:
    """Acoustic with one database and EMAIL -> email, so every email becomes one item. Its
    loopback URL is never called: ingest only plans the fan-out."""
    return {
        "acoustic": AcousticSettings(
            base_url="http://127.0.0.1:9",
            client_id="bench",
            client_secret=SecretStr("bench"),
            refresh_token=SecretStr("bench"),
            database_ids=(DATABASE_ID,),
            lookup_fields={"EMAIL": IDENTITY_TYPE},
        )
    }


def _drop_config_warnings(record: logging.LogRecord) -> bool:
    """The group settings in `kafka.config` also reach the DLQ producer, whose librdkafka
    warns once that they are consumer properties: noise for every run, not a finding."""
    return "CONFWARN" not in record.getMessage()


def measure(job: Job) -> Result:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("consumer.kafka.client.librdkafka").addFilter(_drop_config_warnings)
    kafka = KafkaSettings(
        bootstrap_servers=job.bootstrap,
        group_id=job.group_id,
        input_topic=job.input_topic,
        status_topic=job.status_topic,
        dlq_topic=job.dlq_topic,
        config=job.kafka_config,
    )
    consumer = _ObservedConsumer(consumer_config(kafka))
    ledger = open_ledger(job.ledger_url)
    ingest = Ingest(  # what Ingest.create builds, with the observed consumer
        consumer,
        Producer(producer_config(kafka)),
        ledger,
        Codec.from_settings(kafka),
        enabled_vendors(),
        input_topic=kafka.input_topic,
        dlq_topic=kafka.dlq_topic,
    )
    rss_before = memory_mib("VmRSS")
    deadline = Deadline(job.timeout, "worker ingest")
    profiler = cProfile.Profile() if job.profile_path else None
    if profiler is not None:
        profiler.enable()
    while not reached(consumer.committed, job.targets):
        deadline.check()
        ingest.poll_once()
    finished, cpu_finished = time.perf_counter(), time.process_time()
    if profiler is not None and job.profile_path is not None:
        profiler.disable()
        profiler.dump_stats(job.profile_path)
    assert consumer.first_batch_at is not None
    server_cpu = backend_cpu_seconds(job.ledger_url)
    ingest.stop()
    ingest.run()  # returns at once after stop(): commits what is left, closes both clients
    ledger.close()
    return Result(
        events=job.events,
        seconds=finished - consumer.first_batch_at,
        cpu_seconds=cpu_finished - consumer.first_batch_cpu,
        batches=consumer.batches,
        rss_before_mib=rss_before,
        peak_rss_mib=memory_mib("VmHWM"),
        server_cpu_seconds=server_cpu,
    )


if __name__ == "__main__":
    child_main(measure)
