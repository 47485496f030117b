"""Which vendors a request goes to, with which identifiers (contract §2, §3).

A pure function of the request and the enabled vendors, so ingest can plan a whole batch
before its one ledger transaction, and the rules can be tested without Kafka or a database.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TypeVar

from consumer.config import VendorSettings
from consumer.ledger.deadlines import DEFAULT_DEADLINES, Deadlines
from consumer.ledger.records import ItemPlan, NewRequest
from consumer.model import ErasureRequest, Identity

NOT_ENABLED = "vendor not enabled"

_T = TypeVar("_T", bound=Hashable)


def plan_request(
    request: ErasureRequest,
    enabled: Mapping[str, VendorSettings],
    deadlines: Deadlines = DEFAULT_DEADLINES,
) -> NewRequest:
    """The items to send and the vendors to skip (with why) for one valid request, and
    its due date by `deadlines` (contract §4).

    `vendors=None` means every enabled vendor. A list means exactly those: enabled vendors
    it does not name get nothing at all (no items, no events), and a named vendor that is
    not enabled (or not a vendor we know) is skipped. An enabled vendor for which the
    subject has no identity of a type it erases by is skipped too.
    """
    targets = enabled.keys() if request.vendors is None else _distinct(request.vendors)
    items: list[ItemPlan] = []
    skipped: list[tuple[str, str]] = []
    for vendor in targets:
        settings = enabled.get(vendor)
        if settings is None:
            skipped.append((vendor, NOT_ENABLED))
            continue
        vendor_items = _vendor_items(vendor, settings, request.identities)
        if vendor_items:
            items.extend(vendor_items)
        else:
            skipped.append((vendor, _no_identity_detail(settings)))
    due_at = deadlines.due_date(request.regulation, request.requested_at)
    return NewRequest(request, tuple(items), tuple(skipped), due_at)


def _vendor_items(
    vendor: str, settings: VendorSettings, identities: Iterable[Identity]
) -> list[ItemPlan]:
    """One item per distinct identifier of a type the vendor needs, at each destination."""
    needed, destinations = settings.identity_types, settings.destinations
    identifiers = _distinct((i.type, i.value) for i in identities if i.type in needed)
    return [
        ItemPlan(vendor, identity_type, value, destination)
        for identity_type, value in identifiers
        for destination in destinations
    ]


def _no_identity_detail(settings: VendorSettings) -> str:
    return "subject has no identity of type " + " or ".join(sorted(settings.identity_types))


def _distinct(values: Iterable[_T]) -> list[_T]:
    """Values without repeats, in first-seen order (dict keys keep insertion order)."""
    return list(dict.fromkeys(values))
