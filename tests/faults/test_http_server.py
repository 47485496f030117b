"""The metrics/health server never freezes: an idle connection or a slowloris that sends
half a request line must not keep `/healthz`, `/readyz` or `/metrics` from answering (the
kubelet would restart a healthy pod), a probe that hangs answers 503 in bounded time, and
connections past the limit are closed rather than queued.

The first test runs a real worker (real broker, SQLite ledger) bound to the loopback
address given as `http.host`; the others drive `HttpServer` directly over real sockets.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import pytest

from consumer.runtime.httpserver import MAX_CONNECTIONS, SOCKET_TIMEOUT_SECONDS, HttpServer
from devtools import devstack
from tests.support.http import http_status
from tests.support.waiting import wait_until
from tests.support.worker import wait_ready, worker_setup

ANSWER_WITHIN_SECONDS = 1.0


def timed_get(port: int, path: str) -> tuple[int | None, float]:
    started = time.monotonic()
    status = http_status(port, path, timeout=ANSWER_WITHIN_SECONDS)
    return status, time.monotonic() - started


def stallers(stack: ExitStack, port: int) -> list[socket.socket]:
    """An idle connection and a slowloris (half a request line, then silence)."""
    idle = stack.enter_context(closing(socket.create_connection(("127.0.0.1", port))))
    slow = stack.enter_context(closing(socket.create_connection(("127.0.0.1", port))))
    slow.sendall(b"GET /heal")
    return [idle, slow]


def test_a_real_worker_answers_past_idle_and_half_sent_connections(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    setup = worker_setup(
        tmp_path,
        kafka_bootstrap,
        "http",
        partitions=1,
        vendors={},
        edit=lambda config: config["http"].update(host="127.0.0.1"),
    )
    worker = setup.start_worker()
    try:
        wait_ready(setup, worker)
        with ExitStack() as stack:
            stallers(stack, setup.http_port)
            answers = {
                path: timed_get(setup.http_port, path)
                for path in ("/healthz", "/readyz", "/metrics")
            }
    finally:
        exit_code = devstack.stop_worker(worker)
    log = setup.log_text()
    assert {path: status for path, (status, _) in answers.items()} == dict.fromkeys(answers, 200)
    assert max(seconds for _, seconds in answers.values()) < ANSWER_WITHIN_SECONDS
    assert exit_code == 0, log[-3000:]
    assert "Traceback" not in log


@pytest.fixture
def server_with_stuck_readiness() -> Iterator[tuple[HttpServer, threading.Event]]:
    release = threading.Event()

    def stuck() -> tuple[bool, dict[str, Any]]:
        release.wait(30)
        return True, {}

    server = HttpServer(0, lambda: (True, {}), stuck, host="127.0.0.1", probe_timeout=0.3)
    server.start()
    yield server, release
    release.set()
    server.stop()


def test_a_hung_probe_answers_503_in_bounded_time_and_blocks_nothing_else(
    server_with_stuck_readiness: tuple[HttpServer, threading.Event],
) -> None:
    server, release = server_with_stuck_readiness
    results: list[tuple[int | None, float]] = []
    askers = [
        threading.Thread(target=lambda: results.append(timed_get(server.port, "/readyz")))
        for _ in range(4)
    ]
    for asker in askers:
        asker.start()
    assert timed_get(server.port, "/healthz")[0] == 200
    for asker in askers:
        asker.join(5)
    assert [status for status, _ in results] == [503] * 4
    assert max(seconds for _, seconds in results) < ANSWER_WITHIN_SECONDS
    release.set()
    wait_until(lambda: http_status(server.port, "/readyz") == 200, 5, "readiness to answer again")


def test_connections_past_the_limit_are_closed_and_idle_ones_time_out() -> None:
    server = HttpServer(0, lambda: (True, {}), lambda: (True, {}), host="127.0.0.1")
    server.start()
    try:
        with ExitStack() as stack:
            for _ in range(MAX_CONNECTIONS // 2):
                stallers(stack, server.port)
            wait_until(lambda: refused_at_once(server.port), 5, "an extra connection refused")
            started = time.monotonic()
            wait_until(
                lambda: http_status(server.port, "/healthz", ANSWER_WITHIN_SECONDS) == 200,
                SOCKET_TIMEOUT_SECONDS + 3,
                "idle ones dropped",
            )
            waited = time.monotonic() - started
        assert waited < SOCKET_TIMEOUT_SECONDS + 2
    finally:
        server.stop()


def refused_at_once(port: int) -> bool:
    """A new connection is closed by the server without an answer, at once."""
    with closing(socket.create_connection(("127.0.0.1", port), timeout=2)) as extra:
        try:
            extra.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            return extra.recv(1024) == b""
        except ConnectionResetError:  # closed with our request unread: a reset
            return True


def non_loopback_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_http_host_decides_which_addresses_listen() -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    servers = {
        host: HttpServer(0, lambda: (True, {}), lambda: (True, {}), host=host)
        for host in ("127.0.0.1", "0.0.0.0")
    }
    for server in servers.values():
        server.start()
    try:
        with closing(socket.create_connection((address, servers["0.0.0.0"].port), timeout=2)):
            pass
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, servers["127.0.0.1"].port), timeout=2).close()
    finally:
        for server in servers.values():
            server.stop()
