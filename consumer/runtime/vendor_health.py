"""Whether a vendor accepts our credentials, shared by its dispatch and poll loops.

A vendor that refuses our credentials (403) will refuse every call until an operator fixes
them, so the loops stop calling it, probe again now and then, and readiness says why.
Items are not failed meanwhile: they wait for fixed credentials.
"""

from __future__ import annotations

import threading

from consumer.runtime.metrics import VENDOR_UP

PROBE_INTERVAL_SECONDS = 60.0


class VendorHealth:
    def __init__(self, vendor: str) -> None:
        self.vendor = vendor
        self._lock = threading.Lock()
        self._problem: str | None = None
        VENDOR_UP.labels(vendor=vendor).set(1)

    @property
    def is_up(self) -> bool:
        with self._lock:
            return self._problem is None

    @property
    def problem(self) -> str | None:
        with self._lock:
            return self._problem

    def mark_down(self, problem: str) -> None:
        with self._lock:
            self._problem = problem
        VENDOR_UP.labels(vendor=self.vendor).set(0)

    def mark_up(self) -> None:
        with self._lock:
            self._problem = None
        VENDOR_UP.labels(vendor=self.vendor).set(1)

    def hold_back_while_down(self, stop: threading.Event) -> None:
        """While the vendor refuses our credentials, let only one probe call a minute
        through (returns at once when up, early on stop)."""
        if not self.is_up:
            stop.wait(PROBE_INTERVAL_SECONDS)
