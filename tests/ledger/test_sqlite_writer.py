"""The SQLite group commit (`consumer.ledger.sqlite_writer`): writers that come in together
share one commit, yet each sees the atomicity and durability of a transaction of its own.

A test holds one writer inside its work (on an event) while others queue behind it, so
that they are certain to share its transaction; what each writer did is then read back
on a connection of the test's own, which sees committed data only.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from consumer.ledger import LedgerUnavailable, sqlite_writer
from consumer.ledger.sqlite import _connect
from consumer.ledger.sqlite_writer import FileWriter, release, writer_for
from tests.support.waiting import wait_until

WAIT = 10.0


class Commits:
    """Connects the writer and counts the COMMIT statements it sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0

    def connect(self) -> sqlite3.Connection:
        conn = _connect(str(self.path))
        conn.set_trace_callback(self._seen)
        return conn

    def _seen(self, statement: str) -> None:
        self.count += statement.strip().upper() == "COMMIT"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "ledger.db"
    conn = _connect(str(path))
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE blobs (b BLOB)")
    conn.execute(
        "CREATE TABLE child (parent_id INTEGER REFERENCES parent (id)"
        " DEFERRABLE INITIALLY DEFERRED)"
    )
    conn.close()
    yield path


def committed(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [n for (n,) in conn.execute("SELECT n FROM t ORDER BY n")]
    finally:
        conn.close()


Then = Callable[[sqlite3.Connection], object]


def insert(writer: FileWriter, n: int, then: Then = lambda conn: None) -> None:
    with writer.transaction(WAIT) as conn:
        conn.execute("INSERT INTO t (n) VALUES (?)", (n,))
        then(conn)


class Held:
    """A first writer kept inside its transaction until `let_go`, and writers queued
    behind it, each in a thread that keeps what it raised."""

    def __init__(self, writer: FileWriter) -> None:
        self.writer = writer
        self.inside = threading.Event()
        self.go = threading.Event()
        self.errors: dict[int, BaseException] = {}
        self.threads = [self._start(0, self._hold)]
        self.inside.wait(WAIT)

    def _hold(self, conn: sqlite3.Connection) -> None:
        self.inside.set()
        self.go.wait(WAIT)

    def queue(self, n: int, then: Then = lambda conn: None) -> None:
        """Start a writer and return once it waits behind the held one (so writers queue
        in the order the test gives)."""
        self.threads.append(self._start(n, then))
        waiting(self.writer, len(self.threads) - 1)

    def let_go(self) -> None:
        self.go.set()
        for thread in self.threads:
            thread.join(WAIT)

    def _start(self, n: int, then: Then) -> threading.Thread:
        def write() -> None:
            try:
                insert(self.writer, n, then)
            except BaseException as error:  # kept for the test to look at
                self.errors[n] = error

        thread = threading.Thread(target=write)
        thread.start()
        return thread


def waiting(writer: FileWriter, count: int) -> None:
    wait_until(lambda: writer._waiting == count, timeout=WAIT, message=f"{count} writers queued")


def test_a_writer_alone_commits_at_once_and_returns_after_its_commit(db: Path) -> None:
    commits = Commits(db)
    writer = FileWriter(commits.connect)
    insert(writer, 1)
    assert committed(db) == [1] and commits.count == 1
    insert(writer, 2)
    assert committed(db) == [1, 2] and commits.count == 2
    writer.close()


def test_writers_that_come_in_together_share_one_commit(db: Path) -> None:
    commits = Commits(db)
    writer = FileWriter(commits.connect)
    held = Held(writer)
    for n in range(1, 11):
        held.queue(n)
    assert committed(db) == []  # nothing is visible before the commit
    held.let_go()
    assert held.errors == {}
    assert committed(db) == list(range(11))
    assert commits.count == 1
    writer.close()


def test_a_failing_writer_undoes_only_its_own_work(db: Path) -> None:
    writer = FileWriter(Commits(db).connect)
    held = Held(writer)
    held.queue(1)
    held.queue(2, then=lambda conn: 1 / 0)
    held.queue(3)
    held.let_go()
    assert set(held.errors) == {2} and isinstance(held.errors[2], ZeroDivisionError)
    assert committed(db) == [0, 1, 3]
    writer.close()


def test_a_failed_commit_fails_every_writer_in_it(db: Path) -> None:
    writer = FileWriter(Commits(db).connect)
    held = Held(writer)
    held.queue(1)
    # A deferred foreign key is checked at COMMIT: writer 2's own work succeeds, the commit
    # that holds everyone's fails, and nobody may believe their work was kept.
    held.queue(2, then=lambda conn: conn.execute("INSERT INTO child VALUES (42)"))
    held.let_go()
    assert set(held.errors) == {0, 1, 2}
    assert all(isinstance(error, sqlite3.IntegrityError) for error in held.errors.values())
    assert committed(db) == []
    insert(writer, 7)  # the writer goes on with a fresh transaction
    assert committed(db) == [7]
    writer.close()


def test_a_writer_that_cannot_get_its_turn_gives_up_and_leaves_nothing_open(
    db: Path,
) -> None:
    writer = FileWriter(Commits(db).connect)
    held = Held(writer)
    with (
        pytest.raises(LedgerUnavailable, match="held the file for over 0.2 s"),
        writer.transaction(0.2),
    ):
        pass
    held.let_go()
    assert held.errors == {} and committed(db) == [0]
    insert(writer, 5)  # the next writer finds no transaction left half-open
    assert committed(db) == [0, 5]
    writer.close()


def test_the_process_has_one_writer_per_file_until_the_last_user_releases_it(
    db: Path, tmp_path: Path
) -> None:
    connect = Commits(db).connect
    first, second = writer_for(str(db), connect), writer_for(str(db), connect)
    other = writer_for(str(tmp_path / "other.db"), connect)
    assert first is second and other is not first
    release(str(db), first)
    assert writer_for(str(db), connect) is second  # still in use: the same one
    release(str(db), second)
    release(str(db), second)
    assert writer_for(str(db), connect) is not first  # closed with its last user
    release(str(tmp_path / "other.db"), other)


class HeldCheckpoint(Commits):
    """Connects the writer; the checkpoint a connection starts is held until `go`."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.inside, self.go = threading.Event(), threading.Event()

    def _seen(self, statement: str) -> None:
        super()._seen(statement)
        if "wal_checkpoint" in statement:
            self.inside.set()
            self.go.wait(WAIT)


def test_commits_copy_no_log_and_a_checkpoint_holds_up_no_other_writer(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_writer, "CHECKPOINT_SECONDS", 3600.0)
    held = HeldCheckpoint(db)
    writer = FileWriter(held.connect)
    first = threading.Thread(target=insert, args=(writer, 1))
    first.start()
    assert held.inside.wait(WAIT), "the first commit makes the first checkpoint"
    insert(writer, 2)  # while that checkpoint is held
    assert committed(db) == [1, 2]
    held.go.set()
    first.join(WAIT)
    megabyte = b"x" * 2**20
    for _ in range(6):  # more than SQLite's own checkpoint threshold (1,000 pages: 4 MB)
        with writer.transaction(WAIT) as conn:
            conn.execute("INSERT INTO blobs (b) VALUES (?)", (megabyte,))
    assert Path(f"{db}-wal").stat().st_size > 6 * 2**20, "a commit copied the log"
    writer.close()
