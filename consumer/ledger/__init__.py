"""The ledger seam: `open_ledger` picks the backend from the configured URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from consumer.ledger.postgres import PostgresLedger
from consumer.ledger.protocol import Ledger, LedgerRejected, LedgerUnavailable
from consumer.ledger.sqlite import SqliteLedger

__all__ = ["Ledger", "LedgerRejected", "LedgerUnavailable", "open_ledger"]

_SQLITE_PREFIX = "sqlite:///"


def open_ledger(url: str) -> Ledger:
    """A ledger for `sqlite:///relative/path`, `sqlite:////absolute/path` or a
    `postgresql://` (or `postgres://`) URL. Nothing is opened until the first call, so an
    unreachable database shows up as LedgerUnavailable there, where callers retry."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = url.removeprefix(_SQLITE_PREFIX)
        if not url.startswith(_SQLITE_PREFIX) or not path:
            raise ValueError("use sqlite:///relative/path or sqlite:////absolute/path")
        return SqliteLedger(path)
    if scheme in ("postgresql", "postgres"):
        return PostgresLedger(url)
    raise ValueError("ledger URL must start with sqlite:/// or postgresql://")
