"""`erasure-worker run`: the stages wired together, and a graceful stop (contract §5).

Threads: the main thread runs ingest (Kafka -> ledger); each enabled vendor has
`max_in_flight` dispatch loops and, if its adapter creates jobs to follow (its registry
entry's `polls`), as many poll loops (its call slots: that many calls of each kind under
way at once); one outbox publisher; one gauge refresher; one retention loop; the HTTP
server. Every loop has its own vendor session, so no HTTP session is shared between
threads (a `requests.Session` is not safe for concurrent requests). Database connections
are: a vendor's slots of one kind share a small pool of ledger objects, each used for one
transaction at a time, and its call gate has one for the fleet-wide rate buckets
(`consumer.pipeline.shared_ledger`, `call_gate`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from types import FrameType
from typing import Any

from consumer.clock import SYSTEM_CLOCK, Clock
from consumer.config import ConfigError, Settings, VendorSettings
from consumer.kafka.client import BrokerProbe, client_config
from consumer.kafka.codec import Codec
from consumer.ledger import Ledger, LedgerUnavailable, open_ledger
from consumer.pipeline.call_gate import CallGate, FleetBuckets
from consumer.pipeline.dispatch import Dispatcher
from consumer.pipeline.ingest import Ingest
from consumer.pipeline.outbox import OutboxPublisher, default_owner
from consumer.pipeline.poller import Poller
from consumer.pipeline.shared_ledger import SharedLedger, connections_for
from consumer.pipeline.vendor_loop import VendorLoopParts, lease_seconds
from consumer.runtime.gauges import LedgerGauges
from consumer.runtime.httpserver import HttpServer
from consumer.runtime.loops import Heartbeats, LoopThread
from consumer.runtime.retention import RetentionLoop
from consumer.runtime.vendor_health import VendorHealth
from consumer.vendors import build_adapter, registry

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 25.0
INGEST_STALL_SECONDS = 60.0
KAFKA_PROBE_SECONDS = 1.0  # with the ledger probe, within the server's 3 s probe bound


VendorLoop = type[Dispatcher] | type[Poller]


def vendor_loop_kinds(settings: VendorSettings) -> tuple[tuple[str, VendorLoop], ...]:
    """The kinds of loop a vendor's call slots run: a poll loop only if its adapter creates
    jobs to follow, since one for a vendor that never polls would claim nothing forever."""
    kinds: tuple[tuple[str, VendorLoop], ...] = (("dispatch", Dispatcher),)
    if registry.entry_for(settings).polls:
        kinds += (("poll", Poller),)
    return kinds


class Worker:
    def __init__(self, settings: Settings, clock: Clock = SYSTEM_CLOCK) -> None:
        """`clock` is every stage's (`consumer.clock`)."""
        self._settings = settings
        self._clock = clock
        # Names this process in leases, so another replica knows whose claims expire.
        self._owner = default_owner()
        self._stop = threading.Event()
        self._heartbeats = Heartbeats(clock)
        self._loops: list[LoopThread] = []
        self._health: dict[str, VendorHealth] = {}
        self._ingest: Ingest | None = None
        self._outbox: OutboxPublisher | None = None
        self._probe_ledger: Ledger | None = None
        self._kafka_probe: BrokerProbe | None = None
        vendors = settings.vendors.enabled().values()
        self._stale_after = max((lease_seconds(v, len(v.destinations)) for v in vendors), default=0)
        self._stale_after += 60.0

    def run(self) -> None:
        """Run until SIGTERM/SIGINT (or `stop()`), then drain within ~25 s."""
        self._install_signal_handlers()
        codec = Codec.from_settings(self._settings.kafka)
        with ExitStack() as resources:
            resources.callback(codec.close)
            ledger = self._open_ledger(resources)
            ledger.migrate()
            # Kafka clients first: a property librdkafka refuses stops the worker before
            # any loop has started.
            self._outbox = OutboxPublisher.create(
                self._settings.kafka,
                self._open_ledger(resources),
                codec,
                owner=self._owner,
                clock=self._clock,
                heartbeats=self._heartbeats,
            )
            self._ingest = Ingest.create(
                self._settings.kafka,
                ledger,
                codec,
                self._settings.vendors.enabled(),
                clock=self._clock,
                on_recorded=self._outbox.notify,
                deadlines=self._settings.deadlines.deadlines(),
            )
            http = self._bind_http()
            self._start_vendor_loops(resources)
            self._start_gauges(resources)
            self._start_retention(resources)
            http.start()
            resources.callback(http.stop)
            self._outbox.start()
            log.info(
                "worker %s started; vendors: %s", self._owner, ", ".join(self._health) or "none"
            )
            try:
                self._ingest.run()
            finally:
                self._shutdown()

    def _bind_http(self) -> HttpServer:
        host, port = self._settings.http.host, self._settings.http.port
        try:
            return HttpServer(port, self.health, self.readiness, host=host)
        except OSError as error:
            problem = f"http.port: cannot listen on port {port}: {error.strerror} (host {host})"
            raise ConfigError(problem) from None

    def stop(self) -> None:
        self._stop_loops()
        if self._ingest is not None:
            self._ingest.stop()

    def _stop_loops(self) -> None:
        """Set the stop event and wake every loop, so none waits out its pause first."""
        self._stop.set()
        for loop in self._loops:
            loop.wake()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Alive while every loop keeps stepping and ingest keeps polling."""
        stale = self._heartbeats.stale(self._stale_after)
        dead = [loop.name for loop in self._loops if not loop.is_alive()]
        if self._outbox is not None and not self._outbox.alive():
            dead.append("outbox")
        ingest_ok = True
        if self._ingest is not None:
            last_poll = self._ingest.state().last_poll
            now = self._clock.monotonic()
            ingest_ok = last_poll is None or now - last_poll < INGEST_STALL_SECONDS
        ok = not stale and (not dead or self._stop.is_set()) and ingest_ok
        return ok, {"stale_loops": stale, "dead_loops": dead, "ingest_polling": ingest_ok}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready once Kafka and the ledger answer and the consumer is in its group (the
        consumer stays "in its group" for a while after the broker went away)."""
        in_group = self._ingest is not None and self._ingest.state().in_group
        kafka_ok = self._kafka_answers()
        ledger_ok = self._ledger_answers()
        vendors = {name: health.problem or "ok" for name, health in self._health.items()}
        ok = in_group and kafka_ok and ledger_ok and not self._stop.is_set()
        details = {"in_group": in_group, "kafka": kafka_ok, "ledger": ledger_ok}
        return ok, {**details, "vendors": vendors}

    def _kafka_answers(self) -> bool:
        # Like the ledger probe: one readiness call at a time uses this client.
        if self._kafka_probe is None:
            self._kafka_probe = BrokerProbe(client_config(self._settings.kafka))
        return self._kafka_probe.answers(KAFKA_PROBE_SECONDS)

    def _ledger_answers(self) -> bool:
        """Whether the ledger would take a write within a second (`Ledger.ping`): a SQLite
        file another process keeps locked still answers reads, yet ingest records nothing."""
        # The HTTP server runs the readiness probe one call at a time, so this ledger
        # object is never used by two threads at once.
        if self._probe_ledger is None:
            self._probe_ledger = open_ledger(self._settings.ledger.url)
        try:
            self._probe_ledger.ping()
        except LedgerUnavailable:
            return False
        return True

    def _open_ledger(self, resources: ExitStack) -> Ledger:
        ledger = open_ledger(self._settings.ledger.url)
        resources.callback(ledger.close)
        return ledger

    def _start_vendor_loops(self, resources: ExitStack) -> None:
        """A dispatch loop and (if it polls) a poll loop per call slot of each vendor, all
        of a vendor's calls passing its gate (the fleet's rates, a 429's pause)."""
        for name, settings in self._settings.vendors.enabled().items():
            health = VendorHealth(name)
            self._health[name] = health
            fleet = FleetBuckets(self._open_ledger(resources), self._clock)
            gate = CallGate(settings, fleet, self._clock, self._stop)
            pool = connections_for(settings.max_in_flight)
            for kind, loop in vendor_loop_kinds(settings):
                ledger = SharedLedger([self._open_ledger(resources) for _ in range(pool)])
                for slot in range(1, settings.max_in_flight + 1):
                    parts = self._loop_parts(settings, health, gate, ledger, resources)
                    # The lease owner names the slot: slots claim apart as replicas do, and
                    # one slot's late answer cannot overwrite rows another re-claimed.
                    parts = replace(parts, owner=f"{self._owner}/{name}-{kind}-{slot}")
                    self._start_loop(f"{kind}-{name}-{slot}", loop(parts).step)

    def _loop_parts(
        self,
        settings: VendorSettings,
        health: VendorHealth,
        gate: CallGate,
        ledger: SharedLedger,
        resources: ExitStack,
    ) -> VendorLoopParts:
        """A loop's own adapter (its own HTTP session) around the vendor's gate."""
        adapter = build_adapter(settings, self._stop.wait, gate)
        resources.callback(adapter.close)
        return VendorLoopParts(
            settings, ledger, adapter, self._owner, self._clock, health, self._stop
        )

    def _start_gauges(self, resources: ExitStack) -> None:
        gauges = LedgerGauges(
            self._open_ledger(resources),
            self._settings.vendors.enabled(),
            self._settings.deadlines,
            self._clock,
        )
        self._start_loop("gauges", gauges.step)

    def _start_retention(self, resources: ExitStack) -> None:
        ledger = self._open_ledger(resources)
        retention = RetentionLoop(ledger, self._settings.retention, self._owner, self._clock)
        self._start_loop("retention", retention.step)

    def _start_loop(self, name: str, step: Callable[[], float]) -> None:
        loop = LoopThread(name, step, self._stop, self._heartbeats)
        self._loops.append(loop)
        loop.start()

    def _shutdown(self) -> None:
        """Ingest has committed and closed; let the loops finish the call in hand."""
        self._stop_loops()
        deadline = self._clock.monotonic() + SHUTDOWN_SECONDS
        for loop in self._loops:
            loop.join(max(0.0, deadline - self._clock.monotonic() - 5.0))
            if loop.is_alive():
                log.warning("%s still busy at shutdown; its leases will expire", loop.name)
        if self._outbox is not None:
            self._outbox.stop(max(0.0, deadline - self._clock.monotonic()))
        log.info("worker %s stopped", self._owner)

    def _install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s; stopping", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
