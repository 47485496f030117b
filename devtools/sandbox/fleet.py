"""Every vendor sandbox at once, with the worker configuration that reaches them.

Used by `python -m devtools.sandbox` (staging and demos), `make run` and the end-to-end
tests, so that all of them exercise the same vendor behaviour. Credentials are the
sandboxes' defaults; the secret ones travel as environment variables, as in production.

What the fleet knows about a vendor is one `FleetMember` in `MEMBERS`: how to build and
prepare its sandbox, its config section, its secrets, which identifiers it holds and
which of its calls the demo counts. Adding a vendor's sandbox is one entry there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from devtools.sandbox import acquia_cdp, monetate, voyado
from devtools.sandbox.acoustic import AcousticSandbox
from devtools.sandbox.acquia_cdp import AcquiaCdpSandbox
from devtools.sandbox.acquia_cdp_wire import MAX_IDS_PER_CALL
from devtools.sandbox.monetate import MonetateSandbox, sandbox_keys
from devtools.sandbox.server import Sandbox
from devtools.sandbox.voyado import VoyadoSandbox

T = TypeVar("T", bound=Sandbox)

ACOUSTIC_DATABASE = 10091
ACOUSTIC_CLIENT_ID = "sandbox-client"
MONETATE_DATASET = "erasure_requests"


@dataclass(frozen=True)
class CallTally:
    """Calls of one kind that the demo counts against the fewest the vendor's limits
    allow (`ids_per_call` identifiers a call). `label` may name the identifiers sent as
    `{items}`; `per_second_limit` also reports the busiest second against that limit."""

    label: str
    path_part: str
    ids_per_call: int
    method: str | None = "POST"
    per_second_limit: int | None = None


@dataclass(frozen=True)
class FleetMember(Generic[T]):
    """How the fleet runs one vendor's sandbox.

    `build` makes it (jobs taking about `job_seconds`), `prepare` sets up a started one
    (its second argument: whether `erasure-worker setup` counts as done), `section` is
    its `vendors:` config section with secrets as `${NAME}` references to `secrets`,
    `seeds` make it hold an identifier of a type, and `batch_limit` caps `batch_size`
    whatever the overrides say.
    """

    build: Callable[[float], T]
    section: Callable[[T], dict[str, Any]]
    secrets: Mapping[str, str] = field(default_factory=dict)
    seeds: Mapping[str, Callable[[T, str], None]] = field(default_factory=dict)
    prepare: Callable[[T, bool], None] = lambda _sandbox, _set_up: None
    batch_limit: int | None = None
    tallies: tuple[CallTally, ...] = ()


def _prepare_monetate(sandbox: MonetateSandbox, set_up: bool) -> None:
    if set_up:
        sandbox.add_dataset(MONETATE_DATASET)


MEMBERS: dict[str, FleetMember[Any]] = {
    "acoustic": FleetMember[AcousticSandbox](
        build=lambda job: AcousticSandbox(
            job_start_after_seconds=job / 3, job_duration_seconds=2 * job / 3
        ),
        prepare=lambda box, _: box.add_database(ACOUSTIC_DATABASE, lookup_fields=("EMAIL",)),
        section=lambda box: {
            "base_url": box.base_url,
            "client_id": ACOUSTIC_CLIENT_ID,
            "client_secret": "${ACOUSTIC_CLIENT_SECRET}",
            "refresh_token": "${ACOUSTIC_REFRESH_TOKEN}",
            "database_ids": [ACOUSTIC_DATABASE],
            "lookup_fields": {"EMAIL": "email"},
        },
        secrets={
            "ACOUSTIC_CLIENT_SECRET": "sandbox-secret",
            "ACOUSTIC_REFRESH_TOKEN": "sandbox-refresh",
        },
        seeds={"email": lambda box, value: box.add_contact(ACOUSTIC_DATABASE, {"EMAIL": value})},
        tallies=(CallTally("uploads ({items} ids)", "/gdpr_erasure", 5000),),
    ),
    "voyado": FleetMember[VoyadoSandbox](
        build=lambda job: VoyadoSandbox(
            created_seconds=job / 3, waiting_seconds=job / 3, running_seconds=job / 3
        ),
        section=lambda box: {"base_url": box.base_url, "api_key": "${VOYADO_API_KEY}"},
        secrets={"VOYADO_API_KEY": voyado.DEFAULT_API_KEY},
        seeds={"customer_key": VoyadoSandbox.add_customer},
        batch_limit=1,
        tallies=(CallTally("remove jobs ({items} keys)", "create-remove-customer-job", 1),),
    ),
    "monetate": FleetMember[MonetateSandbox](
        build=lambda job: MonetateSandbox(deletion_delay_seconds=job),
        prepare=_prepare_monetate,
        section=lambda box: {
            "base_url": box.base_url,
            "shortname": monetate.DEFAULT_SHORTNAME,
            "dataset": MONETATE_DATASET,
            "api_username": monetate.DEFAULT_API_USERNAME,
            "private_key": "${MONETATE_PRIVATE_KEY}",
        },
        secrets={"MONETATE_PRIVATE_KEY": sandbox_keys().private_pem},
        seeds={"customer_id": MonetateSandbox.add_customer},
        tallies=(
            CallTally("uploads ({items} ids)", "/data/", monetate.DEFAULT_MAX_ROWS_PER_CALL),
            CallTally("status checks", "/status/", 1, method=None, per_second_limit=1),
        ),
    ),
    "acquia_cdp": FleetMember[AcquiaCdpSandbox](
        build=lambda job: AcquiaCdpSandbox(erasure_seconds=job),
        section=lambda box: {
            "base_url": box.base_url,
            "auth_url": box.base_url,
            "tenant_id": acquia_cdp.DEFAULT_TENANT_ID,
            "username": acquia_cdp.DEFAULT_USERNAME,
            "password": "${CDP_PASSWORD}",
        },
        secrets={"CDP_PASSWORD": acquia_cdp.DEFAULT_PASSWORD},
        seeds={
            "customer_id": lambda box, value: box.add_customer(acquia_cdp.DEFAULT_TENANT_ID, value)
        },
        batch_limit=MAX_IDS_PER_CALL,
        tallies=(CallTally("erasure calls ({items} ids)", "/dataerasure", MAX_IDS_PER_CALL),),
    ),
}

SECRETS = {name: value for member in MEMBERS.values() for name, value in member.secrets.items()}
"""Every secret the fleet's config sections refer to, by environment variable."""


def vendor_section(
    name: str, sandbox: Sandbox, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One vendor's `vendors:` config section for its sandbox, with `overrides` applied."""
    member = MEMBERS[name]
    section = {**member.section(sandbox), **(overrides or {})}
    if member.batch_limit is not None:
        limit = member.batch_limit
        section["batch_size"] = min(limit, int(section.get("batch_size", limit)))
    return section


class SandboxFleet:
    """Every member's sandbox; `job_seconds` sets how long their jobs take and every call
    is answered `latency_seconds` late. Vendors with a one-time setup start as after
    `erasure-worker setup` unless `set_up` is False."""

    def __init__(
        self, job_seconds: float = 1.0, *, set_up: bool = True, latency_seconds: float = 0.0
    ) -> None:
        self._set_up = set_up
        self.all: dict[str, Sandbox] = {
            name: member.build(job_seconds) for name, member in MEMBERS.items()
        }
        for sandbox in self.all.values():
            sandbox.set_latency(latency_seconds)

    def sandbox(self, kind: type[T]) -> T:
        """The one sandbox of this class, typed: `fleet.sandbox(MonetateSandbox)`."""
        (found,) = (box for box in self.all.values() if isinstance(box, kind))
        return found

    def start(self) -> None:
        for name, sandbox in self.all.items():
            sandbox.start()
            MEMBERS[name].prepare(sandbox, self._set_up)

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
        for name, sandbox in self.all.items():
            seed = MEMBERS[name].seeds.get(identity_type)
            if seed is not None:
                seed(sandbox, value)

    def vendors_config(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The `vendors:` section of a worker config for these sandboxes; secrets as
        `${NAME}` references to `SECRETS`; `overrides` apply to every vendor section."""
        return {name: vendor_section(name, box, overrides) for name, box in self.all.items()}
