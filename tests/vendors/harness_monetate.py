"""The harness for Monetate (see `harness.VendorHarness`).

The sandbox's nightly batch runs 50 ms after a submission and its data GET limit is
raised to 200/s; adapters built here have no call gate (the worker's rate limiter, tested
with it in tests/pipeline/test_in_flight.py), so `RecordedSleeps` only sees the in-call
retry waits the contract suite asserts on. Polls start at the job's oldest id (`rand`
always 0), so tests know which ids a poll checks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import SecretStr

from consumer.backoff import Random
from consumer.config import VendorSettings
from consumer.model import Status
from consumer.vendors.http import VendorHttp
from consumer.vendors.monetate import MonetateAdapter, MonetateSettings
from consumer.vendors.monetate.settings import STATUS_CHECKS_PER_POLL
from devtools.sandbox.monetate import (
    DEFAULT_API_USERNAME,
    DEFAULT_MAX_ROWS_PER_CALL,
    DEFAULT_SHORTNAME,
    MonetateSandbox,
    sandbox_keys,
)
from tests.vendors.harness import Expected, HarnessFor, RecordedSleeps

DATASET = "erasure_requests"
ACCOUNT_PATH = f"/api/data/v1/{DEFAULT_SHORTNAME}/production"


class Harness(HarnessFor[MonetateSandbox, MonetateAdapter]):
    """`status_checks_per_poll` and `rand` go to the adapters it builds."""

    vendor = "monetate"
    identity_type = "customer_id"
    # NOT_FOUND after submission means the id is gone, whether it was held or not.
    expected = Expected(existing=Status.COMPLETED, unknown=Status.COMPLETED)
    submit_path = f"{ACCOUNT_PATH}/data/"
    poll_path: str | None = f"{ACCOUNT_PATH}/customer_data_privacy/status/"
    auth_path = "/api/auth/v0/refresh/"
    max_ids_per_call = DEFAULT_MAX_ROWS_PER_CALL

    def __init__(
        self,
        status_checks_per_poll: int = STATUS_CHECKS_PER_POLL,
        rand: Random = lambda: 0.0,
    ) -> None:
        self.status_checks_per_poll = status_checks_per_poll
        self.rand = rand

    @contextmanager
    def running(self) -> Iterator[MonetateSandbox]:
        # The natural status limit out of reach (loopback calls can come <5 ms apart); the
        # contract suite injects its 429s as faults.
        with MonetateSandbox(
            deletion_delay_seconds=0.05, data_get_rate_per_second=1_000_000.0
        ) as box:
            box.add_dataset(DATASET)
            yield box

    def settings(self, sandbox: MonetateSandbox, **overrides: Any) -> MonetateSettings:
        values: dict[str, Any] = {
            "base_url": sandbox.base_url,
            "shortname": DEFAULT_SHORTNAME,
            "dataset": DATASET,
            "api_username": DEFAULT_API_USERNAME,
            "private_key": SecretStr(sandbox_keys().private_pem),
            "batch_size": self.max_ids_per_call,
            "timeout_seconds": 1.0,
            "status_rate_per_second": 100.0,
            "first_poll_after_seconds": 0.0,
            "poll_interval_seconds": 0.05,
        }
        values.update(overrides)
        return MonetateSettings(**values)

    def adapter(self, settings: VendorSettings, sleeps: RecordedSleeps) -> MonetateAdapter:
        assert isinstance(settings, MonetateSettings)
        http = VendorHttp(self.vendor, timeout_seconds=settings.timeout_seconds, sleep=sleeps)
        checks = self.status_checks_per_poll
        return MonetateAdapter(
            settings, http, sleep=time.sleep, rand=self.rand, status_checks_per_poll=checks
        )

    def seed(self, sandbox: MonetateSandbox, value: str) -> None:
        sandbox.add_customer(value)

    def expire_tokens(self, sandbox: MonetateSandbox) -> None:
        sandbox.expire_tokens()

    def refuse_credentials(self, sandbox: MonetateSandbox) -> None:
        sandbox.revoke_key()
