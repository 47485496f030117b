"""`erasure-worker check` and `setup` as an operator runs them: a real process, a real broker,
ledger and sandbox; one line per dependency, and the exit code says whether all are fine."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import devstack
from devtools.broker import free_port
from devtools.sandbox.acoustic import AcousticSandbox
from devtools.sandbox.acquia_cdp import AcquiaCdpSandbox
from devtools.sandbox.fleet import MONETATE_DATASET, SandboxFleet
from devtools.sandbox.monetate import DEFAULT_SHORTNAME, MonetateSandbox


@pytest.fixture
def sandbox() -> Iterator[AcousticSandbox]:
    sandbox = devstack.start_acoustic_sandbox()
    yield sandbox
    sandbox.stop()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env or devstack.worker_environment(),
    )


def config(tmp_path: Path, bootstrap: str, sandbox: AcousticSandbox) -> Path:
    return devstack.write_config(
        tmp_path / "config.yaml",
        bootstrap=bootstrap,
        topics=devstack.Topics.unique("cli"),
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        acoustic=sandbox,
    )


def test_check_reaches_every_dependency(
    tmp_path: Path, kafka_bootstrap: str, sandbox: AcousticSandbox
) -> None:
    result = run_cli("check", "--config", str(config(tmp_path, kafka_bootstrap, sandbox)))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
    assert lines == {"config": "ok", "kafka": "ok", "ledger": "ok", "acoustic": "ok"}
    assert any(call.path == "/oauth/token" and call.status == 200 for call in sandbox.calls)


def test_check_fails_on_refused_credentials_and_dead_broker(
    tmp_path: Path, sandbox: AcousticSandbox
) -> None:
    path = config(tmp_path, f"127.0.0.1:{free_port()}", sandbox)
    env = {**devstack.worker_environment(), "ACOUSTIC_CLIENT_SECRET": "wrong-secret"}
    result = run_cli("check", "--config", str(path), env=env)
    assert result.returncode == 1
    lines = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
    assert lines["kafka"] == "FAILED" and lines["acoustic"] == "FAILED" and lines["ledger"] == "ok"
    assert "wrong-secret" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_setup_has_nothing_to_do_for_acoustic(
    tmp_path: Path, kafka_bootstrap: str, sandbox: AcousticSandbox
) -> None:
    result = run_cli("setup", "--config", str(config(tmp_path, kafka_bootstrap, sandbox)))
    assert result.returncode == 0
    assert "nothing to set up for the enabled vendors (acoustic)" in result.stdout


def test_setup_then_check_across_all_four_vendors(tmp_path: Path, kafka_bootstrap: str) -> None:
    with SandboxFleet(set_up=False) as fleet:
        path = devstack.write_config(
            tmp_path / "config.yaml",
            bootstrap=kafka_bootstrap,
            topics=devstack.Topics.unique("cli"),
            ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
            vendors=fleet.vendors_config(),
        )
        before = run_cli("check", "--config", str(path))
        created = run_cli("setup", "--config", str(path))
        again = run_cli("setup", "--config", str(path))
        after = run_cli("check", "--config", str(path))
        monetate = fleet.sandbox(MonetateSandbox)
        acquia_sessions = fleet.sandbox(AcquiaCdpSandbox).open_sessions()
        assert acquia_sessions == 0, "check logs its Acquia session out"
        assert monetate.has_dataset(MONETATE_DATASET)
        schema_calls = {(c.method, c.path) for c in monetate.calls if "/schema/" in c.path}
    # Monetate documents no read of a dataset: check cannot tell, says so, and points to setup.
    assert before.returncode == 0, before.stdout + before.stderr
    assert f"dataset {MONETATE_DATASET} not checked" in before.stdout
    assert "`erasure-worker setup` creates it" in before.stdout
    assert schema_calls == {("POST", f"/api/data/v1/{DEFAULT_SHORTNAME}/production/schema/")}
    assert (created.returncode, again.returncode) == (0, 0)
    assert f"dataset {MONETATE_DATASET} created" in created.stdout
    assert f"dataset {MONETATE_DATASET} already exists" in again.stdout
    assert after.returncode == 0, after.stdout + after.stderr
    statuses = {line.split()[0]: line.split()[1] for line in after.stdout.splitlines()}
    assert statuses == dict.fromkeys(
        ("config", "kafka", "ledger", "voyado", "monetate", "acquia_cdp", "acoustic"), "ok"
    )
