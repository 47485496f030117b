"""The adapter contract suite (`contract.py`) for every vendor in the registry.

The vendor list comes from `consumer.vendors.registry`, so a vendor added there without
a `harness_<vendor>.py` fails here rather than going untested.
"""

from __future__ import annotations

import importlib

import pytest

from consumer.vendors import registry
from tests.vendors.contract import ContractSuite
from tests.vendors.harness import VendorHarness


class TestEveryRegisteredVendor(ContractSuite):
    @pytest.fixture(params=registry.names())
    def harness(self, request: pytest.FixtureRequest) -> VendorHarness:
        module = importlib.import_module(f"tests.vendors.harness_{request.param}")
        built: VendorHarness = module.Harness()
        return built
