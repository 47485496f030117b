"""Every ledger test runs against SQLite and PostgreSQL (the `ledger`, `open_ledgers` and
`ledger_url` fixtures of tests/conftest.py, on each backend in turn).

The PostgreSQL server is private to the session (see tests/support/pg.py) and every test gets a
database of its own, so tests never see each other's rows.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def ledger_url(any_ledger_url: str) -> str:
    return any_ledger_url
