"""Configuration (contract §4): one clear message naming the key; secrets never shown."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from consumer.config import ConfigError, load_settings

CONTRACT_EXAMPLE = """
kafka:
  bootstrap_servers: "host:9092"
  group_id: erasure-worker
  input_topic: subject.erasure.requested
  status_topic: erasure.status.changed
  dlq_topic: subject.erasure.requested.dlq
  schema_registry_url: null
  config: {security.protocol: SASL_SSL, sasl.password: "${SASL_PASSWORD}"}
ledger:
  url: "postgresql://user:${DB_PASSWORD}@host:5432/db"
http:
  port: 8000
vendors:
  voyado:
    base_url: "https://acme.elevate-api.cloud"
    api_key: "${VOYADO_API_KEY}"
    api_version: v4
  monetate:
    base_url: "https://api.monetate.net"
    shortname: acme
    dataset: erasure_requests
    api_username: api-123-erasure
    private_key: "${MONETATE_PRIVATE_KEY}"
  acquia_cdp:
    base_url: "https://api6.agilone.com"
    auth_url: "https://api6.agilone.com"
    tenant_id: 1234
    username: "${CDP_USERNAME}"
    password: "${CDP_PASSWORD}"
  acoustic:
    base_url: "https://api-campaign-us-5.goacoustic.com"
    client_id: "${ACOUSTIC_CLIENT_ID}"
    client_secret: "${ACOUSTIC_CLIENT_SECRET}"
    refresh_token: "${ACOUSTIC_REFRESH_TOKEN}"
    database_ids: [10091]
    lookup_fields: {EMAIL: email}
"""
SECRETS = {
    "SASL_PASSWORD": "sasl-pw-123",
    "DB_PASSWORD": "db-pw-456",
    "VOYADO_API_KEY": "voyado-key-789",
    "MONETATE_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----abc",
    "CDP_USERNAME": "cdp-user",
    "CDP_PASSWORD": "cdp-pw-000",
    "ACOUSTIC_CLIENT_ID": "acoustic-client",
    "ACOUSTIC_CLIENT_SECRET": "acoustic-secret-111",
    "ACOUSTIC_REFRESH_TOKEN": "acoustic-refresh-222",
}
SECRET_VALUES = [v for k, v in SECRETS.items() if k not in ("CDP_USERNAME", "ACOUSTIC_CLIENT_ID")]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    return load_settings(write(tmp_path, text), SECRETS if env is None else env)


def test_contract_example_loads_with_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path, CONTRACT_EXAMPLE)
    vendors = settings.vendors.enabled()
    assert list(vendors) == ["voyado", "monetate", "acquia_cdp", "acoustic"]
    assert settings.vendors.acquia_cdp is not None
    assert settings.vendors.acquia_cdp.batch_size == 200
    assert settings.vendors.acquia_cdp.weekly_quota == 9990
    assert settings.vendors.acoustic is not None
    assert settings.vendors.acoustic.batch_size == 5000
    assert settings.vendors.acoustic.destinations == ("10091",)
    assert settings.vendors.voyado is not None
    assert settings.vendors.voyado.identity_types == frozenset({"customer_key"})
    assert settings.vendors.acoustic.client_secret.get_secret_value() == "acoustic-secret-111"
    assert settings.kafka.config["sasl.password"] == "sasl-pw-123"


def test_secrets_never_in_reprs(tmp_path: Path) -> None:
    settings = load(tmp_path, CONTRACT_EXAMPLE)
    text = repr(settings) + str(settings) + repr(settings.ledger)
    for secret in SECRET_VALUES:
        assert secret not in text
    assert "db-pw-456" not in settings.ledger.redacted_url


def test_unknown_keys_are_named(tmp_path: Path) -> None:
    text = CONTRACT_EXAMPLE.replace("    api_version: v4", "    api_versoin: v4")
    text = text.replace("http:\n", "htp: {}\nhttp:\n")
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    message = str(raised.value)
    assert "vendors.voyado.api_versoin: unknown key" in message
    assert "htp: unknown key" in message


@pytest.mark.parametrize(
    ("find", "replace", "key"),
    [
        ("    api_version: v4", "    api_version: v5", "vendors.voyado.api_version"),
        ("    tenant_id: 1234", "    tenant_id: lots", "vendors.acquia_cdp.tenant_id"),
        ("  port: 8000", "  port: 99999", "http.port"),
        ("https://api.monetate.net", "http://api.monetate.net", "vendors.monetate.base_url"),
        ("database_ids: [10091]", "database_ids: []", "vendors.acoustic.database_ids"),
        (
            "lookup_fields: {EMAIL: email}",
            "lookup_fields: {A: a, B: b, C: c, D: d, E: e, F: f}",
            "vendors.acoustic.lookup_fields",
        ),
        ('url: "postgresql://user', 'url: "mysql://user', "ledger.url"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, find: str, replace: str, key: str) -> None:
    text = CONTRACT_EXAMPLE.replace(find, replace)
    assert text != CONTRACT_EXAMPLE
    with pytest.raises(ConfigError, match=rf"{key}: "):
        load(tmp_path, text)


def test_bad_value_messages_leave_secrets_out(tmp_path: Path) -> None:
    text = CONTRACT_EXAMPLE.replace('url: "postgresql://user', 'url: "mysql://user')
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    assert "db-pw-456" not in str(raised.value)


def test_missing_environment_variable_is_named(tmp_path: Path) -> None:
    env = {k: v for k, v in SECRETS.items() if k != "CDP_PASSWORD"}
    with pytest.raises(
        ConfigError, match="vendors.acquia_cdp.password: environment variable CDP_PASSWORD"
    ):
        load(tmp_path, CONTRACT_EXAMPLE, env)


def test_batch_size_is_capped_at_the_vendor_limit(tmp_path: Path) -> None:
    text = CONTRACT_EXAMPLE.replace(
        "    tenant_id: 1234", "    tenant_id: 1234\n    batch_size: 500"
    )
    settings = load(tmp_path, text)
    assert settings.vendors.acquia_cdp is not None
    assert settings.vendors.acquia_cdp.batch_size == 200


def test_loopback_vendors_may_use_http(tmp_path: Path) -> None:
    text = CONTRACT_EXAMPLE.replace("https://api.monetate.net", "http://127.0.0.1:8443")
    settings = load(tmp_path, text)
    assert settings.vendors.monetate is not None
    assert settings.vendors.monetate.base_url == "http://127.0.0.1:8443"


@pytest.mark.parametrize("url", ["sqlite:///var/ledger.db", "sqlite:////tmp/ledger.db"])
def test_sqlite_urls(tmp_path: Path, url: str) -> None:
    text = CONTRACT_EXAMPLE.replace('"postgresql://user:${DB_PASSWORD}@host:5432/db"', url)
    assert load(tmp_path, text).ledger.url == url


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid YAML: .* at line 3, column 1"):
        load(tmp_path, "kafka:\n  bootstrap_servers: [unclosed\n")


def test_cli_reports_config_errors_without_traceback(tmp_path: Path) -> None:
    path = write(
        tmp_path, "kafka: {bootstrap_servers: x}\nledger: {url: 'sqlite:///l.db'}\nextra: 1\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "extra: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_needs_a_config(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "status", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "pass --config FILE or set ERASURE_CONFIG" in result.stderr


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_kafka_property_librdkafka_refuses_is_a_config_error(
    tmp_path: Path, command: str
) -> None:
    path = write(
        tmp_path,
        "kafka: {bootstrap_servers: '127.0.0.1:1', config: {bogus.property: 1}}\n"
        f"ledger: {{url: 'sqlite:///{tmp_path / 'l.db'}'}}\nhttp: {{port: 0}}\n",
    )
    result = subprocess.run(
        [sys.executable, "-m", "consumer", command, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert 'kafka.config: No such configuration property: "bogus.property"' in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write(
            tmp_path,
            "kafka: {bootstrap_servers: '127.0.0.1:1'}\n"
            f"ledger: {{url: 'sqlite:///{tmp_path / 'l.db'}'}}\nhttp: {{port: {port}}}\n",
        )
        result = subprocess.run(
            [sys.executable, "-m", "consumer", "run", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert f"http.port: cannot listen on port {port}: Address already in use" in result.stderr
