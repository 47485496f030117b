"""How item statuses roll up into vendor-scope and request-scope statuses (contract §3).

Pure functions, so both ledger backends derive exactly the same events and the rules can be
tested exhaustively without a database.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from consumer.model import Status


def vendor_scope_status(item_statuses: Collection[Status]) -> Status:
    """The status a vendor scope shows for its items.

    While any item is open the scope is open, at the furthest step any item reached
    (finished items count as IN_PROGRESS: the work is under way). Once all are
    terminal: any FAILED fails the scope, any erased identifier completes it, accepted
    ones make it ACCEPTED, and only when the vendor held nothing is it NOT_FOUND.
    """
    if not item_statuses:
        raise ValueError("a vendor scope has at least one item")
    if len(item_statuses) == 1:  # most scopes: one identifier at the vendor
        (status,) = item_statuses
        return status
    if any(not status.is_terminal for status in item_statuses):
        return max(
            (status if not status.is_terminal else Status.IN_PROGRESS for status in item_statuses),
            key=lambda status: status.rank,
        )
    for terminal in (Status.FAILED, Status.COMPLETED, Status.ACCEPTED, Status.NOT_FOUND):
        if terminal in item_statuses:
            return terminal
    return Status.SKIPPED


def request_scope_status(vendor_statuses: Mapping[str, Status]) -> tuple[Status, str | None] | None:
    """COMPLETED or FAILED (with a detail naming the failed vendors) once every vendor
    scope is terminal; None while any is open."""
    if any(not status.is_terminal for status in vendor_statuses.values()):
        return None
    failed = sorted(vendor for vendor, status in vendor_statuses.items() if status is Status.FAILED)
    if failed:
        return Status.FAILED, "failed at: " + ", ".join(failed)
    return Status.COMPLETED, None


def request_is_open(status: Status, vendor_scope_open: bool) -> bool:
    """Whether a request scope still awaits its terminal status: it has none yet, or it is
    FAILED and a vendor scope is open again. Requeue (contract §3, the one way back) moves
    FAILED vendor scopes to QUEUED; the request then emits its new terminal status, with
    previous_status FAILED, once they are all terminal again. Without a requeue every
    vendor scope of a FAILED request is terminal, since terminal scopes never reopen."""
    return not status.is_terminal or (status is Status.FAILED and vendor_scope_open)


def is_forward(current: Status | None, new: Status) -> bool:
    """A scope only moves forward and nothing follows its terminal status (requeue moves a
    FAILED vendor scope back to QUEUED itself: `SqlOperations.requeue`)."""
    if current is None:
        return True
    return not current.is_terminal and new.rank > current.rank
