"""A whole-exchange deadline for vendor HTTP calls.

A socket timeout bounds each read, not the exchange: a vendor dripping a byte a second
keeps every read short and the exchange alive for as long as it likes (one poll took
42 s with a 2 s timeout; an endless drip never ended). `call_deadline` sets an alarm for
one exchange on the process's one watchdog thread (`consumer.vendors.http_watchdog`); the
connections of `DeadlineAdapter` hand their sockets to it, and it shuts them when the time
is up, whatever phase the exchange is in.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import threading
from collections.abc import Iterator
from typing import Any

import requests
import requests.adapters
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from consumer.vendors.http_watchdog import WATCHDOG, Watchdog


class CallDeadlineExceeded(requests.ReadTimeout):
    """The exchange was still going when `timeout_seconds` had passed (see `CallDeadline`)."""


class CallDeadline:
    """Ends one HTTP exchange when its time is up, in whatever phase it is.

    A socket timeout bounds each read, not the exchange: a vendor dripping a byte a second
    keeps every read short and the exchange alive for as long as it likes (one poll took
    42 s with a 2 s timeout; an endless drip never ended). So the connections the exchange
    uses hand their sockets to this deadline (see `_DeadlineConnection`), and the shared
    watchdog thread shuts them when the time is up: the blocked read returns at once, the
    exchange fails, and `VendorHttp` reports a timeout. A shut connection is never reused
    (urllib3 checks a pooled connection before reusing it). Only connecting itself (TCP
    and the TLS handshake) is bounded by the socket's connect timeout instead, which is no
    longer.
    """

    def __init__(self, seconds: float, watchdog: Watchdog = WATCHDOG) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._expired = False
        self._over = False
        self._watchdog = watchdog
        self._alarm = watchdog.schedule(seconds, self._expire)

    @property
    def expired(self) -> bool:
        with self._lock:
            return self._expired

    def watch(self, sock: object) -> None:
        """Shut `sock` when the deadline passes (at once if it already has)."""
        if not isinstance(sock, socket.socket):
            return  # e.g. urllib3's TLS-in-TLS transport: bounded per read only
        with self._lock:
            expired = self._expired
            if not expired:
                self._sockets.append(sock)
        if expired:
            _shut(sock)

    def cancel(self) -> None:
        """The exchange is over: its sockets (back in the pool, perhaps reused by the next
        exchange) must not be shut even if the watchdog is firing this deadline right now."""
        self._watchdog.cancel(self._alarm)
        with self._lock:
            self._over = True
            self._sockets.clear()

    def _expire(self) -> None:
        with self._lock:
            if self._over:
                return
            self._expired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    """Shut the OS socket under any wrapper (an `ssl.SSLSocket`'s own `shutdown` would
    also drop its TLS state under the thread reading from it)."""
    with contextlib.suppress(OSError):  # already closed: nothing is waiting on it
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_CURRENT_DEADLINE: contextvars.ContextVar[CallDeadline | None] = contextvars.ContextVar(
    "vendor_call_deadline", default=None
)


def _watch(sock: object) -> None:
    deadline = _CURRENT_DEADLINE.get()
    if deadline is not None and sock is not None:
        deadline.watch(sock)


class _DeadlineConnection(HTTPConnection):
    """A urllib3 connection that hands its socket to the current exchange's deadline: when
    it connects, and when it is reused for another request."""

    def connect(self) -> None:
        super().connect()
        _watch(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)  # None on a new connection: `connect` will watch it
        super().request(*args, **kwargs)


class _DeadlineHTTPSConnection(_DeadlineConnection, HTTPSConnection):
    pass


class _DeadlineHTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineConnection


class _DeadlineHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


_DEADLINE_POOLS = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}


class DeadlineAdapter(requests.adapters.HTTPAdapter):
    """requests' transport, with connections that honour `CallDeadline`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _DEADLINE_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools have their own classes
            manager.pool_classes_by_scheme = _DEADLINE_POOLS
        return manager


@contextlib.contextmanager
def call_deadline(seconds: float) -> Iterator[CallDeadline]:
    """Bound the exchange made inside the block to `seconds`: sockets it uses through a
    `DeadlineAdapter` are shut when the time is up (check `expired` afterwards)."""
    deadline = CallDeadline(seconds)
    context = _CURRENT_DEADLINE.set(deadline)
    try:
        yield deadline
    finally:
        deadline.cancel()
        _CURRENT_DEADLINE.reset(context)
