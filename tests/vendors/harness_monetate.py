"""Monetate's `VendorHarness` for the adapter contract suite.

The sandbox's nightly batch runs 50 ms after a submission and its data GET limit is
raised to 200/s, with the adapter pacing at 100/s: pacing waits are real but tiny, so
`RecordedSleeps` only sees the in-call retry waits the contract suite asserts on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pydantic import SecretStr

from consumer.config import MonetateSettings, VendorSettings
from consumer.model import Status
from consumer.sandbox.monetate import (
    DEFAULT_API_USERNAME,
    DEFAULT_MAX_ROWS_PER_CALL,
    DEFAULT_PRIVATE_KEY_PEM,
    DEFAULT_SHORTNAME,
    MonetateSandbox,
)
from consumer.sandbox.server import Sandbox
from consumer.vendors.base import VendorAdapter
from consumer.vendors.http import VendorHttp
from consumer.vendors.monetate import MonetateAdapter
from consumer.work import WorkItem
from tests.vendors.harness import Expected, RecordedSleeps, work_items

DATASET = "erasure_requests"
ACCOUNT_PATH = f"/api/data/v1/{DEFAULT_SHORTNAME}/production"


def _monetate(sandbox: Sandbox) -> MonetateSandbox:
    assert isinstance(sandbox, MonetateSandbox)
    return sandbox


class Harness:
    vendor = "monetate"
    # NOT_FOUND after submission means the id is gone, whether it was held or not.
    expected = Expected(existing=Status.COMPLETED, unknown=Status.COMPLETED)
    submit_path = f"{ACCOUNT_PATH}/data/"
    poll_path: str | None = f"{ACCOUNT_PATH}/customer_data_privacy/status/"
    auth_path = "/api/auth/v0/refresh/"
    max_ids_per_call = DEFAULT_MAX_ROWS_PER_CALL
    has_tokens = True

    @contextmanager
    def running(self) -> Iterator[Sandbox]:
        with MonetateSandbox(deletion_delay_seconds=0.05, data_get_rate_per_second=200) as box:
            box.add_dataset(DATASET)
            yield box

    def settings(self, sandbox: Sandbox, **overrides: object) -> VendorSettings:
        values: dict[str, Any] = {
            "base_url": sandbox.base_url,
            "shortname": DEFAULT_SHORTNAME,
            "dataset": DATASET,
            "api_username": DEFAULT_API_USERNAME,
            "private_key": SecretStr(DEFAULT_PRIVATE_KEY_PEM),
            "batch_size": self.max_ids_per_call,
            "timeout_seconds": 1.0,
            "status_rate_per_second": 100.0,
            "first_poll_after_seconds": 0.0,
            "poll_interval_seconds": 0.05,
        }
        values.update(overrides)
        return MonetateSettings(**values)

    def adapter(self, settings: VendorSettings, sleeps: RecordedSleeps) -> VendorAdapter:
        assert isinstance(settings, MonetateSettings)
        http = VendorHttp(self.vendor, timeout_seconds=settings.timeout_seconds, sleep=sleeps)
        return MonetateAdapter(settings, http, sleep=time.sleep)

    def seed(self, sandbox: Sandbox, value: str) -> None:
        _monetate(sandbox).add_customer(value)

    def items(self, values: Sequence[str]) -> list[WorkItem]:
        return work_items(self.vendor, "customer_id", values)

    def expire_tokens(self, sandbox: Sandbox) -> None:
        _monetate(sandbox).expire_tokens()

    def refuse_credentials(self, sandbox: Sandbox) -> None:
        _monetate(sandbox).revoke_key()
