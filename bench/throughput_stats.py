"""What the vendor-throughput benchmark reads out of the sandboxes' own call logs.

Each vendor operation is a path the sandbox logs calls to. Its figures: calls made, the
calls per second achieved against the configured rate (calls after the first, over the time
from the first to the last), the busiest second, and violations: calls that made more than
`rate + 2` calls within one second (one for the bucket's burst, one for the jitter of
answers logged after a latency), plus every call the sandbox itself refused with 429 (the
Monetate sandbox enforces its status rate). The floor is the least time the configured rates
allow the operation's calls: `calls / rate`, plus, for status checks, the flush interval
and first poll delay that must pass before the first check can be made. And the calls in
each whole second from the first call (`per_second`): where a rate was lost, the ramp,
the dips, the tail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from devtools.sandbox.routing import Call

BURST_AND_JITTER_CALLS = 2


@dataclass(frozen=True)
class Operation:
    """A vendor operation as its sandbox logs it; `rate` None when none is configured."""

    vendor: str
    name: str
    path_part: str
    rate: float | None
    lead_seconds: float = 0.0


@dataclass(frozen=True)
class OperationFigures:
    vendor: str
    name: str
    calls: int
    rate: float | None
    achieved: float
    busiest_second: int
    violations: int
    refused: int
    floor_seconds: float
    per_second: tuple[int, ...]

    def as_row(self) -> list[str]:
        rate = "-" if self.rate is None else f"{self.rate:g}"
        share = "" if self.rate is None else f" ({self.achieved / self.rate:.2f}x)"
        return [
            f"{self.vendor} {self.name}",
            str(self.calls),
            rate,
            f"{self.achieved:.1f}{share}",
            str(self.busiest_second),
            str(self.violations + self.refused),
            f"{self.floor_seconds:.1f}",
        ]


def figures(operation: Operation, log: Sequence[Call]) -> OperationFigures:
    calls = [call for call in log if operation.path_part in call.path]
    stamps = sorted(call.timestamp for call in calls)
    span = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
    achieved = (len(stamps) - 1) / span if span > 0 else 0.0
    rate = operation.rate
    floor = 0.0 if rate is None else len(stamps) / rate + operation.lead_seconds
    return OperationFigures(
        operation.vendor,
        operation.name,
        len(stamps),
        rate,
        achieved,
        busiest_second(stamps),
        0 if rate is None else excess_calls(stamps, rate),
        sum(1 for call in calls if call.status == 429),
        floor,
        per_second(stamps),
    )


def per_second(stamps: Sequence[float]) -> tuple[int, ...]:
    """Calls in each whole second from the first (stamps in any order)."""
    if not stamps:
        return ()
    first = min(stamps)
    counts = [0] * (int(max(stamps) - first) + 1)
    for stamp in stamps:
        counts[int(stamp - first)] += 1
    return tuple(counts)


def busiest_second(stamps: Sequence[float]) -> int:
    """The most calls logged within one second of each other (stamps in any order)."""
    ordered = sorted(stamps)
    most = first = 0
    for last, stamp in enumerate(ordered):
        while stamp - ordered[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def excess_calls(stamps: Sequence[float], rate: float) -> int:
    """Calls that arrived when more than `rate + BURST_AND_JITTER_CALLS` had within a second."""
    allowed = rate + BURST_AND_JITTER_CALLS
    excess = first = 0
    for last, stamp in enumerate(stamps):
        while stamp - stamps[first] >= 1.0:
            first += 1
        excess += last - first + 1 > allowed
    return excess
