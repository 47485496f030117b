"""Operator arguments: each bad one is refused with one line that echoes no personal data."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consumer.ledger.records import OperatorAction
from consumer.ops import inputs
from consumer.ops.inputs import BadInput

VENDORS = ("voyado", "monetate", "acquia_cdp", "acoustic")


def test_request_ids_are_canonical_uuids_and_a_bad_one_is_not_echoed() -> None:
    assert inputs.request_id("0D9D3C1E-7A4B-4C2D-9E8F-0A1B2C3D4E5F").startswith("0D9D")
    with pytest.raises(BadInput) as refused:
        inputs.request_id("anna@example.com")
    assert "anna" not in str(refused.value) and "\n" not in str(refused.value)


def test_vendors_must_be_known() -> None:
    assert inputs.vendor("acoustic", VENDORS) == "acoustic"
    with pytest.raises(BadInput, match="unknown vendor braze; known vendors: acoustic, acq"):
        inputs.vendor("braze", VENDORS)
    with pytest.raises(BadInput, match=r"unknown vendor \(that name\)"):
        inputs.vendor("x@example.com", VENDORS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01T10:30", datetime(2024, 5, 1, 10, 30, tzinfo=UTC)),
        ("2024-05-01T10:30+02:00", datetime(2024, 5, 1, 8, 30, tzinfo=UTC)),
    ],
)
def test_dates_are_utc_unless_they_say(text: str, expected: datetime) -> None:
    assert inputs.moment(text, "--since") == expected


@pytest.mark.parametrize("text", ["yesterday", "2024-13-01", "01/05/2024", ""])
def test_a_bad_date_is_one_line(text: str) -> None:
    with pytest.raises(BadInput, match=r"^--since takes a date, YYYY-MM-DD"):
        inputs.moment(text, "--since")


@pytest.mark.parametrize(
    ("text", "shown"), [("0", "got 0"), ("-5", "got -5"), ("1.5", "got 1.5"), ("ten", "got ten")]
)
def test_days_must_be_a_positive_whole_number(text: str, shown: str) -> None:
    with pytest.raises(
        BadInput, match=f"^--days must be a whole number of days, 1 or more .{shown}.$"
    ):
        inputs.positive_days(text)
    with pytest.raises(BadInput, match="^--days N is required"):
        inputs.positive_days("")
    assert inputs.positive_days("3") == 3


def test_an_action_needs_a_one_line_reason_and_names_who(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGNAME", "anna")
    assert inputs.action("  key rotated ", None) == OperatorAction("anna", "key rotated")
    assert inputs.action("why", "ben").actor == "ben"
    for reason, why in [
        (None, "--reason is required"),
        ("   ", "--reason is required"),
        ("two\nlines", "--reason must be one line"),
        ("x" * 501, "--reason is 501 characters long; at most 500"),
    ]:
        with pytest.raises(BadInput, match=why):
            inputs.action(reason, None)
    with pytest.raises(BadInput, match="--actor must be one line"):
        inputs.action("why", "a\tb")
