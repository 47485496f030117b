"""How the operator commands write times and deadlines, so that `status`, `list` and
`extend` say them the same way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_DAY = timedelta(days=1)


def iso(moment: datetime) -> str:
    """ISO 8601 UTC to the millisecond, as `status --json` carries times."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def minute(moment: datetime) -> str:
    """A time for a person reading a table: UTC, to the minute."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def days_left(due_at: datetime, now: datetime) -> float:
    """Days until the due date, to one decimal; negative once it has passed."""
    return round((due_at - now) / _DAY, 1)
