"""Acoustic Campaign GDPR right-to-erasure adapter (VENDOR-FACTS §4).

Each submission call goes to one database with a header-less UTF-8 CSV of at most
`batch_size` `COLUMN,value` lines, one per item and configured lookup column of the item's
identity type (a dispatch claim brings up to `batch_size` items per database, so a full
batch is one call per database, not one call split across them). A job is polled until
its status call answers 303; the Location it names must be on the configured base URL,
because the bearer token goes with the request. Per-contact results are mapped back to
items by `(column, value)`; once Acoustic has archived them (after 3 days) only a plain
SUCCESS remains, which completes every item with a detail saying so.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import Any, ClassVar
from urllib.parse import quote, urljoin, urlsplit

import requests
from pydantic import Field, SecretStr, field_validator

from consumer.config import VendorSettings
from consumer.ledger.records import DueJob, WorkItem
from consumer.model import Status
from consumer.vendors.base import (
    ItemOutcome,
    PermanentVendorError,
    PollResult,
    RetryableVendorError,
    SubmitResult,
    SubmittedJob,
    VendorAuthError,
    VendorError,
    unexpected,
    unknown_job_status,
)
from consumer.vendors.http import TokenAuth, VendorHttp, token_answer
from consumer.vendors.registry import VendorEntry

CSV_CONTENT_TYPE = "text/csv;charset=UTF-8"
ARCHIVED_DETAIL = "per-contact results unavailable: job archived"
DEFAULT_TOKEN_LIFETIME_SECONDS = 3600.0
_OPEN_STATUSES = {
    "SUBMITTED": Status.SUBMITTED,
    "WAITING": Status.SUBMITTED,
    "IN_PROGRESS": Status.IN_PROGRESS,
    "IN PROGRESS": Status.IN_PROGRESS,
}
_FAILED_STATUSES = frozenset({"FAILED", "ERROR"})
# A 200 with one of these (no Location) means the per-contact response was archived.
_ARCHIVED_STATUSES = frozenset({"SUCCESS", "COMPLETE"})

Line = tuple[str, str]


class AcousticSettings(VendorSettings):
    """`vendors.acoustic`: one job per database, looked up by up to five columns."""

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
    # Submissions and polls each: at most 10 calls at once, Acoustic's limit per organisation.
    max_in_flight: int = Field(default=4, ge=1, le=5)

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

    @property
    def calls_per_submit(self) -> int:
        """A claim's items per database make `batch_size` lines per lookup column of one
        identity type: that many calls to each database at most."""
        columns = Counter(self.lookup_fields.values()).most_common(1)[0][1]
        return len(self.destinations) * columns


class AcousticAdapter:
    """`VendorAdapter` for Acoustic Campaign; one instance per worker loop (not thread-safe)."""

    name = "acoustic"

    def __init__(self, settings: AcousticSettings, http: VendorHttp | None = None) -> None:
        self._settings = settings
        self._base_url = settings.base_url
        self._http = http or VendorHttp(self.name, timeout_seconds=settings.timeout_seconds)
        self._auth = TokenAuth(self._fetch_token)

    def submit(self, items: Sequence[WorkItem]) -> SubmitResult:
        """One call per database and `batch_size` lines. A group that fails does not lose
        the jobs other groups created: its items come back as outcomes (QUEUED to resend,
        FAILED if rejected; an unexpected exception is a retryable failure of its group)."""
        jobs: list[SubmittedJob] = []
        failures: list[tuple[Sequence[WorkItem], VendorError]] = []
        groups, unsendable = self._groups(items)
        calls = [(db, chunk) for db, group in groups.items() for chunk in self._chunks(group)]
        for database, group in calls:
            try:
                jobs.append(self._submit_group(database, group))
            except VendorAuthError:
                if not jobs:
                    raise
                # Every further call would be refused too. Items left unmentioned are
                # released by the dispatcher without spending an attempt.
                break
            except (RetryableVendorError, PermanentVendorError) as error:
                failures.append((group, error))
            except Exception as error:
                failures.append((group, unexpected("acoustic submit", error)))
        if not jobs and len({type(error) for _, error in failures}) == 1:
            # Nothing was accepted and every group failed alike: the batch failed as a whole.
            raise failures[0][1]
        outcomes = (*unsendable, *_failure_outcomes(failures))
        return SubmitResult(jobs=tuple(jobs), outcomes=outcomes)

    def poll(self, job: DueJob) -> PollResult:
        """Ask for the job's status; follow a 303 to its per-contact response ourselves."""
        job_id = quote(job.vendor_job_id, safe="")
        status_url = f"{self._base_url}/rest/gdpr_jobs/{job_id}/status"
        response = self._get(status_url)
        if response.status_code == 404:
            return PollResult(Status.FAILED, detail="job unknown to Acoustic")
        if response.status_code == 303:
            return self._poll_response(job, urljoin(status_url, _location(response)))
        if response.status_code != 200:
            raise PermanentVendorError(f"acoustic poll: unexpected HTTP {response.status_code}")
        return _status_result(job, _status_word(response))

    def check(self) -> None:
        """Fetch a fresh token: proves the URL, the client and the refresh token work."""
        self._auth.invalidate()
        self._auth.token()

    def close(self) -> None:
        self._http.close()

    def _fetch_token(self) -> tuple[str, float]:
        secrets = (
            self._settings.client_secret.get_secret_value(),
            self._settings.refresh_token.get_secret_value(),
        )
        form = {
            "grant_type": "refresh_token",
            "client_id": self._settings.client_id,
            "client_secret": secrets[0],
            "refresh_token": secrets[1],
        }
        url = f"{self._base_url}/oauth/token"
        response = self._http.call("auth", "POST", url, data=form, redact=secrets)
        body = token_answer(response, "acoustic")
        token, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not token:
            raise VendorAuthError("acoustic auth: token response without an access_token")
        if not isinstance(expires_in, int | float) or isinstance(expires_in, bool):
            # RFC 6749 only recommends expires_in; a wrong guess costs one 401 and a refresh.
            expires_in = DEFAULT_TOKEN_LIFETIME_SECONDS
        return token, float(expires_in)

    def _groups(
        self, items: Sequence[WorkItem]
    ) -> tuple[dict[str, list[WorkItem]], list[ItemOutcome]]:
        """Items by database, and outcomes for items that cannot be sent anywhere."""
        groups: dict[str, list[WorkItem]] = {}
        unsendable: list[ItemOutcome] = []
        for item in items:
            if not (item.destination and item.destination.isdigit()):
                unsendable.append(_failed(item, "no valid Acoustic database id for this item"))
            elif not self._lines(item):
                detail = f"no Acoustic lookup field for identity type {item.identity_type!r}"
                unsendable.append(_failed(item, detail))
            else:
                groups.setdefault(item.destination, []).append(item)
        return groups, unsendable

    def _chunks(self, group: Sequence[WorkItem]) -> list[list[WorkItem]]:
        """A database's items cut into calls of at most `batch_size` distinct lines (an item
        never split: its lines go in one call)."""
        chunks: list[list[WorkItem]] = [[]]
        lines: set[Line] = set()
        for item in group:
            new = set(self._lines(item)) - lines
            if chunks[-1] and len(lines) + len(new) > self._settings.batch_size:
                chunks.append([])
                lines = set()
                new = set(self._lines(item))
            chunks[-1].append(item)
            lines |= new
        return chunks

    def _lines(self, item: WorkItem) -> list[Line]:
        """The `(column, value)` lines that identify this item in a database."""
        return [
            (column, item.identity_value)
            for column, identity_type in self._settings.lookup_fields.items()
            if identity_type == item.identity_type
        ]

    def _submit_group(self, database: str, group: Sequence[WorkItem]) -> SubmittedJob:
        lines = list(dict.fromkeys(line for item in group for line in self._lines(item)))
        response = self._http.call(
            "submit",
            "POST",
            f"{self._base_url}/rest/databases/{database}/gdpr_erasure",
            auth=self._auth,
            data=erasure_csv(lines),
            headers={"Content-Type": CSV_CONTENT_TYPE},
            redact=[value for _, value in lines],
        )
        if response.status_code not in (200, 201, 202):
            raise PermanentVendorError(f"acoustic submit: unexpected HTTP {response.status_code}")
        job_id = _job_id(response)
        if job_id is None:
            # The job may exist, but we cannot follow it: sending again is the only way on.
            raise RetryableVendorError("acoustic submit: accepted without a job id")
        return SubmittedJob(job_id, database, tuple(item.item_id for item in group))

    def _poll_response(self, job: DueJob, location: str) -> PollResult:
        if _origin(location) != _origin(self._base_url):
            raise PermanentVendorError("acoustic poll: job response Location is on another host")
        response = self._get(location)
        if response.status_code == 404:
            # Status said "done" but the response is gone: archived in between.
            return _archived(job)
        if response.status_code != 200:
            raise PermanentVendorError(f"acoustic poll: unexpected HTTP {response.status_code}")
        contacts = _json_object(response, "poll").get("contacts")
        if not isinstance(contacts, list):
            raise PermanentVendorError("acoustic poll: job response without a contacts list")
        index = _index_contacts(contacts)
        outcomes = tuple(_item_outcome(item, self._lines(item), index) for item in job.items)
        return PollResult(Status.COMPLETED, outcomes)

    def _get(self, url: str) -> requests.Response:
        return self._http.call("poll", "GET", url, auth=self._auth, handled_statuses=(303, 404))


def erasure_csv(lines: Iterable[Line]) -> bytes:
    """Header-less RFC 4180 CSV (CRLF, minimal quoting) in UTF-8, as Acoustic expects."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerows(lines)
    return buffer.getvalue().encode("utf-8")


def _failure_outcomes(
    failures: Iterable[tuple[Sequence[WorkItem], VendorError]],
) -> list[ItemOutcome]:
    """Rejected groups fail; groups that may succeed later are sent again."""
    return [
        ItemOutcome(
            item.item_id,
            Status.FAILED if isinstance(error, PermanentVendorError) else Status.QUEUED,
            str(error),
        )
        for group, error in failures
        for item in group
    ]


def _failed(item: WorkItem, detail: str) -> ItemOutcome:
    return ItemOutcome(item.item_id, Status.FAILED, detail)


def _job_id(response: requests.Response) -> str | None:
    """The job id from the body's `id`, else from the `.../gdpr_jobs/{id}/status` Location."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        job_id = body.get("id")
        if isinstance(job_id, int | str) and not isinstance(job_id, bool) and str(job_id):
            return str(job_id)
    parts = urlsplit(response.headers.get("Location", "")).path.rstrip("/").split("/")
    if len(parts) >= 3 and parts[-3] == "gdpr_jobs" and parts[-1] == "status" and parts[-2]:
        return parts[-2]
    return None


def _location(response: requests.Response) -> str:
    location = response.headers.get("Location")
    if not location:
        raise PermanentVendorError("acoustic poll: 303 without a Location")
    return location


def _origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and effective port: what must match before a token is sent to a URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        return ("", "", None)
    return scheme, (parts.hostname or "").lower(), port


def _json_object(response: requests.Response, operation: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise PermanentVendorError(f"acoustic {operation}: answer is not a JSON object")
    return body


def _status_word(response: requests.Response) -> str:
    data = _json_object(response, "poll").get("data")
    status = data.get("status") if isinstance(data, dict) else None
    if not isinstance(status, str):
        raise PermanentVendorError("acoustic poll: status answer without data.status")
    return status.strip().upper()


def _status_result(job: DueJob, word: str) -> PollResult:
    if word in _OPEN_STATUSES:
        return PollResult(_OPEN_STATUSES[word])
    if word in _FAILED_STATUSES:
        return PollResult(Status.FAILED, detail=f"Acoustic reported the job {word}")
    if word in _ARCHIVED_STATUSES:
        return _archived(job)
    return unknown_job_status("acoustic", word)


def _archived(job: DueJob) -> PollResult:
    outcomes = tuple(
        ItemOutcome(item.item_id, Status.COMPLETED, ARCHIVED_DETAIL) for item in job.items
    )
    return PollResult(Status.COMPLETED, outcomes)


def _index_contacts(contacts: Sequence[object]) -> dict[Line, list[tuple[bool, bool]]]:
    """`(column, value)` -> every `(found, deleted)` Acoustic reported for it."""
    index: dict[Line, list[tuple[bool, bool]]] = {}
    for contact in contacts:
        if not isinstance(contact, Mapping):
            continue
        verdict = (contact.get("contactFound") is True, contact.get("contactDeleted") is True)
        identifiers = contact.get("gdprIdentifiers")
        for identifier in identifiers if isinstance(identifiers, list) else ():
            if isinstance(identifier, Mapping):
                name, value = identifier.get("name"), identifier.get("value")
                if isinstance(name, str) and isinstance(value, str):
                    index.setdefault((name, value), []).append(verdict)
    return index


def _item_outcome(
    item: WorkItem, lines: Sequence[Line], index: Mapping[Line, list[tuple[bool, bool]]]
) -> ItemOutcome:
    """Combine the item's lines (contract §3): anything found but kept fails the item, since
    Acoustic still holds data; otherwise one deletion completes it; else nothing was held."""
    verdicts = [verdict for line in lines for verdict in index.get(line, ())]
    if not verdicts:
        detail = "identifier missing from Acoustic's job response; sending again"
        return ItemOutcome(item.item_id, Status.QUEUED, detail)
    if any(found and not deleted for found, deleted in verdicts):
        return ItemOutcome(item.item_id, Status.FAILED, "contact found but not deleted")
    if any(deleted for _, deleted in verdicts):
        return ItemOutcome(item.item_id, Status.COMPLETED)
    return ItemOutcome(item.item_id, Status.NOT_FOUND)


VENDOR = VendorEntry(
    "acoustic",
    AcousticSettings,
    adapter=lambda settings, http, _sleep: AcousticAdapter(settings, http),
)
