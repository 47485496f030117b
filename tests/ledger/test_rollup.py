"""The roll-up rules both ledger backends share (contract §3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.ledger.rollup import is_forward, request_scope_status, vendor_scope_status
from consumer.model import TERMINAL_STATUSES, Status

ITEM_STATUSES = [s for s in Status if s not in (Status.RECEIVED, Status.SKIPPED)]


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([Status.QUEUED], Status.QUEUED),
        ([Status.QUEUED, Status.SUBMITTED], Status.SUBMITTED),
        ([Status.SUBMITTED, Status.IN_PROGRESS], Status.IN_PROGRESS),
        ([Status.QUEUED, Status.NOT_FOUND], Status.IN_PROGRESS),
        ([Status.COMPLETED, Status.NOT_FOUND], Status.COMPLETED),
        ([Status.NOT_FOUND, Status.NOT_FOUND], Status.NOT_FOUND),
        ([Status.COMPLETED, Status.FAILED], Status.FAILED),
        ([Status.ACCEPTED, Status.NOT_FOUND], Status.ACCEPTED),
    ],
)
def test_vendor_scope_roll_up(items: list[Status], expected: Status) -> None:
    assert vendor_scope_status(items) is expected


def test_vendor_scope_needs_items() -> None:
    with pytest.raises(ValueError, match="at least one item"):
        vendor_scope_status([])


@given(st.lists(st.sampled_from(ITEM_STATUSES), min_size=1))
def test_scope_is_terminal_exactly_when_every_item_is(items: list[Status]) -> None:
    scope = vendor_scope_status(items)
    assert scope.is_terminal == all(item.is_terminal for item in items)
    if Status.FAILED in items and scope.is_terminal:
        assert scope is Status.FAILED


def test_request_scope_waits_for_every_vendor() -> None:
    assert request_scope_status({"acoustic": Status.COMPLETED, "voyado": Status.SUBMITTED}) is None


def test_request_scope_names_failed_vendors() -> None:
    statuses = {"voyado": Status.FAILED, "acoustic": Status.FAILED, "monetate": Status.SKIPPED}
    assert request_scope_status(statuses) == (Status.FAILED, "failed at: acoustic, voyado")


def test_request_scope_without_vendors_is_complete() -> None:
    assert request_scope_status({}) == (Status.COMPLETED, None)


@given(st.sampled_from(list(Status)), st.sampled_from(list(Status)))
def test_forward_only_and_nothing_after_terminal(current: Status, new: Status) -> None:
    allowed = is_forward(current, new)
    if current in TERMINAL_STATUSES or new.rank <= current.rank:
        assert not allowed
    else:
        assert allowed
    assert is_forward(None, new)
