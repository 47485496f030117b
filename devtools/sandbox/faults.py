"""Scripted misbehaviour for sandboxes: what a flaky network or vendor does, on demand.

Error statuses, 429 with Retry-After, slow answers, connection resets, answers the vendor
never documented, answers dripped a few bytes a second and bodies too big to hold, so
retry logic is tested deterministically instead of by hoping for a flaky network. The
queue counts what was injected and what was served, so a test can prove that every
fault it injected was met by a request.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

FaultKind = Literal["status", "rate_limited", "delay", "reset", "answer", "drip", "huge_body"]


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
        self._injected = 0
        self._served = 0

    def add(self, fault: Fault, *, path_prefix: str = "", times: int = 1) -> None:
        """Queue ``fault`` for the next ``times`` requests whose path starts with the prefix."""
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._entries.append(_QueuedFault(fault, path_prefix, times))
            self._injected += times

    def take(self, path: str) -> Fault | None:
        """Consume one use of the oldest fault matching ``path``, if any."""
        with self._lock:
            for entry in self._entries:
                if path.startswith(entry.path_prefix):
                    entry.remaining -= 1
                    if entry.remaining == 0:
                        self._entries.remove(entry)
                    self._served += 1
                    return entry.fault
        return None

    def injected(self) -> int:
        """Fault uses queued since the start (dropped ones included)."""
        with self._lock:
            return self._injected

    def served(self) -> int:
        """Fault uses a request has met: a test that injected N faults expects N here,
        or its scenario never reached the fault it meant to test."""
        with self._lock:
            return self._served

    def pending(self) -> int:
        """How many fault uses are still queued; lets tests assert all were consumed."""
        with self._lock:
            return sum(entry.remaining for entry in self._entries)

    def clear(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._entries.clear()
