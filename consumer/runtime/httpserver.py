"""`/metrics`, `/healthz` and `/readyz` (contract §6) on a small threaded WSGI server.

Health and readiness are callables returning (ok, details) so the server knows nothing
about the loops it reports on; details are JSON so `kubectl port-forward` + curl tells an
operator why a pod is not ready.

The kubelet restarts a pod whose `/healthz` stops answering, so no client may stall the
server: each connection gets its own daemon thread (at most `MAX_CONNECTIONS`; more are
closed at once rather than queued behind the others) and a socket timeout, so an idle
connection, or one that stops mid-request, is dropped after `SOCKET_TIMEOUT_SECONDS` of
silence while the other threads answer. Each probe runs one call at a time, on a daemon
thread, and answers 503 when it takes longer than `PROBE_TIMEOUT_SECONDS`: a probe may hold
objects (the readiness probe's ledger connection) that two threads must not use at once,
and a stuck probe must not hang every request that asks for it.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import make_wsgi_app

from consumer.runtime.metrics import REGISTRY

Probe = Callable[[], tuple[bool, dict[str, Any]]]
StartResponse = Callable[..., Any]

MAX_CONNECTIONS = 32
SOCKET_TIMEOUT_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 3.0

log = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    """Scrapes and probes every few seconds would drown the worker's own logs. `timeout`
    makes every read and write on the connection give up after that many seconds."""

    timeout = SOCKET_TIMEOUT_SECONDS

    def log_message(self, format: str, *args: Any) -> None:
        return


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One daemon thread per connection, at most `MAX_CONNECTIONS` at once."""

    daemon_threads = True
    # The threads are daemons and bounded; joining them at shutdown would wait on slow peers.
    block_on_close = False
    # socketserver's default backlog of 5 drops the SYNs of a burst (a scrape and three
    # probes at once), and each dropped SYN costs its client a one-second retransmit.
    request_queue_size = 64

    def __init__(
        self, address: tuple[str, int], handler: type[WSGIRequestHandler], family: int
    ) -> None:
        self.address_family = family
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._refusing = False  # warn once per episode, not once per refused connection
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            if not self._refusing:
                log.warning("http: %d connections open; closing new ones", MAX_CONNECTIONS)
                self._refusing = True
            self.shutdown_request(request)
            return
        self._refusing = False
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A peer that times out or hangs up is routine: no traceback on stderr."""
        log.debug("http: a connection ended without a complete exchange")


class _SerialProbe:
    """Runs a probe on a daemon thread, one call at a time: concurrent requests share the
    call in flight, and a call that overruns `timeout` answers "not ok" while it finishes in
    the background (daemon threads: a probe stuck for good cannot hold up the exit)."""

    def __init__(self, name: str, probe: Probe, timeout: float) -> None:
        self._name = name
        self._probe = probe
        self._timeout = timeout
        self._lock = threading.Lock()
        self._running: Future[tuple[bool, dict[str, Any]]] | None = None

    def __call__(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            if self._running is None or self._running.done():
                self._running = Future()
                threading.Thread(
                    target=self._run, args=(self._running,), name=f"probe-{self._name}", daemon=True
                ).start()
            running = self._running
        try:
            return running.result(timeout=self._timeout)
        except FutureTimeout:
            return False, {"probe": f"{self._name} did not answer within {self._timeout:g} s"}
        except Exception as error:  # a probe that cannot tell is a probe that says no
            return False, {"probe": f"{self._name} failed ({type(error).__name__})"}

    def _run(self, future: Future[tuple[bool, dict[str, Any]]]) -> None:
        try:
            future.set_result(self._probe())
        except BaseException as error:  # handed to the waiting request, which answers 503
            future.set_exception(error)


class HttpServer:
    def __init__(
        self,
        port: int,
        health: Probe,
        readiness: Probe,
        host: str = "0.0.0.0",  # noqa: S104 (a pod serves its probes on every interface)
        probe_timeout: float = PROBE_TIMEOUT_SECONDS,
    ) -> None:
        self._metrics_app = make_wsgi_app(REGISTRY)
        self._health = _SerialProbe("healthz", health, probe_timeout)
        self._readiness = _SerialProbe("readyz", readiness, probe_timeout)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server = _ThreadingServer((host, port), _QuietHandler, family)
        self._server.set_app(self._app)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_port

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            body: Iterable[bytes] = self._metrics_app(environ, start_response)
            return body
        if path == "/healthz":
            return _probe_response(self._health, start_response)
        if path == "/readyz":
            return _probe_response(self._readiness, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]


def _probe_response(probe: Probe, start_response: StartResponse) -> list[bytes]:
    ok, details = probe()
    body = json.dumps({"ok": ok, **details}, sort_keys=True).encode() + b"\n"
    status = "200 OK" if ok else "503 Service Unavailable"
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
