"""The tamper-evident audit trail: every status event and every operator action is an entry
of one hash chain, and `verify_chain` walks it.

Each entry has a position (an event's `seq`, an action's `chain_pos`) and
`hash = SHA-256(previous entry's hash + kind + position + body)`, the body being a canonical
encoding of its content (`entry_body`), computed in the transaction that records it, one
pass per batch. Positions are handed out under the one `chain_head` row, which holds the
newest position and hash: PostgreSQL replicas lock it (FOR UPDATE) in every recording
transaction, so the chain stays linear however many write at once, and SQLite's writer
lock serialises them anyway. A transaction therefore records its events and actions last,
after every other row lock it takes: nothing then waits for a lock while holding the head.

SQLite hashes in Python. PostgreSQL hashes in the server (migration 0006's chain_append),
in the statement that inserts the entries, sent with the COMMIT: every replica's recording
transactions wait for the head, so it must not be held while one worker's thread waits for
its process (`PostgresLedger._append_entries`). The worker still encodes the bodies, and
`verify_chain` recomputes every hash in Python, so the two must agree (tests/ledger).

Operator actions are in the same chain as events: an `extend` changes a legal due date
without any status event, and an auditor must be able to trust it as much as the events.

Retention deletes old entries. For the newest surviving entry before a deleted run (or the
chain's start), `chain_gaps` keeps the hash the next survivor chains to: every entry that is
left still verifies, an entry deleted by anything else still breaks the chain.

What it proves: an edit, insertion or deletion made with SQL behind the ledger's back
shows, unless whoever made it recomputed every later hash and the head. `verify` prints the
head hash; an auditor who notes it can tell later whether history was rewritten before it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from hashlib import sha256 as _sha256

from consumer.ledger.backend import SqlBackend, Tx
from consumer.ledger.records import ChainBreak, ChainReport
from consumer.ledger.rows import EVENT_COLUMNS, Row

GENESIS = "0" * 64
ACTION_COLUMNS = ("request_id", "vendor", "action", "actor", "reason", "detail", "at")
_EVENT_TIME = EVENT_COLUMNS.index("changed_at")
_ACTION_TIME = ACTION_COLUMNS.index("at")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_LOCK_HEAD = "SELECT pos, hash FROM chain_head WHERE id = 1"
_MOVE_HEAD = "UPDATE chain_head SET pos = ?, hash = ? WHERE id = 1"
_EVENTS = f"SELECT seq, {', '.join(EVENT_COLUMNS)}, hash FROM events WHERE seq > ? ORDER BY seq"
_ACTIONS = (
    f"SELECT chain_pos, action_id, {', '.join(ACTION_COLUMNS)}, hash FROM operator_actions"
    " WHERE chain_pos IS NOT NULL ORDER BY chain_pos"
)


def micros(moment: object) -> str:
    """A stored or to-be-stored time as decimal microseconds since the epoch, the same on
    both backends: SQLite stores that integer, PostgreSQL takes ISO text and gives back
    datetimes."""
    if isinstance(moment, int):
        return str(moment)
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if not isinstance(moment, datetime):
        raise TypeError(f"not a ledger time: {type(moment).__name__}")
    return str((moment - _EPOCH) // _MICROSECOND)


def entry_body(fields: Iterable[str | None]) -> str:
    """A canonical encoding of one entry's content: each field length-prefixed (None as
    '-'), so no two different entries encode alike. Times come as decimal microseconds
    (`micros`), the same text whichever backend stored them."""
    return "".join(["-" if field is None else f"{len(field)}:{field}" for field in fields])


def entry_hash(previous: str, kind: str, position: int, body: str) -> str:
    """SHA-256 over the previous hash, the entry's kind and position, and its body. The
    PostgreSQL ledger computes the same in the server (migration 0006's chain_append)."""
    return _sha256(f"{previous}{kind}{position};{body}".encode()).hexdigest()


@dataclass(frozen=True)
class EntryTable:
    """Where entries of one kind are stored: the position column, then `columns` (the
    content, in hashed order, the time at `time_at`), then the hash."""

    kind: str
    table: str
    position: str
    columns: tuple[str, ...]
    time_at: int


EVENT_ENTRIES = EntryTable("event", "events", "seq", EVENT_COLUMNS, _EVENT_TIME)
ACTION_ENTRIES = EntryTable("action", "operator_actions", "chain_pos", ACTION_COLUMNS, _ACTION_TIME)


@dataclass(frozen=True, slots=True)
class Entry:
    """One chain entry as read back: its position, what it is and its hashed content."""

    position: int
    kind: str  # "event" or "action"
    ref: str  # event_id, or the action's id
    request_id: str
    fields: tuple[str | None, ...]
    hash: str | None


@dataclass(frozen=True, slots=True)
class Gap:
    after: int
    hash: str
    deleted: int


@dataclass(frozen=True, slots=True)
class Head:
    position: int
    hash: str
    chained_from: int


class SqlAudit(SqlBackend):
    """Records events and operator actions as chain entries, and verifies the chain."""

    def _insert_events(self, tx: Tx, events: Sequence[Row]) -> None:
        """Record status events (rows of EVENT_COLUMNS) in order, chained. Every event the
        ledger records goes through here, so the audit trail has one way in."""
        self._chain(tx, EVENT_ENTRIES, events)

    def _insert_actions(self, tx: Tx, actions: Sequence[Row]) -> None:
        """Record operator actions (rows of ACTION_COLUMNS) in order, chained: the one way
        operator actions are recorded."""
        self._chain(tx, ACTION_ENTRIES, actions)

    def _chain(self, tx: Tx, entries: EntryTable, rows: Sequence[Row]) -> None:
        """Insert `rows` as the chain's next entries. Times are hashed as microseconds,
        converted once per distinct value (a batch shares one time)."""
        if not rows:
            return
        times: dict[object, str] = {}
        bodies = []
        at_index = entries.time_at
        for row in rows:
            moment = row[at_index]
            at = times.get(moment)
            if at is None:
                at = times[moment] = micros(moment)
            bodies.append(entry_body((*row[:at_index], at, *row[at_index + 1 :])))
        self._append_entries(tx, entries, rows, bodies)

    def _append_entries(
        self, tx: Tx, entries: EntryTable, rows: Sequence[Row], bodies: Sequence[str]
    ) -> None:
        """Position and hash the entries under the head, insert them, move the head past
        them (here in Python; PostgreSQL does it in the server)."""
        ((position, previous),) = tx.rows(_LOCK_HEAD + self.lock_rows)
        out: list[Row] = []
        for row, body in zip(rows, bodies, strict=True):
            position += 1
            previous = entry_hash(previous, entries.kind, position, body)
            out.append((position, *row, previous))
        tx.many(_MOVE_HEAD, [(position, previous)])
        tx.insert(entries.table, (entries.position, *entries.columns, "hash"), out)

    def _unchain(self, tx: Tx, request_ids: Sequence[str]) -> None:
        """Before retention deletes the entries of `request_ids`: for each run of entries
        about to go, a checkpoint after the survivor before it holding the hash the survivor
        after it chains to. Takes the head lock, so checkpoint writers (and recorders, for
        that short while) run one at a time: two of them working on neighbouring runs would
        each leave a checkpoint after an entry the other deletes."""
        ((chained_from,),) = tx.rows(
            "SELECT chained_from FROM chain_head WHERE id = 1" + self.lock_rows
        )
        ids = (self._array(list(request_ids)), chained_from)
        doomed = tx.rows(
            f"SELECT seq, hash FROM events WHERE request_id {self.in_array} AND seq > ?", ids
        ) + tx.rows(
            f"SELECT chain_pos, hash FROM operator_actions WHERE request_id {self.in_array}"
            " AND chain_pos > ?",
            ids,
        )
        if not doomed:
            return
        doomed.sort()
        positions = self._array([position for position, _ in doomed])
        gaps = {
            after: (gap_hash, deleted)
            for after, gap_hash, deleted in tx.rows(
                f"SELECT after_pos, hash, deleted FROM chain_gaps WHERE after_pos {self.in_array}",
                (positions,),
            )
        }
        runs: list[Gap] = []
        previous = chained_from
        for position, own_hash in doomed:
            survivor = self._survivor_between(tx, previous, position)
            if survivor is not None or not runs:
                runs.append(Gap(previous if survivor is None else survivor, GENESIS, 0))
            # The entry after this one chains to its hash, or to its own checkpoint's.
            after_hash, deleted = gaps.get(position, (own_hash, 0))
            runs[-1] = Gap(runs[-1].after, after_hash, runs[-1].deleted + 1 + deleted)
            previous = position
        tx.rows(f"DELETE FROM chain_gaps WHERE after_pos {self.in_array}", (positions,))
        tx.many(
            "INSERT INTO chain_gaps (after_pos, hash, deleted) VALUES (?, ?, ?)"
            " ON CONFLICT (after_pos) DO UPDATE SET hash = excluded.hash,"
            " deleted = chain_gaps.deleted + excluded.deleted",
            [(run.after, run.hash, run.deleted) for run in runs],
        )

    def _survivor_between(self, tx: Tx, low: int, high: int) -> int | None:
        """The newest entry strictly between two positions, in either table."""
        ((event, action),) = tx.rows(
            "SELECT (SELECT seq FROM events WHERE seq > ? AND seq < ?"
            " ORDER BY seq DESC LIMIT 1), (SELECT chain_pos FROM operator_actions"
            " WHERE chain_pos > ? AND chain_pos < ? ORDER BY chain_pos DESC LIMIT 1)",
            (low, high, low, high),
        )
        found = [position for position in (event, action) if position is not None]
        return max(found) if found else None

    def verify_chain(self) -> ChainReport:
        with self._transaction(write=False) as tx:
            if self.snapshot:
                tx.rows(self.snapshot)
            head, unchained = self._head(tx)
            stray = tx.rows(
                "SELECT action_id, request_id FROM operator_actions WHERE chain_pos IS NULL"
                " AND action_id > (SELECT actions_from FROM chain_head) ORDER BY action_id"
                " LIMIT 1"
            )
            if stray:
                (action_id, request_id), reason = stray[0], "recorded outside the chain"
                broken = ChainBreak("action", 0, str(action_id), request_id, reason)
                return ChainReport(0, unchained, 0, head.position, head.hash, broken)
            entries = heapq.merge(
                self._events(tx.stream(_EVENTS, (head.chained_from,))),
                self._actions(tx.stream(_ACTIONS)),
                key=lambda entry: entry.position,
            )
            gaps = (
                Gap(*row)
                for row in tx.stream(
                    "SELECT after_pos, hash, deleted FROM chain_gaps ORDER BY after_pos"
                )
            )
            return walk(entries, gaps, head, unchained)

    def _head(self, tx: Tx) -> tuple[Head, int]:
        """The chain head, and how many entries predate the chain."""
        ((position, head_hash, chained_from, actions_from),) = tx.rows(
            "SELECT pos, hash, chained_from, actions_from FROM chain_head"
        )
        ((events,),) = tx.rows("SELECT count(*) FROM events WHERE seq <= ?", (chained_from,))
        ((actions,),) = tx.rows(
            "SELECT count(*) FROM operator_actions WHERE chain_pos IS NULL AND action_id <= ?",
            (actions_from,),
        )
        return Head(position, head_hash, chained_from), events + actions

    def _events(self, rows: Iterator[Row]) -> Iterator[Entry]:
        for seq, *fields, stored in rows:
            fields[_EVENT_TIME] = micros(self._from_db(fields[_EVENT_TIME]))
            yield Entry(seq, "event", fields[0], fields[1], tuple(fields), stored)

    def _actions(self, rows: Iterator[Row]) -> Iterator[Entry]:
        for position, action_id, *fields, stored in rows:
            fields[_ACTION_TIME] = micros(self._from_db(fields[_ACTION_TIME]))
            yield Entry(position, "action", str(action_id), fields[0], tuple(fields), stored)


class _Gaps:
    """Retention checkpoints in position order, consumed as the walk passes them."""

    def __init__(self, gaps: Iterable[Gap]) -> None:
        self._gaps = iter(gaps)
        self._next = next(self._gaps, None)

    def stray(self, before: int) -> Gap | None:
        """A checkpoint after a position the walk has passed without finding it there:
        its entry is gone (deleted by something other than retention)."""
        gap = self._next
        return gap if gap is not None and gap.after < before else None

    def take(self, after: int) -> Gap | None:
        gap = self._next
        if gap is None or gap.after != after:
            return None
        self._next = next(self._gaps, None)
        return gap

    def left(self) -> Gap | None:
        return self._next


def walk(entries: Iterable[Entry], gaps: Iterable[Gap], head: Head, unchained: int) -> ChainReport:
    """Check every entry against the one before it (or the checkpoint standing for a
    deleted run), then the newest against the head; report the first thing that breaks."""
    checkpoints = _Gaps(gaps)
    position, previous = head.chained_from, GENESIS
    checked = deleted = 0

    def report(broken: ChainBreak | None) -> ChainReport:
        return ChainReport(checked, unchained, deleted, head.position, head.hash, broken)

    for entry in entries:
        stray = checkpoints.stray(position)
        if stray is not None:
            return report(_stray(stray))
        gap = checkpoints.take(position)
        if gap is not None:
            previous, deleted = gap.hash, deleted + gap.deleted
        elif entry.position != position + 1:
            return report(_broken(entry, f"entries after position {position} are missing"))
        if entry_hash(previous, entry.kind, entry.position, entry_body(entry.fields)) != entry.hash:
            return report(_broken(entry, "its hash does not match its content and the chain"))
        position, previous, checked = entry.position, entry.hash, checked + 1
    gap = checkpoints.take(position)
    if gap is not None:
        previous, deleted = gap.hash, deleted + gap.deleted
    stray = checkpoints.left()
    if stray is not None:
        return report(_stray(stray))
    if previous != head.hash or (gap is None and position != head.position):
        reason = f"the newest entries are missing: the chain ends at position {position}"
        return report(ChainBreak("head", head.position, None, None, reason))
    return report(None)


def _broken(entry: Entry, reason: str) -> ChainBreak:
    return ChainBreak(entry.kind, entry.position, entry.ref, entry.request_id, reason)


def _stray(gap: Gap) -> ChainBreak:
    reason = "the entry this retention checkpoint follows is missing"
    return ChainBreak("checkpoint", gap.after, None, None, reason)
