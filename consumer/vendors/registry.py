"""The one list of vendors the worker knows, and what each brings.

A vendor is one module (or subpackage) of `consumer.vendors` that defines its settings
model, its adapter and a `VENDOR = VendorEntry(...)` tying them together. Everything that
used to list vendors by hand is derived from here: `build_adapter`, the config's `vendors:`
section (its keys, their order and their validation), and the `setup` and `check`
commands. Adding a vendor is its module plus its name in `BUILT_IN`; nothing else in
`consumer` changes.

Built-in vendors are imported on first use, not when this module is: their settings
extend `consumer.config.VendorSettings`, and `consumer.config` itself reads this registry,
so importing them here would be an import cycle. `register` adds a vendor at run time
(tests, a vendor developed outside this package) without editing any of it.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from consumer.vendors.base import VendorAdapter
from consumer.vendors.http import Sleep, VendorHttp

if TYPE_CHECKING:
    from consumer.config import VendorSettings

S = TypeVar("S", bound="VendorSettings")

BUILT_IN: tuple[str, ...] = ("voyado", "monetate", "acquia_cdp", "acoustic")
"""Modules of `consumer.vendors` that define a vendor; their order is the order in which
the config lists enabled vendors and `check` reports them."""

# A name becomes a config key, a metric label and a ledger value: keep it plain.
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_registered: dict[str, VendorEntry[Any]] = {}


@dataclass(frozen=True, slots=True)
class VendorEntry(Generic[S]):
    """What the worker needs to know about one vendor.

    `adapter` builds the adapter for one worker loop around the `VendorHttp` made for it
    (`sleep` is the loop's stop-aware sleep, for adapters that wait between calls).
    `setup` is the vendor's one-time, idempotent preparation (`erasure-worker setup`): it
    returns what it did, as one line for the operator, or raises `VendorError`.
    `check_note` adds to `check`'s line what authenticating does not prove.
    `polls` is False for a vendor whose adapter never creates jobs (every answer is final
    at submit): the worker then starts no poll loops for it, which would only idle.
    """

    name: str
    settings: type[S]
    adapter: Callable[[S, VendorHttp, Sleep], VendorAdapter]
    setup: Callable[[S], str] | None = None
    check_note: Callable[[S], str] | None = None
    polls: bool = True

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"vendor name {self.name!r}: use lower-case letters, digits and _")
        if self.settings.vendor != self.name:
            raise ValueError(f"vendor {self.name!r}: its settings say {self.settings.vendor!r}")


def entries() -> dict[str, VendorEntry[Any]]:
    """Every known vendor by name: the built-in ones in `BUILT_IN` order, then any
    registered at run time."""
    return {**_built_in(), **_registered}


def names() -> tuple[str, ...]:
    """The names of every known vendor, in `entries` order."""
    return tuple(entries())


def entry_for(settings: VendorSettings) -> VendorEntry[Any]:
    """The entry of the vendor these settings configure."""
    entry = entries().get(settings.vendor)
    if entry is None or not isinstance(settings, entry.settings):
        raise TypeError(f"no registered vendor takes {type(settings).__name__}")
    return entry


def register(entry: VendorEntry[Any]) -> None:
    """Add a vendor at run time; its name must be new."""
    if entry.name in entries():
        raise ValueError(f"vendor {entry.name!r} is already registered")
    _registered[entry.name] = entry


def unregister(name: str) -> None:
    """Remove a vendor added with `register` (built-in vendors stay)."""
    if name not in _registered:
        raise ValueError(f"vendor {name!r} was not registered at run time")
    del _registered[name]


@functools.cache
def _built_in() -> dict[str, VendorEntry[Any]]:
    loaded: dict[str, VendorEntry[Any]] = {}
    for name in BUILT_IN:
        entry = getattr(importlib.import_module(f"{__package__}.{name}"), "VENDOR", None)
        if not isinstance(entry, VendorEntry) or entry.name != name:
            raise RuntimeError(f"consumer.vendors.{name} must define VENDOR, its VendorEntry")
        loaded[name] = entry
    return loaded
