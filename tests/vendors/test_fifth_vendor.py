"""A fifth vendor from one module plus a registry entry, with nothing in `consumer` edited.

`fifth_vendor.py` holds its settings, adapter and `VENDOR` entry, `fifth_sandbox.py` its
sandbox and `harness_fifth.py` its harness, which registers it while its sandbox runs.
The contract suite runs on it like on any built-in vendor, and the worker's config, adapter
factory, `setup` and `check` take it from the registry.
"""

from __future__ import annotations

import io
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from consumer import cli
from consumer.config import ConfigError, load_settings
from consumer.vendors import build_adapter, registry
from devtools import devstack
from tests.vendors.contract import ContractSuite
from tests.vendors.fifth_sandbox import CLIENT_ID, CLIENT_SECRET, FifthSandbox
from tests.vendors.fifth_vendor import FifthAdapter, FifthSettings
from tests.vendors.harness import VendorHarness
from tests.vendors.harness_fifth import Harness, registered

SECRET_ENV = {"FIFTH_CLIENT_SECRET": CLIENT_SECRET}


class TestFifthVendorContract(ContractSuite):
    @pytest.fixture
    def harness(self) -> VendorHarness:
        return Harness()


def fifth_config(tmp_path: Path, bootstrap: str, sandbox: FifthSandbox, **section: str) -> Path:
    return devstack.write_config(
        tmp_path / "config.yaml",
        bootstrap=bootstrap,
        topics=devstack.Topics.unique("fifth"),
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        vendors={
            "fifth": {
                "base_url": sandbox.base_url,
                "client_id": CLIENT_ID,
                "client_secret": "${FIFTH_CLIENT_SECRET}",
                **section,
            }
        },
    )


def run(command: str, config: Path) -> tuple[int, list[str]]:
    """The command in-process (the console script's code path); exit code and lines."""
    output = io.StringIO()
    with redirect_stdout(output):
        code = cli.main([command, "--config", str(config)])
    return code, output.getvalue().splitlines()


def test_a_registered_vendor_is_configured_built_set_up_and_checked(
    tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIFTH_CLIENT_SECRET", CLIENT_SECRET)
    with registered(), FifthSandbox() as sandbox:
        assert registry.names()[-1] == "fifth"
        config = fifth_config(tmp_path, kafka_bootstrap, sandbox, batch_size="500")
        section = load_settings(config).vendors.enabled()["fifth"]
        assert isinstance(section, FifthSettings)
        assert section.batch_size == 100, "the vendor's hard limit caps the batch"
        adapter = build_adapter(section, time.sleep)
        assert isinstance(adapter, FifthAdapter)
        adapter.close()
        outputs = [run("setup", config), run("setup", config), run("check", config)]
        url = sandbox.base_url
    assert outputs[:2] == [
        (0, ["fifth        ok      erasure API enabled"]),
        (0, ["fifth        ok      erasure API already enabled"]),
    ]
    code, lines = outputs[2]
    assert code == 0, lines
    assert lines[-1] == f"fifth        ok      authenticated at {url}"
    assert CLIENT_SECRET not in "\n".join(line for _, out in outputs for line in out)


def test_its_config_section_is_validated_like_any_vendors(tmp_path: Path) -> None:
    with registered(), FifthSandbox() as sandbox:
        config = fifth_config(tmp_path, "127.0.0.1:1", sandbox, client_ide="typo")
        with pytest.raises(ConfigError, match=r"vendors\.fifth\.client_ide: unknown key"):
            load_settings(config, SECRET_ENV)


def test_unregistered_the_vendor_is_unknown_again(tmp_path: Path) -> None:
    with registered(), FifthSandbox() as sandbox:
        config = fifth_config(tmp_path, "127.0.0.1:1", sandbox)
        assert "fifth" in load_settings(config, SECRET_ENV).vendors.enabled()
    assert "fifth" not in registry.names()
    with pytest.raises(ConfigError, match=r"vendors\.fifth: unknown key"):
        load_settings(config, SECRET_ENV)
