"""Operator commands refuse a ledger the worker has not migrated, with one line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from consumer.cli import main
from consumer.ledger import Ledger
from consumer.ledger.migrations import migrations
from tests.ledger.test_migrations import as_before_numbered_migrations
from tests.ops.test_report import write_config


@pytest.mark.parametrize(
    "command",
    [
        ["status", "00000000-0000-4000-8000-000000000000"],
        ["list"],
        ["verify"],
        ["report", "--from", "2024-05-01", "--to", "2024-05-02"],
    ],
)
def test_a_ledger_behind_this_version_is_refused_in_one_line(
    command: list[str],
    open_ledgers: Callable[[], Ledger],
    ledger_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A ledger at schema version 1 (as a worker of an older release left it)."""
    ledger = as_before_numbered_migrations(open_ledgers())
    config = write_config(tmp_path, ledger_url)
    assert main([command[0], "--config", config, *command[1:]]) == 1
    err = capsys.readouterr().err
    latest = migrations(ledger.dialect)[-1].version
    assert err.count("\n") == 1 and "lacks schema version(s) 1, 2" in err and f"{latest}:" in err
    assert "Traceback" not in err
    ledger.migrate()
    assert ledger.missing_migrations() == []
