"""CPU time that PostgreSQL's server processes spent for a measurement.

On this 2-core machine the server competes with the client for the CPU, and other people's
jobs make wall-clock rates noisy; CPU time per event is the steadier figure. For SQLite
it is all in the measuring process; for PostgreSQL the work of the client's backend
process has to be added, read from /proc (the private cluster runs on this host).
"""

from __future__ import annotations

import os

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
    return sum(_process_cpu_seconds(pid) for (pid,) in rows)


def _process_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # The command name (field 2) may hold spaces; utime and stime follow its ')'.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
