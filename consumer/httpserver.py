"""`/metrics`, `/healthz` and `/readyz` (contract §6) on a small WSGI server thread.

Health and readiness are callables returning (ok, details) so the server knows nothing
about the loops it reports on; details are JSON so `kubectl port-forward` + curl tells an
operator why a pod is not ready.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from consumer.metrics import REGISTRY

Probe = Callable[[], tuple[bool, dict[str, Any]]]
StartResponse = Callable[..., Any]


class _QuietHandler(WSGIRequestHandler):
    """Scrapes and probes every few seconds would drown the worker's own logs."""

    def log_message(self, format: str, *args: Any) -> None:
        return


class HttpServer:
    def __init__(self, port: int, health: Probe, readiness: Probe, host: str = "0.0.0.0") -> None:  # noqa: S104 (a pod serves its probes on every interface)
        self._metrics_app = make_wsgi_app(REGISTRY)
        self._health = health
        self._readiness = readiness
        self._server: WSGIServer = make_server(host, port, self._app, handler_class=_QuietHandler)
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
