"""JSON-lines logs: the fields collectors index, context fields when known, nothing else."""

from __future__ import annotations

import json
import logging
import sys

from consumer.runtime.logs import JsonFormatter


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    log_record = logging.LogRecord(
        "consumer.pipeline.dispatch", logging.WARNING, __file__, 1, message, args, None
    )
    for name, value in extra.items():
        setattr(log_record, name, value)
    return log_record


def test_one_json_object_per_line_with_the_standard_fields() -> None:
    line = JsonFormatter().format(record("%s submission failed", "acoustic"))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "consumer.pipeline.dispatch"
    assert entry["message"] == "acoustic submission failed"
    assert entry["timestamp"].endswith("+00:00")
    assert "vendor" not in entry and "request_id" not in entry


def test_vendor_and_request_id_travel_as_fields() -> None:
    adapter_record = record("batch rejected", vendor="voyado", request_id="r-1")
    entry = json.loads(JsonFormatter().format(adapter_record))
    assert entry["vendor"] == "voyado" and entry["request_id"] == "r-1"


def test_exceptions_stay_inside_the_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log_record = record("failed")
        log_record.exc_info = sys.exc_info()
    line = JsonFormatter().format(log_record)
    assert "\n" not in line
    assert "RuntimeError: boom" in json.loads(line)["exception"]
