"""Readiness tells the truth about the ledger (issue 7 item 8).

A SQLite file that another process keeps write-locked still answers reads, so a readiness
probe that only read said 200 while ingest could record nothing. A real worker process
(`erasure-worker run` against Tansu, the Acoustic sandbox and a SQLite ledger) must answer
/readyz 503 while the lock is held, stay alive (/healthz 200: restarting it would not help),
and be ready again once the lock is gone.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.support.http import http_get
from tests.support.waiting import wait_until
from tests.support.worker import wait_ready, worker_stack

pytestmark = pytest.mark.slow

SQLITE_PREFIX = "sqlite:///"


def test_readiness_fails_while_another_process_holds_the_sqlite_write_lock(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    with worker_stack(tmp_path, kafka_bootstrap, requests=1) as stack:
        worker = stack.start_worker()
        wait_ready(stack, worker)
        locker = sqlite3.connect(stack.ledger_url.removeprefix(SQLITE_PREFIX), isolation_level=None)
        try:
            locker.execute("BEGIN IMMEDIATE")
            body = wait_until(
                lambda: _answer(stack.http_port, "/readyz", 503), 15, "/readyz to answer 503"
            )
            assert json.loads(body)["ledger"] is False
            assert _answer(stack.http_port, "/healthz", 200), "the worker must stay alive"
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        wait_ready(stack, worker, timeout=15)


def _answer(port: int, path: str, status: int) -> str | None:
    """The body of `path` if it answered with `status`."""
    answer = http_get(port, path)
    return answer[1] if answer is not None and answer[0] == status else None
