"""Vendor adapters, one module each, listed in `registry`; `build_adapter` builds one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from consumer.vendors import registry
from consumer.vendors.base import VendorAdapter
from consumer.vendors.http import CallGate, Sleep, VendorHttp

if TYPE_CHECKING:
    from consumer.config import VendorSettings


def build_adapter(
    settings: VendorSettings, sleep: Sleep, gate: CallGate | None = None
) -> VendorAdapter:
    """A new adapter (its own HTTP session) for one loop; `sleep` is used for in-call
    retry waits, so passing a stop event's `wait` makes shutdown cut them short; `gate`
    holds back its calls for the vendor's rate limits (the worker's loops pass one)."""
    entry = registry.entry_for(settings)
    http = VendorHttp(
        settings.vendor, timeout_seconds=settings.timeout_seconds, sleep=sleep, gate=gate
    )
    try:
        return entry.adapter(settings, http, sleep)
    except BaseException:
        http.close()
        raise
