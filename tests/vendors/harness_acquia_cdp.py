"""The harness for Acquia CDP (see `harness.VendorHarness`).

Acquia has no status API (`poll_path` is None): an id it holds ends ACCEPTED at submit
time. Logins and logouts share `auth_path`; count logins by `query == "action=login"`.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from consumer.config import VendorSettings
from consumer.model import Status
from consumer.vendors.acquia_cdp import AcquiaCdpAdapter, AcquiaCdpSettings
from consumer.vendors.http import VendorHttp
from devtools.sandbox.acquia_cdp import (
    DEFAULT_PASSWORD,
    DEFAULT_TENANT_ID,
    DEFAULT_USERNAME,
    AcquiaCdpSandbox,
)
from devtools.sandbox.acquia_cdp_wire import MAX_IDS_PER_CALL
from devtools.sandbox.server import Sandbox
from tests.vendors.harness import Expected, HarnessFor, RecordedSleeps


class Harness(HarnessFor[AcquiaCdpSandbox, AcquiaCdpAdapter]):
    vendor = "acquia_cdp"
    identity_type = "customer_id"
    expected = Expected(existing=Status.ACCEPTED, unknown=Status.NOT_FOUND)
    submit_path = f"/v2/{DEFAULT_TENANT_ID}/dw/dataerasure"
    poll_path: str | None = None
    auth_path = "/authentication"
    max_ids_per_call = MAX_IDS_PER_CALL

    def running(self) -> AcquiaCdpSandbox:
        """The sandbox is its own context manager (starts on enter, stops on exit)."""
        return AcquiaCdpSandbox()

    def settings(self, sandbox: Sandbox, **overrides: Any) -> AcquiaCdpSettings:
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

    def seed(self, sandbox: AcquiaCdpSandbox, value: str) -> None:
        sandbox.add_customer(DEFAULT_TENANT_ID, value)

    def expire_tokens(self, sandbox: AcquiaCdpSandbox) -> None:
        sandbox.expire_tokens()

    def refuse_credentials(self, sandbox: AcquiaCdpSandbox) -> None:
        sandbox.refuse_credentials()
