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
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from consumer.model import Regulation
from consumer.redaction import redact_properties, redact_url

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


class ConfigError(Exception):
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

    @field_validator("base_url")
    @classmethod
    def _https_unless_loopback(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an absolute https:// URL")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ValueError("must use https:// (plain http is allowed only for loopback hosts)")
        return url.rstrip("/")

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


class VoyadoSettings(VendorSettings):
    vendor: ClassVar[str] = "voyado"
    hard_batch_limit: ClassVar[int | None] = 1

    api_key: SecretStr
    api_version: Literal["v2", "v3", "v4"] = "v4"
    identity_type: str = "customer_key"
    batch_size: int = Field(default=1, ge=1)
    flush_interval_seconds: float = Field(default=1.0, gt=0)
    first_poll_after_seconds: float = Field(default=86400.0, ge=0)
    poll_interval_seconds: float = Field(default=21600.0, gt=0)
    rate_per_second: float = Field(default=5.0, gt=0)


MONETATE_STATUS_CHECKS_PER_POLL = 20


class MonetateSettings(VendorSettings):
    vendor: ClassVar[str] = "monetate"

    shortname: str = Field(min_length=1)
    dataset: str = Field(min_length=1)
    api_username: str = Field(min_length=1)
    private_key: SecretStr
    status_path: str = "/api/data/v1/{shortname}/production/customer_data_privacy/status/"
    status_rate_per_second: float = Field(default=1.0, gt=0)
    overdue_after_seconds: float = Field(default=172800.0, gt=0)
    first_poll_after_seconds: float = Field(default=86400.0, ge=0)
    # Each poll checks a slice of a job's ids at status_rate_per_second; hourly polls get
    # through a full 500-id upload within a day of the first check.
    poll_interval_seconds: float = Field(default=3600.0, gt=0)

    @field_validator("status_path")
    @classmethod
    def _absolute_path(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError("must be a path starting with /")
        return path

    @property
    def overdue_after(self) -> float | None:
        return self.overdue_after_seconds

    @property
    def calls_per_poll(self) -> int:
        """Monetate answers per customer id: a poll checks a slice of its upload's ids."""
        return MONETATE_STATUS_CHECKS_PER_POLL


ACQUIA_MAX_CALLS_PER_SUBMIT = 32
"""Calls one Acquia CDP batch may make while it bisects a rejected (400) batch."""


class AcquiaCdpSettings(VendorSettings):
    vendor: ClassVar[str] = "acquia_cdp"
    hard_batch_limit: ClassVar[int | None] = 200

    auth_url: str
    tenant_id: int = Field(ge=1)
    username: str = Field(min_length=1)
    password: SecretStr
    token_field: str = "access_token"  # noqa: S105 (a field name, not a secret)
    weekly_quota: int = Field(default=9990, ge=1)
    batch_size: int = Field(default=200, ge=1)

    @field_validator("auth_url")
    @classmethod
    def _auth_url_https(cls, url: str) -> str:
        return VendorSettings._https_unless_loopback(url)

    @property
    def rolling_quota(self) -> tuple[int, float] | None:
        return self.weekly_quota, 7 * 86400.0

    @property
    def calls_per_submit(self) -> int:
        return ACQUIA_MAX_CALLS_PER_SUBMIT


class AcousticSettings(VendorSettings):
    vendor: ClassVar[str] = "acoustic"

    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    refresh_token: SecretStr
    database_ids: tuple[int, ...] = Field(min_length=1)
    lookup_fields: dict[str, str] = Field(default_factory=lambda: {"EMAIL": "email"})
    identity_type: str = "email"
    batch_size: int = Field(default=5000, ge=1)
    first_poll_after_seconds: float = Field(default=60.0, ge=0)
    poll_interval_seconds: float = Field(default=60.0, gt=0)
    max_job_age_seconds: float = Field(default=7 * 86400.0, gt=0)  # jobs take minutes

    @field_validator("lookup_fields")
    @classmethod
    def _one_to_five_fields(cls, fields: dict[str, str]) -> dict[str, str]:
        if not 1 <= len(fields) <= 5:
            raise ValueError("Acoustic allows 1 to 5 GDPR lookup fields")
        for column, identity_type in fields.items():
            if not column or not identity_type:
                raise ValueError("lookup field names and identity types must be non-empty")
        return fields

    @cached_property
    def identity_types(self) -> frozenset[str]:
        return frozenset(self.lookup_fields.values())

    @cached_property
    def destinations(self) -> tuple[str | None, ...]:
        return tuple(str(database_id) for database_id in self.database_ids)


class VendorsSettings(_Settings):
    voyado: VoyadoSettings | None = None
    monetate: MonetateSettings | None = None
    acquia_cdp: AcquiaCdpSettings | None = None
    acoustic: AcousticSettings | None = None

    def enabled(self) -> dict[str, VendorSettings]:
        sections: dict[str, VendorSettings | None] = {
            "voyado": self.voyado,
            "monetate": self.monetate,
            "acquia_cdp": self.acquia_cdp,
            "acoustic": self.acoustic,
        }
        return {name: section for name, section in sections.items() if section is not None}


class DeadlineSettings(_Settings):
    """Legal deadlines in days from `requested_at` (GDPR: one month; CCPA: 45 days)."""

    gdpr_days: float = Field(default=30.0, gt=0)
    ccpa_days: float = Field(default=45.0, gt=0)
    other_days: float = Field(default=30.0, gt=0)

    def days(self) -> dict[Regulation, float]:
        return {
            Regulation.GDPR: self.gdpr_days,
            Regulation.CCPA: self.ccpa_days,
            Regulation.OTHER: self.other_days,
        }


class Settings(_Settings):
    kafka: KafkaSettings
    ledger: LedgerSettings
    http: HttpSettings = Field(default_factory=HttpSettings)
    vendors: VendorsSettings = Field(default_factory=VendorsSettings)
    deadlines: DeadlineSettings = Field(default_factory=DeadlineSettings)


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, expand `${NAME}` references and validate; raise ConfigError on any problem."""
    environment = os.environ if environ is None else environ
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the configuration: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(error)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the configuration must be a YAML mapping")
    expanded = _expand(raw, environment, path, ())
    try:
        return Settings.model_validate(expanded)
    except ValidationError as error:
        raise ConfigError(f"{path}: {format_validation_error(error)}") from None


def format_validation_error(error: ValidationError) -> str:
    """One line per problem, each naming its key; input values stay out (they may be secrets)."""
    lines = []
    for problem in error.errors(include_input=False, include_url=False):
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = "unknown key" if problem["type"] == "extra_forbidden" else problem["msg"]
        lines.append(f"{key}: {message}")
    return "; ".join(lines)


def _expand(node: Any, environ: Mapping[str, str], path: Path, key: tuple[str, ...]) -> Any:
    if isinstance(node, dict):
        return {
            name: _expand(value, environ, path, (*key, str(name))) for name, value in node.items()
        }
    if isinstance(node, list):
        return [_expand(value, environ, path, (*key, str(i))) for i, value in enumerate(node)]
    if isinstance(node, str):
        return _ENV_REFERENCE.sub(lambda match: _lookup(match, environ, path, key), node)
    return node


def _lookup(
    match: re.Match[str], environ: Mapping[str, str], path: Path, key: tuple[str, ...]
) -> str:
    name = match.group(1)
    if name not in environ:
        raise ConfigError(f"{path}: {'.'.join(key)}: environment variable {name} is not set")
    return environ[name]


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or "syntax error"
    if mark is None:
        return str(problem)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
