"""Which vendors get which identifiers (contract §2, §3)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from consumer.config import VendorSettings
from consumer.ledger.records import ItemPlan
from consumer.model import ErasureRequest, Identity, Regulation
from consumer.pipeline.fanout import NOT_ENABLED, plan_request
from consumer.vendors.registry import BUILT_IN
from tests.support.settings import ALL_VENDORS as ALL
from tests.support.settings import MONETATE, VOYADO


def a_request(*identities: Identity, vendors: tuple[str, ...] | None = None) -> ErasureRequest:
    return ErasureRequest(
        request_id="0f8fad5b-d9cb-469f-a165-70867728950e",
        requested_at=datetime(2024, 5, 1, tzinfo=UTC),
        regulation=Regulation.GDPR,
        identities=identities,
        vendors=vendors,
        source=None,
        trace_id=None,
    )


EVERYONE = (
    Identity("email", "jane@example.com"),
    Identity("customer_id", "C-1"),
    Identity("customer_key", "K-1"),
)


def test_no_vendor_list_means_every_enabled_vendor() -> None:
    plan = plan_request(a_request(*EVERYONE), ALL)
    assert plan.skipped == ()
    assert plan.items == (
        ItemPlan("voyado", "customer_key", "K-1", None),
        ItemPlan("monetate", "customer_id", "C-1", None),
        ItemPlan("acquia_cdp", "customer_id", "C-1", None),
        ItemPlan("acoustic", "email", "jane@example.com", "10"),
        ItemPlan("acoustic", "email", "jane@example.com", "20"),
    )


def test_vendors_not_enabled_are_ignored_without_a_list() -> None:
    plan = plan_request(a_request(*EVERYONE), {"monetate": MONETATE})
    assert {item.vendor for item in plan.items} == {"monetate"}
    assert plan.skipped == ()


def test_a_list_means_exactly_those_vendors() -> None:
    plan = plan_request(a_request(*EVERYONE, vendors=("acquia_cdp",)), ALL)
    assert plan.items == (ItemPlan("acquia_cdp", "customer_id", "C-1", None),)
    assert plan.skipped == ()


def test_a_named_vendor_that_is_not_enabled_is_skipped() -> None:
    plan = plan_request(a_request(*EVERYONE, vendors=("voyado", "monetate")), {"voyado": VOYADO})
    assert [item.vendor for item in plan.items] == ["voyado"]
    assert plan.skipped == (("monetate", NOT_ENABLED),)


def test_an_unknown_vendor_name_is_skipped_as_not_enabled() -> None:
    plan = plan_request(a_request(*EVERYONE, vendors=("mailchimp",)), ALL)
    assert plan.items == ()
    assert plan.skipped == (("mailchimp", NOT_ENABLED),)


def test_a_vendor_named_twice_is_planned_once() -> None:
    plan = plan_request(a_request(*EVERYONE, vendors=("voyado", "voyado", "nope", "nope")), ALL)
    assert plan.items == (ItemPlan("voyado", "customer_key", "K-1", None),)
    assert plan.skipped == (("nope", NOT_ENABLED),)


def test_a_vendor_without_a_needed_identity_is_skipped_naming_the_types() -> None:
    plan = plan_request(a_request(Identity("customer_key", "K-1")), ALL)
    assert plan.items == (ItemPlan("voyado", "customer_key", "K-1", None),)
    assert plan.skipped == (
        ("monetate", "subject has no identity of type customer_id"),
        ("acquia_cdp", "subject has no identity of type customer_id"),
        ("acoustic", "subject has no identity of type email or phone"),
    )


def test_one_item_per_distinct_identifier_and_destination() -> None:
    identities = (
        Identity("email", "a@example.com"),
        Identity("email", "a@example.com"),
        Identity("email", "b@example.com"),
        Identity("phone", "+4612345"),
        Identity("loyalty", "L-1"),
    )
    plan = plan_request(a_request(*identities, vendors=("acoustic",)), ALL)
    assert plan.items == tuple(
        ItemPlan("acoustic", identity_type, value, destination)
        for identity_type, value in [
            ("email", "a@example.com"),
            ("email", "b@example.com"),
            ("phone", "+4612345"),
        ]
        for destination in ("10", "20")
    )


identities = st.lists(
    st.builds(
        Identity,
        st.sampled_from(["email", "customer_id", "customer_key", "phone", "other"]),
        st.sampled_from(["v1", "v2", "v3"]),
    ),
    min_size=1,
    max_size=6,
)
vendor_lists = st.none() | st.lists(
    st.sampled_from([*BUILT_IN, "unknown"]), min_size=1, max_size=6
).map(tuple)
enabled_sets = st.sets(st.sampled_from(BUILT_IN)).map(
    lambda names: {name: ALL[name] for name in BUILT_IN if name in names}
)


@given(identities, vendor_lists, enabled_sets)
def test_every_targeted_vendor_gets_items_or_a_skip_never_both(
    subject: list[Identity], vendors: tuple[str, ...] | None, enabled: dict[str, VendorSettings]
) -> None:
    plan = plan_request(a_request(*subject, vendors=vendors), enabled)
    with_items = {item.vendor for item in plan.items}
    skipped = [vendor for vendor, _ in plan.skipped]
    targeted = set(enabled) if vendors is None else set(vendors)
    assert len(skipped) == len(set(skipped))
    assert with_items.isdisjoint(skipped)
    assert with_items | set(skipped) == targeted
    assert len(plan.items) == len(set(plan.items))
    for item in plan.items:
        settings = enabled[item.vendor]
        assert item.identity_type in settings.identity_types
        assert item.destination in settings.destinations
        assert Identity(item.identity_type, item.identity_value) in subject
