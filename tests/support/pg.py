"""A private PostgreSQL server for the test session, and fresh databases inside it.

Tests must exercise the real PostgreSQL backend (claims with SKIP LOCKED, advisory locks,
connection loss), so we start a throwaway cluster from Debian's binaries instead of mocking
it. Set ERASURE_TEST_POSTGRES_DSN to use an existing server instead (its role needs
CREATEDB). Missing binaries are an error, never a skip: a skipped backend would hide bugs.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

DSN_ENV = "ERASURE_TEST_POSTGRES_DSN"
_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_OS_USER = "postgres"
# Test data is disposable: skipping fsync makes each CREATE DATABASE and commit cheap.
FAST_OPTIONS = ("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")
_database_numbers = itertools.count(1)


class PostgresNotInstalled(RuntimeError):
    """The PostgreSQL server binaries are missing on this machine."""


def find_bin_dir() -> Path:
    """The newest installed PostgreSQL server's bin directory."""
    candidates = [Path(d) for d in glob.glob(_BIN_GLOB) if (Path(d) / "initdb").exists()]
    if not candidates:
        raise PostgresNotInstalled(
            f"no PostgreSQL server binaries in {_BIN_GLOB}: run `make test`, which installs "
            f"the postgresql package, or set {DSN_ENV} to an existing server"
        )
    return max(candidates, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_postgres(argv: Sequence[str]) -> list[str]:
    """PostgreSQL refuses to run as root, so drop to the postgres user when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", _OS_USER, "--", *argv]
    return list(argv)


def _run(argv: Sequence[str]) -> None:
    result = subprocess.run(_as_postgres(argv), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()}")


def _start(bin_dir: Path, data_dir: Path, options: Sequence[str]) -> int:
    """Start the server on a free port; retry with another if someone took ours meanwhile."""
    log = data_dir.parent / "server.log"
    error = RuntimeError("PostgreSQL did not start")
    for _ in range(3):
        port = _free_port()
        server_options = " ".join(
            (f"-p {port}", "-c listen_addresses=127.0.0.1", f"-k {data_dir}", *options)
        )
        try:
            _run(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(data_dir),
                    "-l",
                    str(log),
                    "-w",
                    "-o",
                    server_options,
                    "start",
                ]
            )
            return port
        except RuntimeError as exc:
            error = RuntimeError(f"{exc}\n{log.read_text(errors='replace')[-2000:]}")
    raise error


@contextlib.contextmanager
def private_cluster(options: Sequence[str] = FAST_OPTIONS) -> Iterator[str]:
    """Run a new cluster in a temporary directory; yields its superuser DSN."""
    bin_dir = find_bin_dir()
    work_dir = Path(tempfile.mkdtemp(prefix="erasure-pg-"))
    data_dir = work_dir / "data"
    try:
        if os.geteuid() == 0:
            shutil.chown(work_dir, _OS_USER, _OS_USER)
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
        )
        port = _start(bin_dir, data_dir, options)
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            _run([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "stop"])
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """The server DSN for this session: ERASURE_TEST_POSTGRES_DSN, or a private cluster."""
    external = os.environ.get(DSN_ENV)
    if external:
        yield external
        return
    with private_cluster() as dsn:
        yield dsn


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@contextlib.contextmanager
def fresh_database(server_dsn: str) -> Iterator[str]:
    """Create an empty database for one test (so tests never see each other's rows),
    yield its DSN and drop it afterwards, even if the test left connections open."""
    name = f"test_{os.getpid()}_{next(_database_numbers)}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(server_dsn, name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
