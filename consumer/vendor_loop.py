"""What a vendor's dispatch loop and poll loop each run with.

Each loop gets its own ledger object and its own adapter (its own HTTP session), because
neither a database connection nor a `requests.Session` is shared between threads; the
health flag and the stop event are shared by both loops of a vendor.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from consumer.config import VendorSettings
from consumer.ledger.base import Ledger
from consumer.vendor_health import VendorHealth
from consumer.vendors.base import VendorAdapter
from consumer.vendors.http import RetryPolicy

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class VendorLoopParts:
    settings: VendorSettings
    ledger: Ledger
    adapter: VendorAdapter
    owner: str
    clock: Clock
    health: VendorHealth
    stop: threading.Event


class VendorLoop:
    """What a vendor's dispatch or poll loop holds; its logs carry the vendor as a field."""

    def __init__(self, parts: VendorLoopParts) -> None:
        self.vendor = parts.settings.vendor
        logger = logging.getLogger(type(self).__module__)
        self._log = logging.LoggerAdapter(logger, {"vendor": self.vendor})
        self._settings = parts.settings
        self._ledger = parts.ledger
        self._adapter = parts.adapter
        self._owner = parts.owner
        self._clock = parts.clock
        self._health = parts.health
        self._stop = parts.stop


def lease_seconds(settings: VendorSettings, calls: int = 1) -> float:
    """Long enough for `calls` vendor calls with their in-call retries and a token fetch;
    short enough that a dead worker's items come back soon."""
    policy = RetryPolicy()
    waits = (policy.attempts - 1) * policy.cap_seconds
    per_call = policy.attempts * settings.timeout_seconds + waits
    return calls * per_call + settings.timeout_seconds
