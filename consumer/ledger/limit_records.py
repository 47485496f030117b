"""Values of the fleet-wide vendor limits that cross the ledger seam (see `limits`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class RateBucket:
    """A call rate that every replica on the ledger shares (CONTRACT.md section 4):
    `rate_per_second` calls of `operation` at `vendor`, and after a quiet spell a burst of at
    most `capacity` calls at once."""

    vendor: str
    operation: str
    rate_per_second: float
    capacity: float = 1.0

    def __post_init__(self) -> None:
        if self.rate_per_second <= 0 or self.capacity < 1:
            raise ValueError("a rate bucket needs a positive rate and room for one call")


@dataclass(frozen=True, slots=True)
class CallSlot:
    """One call granted by a `RateBucket`: taken at `taken_at` (the database's clock), it
    may go `wait_seconds` later. The slot is spent whether or not the call is made."""

    wait_seconds: float
    taken_at: datetime

    @property
    def ready_at(self) -> datetime:
        return self.taken_at + timedelta(seconds=self.wait_seconds)


@dataclass(frozen=True, slots=True)
class QuotaReservation:
    """Identifiers reserved in a vendor's rolling quota before a call (`identifiers`, 0 when
    the quota is used up; `send_id` None then), and how many the window still holds after it."""

    vendor: str
    send_id: int | None
    identifiers: int
    left: int
