"""Scaffolding for the pipeline-stage tests (ingest, outbox) over the real broker and a real
ledger: the requests they feed, the vendor they enable, a migrated SQLite ledger, an ingest
loop run on a thread or stepped on the test's own, and a ledger whose writes fail on demand.

Every request carries `SECRET` as an email, so a test can check that no identity value
reaches a dead-letter header, a log line or a metric.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr

from consumer.config import KafkaSettings, VendorSettings
from consumer.kafka.codec import encode_request
from consumer.ledger import LedgerUnavailable, open_ledger
from consumer.ledger.records import NewRequest, RecordResult
from consumer.ledger.sqlite import SqliteLedger
from consumer.model import ErasureRequest, Identity, Regulation
from consumer.pipeline.ingest import Ingest, IngestTuning
from consumer.runtime.metrics import REGISTRY
from consumer.vendors.voyado import VoyadoSettings
from tests.support.kafka import committed
from tests.support.waiting import wait_until

# One vendor, taking the customer key: a request plans one item and no SKIPPED scope.
ENABLED: dict[str, VendorSettings] = {
    "voyado": VoyadoSettings(base_url="https://voyado.example", api_key=SecretStr("k"))
}
# Retries fast enough for a test to see several.
FAST_INGEST = IngestTuning(batch_size=500, retry_initial=0.1, retry_max=0.5, delivery_timeout=5.0)
SECRET = "jane.doe@example.com"
REQUESTED_AT = datetime(2024, 5, 1, tzinfo=UTC)


def a_request(request_id: str | None = None, **changes: object) -> ErasureRequest:
    """A valid request (a fresh id unless given) with `changes` to its fields."""
    values: dict[str, object] = {
        "request_id": request_id or str(uuid.uuid4()),
        "requested_at": REQUESTED_AT,
        "regulation": Regulation.GDPR,
        "identities": (Identity("customer_key", "K-1"), Identity("email", SECRET)),
        "vendors": None,
        "source": "crm",
        "trace_id": None,
    }
    values.update(changes)
    return ErasureRequest(**values)  # type: ignore[arg-type]


def record_of(request: ErasureRequest) -> tuple[bytes, bytes]:
    """The (key, value) an upstream producer writes for `request`."""
    return request.request_id.encode(), encode_request(request)


def counter(name: str, **labels: str) -> float:
    """A sample of the worker's registry, 0 while it has none (a counter not yet touched)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def migrated_sqlite(tmp_path: Path) -> str:
    """The URL of a SQLite ledger in `tmp_path`, its tables created."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    ledger.migrate()
    ledger.close()
    return url


class OutageLedger(SqliteLedger):
    """The real SQLite ledger, whose `record_requests` fails while `outage` is set; given
    Kafka settings, it notes the group's committed offsets at each call (to prove that
    nothing was committed before the requests were recorded)."""

    def __init__(self, path: str, kafka: KafkaSettings | None = None, outage: bool = False):
        super().__init__(path)
        self.outage = threading.Event()
        if outage:
            self.outage.set()
        self.failures = 0
        self.committed_at_calls: list[dict[int, int]] = []
        self._kafka = kafka

    def record_requests(self, batch: Sequence[NewRequest], now: datetime) -> RecordResult:
        if self._kafka is not None:
            self.committed_at_calls.append(committed(self._kafka))
        if self.outage.is_set():
            self.failures += 1
            raise LedgerUnavailable("simulated outage")
        return super().record_requests(batch, now)


@contextmanager
def running(ingest: Ingest) -> Iterator[Ingest]:
    """Run the loop on a thread, as the worker does; stop it and re-raise its error at the
    end."""
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


def drive(ingest: Ingest, condition: Callable[[], object], timeout: float, what: str) -> None:
    """Step the ingest loop on this thread until `condition` holds (no thread to race with
    what the test inspects between steps)."""

    def stepped() -> object:
        ingest.poll_once()
        return condition()

    wait_until(stepped, timeout, what, interval=0)


def shut_down(ingest: Ingest) -> None:
    """Stop a stepped loop as the worker does: commit, leave the group, close the producer."""
    ingest.stop()
    ingest.run()
