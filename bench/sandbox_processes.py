"""Each vendor sandbox of the throughput benchmark in a process of its own.

In one process, four sandboxes and the benchmark's own status-topic reader share one GIL:
a sandbox then reads its clock when that process gets round to a request, not when the
request arrived, and a strict rate check (Monetate's status calls) sees calls that left
the worker evenly spaced arrive in bunches. A real vendor's edge is not slowed by its
client's neighbours, so here each sandbox runs alone: started, prepared and seeded in its
process, and asked for its call log at the end, over a pipe.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

from devtools.sandbox.fleet import MEMBERS, vendor_section
from devtools.sandbox.monetate import MonetateSandbox, sandbox_keys
from devtools.sandbox.routing import Call
from devtools.sandbox.server import Sandbox

START_TIMEOUT_SECONDS = 60.0


class SandboxProcess:
    """One started sandbox in a child process (spawned: the parent runs Kafka clients)."""

    def __init__(
        self,
        name: str,
        job_seconds: float,
        latency: float,
        monetate_status_rate: float,
    ) -> None:
        self.name = name
        context = multiprocessing.get_context("spawn")
        self._pipe, child_end = context.Pipe()
        # The worker signs with this process's generated key: the child must verify with it.
        spec = (name, job_seconds, latency, monetate_status_rate, sandbox_keys().public_pem)
        self._process = context.Process(
            target=_serve, args=(child_end, spec), name=f"sandbox-{name}", daemon=True
        )
        self._process.start()
        child_end.close()
        if not self._pipe.poll(START_TIMEOUT_SECONDS):
            self._process.kill()
            raise RuntimeError(f"the {name} sandbox did not start")
        self._pipe.recv()

    def section(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The worker's `vendors:` section for this sandbox, with `overrides`."""
        return self._ask(("section", dict(overrides)))  # type: ignore[no-any-return]

    def seed(self, identities: Sequence[tuple[str, str]]) -> None:
        """Make the vendor hold these `(type, value)` identifiers (types it does not hold
        are skipped)."""
        self._ask(("seed", list(identities)))

    def calls(self) -> list[Call]:
        return self._ask(("calls",))  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self._process.is_alive():
            self._pipe.send(("stop",))
            self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
        self._pipe.close()

    def _ask(self, message: tuple[Any, ...]) -> Any:
        self._pipe.send(message)
        answer = self._pipe.recv()
        if isinstance(answer, Exception):
            raise RuntimeError(f"the {self.name} sandbox failed: {answer!r}")
        return answer


def _build(spec: tuple[str, float, float, float, str]) -> Sandbox:
    name, job_seconds, latency, monetate_status_rate, public_pem = spec
    box: Sandbox
    if name == "monetate":
        # Refuses with 429 status checks faster than the configured rate, with room for one
        # early call.
        box = MonetateSandbox(
            deletion_delay_seconds=job_seconds,
            data_get_rate_per_second=monetate_status_rate,
            data_get_burst=2,
            public_key_pem=public_pem,
        )
    else:
        box = MEMBERS[name].build(job_seconds)
    box.start()
    MEMBERS[name].prepare(box, True)
    box.set_latency(latency)
    return box


def _serve(pipe: Connection, spec: tuple[str, float, float, float, str]) -> None:
    name = spec[0]
    box = _build(spec)
    pipe.send("ready")
    try:
        while True:
            message = pipe.recv()
            if message[0] == "stop":
                return
            try:
                pipe.send(_answer(name, box, message))
            except Exception as error:  # reported to the parent, which raises it
                pipe.send(error)
    finally:
        box.stop()


def _answer(name: str, box: Sandbox, message: tuple[Any, ...]) -> Any:
    member = MEMBERS[name]
    if message[0] == "section":
        return vendor_section(name, box, message[1])
    if message[0] == "seed":
        for identity_type, value in message[1]:
            seed = member.seeds.get(identity_type)
            if seed is not None:
                seed(box, value)
        return None
    if message[0] == "calls":
        return box.calls
    raise ValueError(f"unknown request {message[0]!r}")
