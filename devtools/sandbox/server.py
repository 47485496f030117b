"""Strict, in-process HTTP sandboxes of vendor APIs: what every vendor sandbox builds on.

Every vendor sandbox (Acoustic, Voyado, Monetate, Acquia CDP) is a real HTTP server on
127.0.0.1, so clients are exercised through their real transport. This module is the
surface a vendor sandbox uses; the parts live by responsibility:

* ``routing``: ``Request``, ``Response``, the ``Router`` and the ``Call`` log entry (no
  headers or bodies: they carry tokens and personal data).
* ``faults``: ``Fault`` and ``FaultQueue``, scripted misbehaviour.
* ``transport``: the threaded HTTP/1.1 server and request handler.
* here: ``Clock`` (the one place sandboxes read time from; durations are real seconds
  chosen by the caller, tests pass tiny ones, nothing patches global time),
  ``SandboxServer`` (lifecycle, call log, connections) and ``Sandbox``, the base class
  each vendor sandbox inherits.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Self

from devtools.sandbox.faults import Fault, FaultKind, FaultQueue
from devtools.sandbox.routing import (
    Call,
    Handler,
    JsonValue,
    Request,
    Response,
    Router,
    json_response,
    parse_json_body,
    parse_media_type,
)
from devtools.sandbox.transport import MAX_BODY_BYTES, ThreadedServer

__all__ = [
    "MAX_BODY_BYTES",
    "Call",
    "Clock",
    "Fault",
    "FaultKind",
    "FaultQueue",
    "Handler",
    "JsonValue",
    "Request",
    "Response",
    "Router",
    "Sandbox",
    "SandboxServer",
    "json_response",
    "parse_json_body",
    "parse_media_type",
]

LOGGER = logging.getLogger(__name__)

#: How often the accept loop checks for shutdown; small so ``stop()`` is quick in tests.
_POLL_INTERVAL_SECONDS = 0.02


class Clock:
    """Real time, read through one object so no sandbox touches global time.

    Sandboxes express every duration as real seconds supplied by their caller;
    tests make them tiny rather than mocking time, so the code under test runs
    exactly as in production.
    """

    def now(self) -> float:
        """Monotonic seconds, for measuring durations (immune to wall-clock jumps)."""
        return time.monotonic()

    def utc_now(self) -> datetime:
        """Timezone-aware wall time, for timestamps that appear in API payloads."""
        return datetime.now(UTC)


class SandboxServer:
    """A threaded HTTP server on 127.0.0.1 (free port) serving one ``Router``."""

    def __init__(self, router: Router, *, clock: Clock | None = None) -> None:
        self.router = router
        self.clock = clock if clock is not None else Clock()
        self.faults = FaultQueue()
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: ThreadedServer | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None
        self.latency_seconds = 0.0

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``; only meaningful while started."""
        if self._base_url is None:
            raise RuntimeError("sandbox server is not started")
        return self._base_url

    def start(self) -> str:
        """Bind a free port, serve in a daemon thread and return the base URL."""
        if self._httpd is not None:
            raise RuntimeError("sandbox server already started")
        self._stopping.clear()
        httpd = ThreadedServer(self)
        port = httpd.server_address[1]
        self._base_url = f"http://127.0.0.1:{port}"
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_SECONDS},
            name=f"sandbox-{port}",
            daemon=True,
        )
        self._thread.start()
        return self._base_url

    def stop(self) -> None:
        """Stop accepting, abort delays and close open keep-alive connections."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()
        self._close_connections()
        self._httpd = None
        self._thread = None
        self._base_url = None

    def _close_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def track(self, connection: socket.socket) -> None:
        """Remember an open client connection (called by the request handler)."""
        with self._lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        """Forget a closed client connection (called by the request handler)."""
        with self._lock:
            self._connections.discard(connection)

    def now(self) -> float:
        """The clock's monotonic seconds, as call logs record them."""
        return self.clock.now()

    def wait(self, seconds: float) -> bool:
        """Sleep for a delay fault, but wake at once when the server stops (then True)."""
        return self._stopping.wait(seconds)

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` has begun: streaming faults end their answers."""
        return self._stopping.is_set()

    def dispatch(self, request: Request) -> Response:
        """Route a request (its rate limits judged as it arrives) and answer it
        ``latency_seconds`` later; an unexpected handler error becomes a bare 500."""
        try:
            response = self.router.dispatch(request)
        except Exception as error:
            LOGGER.error("sandbox handler failed: %s", type(error).__name__)
            response = json_response(500, {"error": "internal_error"})
        if self.latency_seconds > 0:
            self.wait(self.latency_seconds)
        return response

    def record(self, call: Call) -> None:
        """Append to the call log."""
        with self._lock:
            self._calls.append(call)

    def calls(self) -> list[Call]:
        """A copy of the call log, oldest first."""
        with self._lock:
            return list(self._calls)


class Sandbox:
    """Lifecycle, fault injection and call log shared by every vendor sandbox.

    A vendor sandbox subclasses this, builds a ``Router`` of its endpoints and
    passes it up; it then only implements the vendor's behaviour.
    """

    def __init__(self, router: Router, *, clock: Clock | None = None) -> None:
        self._server = SandboxServer(router, clock=clock)

    @property
    def clock(self) -> Clock:
        """The clock the sandbox measures its durations with."""
        return self._server.clock

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` while started; RuntimeError otherwise."""
        return self._server.base_url

    @property
    def calls(self) -> list[Call]:
        """A copy of every request received so far, oldest first."""
        return self._server.calls()

    def start(self) -> str:
        """Start serving and return the base URL."""
        return self._server.start()

    def stop(self) -> None:
        """Stop serving; safe to call twice."""
        self._server.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def set_latency(self, seconds: float) -> None:
        """Answer every call ``seconds`` late, as a vendor in another region does (100 to
        300 ms): throughput tests need calls that take real time."""
        if seconds < 0:
            raise ValueError("latency must not be negative")
        self._server.latency_seconds = seconds

    def inject(self, fault: Fault, *, path_prefix: str = "", times: int = 1) -> None:
        """Make the next ``times`` requests under ``path_prefix`` misbehave as ``fault``."""
        self._server.faults.add(fault, path_prefix=path_prefix, times=times)

    def pending_faults(self) -> int:
        """How many injected fault uses have not been consumed yet."""
        return self._server.faults.pending()

    def faults_served(self) -> int:
        """How many injected fault uses requests have met so far."""
        return self._server.faults.served()

    def faults_injected(self) -> int:
        """How many fault uses were injected so far."""
        return self._server.faults.injected()
