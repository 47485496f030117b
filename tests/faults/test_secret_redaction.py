"""No secret reaches a repr, a command's output or a log line (contract §3), whatever form
it comes in: userinfo in a URL (the schema registry as the chart suggests, PostgreSQL), a
`password` query parameter, a secret-looking librdkafka property, a vendor secret.

Everything runs the real paths: the settings a config file loads into, `erasure-worker
check` as a process against the test PostgreSQL server and broker, and a real worker whose
schema registry URL carries basic-auth credentials (httpx logs every registry request at
INFO with its URL unless held back). Each test also shows the non-secret parts are still
there, so it cannot pass by printing nothing.
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml

from consumer.config import KafkaSettings, load_settings
from consumer.kafka.codec import Codec, encode_request, load_schema_text
from consumer.redaction import redact_text, redact_url
from consumer.runtime.logs import configure_logging
from devtools import devstack
from devtools.broker import free_port
from tests.kafka.test_schema_registry import FakeRegistry
from tests.support.kafka import produce
from tests.support.pipeline import a_request
from tests.support.waiting import wait_until
from tests.support.worker import worker_setup

REGISTRY_USER, REGISTRY_SECRET = "sr-key-7f3a", "sr-S3cret-9d1e"
SECRETS = {
    "SR_SECRET": REGISTRY_SECRET,
    "DB_PASSWORD": "db-userinfo-S3cret",
    "DB_QUERY_PASSWORD": "db-query-S3cret",
    "SASL_PASSWORD": "sasl-S3cret",
    "SSL_KEY_PASSWORD": "ssl-key-S3cret",
    "SSL_KEY_PEM": "-----BEGIN PRIVATE KEY-----pem-S3cret",
    "OAUTH_SECRET": "oauth-S3cret",
    "VOYADO_API_KEY": "voyado-S3cret",
    "ACOUSTIC_CLIENT_SECRET": "acoustic-S3cret",
    "ACOUSTIC_REFRESH_TOKEN": "acoustic-refresh-S3cret",
}
CONFIG = """
kafka:
  bootstrap_servers: "broker-1:9092"
  schema_registry_url: "https://sr-key-7f3a:${SR_SECRET}@registry.example:8081/"
  config:
    security.protocol: SASL_SSL
    sasl.username: kafka-user
    sasl.password: "${SASL_PASSWORD}"
    ssl.key.password: "${SSL_KEY_PASSWORD}"
    ssl.key.pem: "${SSL_KEY_PEM}"
    sasl.oauthbearer.client.secret: "${OAUTH_SECRET}"
ledger:
  url: "postgresql://erasure:${DB_PASSWORD}@db.example:5432/erasure?password=${DB_QUERY_PASSWORD}"
vendors:
  voyado:
    base_url: "https://acme.elevate-api.cloud"
    api_key: "${VOYADO_API_KEY}"
  acoustic:
    base_url: "https://api-campaign-us-5.goacoustic.com"
    client_id: acoustic-client
    client_secret: "${ACOUSTIC_CLIENT_SECRET}"
    refresh_token: "${ACOUSTIC_REFRESH_TOKEN}"
    database_ids: [10091]
"""


def leaks(text: str, secrets: list[str]) -> list[str]:
    return [secret for secret in secrets if secret in text]


def test_settings_reprs_show_no_credential(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    settings = load_settings(path, SECRETS)
    shown = [repr(settings), str(settings), repr(settings.kafka), repr(settings.ledger)]
    shown += [str(settings.kafka), str(settings.ledger), settings.ledger.redacted_url]
    text = "\n".join(shown)
    assert leaks(text, list(SECRETS.values())) == []
    # What an operator needs to tell accounts apart is still there.
    for visible in (
        "https://sr-key-7f3a:***@registry.example:8081/",
        "postgresql://erasure:***@db.example:5432/erasure?password=***",
        "'security.protocol': 'SASL_SSL'",
        "'sasl.username': 'kafka-user'",
        "acoustic-client",
    ):
        assert visible in repr(settings), visible
    # The values themselves are intact for the code that needs them.
    assert settings.kafka.config["sasl.password"] == SECRETS["SASL_PASSWORD"]
    assert settings.ledger.url.endswith(SECRETS["DB_QUERY_PASSWORD"])


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://key:s3cret@registry:8081/", "https://key:***@registry:8081/"),
        # Secrets spliced in from the environment may hold characters a URL parser trips on.
        ("https://key:s3/cr#et?@registry/", "https://key:***@registry/"),
        (
            "postgresql://db/x?password=s3cret&sslmode=require",
            "postgresql://db/x?password=***&sslmode=require",
        ),
        (
            "postgresql://u:s3cret@[::1]:5432/x?sslpassword=s3cret",
            "postgresql://u:***@[::1]:5432/x?sslpassword=***",
        ),
        ("sqlite:////var/lib/ledger.db", "sqlite:////var/lib/ledger.db"),
        ("https://registry:8081/", "https://registry:8081/"),
    ],
)
def test_every_url_form_of_a_credential_is_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_text(f"cannot reach {url} now") == f"cannot reach {shown} now"


def run_check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=devstack.worker_environment(),
    )


def check_config(tmp_path: Path, bootstrap: str, ledger_url: str) -> Path:
    path = tmp_path / "check.yaml"
    config = {"kafka": {"bootstrap_servers": bootstrap}, "ledger": {"url": ledger_url}}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def with_passwords(dsn: str, userinfo: str, query: str) -> str:
    """The test server's DSN with a password in the userinfo and one as a query parameter
    (the server trusts local connections, so both are accepted and ignored)."""
    scheme, rest = dsn.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{userinfo}@{host}?password={query}&connect_timeout=5"


def test_check_prints_the_ledger_url_redacted(
    tmp_path: Path, kafka_bootstrap: str, postgres_dsn: str
) -> None:
    secrets = ["pg-userinfo-S3cret", "pg-query-S3cret"]
    reachable = with_passwords(postgres_dsn, *secrets)
    answered = run_check(check_config(tmp_path, kafka_bootstrap, reachable))
    dead = with_passwords(f"postgresql://postgres@127.0.0.1:{free_port()}/db", *secrets)
    refused = run_check(check_config(tmp_path, kafka_bootstrap, dead))

    assert answered.returncode == 0, answered.stdout + answered.stderr
    ledger_line = next(line for line in answered.stdout.splitlines() if line.startswith("ledger"))
    assert ledger_line.split()[1] == "ok"
    assert "postgres:***@127.0.0.1:" in ledger_line and "?password=***&" in ledger_line
    assert refused.returncode == 1
    assert "ledger       FAILED" in refused.stdout
    for result in (answered, refused):
        assert leaks(result.stdout + result.stderr, secrets) == []
        assert "Traceback" not in result.stderr


class AuthRecordingRegistry(FakeRegistry):
    """The test registry, also noting each request's Authorization header: proof that the
    credentials kept out of the log still reach the registry."""

    def __init__(self) -> None:
        super().__init__(first_id=500)
        self.authorizations: list[str | None] = []

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        base = super()._handler()
        registry = self

        class Recording(base):  # type: ignore[misc,valid-type]
            def parse_request(self) -> bool:
                parsed: bool = super().parse_request()
                registry.authorizations.append(self.headers.get("Authorization"))
                return parsed

        return Recording

    def url_with_credentials(self) -> str:
        scheme, rest = self.url.split("://", 1)
        return f"{scheme}://{REGISTRY_USER}:{REGISTRY_SECRET}@{rest}"


@pytest.fixture
def registry() -> Iterator[AuthRecordingRegistry]:
    server = AuthRecordingRegistry()
    server.add(load_schema_text("subject_erasure_requested.avsc"), schema_id=42)
    server.start()
    yield server
    server.stop()


def test_worker_log_shows_no_registry_credentials(
    tmp_path: Path, kafka_bootstrap: str, registry: AuthRecordingRegistry
) -> None:
    setup = worker_setup(
        tmp_path,
        kafka_bootstrap,
        "redact",
        partitions=1,
        vendors={},
        edit=lambda config: config["kafka"].update(
            schema_registry_url=registry.url_with_credentials()
        ),
    )
    request = a_request()
    worker = setup.start_worker()
    try:
        framed = encode_request(request, schema_id=42)
        produce(kafka_bootstrap, setup.topics.input, [(request.request_id.encode(), framed)])
        # The writer schema is fetched (GET) and the status schema registered (POST) once
        # the RECEIVED event is published: both are logged by httpx at INFO.
        wait_until(
            lambda: {"GET", "POST"} <= {method for method, _ in registry.requests},
            30,
            "the worker to fetch the writer schema and register the status schema",
        )
    finally:
        exit_code = devstack.stop_worker(worker)
    log = setup.log_text()
    assert exit_code == 0, log[-3000:]
    assert REGISTRY_SECRET not in log
    assert "Status schema registered as id" in log and "Using writer schema id 42" in log
    expected = "Basic " + base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_SECRET}".encode()).decode()
    assert registry.authorizations and set(registry.authorizations) == {expected}


def test_debug_logging_masks_credentials_from_any_library(
    registry: AuthRecordingRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    """At DEBUG (where httpx and httpcore would print every request and connection) the
    registry's credentials stay out, and a URL with credentials that another library puts
    into a message or an exception is masked by the log formatter itself."""
    url = registry.url_with_credentials()
    configure_logging("DEBUG")
    try:
        codec = Codec.from_settings(KafkaSettings(bootstrap_servers="x:1", schema_registry_url=url))
        try:
            codec.decode_request(encode_request(a_request(), 42))
        finally:
            codec.close()
        other = logging.getLogger("some.library")
        other.warning("cannot reach %s", url)
        try:
            raise ConnectionError(f"failed to connect to {url}")
        except ConnectionError:
            other.exception("postgresql://u:pw-S3cret@h/db?sslpassword=ssl-S3cret")
    finally:
        logging.getLogger().handlers.clear()
        logging.getLogger().setLevel(logging.WARNING)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    text = json.dumps(lines)
    assert leaks(text, [REGISTRY_SECRET, "pw-S3cret", "ssl-S3cret"]) == []
    messages = [line["message"] for line in lines]
    assert "Using writer schema id 42 for requests" in messages
    masked = f"{REGISTRY_USER}:***@127.0.0.1"
    assert any(masked in message for message in messages)
    assert any(masked in line.get("exception", "") for line in lines)
    assert "postgresql://u:***@h/db?sslpassword=***" in messages
