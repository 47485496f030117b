"""Settings of every built-in vendor, pointing at hosts nobody calls: for the tests that
plan requests (fan-out, the ledger, gauges) without a vendor call, where only a vendor's
name, identifier types and destinations matter.
"""

from __future__ import annotations

from pydantic import SecretStr

from consumer.config import VendorSettings
from consumer.vendors.acoustic import AcousticSettings
from consumer.vendors.acquia_cdp import AcquiaCdpSettings
from consumer.vendors.monetate import MonetateSettings
from consumer.vendors.voyado import VoyadoSettings

VOYADO = VoyadoSettings(base_url="https://voyado.example", api_key=SecretStr("k"))
MONETATE = MonetateSettings(
    base_url="https://monetate.example",
    shortname="acme",
    dataset="erasure",
    api_username="api-1",
    private_key=SecretStr("pem"),
)
ACQUIA = AcquiaCdpSettings(
    base_url="https://cdp.example",
    auth_url="https://cdp.example",
    tenant_id=1,
    username="u",
    password=SecretStr("p"),
)
# Two databases, two lookup fields: one identifier fans out to several items.
ACOUSTIC = AcousticSettings(
    base_url="https://acoustic.example",
    client_id="c",
    client_secret=SecretStr("s"),
    refresh_token=SecretStr("r"),
    database_ids=(10, 20),
    lookup_fields={"EMAIL": "email", "MOBILE": "phone"},
)
ALL_VENDORS: dict[str, VendorSettings] = {
    "voyado": VOYADO,
    "monetate": MONETATE,
    "acquia_cdp": ACQUIA,
    "acoustic": ACOUSTIC,
}
