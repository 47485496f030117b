"""The contract-suite harness for Voyado Elevate (see `harness.VendorHarness`).

Voyado has no tokens and no login call: `has_tokens` is False so the token-expiry
scenarios are skipped, and `auth_path` names job-status, the endpoint `check` reaches.
Known and unknown customer keys both end COMPLETED: Voyado cannot tell them apart.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pydantic import SecretStr

from consumer.config import VendorSettings, VoyadoSettings
from consumer.model import Status
from consumer.sandbox.server import Sandbox
from consumer.sandbox.voyado import API_PREFIXES, DEFAULT_API_KEY, VoyadoSandbox
from consumer.vendors.base import VendorAdapter
from consumer.vendors.http import VendorHttp
from consumer.vendors.voyado import VoyadoAdapter
from consumer.work import WorkItem
from tests.vendors.harness import Expected, RecordedSleeps, work_items

_PREFIX = API_PREFIXES["v4"]


class Harness:
    vendor = "voyado"
    expected = Expected(existing=Status.COMPLETED, unknown=Status.COMPLETED)
    submit_path = f"{_PREFIX}/create-remove-customer-job"
    poll_path: str | None = f"{_PREFIX}/job-status"
    auth_path = f"{_PREFIX}/job-status"  # no auth endpoint; `check` asks job-status
    max_ids_per_call = 1
    has_tokens = False

    @contextmanager
    def running(self) -> Iterator[Sandbox]:
        """Jobs finish within about 0.06 s."""
        with VoyadoSandbox(
            created_seconds=0.01, waiting_seconds=0.02, running_seconds=0.03
        ) as sandbox:
            yield sandbox

    def settings(self, sandbox: Sandbox, **overrides: object) -> VoyadoSettings:
        values: dict[str, Any] = {
            "base_url": sandbox.base_url,
            "api_key": SecretStr(DEFAULT_API_KEY),
            "timeout_seconds": 1.0,
            "first_poll_after_seconds": 0.0,
            "poll_interval_seconds": 0.05,
        }
        values.update(overrides)
        return VoyadoSettings(**values)

    def adapter(self, settings: VendorSettings, sleeps: RecordedSleeps) -> VendorAdapter:
        assert isinstance(settings, VoyadoSettings)
        http = VendorHttp("voyado", timeout_seconds=settings.timeout_seconds, sleep=sleeps)
        return VoyadoAdapter(settings, http)

    def seed(self, sandbox: Sandbox, value: str) -> None:
        _voyado(sandbox).add_customer(value)

    def items(self, values: Sequence[str]) -> list[WorkItem]:
        return work_items(self.vendor, "customer_key", values)

    def expire_tokens(self, sandbox: Sandbox) -> None:
        """A no-op: Voyado authenticates every call with its Api-Key and issues no tokens."""

    def refuse_credentials(self, sandbox: Sandbox) -> None:
        """Rotate the cluster's key, so the one in our settings gets 403 from now on."""
        _voyado(sandbox).rotate_api_key("rotated-by-the-contract-suite")


def _voyado(sandbox: Sandbox) -> VoyadoSandbox:
    assert isinstance(sandbox, VoyadoSandbox)
    return sandbox
