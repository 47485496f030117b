"""The HTTP/1.1 plumbing under every sandbox: read a request, apply a fault or route it,
write the answer, log the call.

A threaded ``http.server`` with keep-alive (always a Content-Length, unless a fault says
otherwise) so clients are exercised through their real transport: connection reuse,
timeouts, redirects and resets behave as they would against the vendor. It serves a
``ServerCore`` (``SandboxServer``), which owns the router, the fault queue and the log.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import struct
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol
from urllib.parse import urlsplit

from devtools.sandbox.faults import Fault, FaultQueue
from devtools.sandbox.routing import Call, Request, Response, json_response

LOGGER = logging.getLogger(__name__)

#: Largest request body a sandbox accepts; larger ones get 413, as a real gateway would.
MAX_BODY_BYTES = 10 * 1024 * 1024
_MAX_LINE_BYTES = 65536

_HUGE_BODY_BLOCK_BYTES = 64 * 1024
#: A dripping answer is written in this many pieces a second (or byte by byte, if slower).
_DRIP_WRITES_PER_SECOND = 20


class ServerCore(Protocol):
    """What the request handler needs from the server it serves."""

    faults: FaultQueue

    @property
    def base_url(self) -> str: ...

    @property
    def stopping(self) -> bool: ...

    def now(self) -> float: ...

    def dispatch(self, request: Request) -> Response: ...

    def record(self, call: Call) -> None: ...

    def wait(self, seconds: float) -> bool: ...

    def track(self, connection: socket.socket) -> None: ...

    def untrack(self, connection: socket.socket) -> None: ...


class _BadFramingError(Exception):
    """The request framing (Content-Length / chunking) is unusable; answer and close."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ThreadedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its owning ``SandboxServer``."""

    daemon_threads = True

    def __init__(self, core: ServerCore) -> None:
        self.core = core
        super().__init__(("127.0.0.1", 0), _RequestHandler)

    def handle_error(self, request: object, client_address: object) -> None:
        """Stay quiet about clients hanging up; never print tracebacks that may hold data."""
        LOGGER.debug("sandbox connection ended abruptly")


class _RequestHandler(BaseHTTPRequestHandler):
    """Turns one HTTP exchange into Request -> (fault?) -> Response -> Call."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "VendorSandbox/1.0"
    sys_version = ""

    def version_string(self) -> str:
        """Just the product name: no Python version in the Server header."""
        return self.server_version

    def setup(self) -> None:
        """Register the connection so ``stop()`` can close idle keep-alive sockets."""
        super().setup()
        self._core().track(self.connection)

    def finish(self) -> None:
        """Unregister the connection; it is closing."""
        try:
            super().finish()
        finally:
            self._core().untrack(self.connection)

    def log_message(self, format: str, *args: object) -> None:
        """Silence the stdlib access log: the call log is the only record, and it holds no data."""

    def do_GET(self) -> None:
        """Route GET through the shared pipeline."""
        self._serve()

    def do_POST(self) -> None:
        """Route POST through the shared pipeline."""
        self._serve()

    def do_PUT(self) -> None:
        """Route PUT through the shared pipeline (usually ending in 405)."""
        self._serve()

    def do_PATCH(self) -> None:
        """Route PATCH through the shared pipeline (usually ending in 405)."""
        self._serve()

    def do_DELETE(self) -> None:
        """Route DELETE through the shared pipeline (usually ending in 405)."""
        self._serve()

    def _core(self) -> ServerCore:
        server = self.server
        assert isinstance(server, ThreadedServer)
        return server.core

    def _serve(self) -> None:
        request = self._read_request()
        if request is None:
            return
        core = self._core()
        fault = core.faults.take(request.path)
        if fault is None:
            self._respond(request, core.dispatch(request), None)
            return
        processed = core.dispatch(request) if fault.after_processing else None
        self._apply_fault(request, fault, processed)

    def _apply_fault(self, request: Request, fault: Fault, processed: Response | None) -> None:
        core = self._core()
        if fault.kind == "delay":
            core.wait(fault.seconds)
            response = processed if processed is not None else core.dispatch(request)
            self._respond(request, response, fault)
        elif fault.kind == "reset":
            self._reset(request)
        elif fault.kind == "answer":
            self._respond(request, Response(fault.status_code, fault.body, fault.headers), fault)
        elif fault.kind == "drip":
            self._drip(
                request, processed if processed is not None else core.dispatch(request), fault
            )
        elif fault.kind == "huge_body":
            self._huge_body(request, fault)
        else:
            self._respond(request, _fault_response(fault), fault)

    def _drip(self, request: Request, response: Response, fault: Fault) -> None:
        """Write the answer a few bytes at a time (see ``Fault.drip``), then close."""
        self._record(request, response.status, fault)
        self.close_connection = True
        step = max(1, round(fault.bytes_per_second / _DRIP_WRITES_PER_SECOND))
        interval = step / fault.bytes_per_second
        chunks: Iterable[bytes]
        if fault.endless:
            if not self._write(_head(response.status, response.headers, None)):
                return
            chunks = itertools.repeat(b" " * step)
        else:
            raw = _head(response.status, response.headers, len(response.body)) + response.body
            chunks = (raw[start : start + step] for start in range(0, len(raw), step))
        for chunk in chunks:
            if self._core().wait(interval) or not self._write(chunk):
                return

    def _huge_body(self, request: Request, fault: Fault) -> None:
        """Stream ``fault.size_bytes`` of body from one small block (see ``Fault.huge_body``)."""
        self._record(request, 200, fault)
        self.close_connection = True
        length = fault.size_bytes if fault.declare_length else None
        if not self._write(_head(200, [("Content-Type", "application/json")], length)):
            return
        block = memoryview(b" " * _HUGE_BODY_BLOCK_BYTES)
        left = fault.size_bytes
        while left > 0 and not self._core().stopping:
            piece = block[: min(left, len(block))]
            if not self._write(piece):
                return
            left -= len(piece)

    def _write(self, data: bytes | memoryview) -> bool:
        """Send raw bytes; False once the client has gone away."""
        try:
            self.wfile.write(data)
        except OSError:
            return False
        return True

    def _read_request(self) -> Request | None:
        split = urlsplit(self.path)
        try:
            body = self._read_body()
        except _BadFramingError as problem:
            self.close_connection = True
            bad = Request(self.command, split.path, split.query, {}, b"", {}, self._core().base_url)
            self._respond(
                bad, json_response(problem.status, {"error": "bad_request_framing"}), None
            )
            return None
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return Request(
            self.command, split.path, split.query, headers, body, {}, self._core().base_url
        )

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        if not raw_length.strip().isdigit():
            raise _BadFramingError(400)
        length = int(raw_length)
        if length > MAX_BODY_BYTES:
            raise _BadFramingError(413)
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_text = self.rfile.readline(_MAX_LINE_BYTES).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _BadFramingError(400) from None
            if size == 0:
                self._skip_trailers()
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _BadFramingError(413)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(_MAX_LINE_BYTES)

    def _skip_trailers(self) -> None:
        while self.rfile.readline(_MAX_LINE_BYTES) not in (b"\r\n", b"\n", b""):
            pass

    def _respond(self, request: Request, response: Response, fault: Fault | None) -> None:
        # Log first: once the client holds the response, the call must already be visible.
        self._record(request, response.status, fault)
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(response.body)

    def _reset(self, request: Request) -> None:
        """Abort the TCP connection: SO_LINGER 0 makes close() send RST instead of FIN."""
        self._record(request, None, Fault.reset())
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def _record(self, request: Request, status: int | None, fault: Fault | None) -> None:
        core = self._core()
        kind = fault.kind if fault is not None else None
        core.record(Call(request.method, request.path, request.query, status, core.now(), kind))


def _head(status: int, headers: Sequence[tuple[str, str]], length: int | None) -> bytes:
    """A raw HTTP/1.1 response head that closes the connection; no Content-Length if
    ``length`` is None (the body then ends with the connection)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}", *(f"{name}: {value}" for name, value in headers)]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _fault_response(fault: Fault) -> Response:
    """The canned answer for status and rate-limit faults."""
    if fault.kind == "rate_limited":
        retry = [("Retry-After", str(fault.retry_after))]
        return json_response(429, {"error": "rate_limited"}, headers=retry)
    return json_response(fault.status_code, {"error": "injected_fault"})
