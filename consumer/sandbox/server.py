"""Shared machinery for strict, in-process HTTP sandboxes of vendor APIs.

Every vendor sandbox (Acoustic, Voyado, Monetate, Acquia CDP) is a real HTTP
server on 127.0.0.1 so that clients are exercised through their real transport:
connection reuse, timeouts, redirects and resets behave as they would against
the vendor. This module holds what they all share:

* ``SandboxServer``: a threaded ``http.server`` with keep-alive (HTTP/1.1,
  always a Content-Length) that turns raw requests into ``Request`` objects and
  hands them to a ``Router``.
* ``Fault`` and ``FaultQueue``: scripted misbehaviour (error statuses, 429 with
  Retry-After, slow responses, connection resets, answers the vendor never documented,
  answers dripped a few bytes a second, bodies too big to hold) so retry logic can be
  tested deterministically instead of hoping for a flaky network.
* ``Call``: a log of every request (method, path, query, status, time) that
  deliberately holds no headers or bodies, because those carry tokens and
  personal data and a ``Call`` is the kind of object that ends up printed.
* ``Clock``: the one place sandboxes read time from. Durations are real seconds
  chosen by the caller (tests pass tiny ones); nothing patches global time.
* ``Sandbox``: the lifecycle/fault/log surface that each vendor class inherits.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, Self
from urllib.parse import urlsplit

LOGGER = logging.getLogger(__name__)

#: Largest request body a sandbox accepts; larger ones get 413, as a real gateway would.
MAX_BODY_BYTES = 10 * 1024 * 1024
#: How often the accept loop checks for shutdown; small so ``stop()`` is quick in tests.
_POLL_INTERVAL_SECONDS = 0.02
_MAX_LINE_BYTES = 65536

_HUGE_BODY_BLOCK_BYTES = 64 * 1024
#: A dripping answer is written in this many pieces a second (or byte by byte, if slower).
_DRIP_WRITES_PER_SECOND = 20

FaultKind = Literal["status", "rate_limited", "delay", "reset", "answer", "drip", "huge_body"]


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


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour of the sandbox; build it with the classmethods.

    ``after_processing`` makes the sandbox handle the request first (so, e.g.,
    a job really is created) and only then misbehave. That models the nastiest
    real-world case for APIs without idempotency keys: the vendor acted but the
    client never learnt about it.
    """

    kind: FaultKind
    status_code: int = 0
    retry_after: int = 0
    seconds: float = 0.0
    after_processing: bool = False
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    bytes_per_second: float = 0.0
    endless: bool = False
    size_bytes: int = 0
    declare_length: bool = True

    @classmethod
    def status(cls, code: int, *, after_processing: bool = False) -> Fault:
        """Answer with an error status (e.g. 500, 503) and a small JSON body."""
        if not 400 <= code <= 599:
            raise ValueError("a status fault needs a 4xx or 5xx code")
        return cls("status", status_code=code, after_processing=after_processing)

    @classmethod
    def rate_limited(cls, retry_after: int = 1) -> Fault:
        """Answer 429 with ``Retry-After: <seconds>`` (HTTP allows only whole seconds)."""
        if retry_after < 0:
            raise ValueError("retry_after must not be negative")
        return cls("rate_limited", status_code=429, retry_after=retry_after)

    @classmethod
    def delay(cls, seconds: float, *, after_processing: bool = False) -> Fault:
        """Wait ``seconds`` before answering normally, to trigger client timeouts."""
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        return cls("delay", seconds=seconds, after_processing=after_processing)

    @classmethod
    def reset(cls, *, after_processing: bool = False) -> Fault:
        """Drop the connection with a TCP reset and no response at all."""
        return cls("reset", after_processing=after_processing)

    @classmethod
    def answer(
        cls,
        status: int,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
        *,
        after_processing: bool = False,
    ) -> Fault:
        """Answer exactly this instead of the vendor's answer: what a vendor, a proxy or a
        maintenance page may send although no documentation says so (a redirect, a
        malformed Location, a status word nobody documented)."""
        if not 200 <= status <= 599:
            raise ValueError("an answer fault needs a 2xx to 5xx code")
        return cls(
            "answer",
            status_code=status,
            body=body,
            headers=tuple(headers),
            after_processing=after_processing,
        )

    @classmethod
    def html_page(cls, status: int = 200, *, after_processing: bool = False) -> Fault:
        """An HTML page (a maintenance page, a proxy's login form) where JSON belongs."""
        page = b"<!DOCTYPE html><html><body><h1>Down for maintenance</h1></body></html>"
        content_type = ("Content-Type", "text/html; charset=utf-8")
        return cls.answer(status, page, [content_type], after_processing=after_processing)

    @classmethod
    def nested_json(
        cls, depth: int = 100_000, status: int = 200, *, after_processing: bool = False
    ) -> Fault:
        """Valid JSON nested `depth` arrays deep: more than any parser's recursion allows."""
        body = b"[" * depth + b"]" * depth
        content_type = ("Content-Type", "application/json")
        return cls.answer(status, body, [content_type], after_processing=after_processing)

    @classmethod
    def drip(cls, bytes_per_second: float, *, endless: bool = False) -> Fault:
        """Handle the request, then write the answer (status line and headers included) at
        ``bytes_per_second``. With ``endless`` the head goes at once, with no Content-Length,
        and the body drips until the client hangs up. Every read
        of such an answer is quick, so only a deadline on the whole exchange ends it."""
        if bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be positive")
        return cls("drip", bytes_per_second=bytes_per_second, endless=endless)

    @classmethod
    def huge_body(cls, size_bytes: int, *, declare_length: bool = True) -> Fault:
        """Answer 200 with a body of ``size_bytes`` spaces, streamed without ever being
        held in memory; without ``declare_length`` there is no Content-Length (the body
        ends when the connection closes), so a client cannot refuse it by its header."""
        if size_bytes < 0:
            raise ValueError("size_bytes must not be negative")
        return cls("huge_body", size_bytes=size_bytes, declare_length=declare_length)


@dataclass
class _QueuedFault:
    """A fault waiting in the queue, with how many more requests it applies to."""

    fault: Fault
    path_prefix: str
    remaining: int


class FaultQueue:
    """Thread-safe FIFO of faults; each request consumes the first one matching its path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[_QueuedFault] = []

    def add(self, fault: Fault, *, path_prefix: str = "", times: int = 1) -> None:
        """Queue ``fault`` for the next ``times`` requests whose path starts with the prefix."""
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._entries.append(_QueuedFault(fault, path_prefix, times))

    def take(self, path: str) -> Fault | None:
        """Consume one use of the oldest fault matching ``path``, if any."""
        with self._lock:
            for entry in self._entries:
                if path.startswith(entry.path_prefix):
                    entry.remaining -= 1
                    if entry.remaining == 0:
                        self._entries.remove(entry)
                    return entry.fault
        return None

    def pending(self) -> int:
        """How many fault uses are still queued; lets tests assert all were consumed."""
        with self._lock:
            return sum(entry.remaining for entry in self._entries)

    def clear(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._entries.clear()


@dataclass(frozen=True)
class Call:
    """One request as seen by the sandbox. Holds no headers or bodies (tokens, personal data).

    ``status`` is None when the connection was reset instead of answered;
    ``timestamp`` is ``Clock.now()`` (monotonic seconds) just before the answer
    is sent, so tests can measure back-off between calls. A call is logged
    before its response leaves, so a client that has its answer sees the call.
    """

    method: str
    path: str
    query: str
    status: int | None
    timestamp: float
    fault: FaultKind | None = None


@dataclass(frozen=True)
class Request:
    """A parsed request handed to route handlers."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    params: Mapping[str, str]
    base_url: str

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup; repeated headers come back comma-joined."""
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Response:
    """What a handler answers; the server always adds Content-Length."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Response]
JsonValue = None | bool | int | float | str | Sequence["JsonValue"] | Mapping[str, "JsonValue"]


def json_response(
    status: int, payload: JsonValue, *, headers: Sequence[tuple[str, str]] = ()
) -> Response:
    """Serialize ``payload`` as a UTF-8 JSON response with the matching Content-Type."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    content_type = ("Content-Type", "application/json;charset=UTF-8")
    return Response(status, body, (content_type, *headers))


def parse_json_body(body: bytes) -> object:
    """Decode a strict UTF-8 JSON request body; ValueError (value-free message) if it is not.

    Vendors with JSON APIs reject malformed bodies with 400; sandboxes map the
    ValueError to that without echoing the body, which may hold personal data.
    """
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("request body is not valid UTF-8") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"request body is not JSON (line {error.lineno})") from None


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type into a lower-cased media type and lower-cased parameter names.

    Parameter values keep their case (callers decide, e.g. charset compares
    case-insensitively); surrounding quotes are removed. A parameter that is
    malformed or repeated is dropped, so a strict caller sees it as missing.
    """
    media_type, *raw_params = value.split(";")
    params: dict[str, str] = {}
    repeated: set[str] = set()
    for raw in raw_params:
        name, sep, param_value = raw.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            continue
        if name in params:
            repeated.add(name)
        params[name] = _unquote(param_value.strip())
    for name in repeated:
        del params[name]
    return media_type.strip().lower(), params


def _unquote(value: str) -> str:
    """Remove one pair of surrounding double quotes from a header parameter value."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@dataclass(frozen=True)
class _Route:
    """A method plus a compiled path template."""

    method: str
    pattern: re.Pattern[str]
    handler: Handler


_PARAM = re.compile(r"\{(\w+)(?::(int))?\}")


def _compile_template(template: str) -> re.Pattern[str]:
    """Turn ``/a/{name}/b/{id:int}`` into a regex with named groups.

    ``{name}`` matches one path segment; ``{name:int}`` only digits, so
    ``/gdpr_jobs/abc/status`` is a 404 exactly like an unknown path.
    """
    parts: list[str] = []
    position = 0
    for match in _PARAM.finditer(template):
        parts.append(re.escape(template[position : match.start()]))
        segment = "[0-9]+" if match.group(2) == "int" else "[^/]+"
        parts.append(f"(?P<{match.group(1)}>{segment})")
        position = match.end()
    parts.append(re.escape(template[position:]))
    return re.compile("".join(parts))


class Router:
    """Maps (method, path template) to handlers; answers 404/405 like a real server."""

    def __init__(self) -> None:
        self._routes: list[_Route] = []

    def add(self, method: str, template: str, handler: Handler) -> None:
        """Register ``handler`` for ``method`` on paths matching ``template``."""
        self._routes.append(_Route(method.upper(), _compile_template(template), handler))

    def dispatch(self, request: Request) -> Response:
        """Run the matching handler, or answer 404 (no path) / 405 (path, wrong method)."""
        allowed: list[str] = []
        for route in self._routes:
            match = route.pattern.fullmatch(request.path)
            if match is None:
                continue
            if route.method == request.method:
                routed = replace(request, params=match.groupdict())
                return route.handler(routed)
            allowed.append(route.method)
        if allowed:
            allow = ", ".join(sorted(set(allowed)))
            return json_response(405, {"error": "method_not_allowed"}, headers=[("Allow", allow)])
        return json_response(404, {"error": "not_found"})


class _BadFramingError(Exception):
    """The request framing (Content-Length / chunking) is unusable; answer and close."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its owning ``SandboxServer``."""

    daemon_threads = True

    def __init__(self, core: SandboxServer) -> None:
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

    def _core(self) -> SandboxServer:
        server = self.server
        assert isinstance(server, _HTTPServer)
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
        core.record(
            Call(request.method, request.path, request.query, status, core.clock.now(), kind)
        )


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
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None

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
        httpd = _HTTPServer(self)
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

    def wait(self, seconds: float) -> bool:
        """Sleep for a delay fault, but wake at once when the server stops (then True)."""
        return self._stopping.wait(seconds)

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` has begun: streaming faults end their answers."""
        return self._stopping.is_set()

    def dispatch(self, request: Request) -> Response:
        """Route a request; an unexpected handler error becomes a bare 500."""
        try:
            return self.router.dispatch(request)
        except Exception as error:
            LOGGER.error("sandbox handler failed: %s", type(error).__name__)
            return json_response(500, {"error": "internal_error"})

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

    def inject(self, fault: Fault, *, path_prefix: str = "", times: int = 1) -> None:
        """Make the next ``times`` requests under ``path_prefix`` misbehave as ``fault``."""
        self._server.faults.add(fault, path_prefix=path_prefix, times=times)

    def pending_faults(self) -> int:
        """How many injected fault uses have not been consumed yet."""
        return self._server.faults.pending()
