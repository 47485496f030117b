"""Strict sandbox of the Voyado Elevate remove-customer-data API.

It follows the vendor pages (shared/vendor-docs/voyado-elevate-*.txt) and
VENDOR-FACTS section 1, and is deliberately strict wherever the docs leave
room, so that a client that passes here is correct against the vendor:

* Every call needs the ``Api-Key`` header with the cluster's key; a missing or
  wrong key is ``403`` ("Incorrect cluster credentials"), the only auth answer
  the docs name. There are no tokens.
* ``POST {prefix}/create-remove-customer-job?customerKey={key}`` takes exactly
  one non-empty ``customerKey`` (one subject per call: a repeated parameter is
  the hard limit being broken) and nothing else: no other parameter, no body,
  no Content-Type (the docs say "not applicable"). Anything else is ``400``.
  The answer is ``200 {"jid", "status": "created"}`` for known and unknown keys
  alike: Voyado cannot tell whether it holds anything.
* ``GET {prefix}/job-status?jid={jid}`` answers ``200 {"jid", "status"}`` with
  ``created`` -> ``waiting`` -> ``running`` -> ``done`` (or ``error``), and
  ``not_found`` for a jid it does not know.
* ``{prefix}`` is ``/api/admin/v4/event-data`` (current), ``/api/admin/v3/event-data``
  (long-term support) or ``/api/v2/event-data`` (past end of life; served unless
  ``serve_v2=False``). Jobs are shared by all three, as on one cluster.
* Query strings must be percent-encoded (RFC 3986 characters only) and decode as
  UTF-8; ``+`` is a space, as for the Java servlet containers behind such APIs.

Jobs advance lazily from the clock (no background thread): whenever the sandbox
is asked anything, every job whose running time is over is executed, in creation
order, before answering. Error messages never echo keys or the API key.
"""

from __future__ import annotations

import hmac
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs

from devtools.sandbox.server import Request, Response, Router, Sandbox, json_response

DEFAULT_API_KEY = "sandbox-voyado-api-key"
"""The key the sandbox accepts unless constructed with another (fake; not a secret)."""

API_PREFIXES: Mapping[str, str] = {
    "v2": "/api/v2/event-data",
    "v3": "/api/admin/v3/event-data",
    "v4": "/api/admin/v4/event-data",
}
CREATE_ENDPOINT = "/create-remove-customer-job"
STATUS_ENDPOINT = "/job-status"

JobStatus = Literal["created", "waiting", "running", "done", "error"]

# RFC 3986 query characters, with "%" only as the start of an escape.
_QUERY_CHARACTERS = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")


class ArgumentError(ValueError):
    """A request's arguments are unacceptable (400); the message never holds their values."""


def parse_query(query: str) -> dict[str, list[str]]:
    """Decode a raw query string exactly as the sandbox does, or raise ``ArgumentError``.

    Public so tests can check the decoder on its own as well as over HTTP.
    Characters a client must percent-encode, escapes that are not UTF-8 and
    fields without ``=`` are all rejected rather than guessed at.
    """
    if _QUERY_CHARACTERS.fullmatch(query) is None:
        raise ArgumentError("the query string holds characters that must be percent-encoded")
    try:
        return parse_qs(
            query,
            keep_blank_values=True,
            strict_parsing=bool(query),
            encoding="utf-8",
            errors="strict",
        )
    except ValueError:  # UnicodeDecodeError included
        raise ArgumentError("the query string is malformed or not UTF-8") from None


def _only_argument(query: str, name: str) -> str:
    """The one non-empty value of ``name``, the query's only parameter."""
    params = parse_query(query)
    if set(params) - {name}:
        raise ArgumentError(f"unknown query parameter; only {name} is accepted")
    values = params.get(name, [])
    if len(values) != 1:
        raise ArgumentError(f"exactly one {name} is required")
    if not values[0]:
        raise ArgumentError(f"{name} must not be empty")
    return values[0]


def _error(status: int, code: str, message: str) -> Response:
    return json_response(status, {"error": code, "message": message})


def _forbidden() -> Response:
    return _error(403, "forbidden", "Incorrect cluster credentials.")


@dataclass
class _Job:
    """A remove job; ``finished`` once its running time is over and its removal done."""

    jid: str
    customer_key: str
    created_at: float
    fails: bool
    finished: bool = False


class VoyadoSandbox(Sandbox):
    """In-process Voyado Elevate remove-customer-data API with a fast, configurable clock.

    All durations are real seconds. A job reads ``created`` for
    ``created_seconds``, then ``waiting`` for ``waiting_seconds`` (at Voyado: until
    the next day, then until the data is archived, about 5 days), then ``running``
    for ``running_seconds``, then ``done`` (or ``error``). The defaults finish a
    job in 1.5 s, for demos; tests pass tiny ones.
    """

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        created_seconds: float = 0.25,
        waiting_seconds: float = 0.75,
        running_seconds: float = 0.5,
        serve_v2: bool = True,
    ) -> None:
        if min(created_seconds, waiting_seconds, running_seconds) < 0:
            raise ValueError("job durations must not be negative")
        if not api_key:
            raise ValueError("api_key must not be empty")
        super().__init__(self._routes(serve_v2))
        self._api_key = api_key
        self._phase_ends = (
            created_seconds,
            created_seconds + waiting_seconds,
            created_seconds + waiting_seconds + running_seconds,
        )
        self._lock = threading.RLock()
        self._customers: set[str] = set()
        self._removed: list[str] = []
        self._jobs: dict[str, _Job] = {}
        self._requested: list[str] = []
        self._jobs_to_fail = 0

    def _routes(self, serve_v2: bool) -> Router:
        router = Router()
        for version, prefix in API_PREFIXES.items():
            if version != "v2" or serve_v2:
                router.add("POST", prefix + CREATE_ENDPOINT, self._handle_create)
                router.add("GET", prefix + STATUS_ENDPOINT, self._handle_status)
        return router

    # ----------------------------------------------------------------- test setup

    def add_customer(self, key: str) -> None:
        """Make Elevate hold data for ``key`` (a visitor id, often a UUID)."""
        if not key:
            raise ValueError("a customer key must not be empty")
        with self._lock:
            self._customers.add(key)

    def customer_exists(self, key: str) -> bool:
        """Whether data for ``key`` is still held, after running due jobs."""
        with self._lock:
            self._advance(self.clock.now())
            return key in self._customers

    def removed_customers(self) -> list[str]:
        """Keys whose data a finished job actually removed, in removal order.

        Unknown keys end ``done`` too (Voyado cannot tell), but are not listed.
        """
        with self._lock:
            self._advance(self.clock.now())
            return list(self._removed)

    def requested_keys(self) -> list[str]:
        """The decoded ``customerKey`` of every job created, in order (known or not)."""
        with self._lock:
            return list(self._requested)

    def fail_next_jobs(self, n: int = 1) -> None:
        """The next ``n`` jobs created end ``error`` and remove nothing."""
        if n < 0:
            raise ValueError("n must not be negative")
        with self._lock:
            self._jobs_to_fail += n

    def forget_jobs(self) -> None:
        """Make every jid issued so far unknown (``not_found``); their removals never run."""
        with self._lock:
            self._jobs.clear()

    def rotate_api_key(self, new_key: str) -> None:
        """Accept only ``new_key`` from now on: the old key gets 403, as after a rotation."""
        if not new_key:
            raise ValueError("new_key must not be empty")
        with self._lock:
            self._api_key = new_key

    # ----------------------------------------------------------------- endpoints

    def _refused(self, request: Request) -> bool:
        """True unless ``Api-Key`` is exactly the cluster's key (constant-time compare)."""
        given = request.header("api-key")
        with self._lock:
            expected = self._api_key
        return given is None or not hmac.compare_digest(
            given.encode("utf-8"), expected.encode("utf-8")
        )

    def _handle_create(self, request: Request) -> Response:
        if self._refused(request):
            return _forbidden()
        try:
            key = _only_argument(request.query, "customerKey")
            _check_no_body(request)
        except ArgumentError as error:
            return _error(400, "bad_request", str(error))
        with self._lock:
            jid = str(uuid.uuid4())
            fails = self._jobs_to_fail > 0
            self._jobs_to_fail -= int(fails)
            self._jobs[jid] = _Job(jid, key, self.clock.now(), fails)
            self._requested.append(key)
        return json_response(200, {"jid": jid, "status": "created"})

    def _handle_status(self, request: Request) -> Response:
        if self._refused(request):
            return _forbidden()
        try:
            jid = _only_argument(request.query, "jid")
        except ArgumentError as error:
            return _error(400, "bad_request", str(error))
        now = self.clock.now()
        with self._lock:
            self._advance(now)
            job = self._jobs.get(jid)
            status = "not_found" if job is None else self._status(job, now)
        return json_response(200, {"jid": jid, "status": status})

    # ----------------------------------------------------------------- lifecycle

    def _status(self, job: _Job, now: float) -> JobStatus:
        elapsed = now - job.created_at
        created_end, waiting_end, running_end = self._phase_ends
        if elapsed < created_end:
            return "created"
        if elapsed < waiting_end:
            return "waiting"
        if elapsed < running_end:
            return "running"
        return "error" if job.fails else "done"

    def _advance(self, now: float) -> None:
        """Run, in creation order, every job whose running time is over."""
        with self._lock:
            for job in self._jobs.values():
                if not job.finished and now - job.created_at >= self._phase_ends[2]:
                    job.finished = True
                    if not job.fails:
                        self._remove(job.customer_key)

    def _remove(self, key: str) -> None:
        if key in self._customers:
            self._customers.discard(key)
            self._removed.append(key)


def _check_no_body(request: Request) -> None:
    """The docs say request body and content type are "not applicable": send neither."""
    if request.body or request.header("content-type") is not None:
        raise ArgumentError("this endpoint takes no request body")
