"""Legal deadlines (contract §4 `deadlines`): when a request is due, how far `extend` may
move it, and when it counts as at risk.

Pure values and arithmetic, no database: ingest computes a request's due date once, when it
records it, and the work list, the gauges and `extend` read the stored date, so an
extension moves every one of them at once. At risk has one definition here, shared by
`erasure-worker list --at-risk` and the `erasure_requests_at_risk` gauge.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from consumer.model import Regulation

#: A request is at risk once this share of its regulation's days has passed, i.e. when
#: less than the last quarter of them is left before its (possibly extended) due date.
AT_RISK_SHARE: Final = 0.75
_LATEST: Final = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Days from `requested_at` to the legal deadline, and the most `extend` may add in
    all, per regulation; the defaults are the contract's (GDPR Art. 12(3): one month, plus
    two further months; CCPA: 45 days, plus 45)."""

    gdpr_days: float = 30.0
    ccpa_days: float = 45.0
    other_days: float = 30.0
    gdpr_extension_days: int = 60
    ccpa_extension_days: int = 45
    other_extension_days: int = 60

    def days(self, regulation: Regulation) -> float:
        """The regulation's days from `requested_at` to the due date."""
        return {
            Regulation.GDPR: self.gdpr_days,
            Regulation.CCPA: self.ccpa_days,
            Regulation.OTHER: self.other_days,
        }[regulation]

    def extension_days(self, regulation: Regulation) -> int:
        """The most days `extend` may add to one request of this regulation, in all."""
        return {
            Regulation.GDPR: self.gdpr_extension_days,
            Regulation.CCPA: self.ccpa_extension_days,
            Regulation.OTHER: self.other_extension_days,
        }[regulation]

    def due_date(self, regulation: Regulation, requested_at: datetime) -> datetime:
        """The legal deadline of a request made at `requested_at`, before any extension.
        A request dated at the end of the calendar (Avro allows year 9999) is due at its end
        rather than overflowing: the date is nonsense, the request must still be recorded."""
        days = timedelta(days=self.days(regulation))
        if requested_at > _LATEST - days:
            return _LATEST
        return requested_at + days

    def at_risk_window(self, regulation: Regulation) -> timedelta:
        """How long before its due date a request of this regulation is at risk: the last
        quarter of the regulation's days (an extension moves it along with the due date)."""
        return timedelta(days=self.days(regulation) * (1 - AT_RISK_SHARE))


DEFAULT_DEADLINES: Final = Deadlines()
