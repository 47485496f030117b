"""The configuration the operator commands read (issue 9): the `deadlines` section with the
contract's keys and defaults, and ledger-only loading that needs no vendor secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.config import ConfigError, load_settings
from consumer.ledger.deadlines import Deadlines
from tests.test_config import CONTRACT_EXAMPLE, SECRETS, write

DEADLINES = """
deadlines:
  gdpr_days: 30
  ccpa_days: 45
  other_days: 20
  gdpr_extension_days: 60
  ccpa_extension_days: 45
  other_extension_days: 10
"""


def test_deadlines_take_the_contracts_keys_and_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, CONTRACT_EXAMPLE + DEADLINES), SECRETS)
    assert settings.deadlines.deadlines() == Deadlines(other_days=20, other_extension_days=10)
    defaults = load_settings(write(tmp_path, CONTRACT_EXAMPLE), SECRETS).deadlines.deadlines()
    assert defaults == Deadlines(30, 45, 30, 60, 45, 60)


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ("deadlines: {gdpr_extension_dayz: 3}", "deadlines.gdpr_extension_dayz: unknown key"),
        ("deadlines: {ccpa_extension_days: -1}", "deadlines.ccpa_extension_days: Input should be"),
        ("deadlines: {gdpr_days: 0}", "deadlines.gdpr_days: Input should be greater than 0"),
    ],
)
def test_a_bad_deadline_names_its_key(tmp_path: Path, section: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_settings(write(tmp_path, CONTRACT_EXAMPLE + section), SECRETS)


def test_ledger_only_commands_need_no_vendor_secret(tmp_path: Path) -> None:
    path = write(tmp_path, CONTRACT_EXAMPLE)
    only_infrastructure = {"SASL_PASSWORD": "pw", "DB_PASSWORD": "pw"}

    settings = load_settings(path, only_infrastructure, vendor_secrets=False)

    voyado = settings.vendors.enabled()["voyado"]
    assert voyado.model_dump()["api_key"].get_secret_value() == "${VOYADO_API_KEY}"
    with pytest.raises(ConfigError, match="vendors.voyado.api_key: environment variable"):
        load_settings(path, only_infrastructure)
    with pytest.raises(ConfigError, match="ledger.url: environment variable DB_PASSWORD"):
        load_settings(path, {"SASL_PASSWORD": "pw"}, vendor_secrets=False)
