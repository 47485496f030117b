"""JSON-lines logging to stdout, the shape log collectors on Kubernetes expect.

`request_id` and `vendor` travel as `extra` fields so an operator can follow one request
across loops; identity values never do (contract §3). Secrets never do either: libraries
that log request URLs are held at WARNING, and every line still passes through
`redact_text`, so a URL with credentials that slips into a message or a traceback from any
library is masked rather than shipped to the log collector.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from consumer.redaction import redact_text

_CONTEXT_FIELDS = ("request_id", "vendor")
# Loggers that write whole request URLs below WARNING: urllib3 (vendor calls; a URL can
# carry an identifier such as a customerKey) and httpx/httpcore (the schema registry client,
# whose URL carries its basic-auth credentials: httpx logs every request at INFO).
_URL_LOGGERS = ("urllib3", "httpx", "httpcore")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _URL_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
