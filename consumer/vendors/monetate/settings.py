"""`vendors.monetate`: the account, the dataset uploads go to, and the API user's key."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr, field_validator

from consumer.config import VendorSettings

STATUS_CHECKS_PER_POLL = 20
"""Customer ids one poll checks at most: Monetate answers per id, about one a second."""
PENDING_BACKOFF_FRACTION = 0.25
"""A job whose first check found its upload not yet deleted is checked again after this
fraction of its age: nightly deletions mean an upload is gone all at once or not yet, so
the waits grow (x1.25 a time) while it is pending, up to `poll_interval_seconds`."""
MIN_PENDING_BACKOFF_SECONDS = 1.0


class MonetateSettings(VendorSettings):
    vendor: ClassVar[str] = "monetate"

    shortname: str = Field(min_length=1)
    dataset: str = Field(min_length=1)
    api_username: str = Field(min_length=1)
    private_key: SecretStr
    status_path: str = "/api/data/v1/{shortname}/production/customer_data_privacy/status/"
    status_rate_per_second: float = Field(default=1.0, gt=0)
    overdue_after_seconds: float = Field(default=172800.0, gt=0)
    first_poll_after_seconds: float = Field(default=86400.0, ge=0)
    # The longest wait between checks of a job whose upload is still pending.
    poll_interval_seconds: float = Field(default=3600.0, gt=0)

    @field_validator("status_path")
    @classmethod
    def _absolute_path(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError("must be a path starting with /")
        return path

    @property
    def overdue_after(self) -> float | None:
        return self.overdue_after_seconds

    @property
    def poll_rate_per_second(self) -> float | None:
        return self.status_rate_per_second

    def rate_counted_per_call(self, operation: str) -> bool:
        """Monetate's data GETs (the status checks) are rate limited call by call."""
        return operation == "poll"

    def next_poll_seconds(self, age_seconds: float, settled_some: bool) -> float:
        """A poll that found ids gone goes on with the rest at once; one whose first check
        was still pending waits a quarter of the job's age, within 1 s and
        `poll_interval_seconds`. So each id costs about one check once deleted, plus a few
        per upload while it waits (ids x ~1 status checks in steady state)."""
        if settled_some:
            return 0.0
        backoff = max(MIN_PENDING_BACKOFF_SECONDS, age_seconds * PENDING_BACKOFF_FRACTION)
        return min(self.poll_interval_seconds, backoff)

    @property
    def calls_per_poll(self) -> int:
        """Monetate answers per customer id: a poll checks a slice of its upload's ids."""
        return STATUS_CHECKS_PER_POLL
