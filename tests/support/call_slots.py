"""A vendor's call slots as a worker runs them, without Kafka: `Replica` is one process's
`max_in_flight` dispatch loops (and, if asked, poll loops) of one vendor, each with its own
adapter, sharing a ledger object per kind, all behind one `CallGate` over the process's
`FleetBuckets`, as `consumer.runtime.worker` wires them. Several replicas on one ledger URL are a
fleet; their calls reach a real sandbox over HTTP.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from consumer.clock import SYSTEM_CLOCK
from consumer.config import VendorSettings
from consumer.ledger import Ledger, open_ledger
from consumer.model import ErasureRequest, Identity, Regulation
from consumer.pipeline.call_gate import CallGate, FleetBuckets
from consumer.pipeline.dispatch import Dispatcher
from consumer.pipeline.fanout import plan_request
from consumer.pipeline.poller import Poller
from consumer.pipeline.shared_ledger import SharedLedger, connections_for
from consumer.pipeline.vendor_loop import VendorLoopParts
from consumer.runtime.loops import Heartbeats, LoopThread
from consumer.runtime.vendor_health import VendorHealth
from consumer.vendors import build_adapter
from devtools.sandbox.server import Call


def record_requests(url: str, settings: VendorSettings, values: Sequence[str]) -> None:
    """One request per identifier value, recorded as ingest would."""
    identity_type = sorted(settings.identity_types)[0]
    now = datetime.now(UTC)
    planned = [
        plan_request(
            ErasureRequest(
                str(uuid.uuid4()),
                now,
                Regulation.GDPR,
                (Identity(identity_type, value),),
                None,
                None,
                None,
            ),
            {settings.vendor: settings},
        )
        for value in values
    ]
    ledger = open_ledger(url)
    try:
        ledger.migrate()
        ledger.record_requests(planned, now)
    finally:
        ledger.close()


class Replica:
    """One worker process's call slots for one vendor (see the module docstring)."""

    def __init__(self, settings: VendorSettings, url: str, *, polls: bool = False) -> None:
        self.stop = threading.Event()
        self._ledgers: list[Ledger] = []
        self._closers: list[Callable[[], None]] = []
        self.gate = CallGate(settings, FleetBuckets(self._ledger(url)), SYSTEM_CLOCK, self.stop)
        health = VendorHealth(settings.vendor)
        heartbeats = Heartbeats()
        owner = uuid.uuid4().hex[:8]
        self._loops: list[LoopThread] = []
        kinds = [("dispatch", Dispatcher)] + ([("poll", Poller)] if polls else [])
        for kind, loop_class in kinds:
            ledger = SharedLedger(
                [self._ledger(url) for _ in range(connections_for(settings.max_in_flight))]
            )
            for slot in range(settings.max_in_flight):
                adapter = build_adapter(settings, self.stop.wait, self.gate)
                self._closers.append(adapter.close)
                parts = VendorLoopParts(
                    settings,
                    ledger,
                    adapter,
                    f"{owner}/{kind}-{slot}",
                    SYSTEM_CLOCK,
                    health,
                    self.stop,
                )
                step = loop_class(parts).step
                self._loops.append(LoopThread(f"{kind}-{slot}", step, self.stop, heartbeats))

    def _ledger(self, url: str) -> Ledger:
        ledger = open_ledger(url)
        self._ledgers.append(ledger)
        return ledger

    def start(self) -> None:
        for loop in self._loops:
            loop.start()

    def close(self) -> None:
        """Stop every loop (a call under way finishes first), then close sessions and
        connections."""
        self.stop.set()
        for loop in self._loops:
            loop.wake()
        for loop in self._loops:
            loop.join(30)
        for close in self._closers:
            close()
        for ledger in self._ledgers:
            ledger.close()


def calls_to(calls: Sequence[Call], path_part: str) -> list[Call]:
    return [call for call in calls if path_part in call.path]
