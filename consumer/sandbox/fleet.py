"""All four vendor sandboxes at once, with the worker configuration that reaches them.

Used by `erasure-worker sandbox` (staging and demos), `make run` and the end-to-end tests,
so that all of them exercise the same vendor behaviour. Credentials are the sandboxes'
defaults; the secret ones travel as environment variables, as in production.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from consumer.sandbox import acquia_cdp, monetate, voyado
from consumer.sandbox.acoustic import AcousticSandbox
from consumer.sandbox.acquia_cdp import AcquiaCdpSandbox
from consumer.sandbox.monetate import MonetateSandbox
from consumer.sandbox.server import Sandbox
from consumer.sandbox.voyado import VoyadoSandbox

ACOUSTIC_DATABASE = 10091
ACOUSTIC_CLIENT_ID = "sandbox-client"
MONETATE_DATASET = "erasure_requests"

SECRETS = {
    "ACOUSTIC_CLIENT_SECRET": "sandbox-secret",
    "ACOUSTIC_REFRESH_TOKEN": "sandbox-refresh",
    "VOYADO_API_KEY": voyado.DEFAULT_API_KEY,
    "MONETATE_PRIVATE_KEY": monetate.DEFAULT_PRIVATE_KEY_PEM,
    "CDP_PASSWORD": acquia_cdp.DEFAULT_PASSWORD,
}


@dataclass
class SandboxFleet:
    """The four sandboxes; `job_seconds` sets how long their jobs take. Monetate's dataset
    exists from the start unless `monetate_dataset` is False (as before `setup`)."""

    job_seconds: float = 1.0
    monetate_dataset: bool = True
    acoustic: AcousticSandbox = field(init=False)
    voyado: VoyadoSandbox = field(init=False)
    monetate: MonetateSandbox = field(init=False)
    acquia_cdp: AcquiaCdpSandbox = field(init=False)

    def __post_init__(self) -> None:
        step = self.job_seconds / 3
        self.acoustic = AcousticSandbox(job_start_after_seconds=step, job_duration_seconds=2 * step)
        self.voyado = VoyadoSandbox(
            created_seconds=step, waiting_seconds=step, running_seconds=step
        )
        self.monetate = MonetateSandbox(deletion_delay_seconds=self.job_seconds)
        self.acquia_cdp = AcquiaCdpSandbox(erasure_seconds=self.job_seconds)

    @property
    def all(self) -> dict[str, Sandbox]:
        return {
            "acoustic": self.acoustic,
            "voyado": self.voyado,
            "monetate": self.monetate,
            "acquia_cdp": self.acquia_cdp,
        }

    def start(self) -> None:
        for sandbox in self.all.values():
            sandbox.start()
        self.acoustic.add_database(ACOUSTIC_DATABASE, lookup_fields=("EMAIL",))
        if self.monetate_dataset:
            self.monetate.add_dataset(MONETATE_DATASET)

    def stop(self) -> None:
        for sandbox in self.all.values():
            sandbox.stop()

    def __enter__(self) -> SandboxFleet:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def seed(self, identity_type: str, value: str) -> None:
        """Make every vendor that erases by this identity type hold `value`."""
        if identity_type == "email":
            self.acoustic.add_contact(ACOUSTIC_DATABASE, {"EMAIL": value})
        elif identity_type == "customer_key":
            self.voyado.add_customer(value)
        elif identity_type == "customer_id":
            self.monetate.add_customer(value)
            self.acquia_cdp.add_customer(acquia_cdp.DEFAULT_TENANT_ID, value)

    def vendors_config(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The `vendors:` section of a worker config for these sandboxes; secrets as
        `${NAME}` references to `SECRETS`; `overrides` apply to every vendor section."""
        common = dict(overrides or {})
        return {
            "acoustic": {
                "base_url": self.acoustic.base_url,
                "client_id": ACOUSTIC_CLIENT_ID,
                "client_secret": "${ACOUSTIC_CLIENT_SECRET}",
                "refresh_token": "${ACOUSTIC_REFRESH_TOKEN}",
                "database_ids": [ACOUSTIC_DATABASE],
                "lookup_fields": {"EMAIL": "email"},
                **common,
            },
            "voyado": {
                "base_url": self.voyado.base_url,
                "api_key": "${VOYADO_API_KEY}",
                **common,
                "batch_size": 1,
            },
            "monetate": {
                "base_url": self.monetate.base_url,
                "shortname": monetate.DEFAULT_SHORTNAME,
                "dataset": MONETATE_DATASET,
                "api_username": monetate.DEFAULT_API_USERNAME,
                "private_key": "${MONETATE_PRIVATE_KEY}",
                **common,
            },
            "acquia_cdp": {
                "base_url": self.acquia_cdp.base_url,
                "auth_url": self.acquia_cdp.base_url,
                "tenant_id": acquia_cdp.DEFAULT_TENANT_ID,
                "username": acquia_cdp.DEFAULT_USERNAME,
                "password": "${CDP_PASSWORD}",
                **common,
                "batch_size": min(200, int(common.get("batch_size", 200))),
            },
        }
