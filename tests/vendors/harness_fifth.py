"""The harness for the "fifth" vendor of `test_fifth_vendor.py` (see `harness.py`).

The vendor lives outside `consumer`, so the harness registers it while its sandbox runs
(`registered`) and builds adapters with `consumer.vendors.build_adapter`: the worker's own
factory, which knows the vendor only through the registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import SecretStr

from consumer.config import VendorSettings
from consumer.model import Status
from consumer.vendors import build_adapter, registry
from devtools.sandbox.server import Sandbox
from tests.vendors.fifth_sandbox import CLIENT_ID, CLIENT_SECRET, FifthSandbox
from tests.vendors.fifth_vendor import MAX_IDS_PER_CALL, VENDOR, FifthAdapter, FifthSettings
from tests.vendors.harness import Expected, HarnessFor, RecordedSleeps


@contextmanager
def registered() -> Iterator[None]:
    """The worker knows "fifth" (config, adapter factory, `setup`, `check`) meanwhile."""
    registry.register(VENDOR)
    try:
        yield
    finally:
        registry.unregister(VENDOR.name)


class Harness(HarnessFor[FifthSandbox, FifthAdapter]):
    vendor = VENDOR.name
    identity_type = "email"
    expected = Expected(existing=Status.COMPLETED, unknown=Status.NOT_FOUND)
    submit_path = "/v1/erasures"
    poll_path: str | None = "/v1/erasures/"
    auth_path = "/v1/token"
    max_ids_per_call = MAX_IDS_PER_CALL

    @contextmanager
    def running(self) -> Iterator[FifthSandbox]:
        with registered(), FifthSandbox() as sandbox:
            sandbox.enable_erasure()
            yield sandbox

    def settings(self, sandbox: Sandbox, **overrides: Any) -> FifthSettings:
        values: dict[str, Any] = {
            "base_url": sandbox.base_url,
            "client_id": CLIENT_ID,
            "client_secret": SecretStr(CLIENT_SECRET),
            "timeout_seconds": 1.0,
        }
        return FifthSettings(**(values | overrides))

    def adapter(self, settings: VendorSettings, sleeps: RecordedSleeps) -> FifthAdapter:
        adapter = build_adapter(settings, sleeps)
        assert isinstance(adapter, FifthAdapter)
        return adapter

    def seed(self, sandbox: FifthSandbox, value: str) -> None:
        sandbox.add_contact(value)

    def expire_tokens(self, sandbox: FifthSandbox) -> None:
        sandbox.expire_tokens()

    def refuse_credentials(self, sandbox: FifthSandbox) -> None:
        sandbox.rotate_secret("rotated-by-the-contract-suite")
