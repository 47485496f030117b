"""The contract-suite harness for Acoustic Campaign (see `harness.VendorHarness`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pydantic import SecretStr

from consumer.config import AcousticSettings, VendorSettings
from consumer.model import Status
from consumer.sandbox.acoustic import AcousticSandbox
from consumer.sandbox.server import Sandbox
from consumer.vendors.acoustic import AcousticAdapter
from consumer.vendors.base import VendorAdapter
from consumer.vendors.http import VendorHttp
from consumer.work import WorkItem
from tests.vendors.harness import Expected, RecordedSleeps, work_items

DATABASE = 10091


class Harness:
    vendor = "acoustic"
    expected = Expected(existing=Status.COMPLETED, unknown=Status.NOT_FOUND)
    submit_path = "/rest/databases"
    poll_path: str | None = "/rest/gdpr_jobs"
    auth_path = "/oauth/token"
    max_ids_per_call = 5000  # no published cap: the configured batch size
    has_tokens = True

    @contextmanager
    def running(self) -> Iterator[Sandbox]:
        with AcousticSandbox(job_start_after_seconds=0.01, job_duration_seconds=0.03) as sandbox:
            sandbox.add_database(DATABASE, lookup_fields=("EMAIL",))
            yield sandbox

    def settings(self, sandbox: Sandbox, **overrides: object) -> AcousticSettings:
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

    def adapter(self, settings: VendorSettings, sleeps: RecordedSleeps) -> VendorAdapter:
        assert isinstance(settings, AcousticSettings)
        http = VendorHttp("acoustic", timeout_seconds=settings.timeout_seconds, sleep=sleeps)
        return AcousticAdapter(settings, http)

    def seed(self, sandbox: Sandbox, value: str) -> None:
        _acoustic(sandbox).add_contact(DATABASE, {"EMAIL": value})

    def items(self, values: Sequence[str]) -> list[WorkItem]:
        return work_items(self.vendor, "email", values, str(DATABASE))

    def expire_tokens(self, sandbox: Sandbox) -> None:
        _acoustic(sandbox).expire_tokens()

    def refuse_credentials(self, sandbox: Sandbox) -> None:
        _acoustic(sandbox).rotate_client_secret("rotated-by-the-contract-suite")


def _acoustic(sandbox: Sandbox) -> AcousticSandbox:
    assert isinstance(sandbox, AcousticSandbox)
    return sandbox
