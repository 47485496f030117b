"""YAML configuration (contract §4) turned into frozen, validated settings.

Validation happens once, at start-up, so that a typo is a one-line error naming the key
rather than a failure hours later when the first request for that vendor arrives.
Secrets are `SecretStr`: they never appear in a repr, a log line or an error message. The
rest of what can carry a credential (URLs, librdkafka properties) is masked in reprs by
`consumer.redaction`, the one place that knows what a credential looks like.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from functools import cache, cached_property
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from consumer.errors import FatalError
from consumer.ledger.deadlines import Deadlines
from consumer.redaction import redact_properties, redact_url
from consumer.vendors import registry

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
MIN_HASH_KEY_LENGTH = 16


class ConfigError(FatalError):
    """The configuration cannot be used; the message names the file and the key."""


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        """Reprs end up in logs and tracebacks: every `*url` field loses its credentials and
        the `config` mapping (librdkafka properties) its secret-looking values. `SecretStr`
        fields mask themselves."""
        for name, value in super().__repr_args__():
            if isinstance(name, str) and name.endswith("url") and isinstance(value, str):
                yield name, redact_url(value)
            elif name == "config" and isinstance(value, Mapping):
                yield name, redact_properties(value)
            else:
                yield name, value


class KafkaSettings(_Settings):
    bootstrap_servers: str = Field(min_length=1)
    group_id: str = Field(default="erasure-worker", min_length=1)
    input_topic: str = Field(default="subject.erasure.requested", min_length=1)
    status_topic: str = Field(default="erasure.status.changed", min_length=1)
    dlq_topic: str = Field(default="subject.erasure.requested.dlq", min_length=1)
    schema_registry_url: str | None = None
    # Free-form librdkafka properties; they often carry SASL passwords (masked in reprs).
    config: dict[str, str | int | float | bool] = Field(default_factory=dict)


class LedgerSettings(_Settings):
    url: str

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        scheme = urlsplit(url).scheme
        if scheme == "sqlite":
            if not url.startswith("sqlite:///") or url == "sqlite:///":
                raise ValueError("use sqlite:///relative/path or sqlite:////absolute/path")
        elif scheme not in ("postgresql", "postgres"):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return url

    @property
    def redacted_url(self) -> str:
        """The URL as `check` and error messages show it (no password, in any form)."""
        return redact_url(self.url)


class HttpSettings(_Settings):
    port: int = Field(default=8000, ge=0, le=65535)
    # Pods serve their probes on every interface; a host process may keep them on loopback.
    host: str = "0.0.0.0"  # noqa: S104

    @field_validator("host")
    @classmethod
    def _address_or_name(cls, host: str) -> str:
        if not _HOST_NAME.fullmatch(host):
            try:
                ipaddress.ip_address(host)
            except ValueError:
                message = "must be an IP address (0.0.0.0, ::, 127.0.0.1) or a host name"
                raise ValueError(message) from None
        return host


class VendorSettings(_Settings):
    """Keys every vendor section takes (contract §4); subclasses set the vendor's defaults."""

    vendor: ClassVar[str]
    hard_batch_limit: ClassVar[int | None] = None

    base_url: str
    identity_type: str = "customer_id"
    batch_size: int = Field(default=500, ge=1)
    flush_interval_seconds: float = Field(default=60.0, gt=0)
    poll_interval_seconds: float = Field(default=3600.0, gt=0)
    first_poll_after_seconds: float = Field(default=300.0, ge=0)
    rate_per_second: float = Field(default=1.0, gt=0)
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    # A job still open this long after submission is FAILED: a vendor job that never ends
    # must not keep its request open forever. Generous: Voyado's jobs take 5-6 days.
    max_job_age_seconds: float = Field(default=30 * 86400.0, gt=0)
    # Calls under way at once in one worker process, for submissions and for status polls
    # each (contract §4); every call slot is a loop with its own HTTP session.
    max_in_flight: int = Field(default=4, ge=1, le=64)

    @field_validator("base_url")
    @classmethod
    def _https_unless_loopback(cls, url: str) -> str:
        return https_unless_loopback(url)

    @cached_property
    def identity_types(self) -> frozenset[str]:
        """Identity types this vendor erases by; a subject with none of them is SKIPPED."""
        return frozenset({self.identity_type})

    @cached_property
    def destinations(self) -> tuple[str | None, ...]:
        """Where each identifier goes; one item per identifier and destination."""
        return (None,)

    @property
    def rolling_quota(self) -> tuple[int, float] | None:
        """(identifiers, window in seconds) the vendor accepts, or None when unlimited."""
        return None

    @property
    def overdue_after(self) -> float | None:
        """Seconds after submission when an open item counts as overdue, if the vendor says."""
        return None

    @property
    def calls_per_poll(self) -> int:
        """HTTP calls one job poll may make (the poll lease covers them)."""
        return 1

    @property
    def poll_rate_per_second(self) -> float | None:
        """Status calls per second the vendor allows (all replicas together), or None."""
        return None

    def rate_counted_per_call(self, operation: str) -> bool:
        """Whether the vendor itself refuses (429) a call of `operation` that comes less
        than its rate's interval after the one before, so that the jitter of arrivals
        costs refusals; otherwise the configured rate is a budget per second."""
        return False

    def next_poll_seconds(self, age_seconds: float, settled_some: bool) -> float:
        """When to poll a job again that this poll left open (`age_seconds` after it was
        submitted; `settled_some`: the poll settled some of its items)."""
        return self.poll_interval_seconds

    @property
    def items_per_claim(self) -> int:
        """Items one dispatch claim takes: `batch_size` for each destination, since every
        submission call goes to one destination and carries up to `batch_size`."""
        return self.batch_size * len(self.destinations)

    @property
    def calls_per_submit(self) -> int:
        """Submission calls one batch may make (the claim's lease covers them): one per
        destination."""
        return len(self.destinations)

    @model_validator(mode="after")
    def _cap_batch_size(self) -> VendorSettings:
        limit = self.hard_batch_limit
        if limit is not None and self.batch_size > limit:
            object.__setattr__(self, "batch_size", limit)
        return self


class VendorsSettings(_Settings):
    """The `vendors:` section: one optional key per vendor of `consumer.vendors.registry`.

    This class declares no vendor itself: `load_settings` validates with a subclass built
    from the registry (`settings_model`), so a vendor added there can be configured without
    editing this module, and a misspelt vendor is still an unknown key.
    """

    def enabled(self) -> dict[str, VendorSettings]:
        """The configured vendors by name, in registry order."""
        sections = ((name, getattr(self, name)) for name in type(self).model_fields)
        return {name: section for name, section in sections if section is not None}


class DeadlineSettings(_Settings):
    """Legal deadlines in days from `requested_at` (GDPR: one month; CCPA: 45 days), and
    the most days `extend` may add to one request in all (GDPR: two further months)."""

    gdpr_days: float = Field(default=30.0, gt=0)
    ccpa_days: float = Field(default=45.0, gt=0)
    other_days: float = Field(default=30.0, gt=0)
    gdpr_extension_days: int = Field(default=60, ge=0)
    ccpa_extension_days: int = Field(default=45, ge=0)
    other_extension_days: int = Field(default=60, ge=0)

    def deadlines(self) -> Deadlines:
        """The day counts as the ledger and the operator commands use them."""
        return Deadlines(**self.model_dump())


class RetentionSettings(_Settings):
    """What the ledger forgets, and when (contract §4 `retention`; README "Data").

    `hash_key` keys the HMAC that replaces minimised identity values: a secret (never in a
    repr or a log line), and the same for the life of the ledger, or `lookup` can no longer
    find minimised requests. Days count from a request's final status.
    """

    hash_key: SecretStr | None = None
    identifiers_after_days: float | None = Field(default=None, ge=0)
    requests_days: float = Field(default=730.0, gt=0)

    @field_validator("hash_key")
    @classmethod
    def _long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        """A short key lets anyone who reads the ledger test guessed addresses against it."""
        if key is not None and len(key.get_secret_value()) < MIN_HASH_KEY_LENGTH:
            raise ValueError(f"must be at least {MIN_HASH_KEY_LENGTH} characters long")
        return key

    @model_validator(mode="after")
    def _key_for_minimisation(self) -> RetentionSettings:
        if self.identifiers_after_days is not None and self.hash_key is None:
            raise ValueError(
                "hash_key is required once identifiers_after_days is set"
                ' (e.g. hash_key: "${ERASURE_HASH_KEY}")'
            )
        return self

    @property
    def hash_key_bytes(self) -> bytes | None:
        return None if self.hash_key is None else self.hash_key.get_secret_value().encode()


class Settings(_Settings):
    kafka: KafkaSettings
    ledger: LedgerSettings
    http: HttpSettings = Field(default_factory=HttpSettings)
    vendors: VendorsSettings = Field(default_factory=VendorsSettings)
    deadlines: DeadlineSettings = Field(default_factory=DeadlineSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)


def load_settings(
    path: Path, environ: Mapping[str, str] | None = None, *, vendor_secrets: bool = True
) -> Settings:
    """Read, expand `${NAME}` references and validate; raise ConfigError on any problem.

    `vendor_secrets=False` is for commands that only use the ledger (status, list, ...): a
    `${NAME}` under `vendors:` that is not set stays as written instead of being an error,
    so an operator needs no vendor credential to run them.
    """
    environment = os.environ if environ is None else environ
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the configuration: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(error)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the configuration must be a YAML mapping")
    expanded = _expand(raw, environment, path, (), vendor_secrets)
    try:
        return settings_model().model_validate(expanded)
    except ValidationError as error:
        raise ConfigError(f"{path}: {format_validation_error(error)}") from None


def settings_model() -> type[Settings]:
    """`Settings` whose `vendors:` section takes every vendor the registry knows now."""
    return _settings_model(vendors_model())


def vendors_model() -> type[VendorsSettings]:
    """The `vendors:` section: one optional key per vendor the registry knows now."""
    known = registry.entries().items()
    return _vendors_model(tuple((name, entry.settings) for name, entry in known))


@cache
def _vendors_model(vendors: tuple[tuple[str, type[VendorSettings]], ...]) -> type[VendorsSettings]:
    sections: dict[str, Any] = {name: (settings | None, None) for name, settings in vendors}
    return create_model("VendorsSettings", __base__=VendorsSettings, **sections)


@cache
def _settings_model(vendors: type[VendorsSettings]) -> type[Settings]:
    return create_model(
        "Settings", __base__=Settings, vendors=(vendors, Field(default_factory=vendors))
    )


def format_validation_error(error: ValidationError) -> str:
    """One line per problem, each naming its key; input values stay out (they may be secrets)."""
    lines = []
    for problem in error.errors(include_input=False, include_url=False):
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = "unknown key" if problem["type"] == "extra_forbidden" else problem["msg"]
        lines.append(f"{key}: {message}")
    return "; ".join(lines)


def _expand(
    node: Any, environ: Mapping[str, str], path: Path, key: tuple[str, ...], vendor_secrets: bool
) -> Any:
    def expand(value: Any, name: str) -> Any:
        return _expand(value, environ, path, (*key, name), vendor_secrets)

    if isinstance(node, dict):
        return {name: expand(value, str(name)) for name, value in node.items()}
    if isinstance(node, list):
        return [expand(value, str(i)) for i, value in enumerate(node)]
    if isinstance(node, str):
        return _ENV_REFERENCE.sub(lambda m: _lookup(m, environ, path, key, vendor_secrets), node)
    return node


def _lookup(
    match: re.Match[str],
    environ: Mapping[str, str],
    path: Path,
    key: tuple[str, ...],
    vendor_secrets: bool,
) -> str:
    name = match.group(1)
    if name not in environ and not vendor_secrets and key[:1] == ("vendors",):
        return match.group(0)
    if name not in environ:
        raise ConfigError(f"{path}: {'.'.join(key)}: environment variable {name} is not set")
    return environ[name]


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or "syntax error"
    if mark is None:
        return str(problem)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def https_unless_loopback(url: str) -> str:
    """A vendor URL, without its trailing slash: https, or plain http to a loopback host
    (a sandbox); anything else raises ValueError (a validation message)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an absolute https:// URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("must use https:// (plain http is allowed only for loopback hosts)")
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
