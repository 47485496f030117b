"""CPU time spent for a measurement: by the measured processes, by PostgreSQL's server, by
the whole machine.

On this 2-core machine the server, the sandboxes and the broker compete with the worker
for the CPU, and other people's jobs make wall-clock rates noisy; CPU time per event or per
call is the steadier figure, and the machine's busy share tells whether a rate was bound
by the machine or by the worker. For SQLite the ledger's work is all in the worker's
process; for PostgreSQL the work of the client's backend processes has to be added, read
from /proc (the private cluster runs on this host).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psycopg

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu_seconds(url: str) -> float | None:
    """User + system CPU of every other client backend connected to the database of `url`,
    since each connected (None when the URL is not PostgreSQL). Call before the measured
    code closes its connection."""
    if not url.startswith(("postgresql://", "postgres://")):
        return None
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ).fetchall()
    return sum(process_cpu_seconds(pid) for (pid,) in rows)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` (all its threads) since it started."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # The command name (field 2) may hold spaces; utime and stime follow its ')'.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


@dataclass(frozen=True)
class MachineTicks:
    """The machine's CPU time so far, all cores summed (/proc/stat), in clock ticks."""

    busy: int
    total: int

    @classmethod
    def now(cls) -> MachineTicks:
        with open("/proc/stat", encoding="ascii") as stat:
            ticks = [int(field) for field in stat.readline().split()[1:]]
        idle = ticks[3] + ticks[4]  # idle and iowait
        return cls(sum(ticks) - idle, sum(ticks))

    def busy_cores_since(self, earlier: MachineTicks) -> float:
        """How many cores were busy on average between `earlier` and this reading."""
        total = self.total - earlier.total
        return 0.0 if total <= 0 else (self.busy - earlier.busy) / total * (os.cpu_count() or 1)
