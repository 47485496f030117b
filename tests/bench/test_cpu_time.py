"""The benchmarks' CPU read-out (`bench.cpu_time`): a process's own CPU, the machine's."""

from __future__ import annotations

import os
import time

from bench.cpu_time import MachineTicks, process_cpu_seconds


def burn(seconds: float) -> None:
    """Keep this thread on the CPU for `seconds` of its own CPU time."""
    until = time.process_time() + seconds
    while time.process_time() < until:
        pass


def test_a_process_is_charged_the_cpu_it_used() -> None:
    before = process_cpu_seconds(os.getpid())
    burn(0.3)
    used = process_cpu_seconds(os.getpid()) - before
    assert 0.25 <= used <= 0.6  # clock ticks are 10 ms; the test's other threads are idle


def test_the_machine_had_at_least_the_burning_core_busy() -> None:
    before = MachineTicks.now()
    burn(0.3)
    busy = MachineTicks.now().busy_cores_since(before)
    assert 0.4 <= busy <= (os.cpu_count() or 1)  # a runnable thread leaves no core idle


def test_busy_cores_are_the_busy_share_of_every_core() -> None:
    cores = os.cpu_count() or 1
    assert MachineTicks(150, 400).busy_cores_since(MachineTicks(50, 200)) == cores / 2
    assert MachineTicks(50, 200).busy_cores_since(MachineTicks(50, 200)) == 0.0
