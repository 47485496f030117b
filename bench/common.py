"""What the orchestrator and the measurement children share: the job description handed
to a child, the result it hands back, and how memory is read.

Imports only the standard library, so that the bare baseline's peak RSS is not inflated by
anything the worker needs (pydantic, prometheus_client, ...).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

# The vendor every benchmark request fans out to: Acoustic, one database, EMAIL -> email.
VENDOR = "acoustic"
IDENTITY_TYPE = "email"
DATABASE_ID = 10091


@dataclass(frozen=True)
class Job:
    """One measurement, as the parent describes it to a child (passed as JSON in argv).

    `targets` maps each input partition to the offset after its last produced event: the
    measurement ends when the group's commits reach all of them.
    """

    bootstrap: str
    input_topic: str
    status_topic: str
    dlq_topic: str
    group_id: str
    ledger_url: str
    events: int
    targets: dict[int, int]
    kafka_config: dict[str, str | int | float | bool]
    timeout: float
    profile_path: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Job:
        raw = json.loads(text)
        raw["targets"] = {int(partition): int(end) for partition, end in raw["targets"].items()}
        return cls(**raw)


@dataclass
class Result:
    """What a child measured. `seconds` runs from the first non-empty consume to the
    synchronous commit that covered the last event (the group join is excluded: Tansu
    holds it ~1 s, which would swamp a few-second run); `cpu_seconds` is the process CPU
    time (all threads, librdkafka's included) over the same window; `server_cpu_seconds`
    that of its PostgreSQL backend (None for SQLite, whose work is in the process)."""

    events: int
    seconds: float
    cpu_seconds: float
    batches: int
    rss_before_mib: float
    peak_rss_mib: float
    server_cpu_seconds: float | None = None

    @property
    def total_cpu_seconds(self) -> float:
        return self.cpu_seconds + (self.server_cpu_seconds or 0.0)

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def memory_mib(key: str) -> float:
    """A `VmRSS`/`VmHWM` line of /proc/self/status, in MiB (the kernel reports kB)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} missing from /proc/self/status")


def reached(committed: Mapping[int, int], targets: Mapping[int, int]) -> bool:
    """Whether the committed positions cover every produced event."""
    return all(committed.get(partition, 0) >= end for partition, end in targets.items())


class Deadline:
    """A measurement that does not finish in time fails loudly instead of hanging `make`."""

    def __init__(self, seconds: float, what: str) -> None:
        self._at = time.monotonic() + seconds
        self._seconds = seconds
        self._what = what

    def check(self) -> None:
        if time.monotonic() > self._at:
            raise TimeoutError(f"{self._what} not done within {self._seconds:.0f} s")


def child_main(measure: Callable[[Job], Result]) -> None:
    """Entry point of a child: the job from argv[1], the result as JSON on stdout's last
    line (everything else a child prints goes to stderr)."""
    job = Job.from_json(sys.argv[1])
    result = measure(job)
    sys.stdout.write(json.dumps(asdict(result)) + "\n")
    sys.stdout.flush()
