"""Strict sandbox of the Acoustic Campaign GDPR right-to-erasure API.

It follows the vendor page (shared/vendor-docs/acoustic-campaign-gdpr-erasure.txt)
and VENDOR-FACTS section 4, and is deliberately stricter wherever the docs
leave room, so that a client that passes here is correct against the vendor:

* OAuth refresh-token grant at ``POST /oauth/token`` (form-encoded only).
* ``POST /rest/databases/{id}/gdpr_erasure`` requires ``text/csv`` (else 415)
  with ``charset=UTF-8`` always (else 400), a non-empty UTF-8 CSV body of
  exactly two fields per record, no header, every column one of the database's
  lookup fields (exact, case-sensitive), no empty values.
* ``GET /rest/gdpr_jobs/{id}/status``: the first read of a pending job says
  ``SUBMITTED`` and later reads before it starts say ``WAITING`` (the docs name
  both), then ``IN_PROGRESS``, then ``303`` to ``/response``; ``FAILED`` for a
  failed job; a plain ``SUCCESS`` once the response is archived.
* ``GET /rest/gdpr_jobs/{id}/response`` answers 404 whenever there is no
  result to fetch: job unknown, not finished, failed, or archived.

Jobs advance lazily from the clock (no background thread): whenever the
sandbox is asked anything, every job whose completion time has passed is
executed, in submission order, before answering. Error messages never echo
identifiers, column names or tokens, since clients tend to log them.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from devtools.sandbox.acoustic_wire import (
    ErasureCsvError,
    csv_content_type_problem,
    json_seconds,
    oauth_error,
    parse_erasure_csv,
    parse_token_form,
    rest_error,
    same_secret,
    status_body,
    unauthorized,
)
from devtools.sandbox.server import JsonValue, Request, Response, Router, Sandbox, json_response

MAX_LOOKUP_FIELDS = 5
"""Acoustic lets a database configure at most five GDPR lookup fields."""

Phase = Literal["SUBMITTED", "WAITING", "IN_PROGRESS", "FAILED", "COMPLETE", "ARCHIVED"]


@dataclass
class _Database:
    """A marketing database: its lookup fields, contacts and what was posted to it."""

    lookup_fields: tuple[str, ...]
    contacts: list[dict[str, str]] = field(default_factory=list)
    undeletable: set[tuple[str, str]] = field(default_factory=set)
    received_bodies: list[str] = field(default_factory=list)
    submitted_bodies: list[str] = field(default_factory=list)

    def is_undeletable(self, contact: Mapping[str, str]) -> bool:
        """A contact is protected if any of its field values was marked undeletable."""
        return any(item in self.undeletable for item in contact.items())


@dataclass
class _Job:
    """An erasure job; ``result`` is filled when its completion time passes."""

    job_id: int
    database_id: int
    identifiers: tuple[tuple[str, str], ...]
    starts_at: float
    done_at: float
    fails: bool
    status_reads: int = 0
    result: dict[str, JsonValue] | None = None


class AcousticSandbox(Sandbox):
    """In-process Acoustic Campaign GDPR erasure API with a fast, configurable clock.

    All durations are real seconds. ``job_start_after_seconds`` is how long a
    job stays pending, ``job_duration_seconds`` how long it then runs, and
    ``archive_after_seconds`` how long after completion its response is kept
    (3 days at the vendor).
    """

    def __init__(
        self,
        *,
        client_id: str = "sandbox-client",
        client_secret: str = "sandbox-secret",
        refresh_token: str = "sandbox-refresh",
        token_ttl_seconds: float = 14400.0,
        job_start_after_seconds: float = 0.05,
        job_duration_seconds: float = 0.1,
        archive_after_seconds: float = 259200.0,
    ) -> None:
        if token_ttl_seconds <= 0:
            raise ValueError("token_ttl_seconds must be positive")
        if min(job_start_after_seconds, job_duration_seconds, archive_after_seconds) < 0:
            raise ValueError("job and archive durations must not be negative")
        super().__init__(self._routes())
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._token_ttl = token_ttl_seconds
        self._start_after = job_start_after_seconds
        self._duration = job_duration_seconds
        self._archive_after = archive_after_seconds
        self._lock = threading.RLock()
        self._tokens: dict[str, float] = {}
        self._databases: dict[int, _Database] = {}
        self._jobs: dict[int, _Job] = {}
        self._job_ids = itertools.count(1)
        self._jobs_to_fail = 0

    def _routes(self) -> Router:
        router = Router()
        router.add("POST", "/oauth/token", self._handle_token)
        router.add("POST", "/rest/databases/{database_id:int}/gdpr_erasure", self._handle_submit)
        router.add("GET", "/rest/gdpr_jobs/{job_id:int}/status", self._handle_status)
        router.add("GET", "/rest/gdpr_jobs/{job_id:int}/response", self._handle_response)
        return router

    # ----------------------------------------------------------------- test setup

    def add_database(self, database_id: int, lookup_fields: Sequence[str] = ("EMAIL",)) -> None:
        """Create a database with 1 to 5 distinct GDPR lookup fields."""
        fields = tuple(lookup_fields)
        if isinstance(lookup_fields, str) or not 1 <= len(fields) <= MAX_LOOKUP_FIELDS:
            raise ValueError(f"a database needs 1 to {MAX_LOOKUP_FIELDS} GDPR lookup fields")
        if len(set(fields)) != len(fields) or not all(fields):
            raise ValueError("lookup fields must be distinct, non-empty names")
        with self._lock:
            if database_id in self._databases:
                raise ValueError(f"database {database_id} already exists")
            self._databases[database_id] = _Database(fields)

    def add_contact(self, database_id: int, fields: Mapping[str, str]) -> None:
        """Add a contact, e.g. ``{"EMAIL": "a@x.com", "CUSTOMER_ID": "42"}``."""
        if not fields:
            raise ValueError("a contact needs at least one field")
        with self._lock:
            self._database(database_id).contacts.append(dict(fields))

    def contact_exists(self, database_id: int, field: str, value: str) -> bool:
        """Whether a contact with ``field == value`` is still there, after running due jobs."""
        with self._lock:
            self._advance(self.clock.now())
            return any(
                contact.get(field) == value for contact in self._database(database_id).contacts
            )

    def set_undeletable(self, database_id: int, field: str, value: str) -> None:
        """Contacts with ``field == value`` are found by erasure but not deleted."""
        with self._lock:
            self._database(database_id).undeletable.add((field, value))

    def fail_next_jobs(self, n: int = 1) -> None:
        """The next ``n`` accepted jobs end FAILED and delete nothing."""
        if n < 0:
            raise ValueError("n must not be negative")
        with self._lock:
            self._jobs_to_fail += n

    def expire_tokens(self) -> None:
        """Invalidate every access token issued so far (the refresh token stays valid)."""
        with self._lock:
            self._tokens.clear()

    def rotate_client_secret(self, client_secret: str) -> None:
        """The account's client secret changes (an admin rotated it): issued tokens die and
        the old secret gets `invalid_client` from now on."""
        with self._lock:
            self._client_secret = client_secret
            self._tokens.clear()

    def submitted_bodies(self, database_id: int) -> list[str]:
        """CSV bodies that were accepted as jobs (202) for this database, in order."""
        with self._lock:
            return list(self._database(database_id).submitted_bodies)

    def received_bodies(self, database_id: int) -> list[str]:
        """Every body posted with a valid token to this database's endpoint, whatever the outcome.

        Invalid UTF-8 is shown with replacement characters.
        """
        with self._lock:
            return list(self._database(database_id).received_bodies)

    def _database(self, database_id: int) -> _Database:
        database = self._databases.get(database_id)
        if database is None:
            raise ValueError(f"unknown database {database_id}")
        return database

    # ----------------------------------------------------------------- OAuth

    def _handle_token(self, request: Request) -> Response:
        form = parse_token_form(request)
        if isinstance(form, Response):
            return form
        if form["grant_type"] != "refresh_token":
            return oauth_error(400, "unsupported_grant_type", "only refresh_token is supported")
        if not (
            same_secret(form["client_id"], self._client_id)
            and same_secret(form["client_secret"], self._client_secret)
        ):
            return oauth_error(401, "invalid_client", "client authentication failed")
        if not same_secret(form["refresh_token"], self._refresh_token):
            return oauth_error(400, "invalid_grant", "the refresh token is invalid")
        return self._issue_token()

    def _issue_token(self) -> Response:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = self.clock.now() + self._token_ttl
        payload: dict[str, JsonValue] = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": json_seconds(self._token_ttl),
        }
        return json_response(
            200, payload, headers=[("Cache-Control", "no-store"), ("Pragma", "no-cache")]
        )

    def _authorized(self, request: Request) -> bool:
        """True for ``Authorization: Bearer <token>`` with a known, unexpired token."""
        scheme, _, token = (request.header("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        with self._lock:
            expires_at = self._tokens.get(token)
            return expires_at is not None and self.clock.now() < expires_at

    # ----------------------------------------------------------------- erasure

    def _handle_submit(self, request: Request) -> Response:
        if not self._authorized(request):
            return unauthorized()
        database_id = int(request.params["database_id"])
        with self._lock:
            database = self._databases.get(database_id)
            if database is None:
                return rest_error(404, "database not found")
            database.received_bodies.append(request.body.decode("utf-8", "replace"))
        problem = csv_content_type_problem(request.header("content-type"))
        if problem is not None:
            return problem
        try:
            pairs = parse_erasure_csv(request.body, database.lookup_fields)
        except ErasureCsvError as error:
            return rest_error(400, str(error))
        job_id = self._create_job(database_id, database, pairs, request.body.decode("utf-8"))
        location = f"{request.base_url}/rest/gdpr_jobs/{job_id}/status"
        return json_response(
            202, {"location": location, "id": job_id}, headers=[("Location", location)]
        )

    def _create_job(
        self, database_id: int, database: _Database, pairs: list[tuple[str, str]], body: str
    ) -> int:
        with self._lock:
            job_id = next(self._job_ids)
            starts_at = self.clock.now() + self._start_after
            fails = self._jobs_to_fail > 0
            self._jobs_to_fail -= int(fails)
            self._jobs[job_id] = _Job(
                job_id, database_id, tuple(pairs), starts_at, starts_at + self._duration, fails
            )
            database.submitted_bodies.append(body)
        return job_id

    def _advance(self, now: float) -> None:
        """Run, in submission order, every job whose completion time has passed."""
        with self._lock:
            for job in self._jobs.values():
                if job.result is None and now >= job.done_at:
                    job.result = self._execute(job)

    def _execute(self, job: _Job) -> dict[str, JsonValue]:
        """Erase the job's identifiers and build the vendor's response document."""
        contacts: list[JsonValue] = []
        if not job.fails:
            database = self._databases[job.database_id]
            contacts = [_erase(database, name, value) for name, value in job.identifiers]
        timestamp = self.clock.utc_now().isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {"databaseId": job.database_id, "timestamp": timestamp, "contacts": contacts}

    def _phase(self, job: _Job, now: float) -> Phase:
        if now < job.starts_at:
            return "SUBMITTED" if job.status_reads <= 1 else "WAITING"
        if job.result is None:
            return "IN_PROGRESS"
        if job.fails:
            return "FAILED"
        return "ARCHIVED" if now >= job.done_at + self._archive_after else "COMPLETE"

    def _job_phase(self, request: Request, *, count_read: bool) -> Phase | None:
        """Advance the clock, then the phase of the job in the path (None if unknown)."""
        now = self.clock.now()
        with self._lock:
            self._advance(now)
            job = self._jobs.get(int(request.params["job_id"]))
            if job is None:
                return None
            job.status_reads += int(count_read)
            return self._phase(job, now)

    def _handle_status(self, request: Request) -> Response:
        if not self._authorized(request):
            return unauthorized()
        phase = self._job_phase(request, count_read=True)
        if phase is None:
            return rest_error(404, "job not found")
        if phase == "COMPLETE":
            location = f"{request.base_url}/rest/gdpr_jobs/{request.params['job_id']}/response"
            return json_response(303, status_body("SUCCESS"), headers=[("Location", location)])
        return json_response(200, status_body("SUCCESS" if phase == "ARCHIVED" else phase))

    def _handle_response(self, request: Request) -> Response:
        if not self._authorized(request):
            return unauthorized()
        phase = self._job_phase(request, count_read=False)
        if phase is None:
            return rest_error(404, "job not found")
        if phase != "COMPLETE":
            return rest_error(404, "no job response available (pending, failed or archived)")
        with self._lock:
            result = self._jobs[int(request.params["job_id"])].result
        return json_response(200, result)


def _erase(database: _Database, name: str, value: str) -> JsonValue:
    """Delete the contacts matching ``name == value`` unless protected; report like the vendor."""
    matches = [contact for contact in database.contacts if contact.get(name) == value]
    deletable = [contact for contact in matches if not database.is_undeletable(contact)]
    database.contacts = [
        contact for contact in database.contacts if not any(contact is d for d in deletable)
    ]
    return {
        "contactFound": bool(matches),
        "contactDeleted": bool(matches) and len(deletable) == len(matches),
        "gdprIdentifiers": [{"name": name, "value": value}],
    }
