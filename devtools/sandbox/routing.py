"""Requests, responses and the router between them, as sandbox handlers see them.

``Call`` is the log entry of one request: it deliberately holds no headers or bodies,
because those carry tokens and personal data and a ``Call`` is the kind of object that
ends up printed. The JSON and media-type helpers are the strict parsing every vendor
sandbox shares.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from devtools.sandbox.faults import FaultKind


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
