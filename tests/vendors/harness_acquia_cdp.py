"""Acquia CDP for the adapter contract suite (see `harness.py`).

Acquia has no status API (`poll_path` is None): an id it holds ends ACCEPTED at submit
time. Logins and logouts share `auth_path`; count logins by `query == "action=login"`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import SecretStr

from consumer.config import AcquiaCdpSettings, VendorSettings
from consumer.model import Status
from consumer.sandbox.acquia_cdp import (
    DEFAULT_PASSWORD,
    DEFAULT_TENANT_ID,
    DEFAULT_USERNAME,
    MAX_IDS_PER_CALL,
    AcquiaCdpSandbox,
)
from consumer.sandbox.server import Sandbox
from consumer.vendors.acquia_cdp import AcquiaCdpAdapter
from consumer.vendors.http import VendorHttp
from consumer.work import WorkItem
from tests.vendors.harness import Expected, RecordedSleeps, work_items


def _sandbox(sandbox: Sandbox) -> AcquiaCdpSandbox:
    assert isinstance(sandbox, AcquiaCdpSandbox)
    return sandbox


class Harness:
    vendor = "acquia_cdp"
    expected = Expected(existing=Status.ACCEPTED, unknown=Status.NOT_FOUND)
    submit_path = f"/v2/{DEFAULT_TENANT_ID}/dw/dataerasure"
    poll_path: str | None = None
    auth_path = "/authentication"
    max_ids_per_call = MAX_IDS_PER_CALL
    has_tokens = True

    def running(self) -> AcquiaCdpSandbox:
        """The sandbox is its own context manager (starts on enter, stops on exit)."""
        return AcquiaCdpSandbox()

    def settings(self, sandbox: Sandbox, **overrides: object) -> AcquiaCdpSettings:
        values: dict[str, Any] = {
            "base_url": sandbox.base_url,
            "auth_url": sandbox.base_url,
            "tenant_id": DEFAULT_TENANT_ID,
            "username": DEFAULT_USERNAME,
            "password": SecretStr(DEFAULT_PASSWORD),
            "timeout_seconds": 1.0,
            "batch_size": MAX_IDS_PER_CALL,
        }
        values.update(overrides)
        return AcquiaCdpSettings(**values)

    def adapter(self, settings: VendorSettings, sleeps: RecordedSleeps) -> AcquiaCdpAdapter:
        assert isinstance(settings, AcquiaCdpSettings)
        http = VendorHttp(self.vendor, timeout_seconds=settings.timeout_seconds, sleep=sleeps)
        return AcquiaCdpAdapter(settings, http)

    def seed(self, sandbox: Sandbox, value: str) -> None:
        _sandbox(sandbox).add_customer(DEFAULT_TENANT_ID, value)

    def items(self, values: Sequence[str]) -> list[WorkItem]:
        return work_items(self.vendor, "customer_id", values)

    def expire_tokens(self, sandbox: Sandbox) -> None:
        _sandbox(sandbox).expire_tokens()

    def refuse_credentials(self, sandbox: Sandbox) -> None:
        _sandbox(sandbox).refuse_credentials()
