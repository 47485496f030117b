"""The vendor-throughput benchmark's reading of a sandbox's call log."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bench.throughput_stats import Operation, busiest_second, excess_calls, figures, per_second
from devtools.sandbox.routing import Call


def calls(path: str, stamps: list[float], status: int = 200) -> list[Call]:
    return [Call("GET", path, "", status, stamp) for stamp in stamps]


def test_the_busiest_second_counts_calls_less_than_a_second_apart() -> None:
    assert busiest_second([0.0, 0.5, 0.99, 1.0, 1.5]) == 3
    assert busiest_second([1.5, 0.0, 1.0, 0.99, 0.5]) == 3  # in any order
    assert busiest_second([]) == 0


def test_calls_beyond_the_rate_burst_and_jitter_are_violations() -> None:
    steady = [n / 10 for n in range(30)]  # 10 a second
    assert excess_calls(steady, 10.0) == 0
    assert excess_calls([0.0] * 13, 10.0) == 1  # 10 + 2 allowed at once


def test_figures_of_one_operation() -> None:
    log = calls("/status/", [0.0, 0.5, 1.0]) + calls("/status/", [1.0], 429)
    log += calls("/data/x/", [0.2])
    fig = figures(Operation("monetate", "status", "/status/", 2.0, lead_seconds=1.0), log)
    assert (fig.calls, fig.refused, fig.violations) == (4, 1, 0)
    assert fig.achieved == 3.0  # 3 intervals in 1 s
    assert fig.floor_seconds == 4 / 2.0 + 1.0


def test_calls_are_counted_in_each_whole_second_from_the_first() -> None:
    assert per_second([3.5, 0.0, 0.5, 1.5, 1.25]) == (2, 2, 0, 1)  # in any order
    assert per_second([5.0]) == (1,)
    assert per_second([]) == ()


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1))
def test_every_call_is_in_one_second_and_the_last_second_has_the_last(stamps: list[float]) -> None:
    counts = per_second(stamps)
    assert sum(counts) == len(stamps)
    assert counts[-1] > 0
