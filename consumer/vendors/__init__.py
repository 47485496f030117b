"""Vendor adapters, one module each; `build_adapter` picks one from its settings."""

from __future__ import annotations

from collections.abc import Callable

from consumer.config import (
    AcousticSettings,
    AcquiaCdpSettings,
    MonetateSettings,
    VendorSettings,
    VoyadoSettings,
)
from consumer.vendors.acoustic import AcousticAdapter
from consumer.vendors.acquia_cdp import AcquiaCdpAdapter
from consumer.vendors.base import VendorAdapter
from consumer.vendors.http import VendorHttp
from consumer.vendors.monetate import MonetateAdapter
from consumer.vendors.voyado import VoyadoAdapter

Sleep = Callable[[float], object]


def build_adapter(settings: VendorSettings, sleep: Sleep) -> VendorAdapter:
    """A new adapter (its own HTTP session) for one loop; `sleep` is used for in-call
    retry waits, so passing a stop event's `wait` makes shutdown cut them short."""
    http = VendorHttp(settings.vendor, timeout_seconds=settings.timeout_seconds, sleep=sleep)
    if isinstance(settings, AcousticSettings):
        return AcousticAdapter(settings, http)
    if isinstance(settings, VoyadoSettings):
        return VoyadoAdapter(settings, http)
    if isinstance(settings, MonetateSettings):
        return MonetateAdapter(settings, http, sleep=sleep)
    if isinstance(settings, AcquiaCdpSettings):
        return AcquiaCdpAdapter(settings, http)
    http.close()
    raise TypeError(f"no adapter for {type(settings).__name__}")  # every section has one
