"""The harness for Acoustic Campaign (see `harness.VendorHarness`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import SecretStr

from consumer.config import VendorSettings
from consumer.model import Status
from consumer.vendors.acoustic import AcousticAdapter, AcousticSettings
from consumer.vendors.http import VendorHttp
from devtools.sandbox.acoustic import AcousticSandbox
from tests.vendors.harness import Expected, HarnessFor, RecordedSleeps

DATABASE = 10091


class Harness(HarnessFor[AcousticSandbox, AcousticAdapter]):
    vendor = "acoustic"
    identity_type = "email"
    destination = str(DATABASE)
    expected = Expected(existing=Status.COMPLETED, unknown=Status.NOT_FOUND)
    submit_path = "/rest/databases"
    poll_path: str | None = "/rest/gdpr_jobs"
    auth_path = "/oauth/token"
    max_ids_per_call = 5000  # no published cap: the configured batch size

    @contextmanager
    def running(self) -> Iterator[AcousticSandbox]:
        with AcousticSandbox(job_start_after_seconds=0.01, job_duration_seconds=0.03) as sandbox:
            sandbox.add_database(DATABASE, lookup_fields=("EMAIL",))
            yield sandbox

    def settings(self, sandbox: AcousticSandbox, **overrides: Any) -> AcousticSettings:
        values: dict[str, Any] = {
            "base_url": sandbox.base_url,
            "client_id": "sandbox-client",
            "client_secret": SecretStr("sandbox-secret"),
            "refresh_token": SecretStr("sandbox-refresh"),
            "database_ids": (DATABASE,),
            "timeout_seconds": 1.0,
        }
        values.update(overrides)
        return AcousticSettings(**values)

    def adapter(self, settings: VendorSettings, sleeps: RecordedSleeps) -> AcousticAdapter:
        assert isinstance(settings, AcousticSettings)
        http = VendorHttp(self.vendor, timeout_seconds=settings.timeout_seconds, sleep=sleeps)
        return AcousticAdapter(settings, http)

    def seed(self, sandbox: AcousticSandbox, value: str) -> None:
        sandbox.add_contact(DATABASE, {"EMAIL": value})

    def expire_tokens(self, sandbox: AcousticSandbox) -> None:
        sandbox.expire_tokens()

    def refuse_credentials(self, sandbox: AcousticSandbox) -> None:
        sandbox.rotate_client_secret("rotated-by-the-contract-suite")
