"""The harness for Voyado Elevate (see `harness.VendorHarness`).

Voyado has no tokens and no login call: `has_tokens` is False so the token-expiry
scenarios are skipped, and `auth_path` names job-status, the endpoint `check` reaches.
Known and unknown customer keys both end COMPLETED: Voyado cannot tell them apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import SecretStr

from consumer.config import VendorSettings
from consumer.model import Status
from consumer.vendors.http import VendorHttp
from consumer.vendors.voyado import VoyadoAdapter, VoyadoSettings
from devtools.sandbox.voyado import API_PREFIXES, DEFAULT_API_KEY, VoyadoSandbox
from tests.vendors.harness import Expected, HarnessFor, RecordedSleeps

_PREFIX = API_PREFIXES["v4"]


class Harness(HarnessFor[VoyadoSandbox, VoyadoAdapter]):
    vendor = "voyado"
    identity_type = "customer_key"
    expected = Expected(existing=Status.COMPLETED, unknown=Status.COMPLETED)
    submit_path = f"{_PREFIX}/create-remove-customer-job"
    poll_path: str | None = f"{_PREFIX}/job-status"
    auth_path = f"{_PREFIX}/job-status"  # no auth endpoint; `check` asks job-status
    max_ids_per_call = 1
    has_tokens = False

    @contextmanager
    def running(self) -> Iterator[VoyadoSandbox]:
        """Jobs finish within about 0.06 s."""
        with VoyadoSandbox(
            created_seconds=0.01, waiting_seconds=0.02, running_seconds=0.03
        ) as sandbox:
            yield sandbox

    def settings(self, sandbox: VoyadoSandbox, **overrides: Any) -> VoyadoSettings:
        values: dict[str, Any] = {
            "base_url": sandbox.base_url,
            "api_key": SecretStr(DEFAULT_API_KEY),
            "timeout_seconds": 1.0,
            "first_poll_after_seconds": 0.0,
            "poll_interval_seconds": 0.05,
        }
        values.update(overrides)
        return VoyadoSettings(**values)

    def adapter(self, settings: VendorSettings, sleeps: RecordedSleeps) -> VoyadoAdapter:
        assert isinstance(settings, VoyadoSettings)
        http = VendorHttp(self.vendor, timeout_seconds=settings.timeout_seconds, sleep=sleeps)
        return VoyadoAdapter(settings, http)

    def seed(self, sandbox: VoyadoSandbox, value: str) -> None:
        sandbox.add_customer(value)

    def expire_tokens(self, sandbox: VoyadoSandbox) -> None:
        """A no-op: Voyado authenticates every call with its Api-Key and issues no tokens."""

    def refuse_credentials(self, sandbox: VoyadoSandbox) -> None:
        """Rotate the cluster's key, so the one in our settings gets 403 from now on."""
        sandbox.rotate_api_key("rotated-by-the-contract-suite")
