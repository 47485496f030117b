"""Decoding and encoding with a schema registry (contract §1), against a small registry
speaking the Confluent REST API on loopback."""

from __future__ import annotations

import io
import json
import re
import struct
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import fastavro
import pytest

from consumer.config import KafkaSettings
from consumer.kafka.codec import (
    Codec,
    SchemaUnavailable,
    UndecodableMessage,
    decode_status_event,
    frame,
    load_schema_text,
)
from consumer.ledger import Ledger
from consumer.model import ErasureRequest, Identity, Regulation, Status, StatusEvent
from consumer.pipeline.ingest import Ingest, IngestTuning
from tests.support.kafka import committed, produce
from tests.support.pipeline import drive, shut_down

REQUEST_ID = "0F8FAD5B-D9CB-469F-A165-70867728950E"
WHEN = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


class FakeRegistry:
    """Just enough of the Confluent Schema Registry REST API for `SchemaRegistryClient`:
    GET /schemas/ids/{id} and POST /subjects/{subject}/versions. Tests only."""

    def __init__(self, first_id: int = 1) -> None:
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str]] = []
        self._next_id = first_id
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, schema: str, schema_id: int | None = None) -> int:
        with self._lock:
            for known_id, known in self.schemas.items():
                if known == schema:
                    return known_id
            if schema_id is None:
                schema_id = self._next_id
                self._next_id += 1
            self.schemas[schema_id] = schema
            return schema_id

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each response waits ~40 ms (MEASURED.md)

            def do_GET(self) -> None:
                registry.requests.append(("GET", self.path))
                match = re.fullmatch(r"/schemas/ids/(\d+)(\?.*)?", self.path)
                schema = registry.schemas.get(int(match.group(1))) if match else None
                if schema is None:
                    self._reply(404, {"error_code": 40403, "message": "Schema not found"})
                else:
                    self._reply(200, {"schema": schema})

            def do_POST(self) -> None:
                registry.requests.append(("POST", self.path))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                match = re.fullmatch(r"/subjects/([^/?]+)/versions(\?.*)?", self.path)
                if match is None:
                    self._reply(404, {"error_code": 404, "message": "Not found"})
                    return
                schema_id = registry.add(body["schema"])
                registry.subjects.setdefault(match.group(1), []).append(schema_id)
                self._reply(200, {"id": schema_id})

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    server = FakeRegistry(first_id=314)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def codecs(registry: FakeRegistry) -> Iterator[Callable[..., Codec]]:
    """Makes codecs using the registry (status events for `status_topic`), closed at the end."""
    made: list[Codec] = []

    def make(status_topic: str = "erasure.status.changed") -> Codec:
        settings = KafkaSettings(
            bootstrap_servers="127.0.0.1:9",
            status_topic=status_topic,
            schema_registry_url=registry.url,
        )
        made.append(Codec.from_settings(settings))
        return made[-1]

    yield make
    for codec in made:
        codec.close()


def evolved_writer_schema() -> dict[str, Any]:
    """The request schema as a newer producer might have it: an extra field (before ours)
    and an extra regulation our reader does not know."""
    schema: dict[str, Any] = json.loads(load_schema_text("subject_erasure_requested.avsc"))
    schema["fields"].insert(2, {"name": "channel", "type": "string", "default": "web"})
    regulation = next(f for f in schema["fields"] if f["name"] == "regulation")
    regulation["type"]["symbols"].append("LGPD")
    return schema


def write(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record)
    return buffer.getvalue()


def evolved_record(regulation: str) -> dict[str, Any]:
    return {
        "request_id": REQUEST_ID,
        "requested_at": WHEN,
        "channel": "app",
        "regulation": regulation,
        "identities": [{"type": "email", "value": "jane@example.com"}],
        "vendors": ["voyado"],
        "source": "crm",
        "trace_id": "t-1",
    }


def expected(regulation: Regulation) -> ErasureRequest:
    return ErasureRequest(
        request_id=REQUEST_ID,
        requested_at=WHEN,
        regulation=regulation,
        identities=(Identity("email", "jane@example.com"),),
        vendors=("voyado",),
        source="crm",
        trace_id="t-1",
    )


def test_writer_schema_is_fetched_by_id_and_resolved_against_ours(
    registry: FakeRegistry, codecs: Callable[..., Codec]
) -> None:
    writer = evolved_writer_schema()
    registry.add(json.dumps(writer), schema_id=42)
    codec = codecs()

    gdpr = codec.decode_request(frame(42, write(writer, evolved_record("GDPR"))))
    lgpd = codec.decode_request(frame(42, write(writer, evolved_record("LGPD"))))
    for _ in range(100):
        codec.decode_request(frame(42, write(writer, evolved_record("CCPA"))))

    assert gdpr == expected(Regulation.GDPR)
    assert lgpd == expected(Regulation.OTHER)  # unknown symbol: the reader's enum default
    assert [r for r in registry.requests if r[0] == "GET"] == [("GET", "/schemas/ids/42")]


def test_a_writer_schema_equal_to_ours_decodes_too(
    registry: FakeRegistry, codecs: Callable[..., Codec]
) -> None:
    ours = json.loads(load_schema_text("subject_erasure_requested.avsc"))
    registry.add(json.dumps(ours), schema_id=7)
    record = evolved_record("CCPA")
    del record["channel"]
    request = codecs().decode_request(frame(7, write(ours, record)))
    assert request == expected(Regulation.CCPA)


def test_an_id_unknown_to_the_registry_is_undecodable(codecs: Callable[..., Codec]) -> None:
    with pytest.raises(UndecodableMessage, match="schema id 99"):
        codecs().decode_request(frame(99, b"\x00"))


def test_an_unreachable_registry_is_unavailable_not_undecodable(registry: FakeRegistry) -> None:
    with warnings.catch_warnings(record=True):  # authlib warns about itself on import
        from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: PLC0415
    client = SchemaRegistryClient({"url": registry.url, "max.retries": 0})  # fail at once
    codec = Codec(client, status_subject="s-value")
    registry.stop()
    try:
        with pytest.raises(SchemaUnavailable):
            codec.decode_request(frame(42, b"\x00"))
        with pytest.raises(SchemaUnavailable):
            codec.encode_status_event(a_status_event())
    finally:
        codec.close()


def a_status_event() -> StatusEvent:
    return StatusEvent(
        event_id=str(uuid.uuid4()),
        request_id=REQUEST_ID,
        vendor=None,
        status=Status.RECEIVED,
        previous_status=None,
        vendor_job_id=None,
        changed_at=WHEN,
        detail=None,
    )


def test_status_events_are_registered_under_the_topic_subject_and_carry_its_id(
    registry: FakeRegistry, codecs: Callable[..., Codec]
) -> None:
    codec = codecs(status_topic="status.test")
    events = [a_status_event() for _ in range(3)]

    values = [codec.encode_status_event(event) for event in events]

    assert registry.subjects == {"status.test-value": [314]}
    assert json.loads(registry.schemas[314]) == json.loads(
        load_schema_text("erasure_status_changed.avsc")
    )
    assert all(value[:5] == b"\x00" + struct.pack(">I", 314) for value in values)
    assert [decode_status_event(value) for value in values] == events
    assert [method for method, _ in registry.requests] == ["POST"]


def test_ingest_decodes_registry_framed_requests_from_kafka(
    registry: FakeRegistry, kafka: KafkaSettings, ledger: Ledger
) -> None:
    writer = evolved_writer_schema()
    registry.add(json.dumps(writer), schema_id=42)
    settings = kafka.model_copy(update={"schema_registry_url": registry.url})
    value = frame(42, write(writer, evolved_record("GDPR")))
    produce(settings.bootstrap_servers, settings.input_topic, [(REQUEST_ID.encode(), value)])
    codec = Codec.from_settings(settings)
    ingest = Ingest.create(settings, ledger, codec, {}, tuning=IngestTuning())
    try:
        drive(ingest, lambda: committed(settings) == {0: 1}, 20, "the request recorded")
    finally:
        shut_down(ingest)
        codec.close()
    trail = ledger.trail(REQUEST_ID)
    assert trail is not None
    assert trail.regulation is Regulation.GDPR
