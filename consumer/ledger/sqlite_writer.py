"""Group commit for one process's write transactions on one SQLite file.

SQLite has one writer at a time, and with `synchronous = FULL` every commit waits for the
disk (an fsync of the WAL). A worker's loops make several hundred small write
transactions a second at 100 vendor calls/s (claim, rate slot, record), each its own
commit: measured on a 2-core VM whose fsync went from 0.5 ms to 2-7 ms while the ledger
was busy, the commits then held the file 0.7-0.9 s of every second and the vendor calls
fell to a third of the configured rate for seconds at a time (docs/benchmarks.md, "Vendor
throughput").

So the writers of a process share one connection and take turns in one open transaction:
each writer's work runs in a SAVEPOINT of its own (so its failure undoes only its work),
and the transaction is committed when no other writer is waiting, or after
`MOST_WRITERS_PER_COMMIT`. A writer returns only once the commit that holds its work
succeeded, and gets the commit's error otherwise, exactly as with a transaction of its
own: the durability and the atomicity each caller sees are unchanged, and the disk is
synced once for everyone who came in together. Alone, a writer commits at once.

SQLite copies its write-ahead log into the file (a checkpoint) in the commit that finds the
log over 1,000 pages, by default, holding the file's one writer meanwhile: measured in
one worker at 100 Voyado calls/s, such commits took 180 ms to 1.2 s, and every loop's
records and claims waited (the Voyado rate fell by 10-20% in a run). So the connections
make no such checkpoints (`wal_autocheckpoint = 0`, see `consumer.ledger.sqlite`), and
the writer that commits once `CHECKPOINT_SECONDS` have passed since the last checkpoint
starts a passive one, on a connection and in a thread of its own: it copies what it can
without waiting for readers or writers, and no caller waits for it (a caller may hold what
others wait for: a rate bucket's statement). A checkpoint that fails leaves the log to
the next one.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from consumer.clock import SYSTEM_CLOCK
from consumer.ledger.protocol import LedgerUnavailable

log = logging.getLogger(__name__)

MOST_WRITERS_PER_COMMIT = 64
"""Bounds how long one commit keeps the file from other processes (an operator command)."""
CHECKPOINT_SECONDS = 1.0
"""How often the log is copied into the file: a second's writes of a busy worker are a few
hundred pages, copied in milliseconds, and the log stays that small."""


class _Commit:
    """One shared transaction: the writers in it wait for its outcome."""

    def __init__(self) -> None:
        self.writers = 0
        self.error: BaseException | None = None
        self._done = threading.Event()

    def finish(self, error: BaseException | None) -> None:
        self.error = error
        self._done.set()

    def outcome(self) -> None:
        self._done.wait()
        if self.error is not None:
            raise self.error


class FileWriter:
    """The write transactions of every ledger object of this process on one file."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        self._turn = threading.Lock()  # held by the one writer whose work is running
        self._state = threading.Lock()  # guards `_waiting` and `_commit`
        self._waiting = 0
        self._commit: _Commit | None = None
        self._checkpointing = threading.Lock()  # held by the writer making a checkpoint
        self._checkpointer: sqlite3.Connection | None = None
        self._next_checkpoint = 0.0  # monotonic; the first commit makes one
        self.users = 0  # ledger objects using this writer (guarded by the registry)

    @contextmanager
    def transaction(self, wait_seconds: float) -> Iterator[sqlite3.Connection]:
        """The shared connection inside this writer's savepoint; returns after the commit.
        Waits at most `wait_seconds` for the other writers of this process."""
        self._take_turn(wait_seconds)
        commit = self._begin(wait_seconds)
        try:
            conn = self._savepoint()
            try:
                yield conn
            except BaseException:
                self._undo(conn, commit)
                raise
            conn.execute("RELEASE writer")
        finally:
            self._end_turn(commit)
        commit.outcome()

    def close(self) -> None:
        with self._turn:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        with self._checkpointing:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None

    def _take_turn(self, wait_seconds: float) -> None:
        with self._state:
            self._waiting += 1
        taken = self._turn.acquire(timeout=wait_seconds)
        with self._state:
            self._waiting -= 1
            # Decided under `_state`, as the writer before decides whether to commit: one
            # that gave up waiting can never leave a transaction open with nobody to end it.
            taken = taken or self._turn.acquire(blocking=False)
        if not taken:
            raise LedgerUnavailable(
                f"SQLite ledger unavailable: this process's writers held the file for over"
                f" {wait_seconds:g} s"
            )

    def _begin(self, wait_seconds: float) -> _Commit:
        if self._commit is None:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                # Another process's lock is waited for as long as this writer waits.
                self._conn.execute(f"PRAGMA busy_timeout = {int(wait_seconds * 1000)}")
                self._conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                self._turn.release()
                raise
            self._commit = _Commit()
        self._commit.writers += 1
        return self._commit

    def _savepoint(self) -> sqlite3.Connection:
        assert self._conn is not None
        self._conn.execute("SAVEPOINT writer")
        return self._conn

    def _undo(self, conn: sqlite3.Connection, commit: _Commit) -> None:
        """Undo this writer's work only; if SQLite rolled the whole transaction back (an
        I/O error, a full disk), the writers before it in this commit lost theirs too."""
        if conn.in_transaction:
            conn.execute("ROLLBACK TO writer")
            conn.execute("RELEASE writer")
            commit.writers -= 1
        else:
            self._commit = None
            commit.finish(
                LedgerUnavailable("SQLite ledger unavailable: the transaction was rolled back")
            )

    def _end_turn(self, commit: _Commit) -> None:
        """Hand the open transaction to the next writer, or commit it."""
        with self._state:
            if self._commit is not commit:  # already ended (rolled back)
                self._turn.release()
                return
            if self._waiting and commit.writers < MOST_WRITERS_PER_COMMIT:
                self._turn.release()
                return
            self._commit = None
        try:
            self._finish(commit)
        finally:
            self._turn.release()
        self._checkpoint_if_due()

    def _finish(self, commit: _Commit) -> None:
        """End the transaction and tell its writers how it went, whatever happens: a writer
        that handed its work on waits for this without a timeout."""
        assert self._conn is not None
        error: BaseException | None = None
        try:
            # Rolled back when every writer in it failed and undid its work.
            self._conn.execute("COMMIT" if commit.writers else "ROLLBACK")
        except BaseException as failed:
            error = failed
            if self._conn.in_transaction:
                with suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
        commit.finish(error)

    def _checkpoint_if_due(self) -> None:
        """Start a passive checkpoint, if one is due and none is under way."""
        now = SYSTEM_CLOCK.monotonic()
        if now < self._next_checkpoint or not self._checkpointing.acquire(blocking=False):
            return
        self._next_checkpoint = now + CHECKPOINT_SECONDS
        threading.Thread(target=self._checkpoint, name="sqlite-checkpoint", daemon=True).start()

    def _checkpoint(self) -> None:
        """Copy the log into the file; runs holding `_checkpointing`, which it releases."""
        try:
            if self._checkpointer is None:
                self._checkpointer = self._connect()
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception as error:  # whatever it was, the next checkpoint tries again
            log.warning(
                "SQLite ledger: the write-ahead log was not copied into the file (tried"
                " again within %g s): %s",
                CHECKPOINT_SECONDS,
                error,
            )
        finally:
            self._checkpointing.release()


_REGISTRY_LOCK = threading.Lock()
_WRITERS: dict[str, FileWriter] = {}


def writer_for(path: str, connect: Callable[[], sqlite3.Connection]) -> FileWriter:
    """This process's writer for the file at `path` (one per file); `release` when done."""
    with _REGISTRY_LOCK:
        writer = _WRITERS.get(path)
        if writer is None:
            writer = _WRITERS[path] = FileWriter(connect)
        writer.users += 1
        return writer


def _forget_writers() -> None:
    """A forked child must not use its parent's connections (nor wait on a lock a parent's
    thread held at the fork): its ledger objects open their own."""
    global _REGISTRY_LOCK  # noqa: PLW0603
    _REGISTRY_LOCK = threading.Lock()
    _WRITERS.clear()


os.register_at_fork(after_in_child=_forget_writers)


def release(path: str, writer: FileWriter) -> None:
    """A ledger object is done with the file's writer; the last one closes its connection."""
    with _REGISTRY_LOCK:
        writer.users -= 1
        if writer.users > 0:
            return
        if _WRITERS.get(path) is writer:
            del _WRITERS[path]
    writer.close()
