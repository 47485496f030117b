"""The vendor-throughput benchmark's settings: what `--rate-scale` changes."""

import argparse

import pytest

from bench.throughput import (
    MOST_IN_FLIGHT,
    VENDORS,
    operations,
    per_process,
    positive,
    scaled_vendors,
)
from consumer.config import VendorSettings


def test_the_issue_example_is_scale_one() -> None:
    assert scaled_vendors(1.0) == VENDORS
    rates = {(op.vendor, op.name): op.rate for op in operations(VENDORS)}
    assert rates[("voyado", "submit")] == 100
    assert rates[("monetate", "status")] == 40


def test_a_scale_multiplies_the_rates_and_the_calls_in_flight() -> None:
    vendors = scaled_vendors(4.0)
    assert vendors["voyado"] == {"rate_per_second": 400, "max_in_flight": 80}
    assert vendors["monetate"] == {"status_rate_per_second": 160, "max_in_flight": 32}
    rates = {(op.vendor, op.name): op.rate for op in operations(vendors)}
    assert rates[("voyado", "submit")] == 400
    assert rates[("monetate", "status")] == 160
    assert rates[("acquia_cdp", "submit")] == 1
    assert VENDORS["voyado"]["rate_per_second"] == 100  # the example itself is left alone


def test_each_process_gets_its_share_of_the_calls_in_flight_within_the_limit() -> None:
    voyado = scaled_vendors(4.0)["voyado"]
    assert per_process(voyado, 3)["max_in_flight"] == 27
    assert per_process(voyado, 1)["max_in_flight"] == MOST_IN_FLIGHT
    assert per_process(voyado, 1)["rate_per_second"] == 400  # the rate is the fleet's


def test_the_limit_is_the_configurations() -> None:
    limits = VendorSettings.model_fields["max_in_flight"].metadata
    assert any(getattr(limit, "le", None) == MOST_IN_FLIGHT for limit in limits)


@pytest.mark.parametrize("text", ["0", "-1", "nan", "four"])
def test_a_scale_must_be_a_number_above_zero(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        positive(text)


def test_a_scale_above_zero_is_taken_as_given() -> None:
    assert positive("2.5") == 2.5
