"""`vendors.monetate`: the account, the dataset uploads go to, and the API user's key."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr, field_validator

from consumer.config import VendorSettings

STATUS_CHECKS_PER_POLL = 20
"""Customer ids one poll checks: Monetate answers per id, about one a second."""


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
    # Each poll checks a slice of a job's ids at status_rate_per_second; hourly polls get
    # through a full 500-id upload within a day of the first check.
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
    def calls_per_poll(self) -> int:
        """Monetate answers per customer id: a poll checks a slice of its upload's ids."""
        return STATUS_CHECKS_PER_POLL
