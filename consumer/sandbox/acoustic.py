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

import csv
import hmac
import io
import itertools
import secrets
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs

from consumer.sandbox.server import (
    JsonValue,
    Request,
    Response,
    Router,
    Sandbox,
    json_response,
    parse_media_type,
)

MAX_LOOKUP_FIELDS = 5
"""Acoustic lets a database configure at most five GDPR lookup fields."""

Phase = Literal["SUBMITTED", "WAITING", "IN_PROGRESS", "FAILED", "COMPLETE", "ARCHIVED"]


class ErasureCsvError(ValueError):
    """The erasure body is not acceptable; the message is safe to show (no values)."""


def parse_erasure_csv(body: bytes, lookup_fields: Collection[str]) -> list[tuple[str, str]]:
    """Parse an erasure body into ``(column, value)`` pairs, exactly as the sandbox does.

    Public so tests can check the parser on its own as well as over HTTP.
    Quoted values may hold commas, quotes and line breaks (RFC 4180 as written
    by Python's csv module); anything else that is not one ``COLUMN,value``
    record raises ``ErasureCsvError``.
    """
    if not body:
        raise ErasureCsvError("the request body is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ErasureCsvError("the request body is not valid UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    pairs: list[tuple[str, str]] = []
    try:
        for row in reader:
            pairs.append(_check_record(row, reader.line_num, lookup_fields))
    except csv.Error:
        raise ErasureCsvError(f"malformed CSV near line {reader.line_num}") from None
    if not pairs:
        raise ErasureCsvError("the request body holds no identifiers")
    return pairs


def _check_record(row: Sequence[str], line: int, lookup_fields: Collection[str]) -> tuple[str, str]:
    """Validate one CSV record; messages cite the line only, never its content."""
    if len(row) != 2:
        raise ErasureCsvError(
            f"line {line}: expected exactly 2 fields (column,value), got {len(row)}"
        )
    column, value = row
    if column not in lookup_fields:
        raise ErasureCsvError(f"line {line}: column is not a GDPR lookup field of this database")
    if not value:
        raise ErasureCsvError(f"line {line}: empty identifier value")
    return column, value


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


def _envelope(status: str) -> dict[str, JsonValue]:
    """The status body of the doc's "Sample response 2"."""
    return {"meta": _meta(), "data": {"status": status}}


def _meta(errors: Sequence[str] = ()) -> dict[str, JsonValue]:
    return {
        "attributes": {},
        "generalErrors": list(errors),
        "fieldErrors": {},
        "links": [],
        "nextPageUrl": None,
    }


def _rest_error(status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> Response:
    """A /rest error in the same envelope as status bodies, with a value-free message."""
    return json_response(status, {"meta": _meta([message]), "data": None}, headers=headers)


def _oauth_error(status: int, error: str, description: str) -> Response:
    """An RFC 6749 section 5.2 error; ``no-store`` as the RFC requires for token responses."""
    headers = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]
    return json_response(
        status, {"error": error, "error_description": description}, headers=headers
    )


def _unauthorized() -> Response:
    challenge = [("WWW-Authenticate", 'Bearer error="invalid_token"')]
    return _rest_error(401, "missing, invalid or expired access token", challenge)


def _check_csv_content_type(value: str | None) -> Response | None:
    """415 unless text/csv; 400 unless charset=UTF-8 (required always, stricter than the docs)."""
    if value is None:
        return _rest_error(415, "Content-Type must be text/csv;charset=UTF-8")
    media_type, params = parse_media_type(value)
    if media_type != "text/csv":
        return _rest_error(415, "Content-Type must be text/csv;charset=UTF-8")
    if params.get("charset", "").lower() != "utf-8":
        return _rest_error(400, "Content-Type must declare charset=UTF-8")
    return None


def _number(seconds: float) -> int | float:
    """Seconds as JSON: an integer when whole (as the vendor sends), else the exact float."""
    return int(seconds) if float(seconds).is_integer() else seconds


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
        client_secret: str = "sandbox-secret",  # noqa: S107 - fake sandbox credential
        refresh_token: str = "sandbox-refresh",  # noqa: S107 - fake sandbox credential
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
        form = _parse_token_form(request)
        if isinstance(form, Response):
            return form
        if form["grant_type"] != "refresh_token":
            return _oauth_error(400, "unsupported_grant_type", "only refresh_token is supported")
        if not (
            _same(form["client_id"], self._client_id)
            and _same(form["client_secret"], self._client_secret)
        ):
            return _oauth_error(401, "invalid_client", "client authentication failed")
        if not _same(form["refresh_token"], self._refresh_token):
            return _oauth_error(400, "invalid_grant", "the refresh token is invalid")
        return self._issue_token()

    def _issue_token(self) -> Response:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = self.clock.now() + self._token_ttl
        payload: dict[str, JsonValue] = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": _number(self._token_ttl),
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
            return _unauthorized()
        database_id = int(request.params["database_id"])
        with self._lock:
            database = self._databases.get(database_id)
            if database is None:
                return _rest_error(404, "database not found")
            database.received_bodies.append(request.body.decode("utf-8", "replace"))
        problem = _check_csv_content_type(request.header("content-type"))
        if problem is not None:
            return problem
        try:
            pairs = parse_erasure_csv(request.body, database.lookup_fields)
        except ErasureCsvError as error:
            return _rest_error(400, str(error))
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
            return _unauthorized()
        phase = self._job_phase(request, count_read=True)
        if phase is None:
            return _rest_error(404, "job not found")
        if phase == "COMPLETE":
            location = f"{request.base_url}/rest/gdpr_jobs/{request.params['job_id']}/response"
            return json_response(303, _envelope("SUCCESS"), headers=[("Location", location)])
        return json_response(200, _envelope("SUCCESS" if phase == "ARCHIVED" else phase))

    def _handle_response(self, request: Request) -> Response:
        if not self._authorized(request):
            return _unauthorized()
        phase = self._job_phase(request, count_read=False)
        if phase is None:
            return _rest_error(404, "job not found")
        if phase != "COMPLETE":
            return _rest_error(404, "no job response available (pending, failed or archived)")
        with self._lock:
            result = self._jobs[int(request.params["job_id"])].result
        return json_response(200, result)


_TOKEN_FORM_FIELDS = ("grant_type", "client_id", "client_secret", "refresh_token")


def _parse_token_form(request: Request) -> dict[str, str] | Response:
    """The four token parameters from a form body, or the OAuth error to answer with.

    RFC 6749 requires form encoding and forbids repeating a parameter.
    """
    media_type, _ = parse_media_type(request.header("content-type") or "")
    if media_type != "application/x-www-form-urlencoded":
        return _oauth_error(
            400, "invalid_request", "the body must be application/x-www-form-urlencoded"
        )
    try:
        parsed = parse_qs(
            request.body.decode("ascii"), keep_blank_values=True, strict_parsing=bool(request.body)
        )
    except (UnicodeDecodeError, ValueError):
        return _oauth_error(400, "invalid_request", "the form body is malformed")
    if any(len(values) > 1 for values in parsed.values()):
        return _oauth_error(400, "invalid_request", "a parameter is repeated")
    form = {name: values[0] for name, values in parsed.items()}
    if any(not form.get(name) for name in _TOKEN_FORM_FIELDS):
        return _oauth_error(
            400,
            "invalid_request",
            "grant_type, client_id, client_secret and refresh_token are required",
        )
    return form


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison, as a real token endpoint would do."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


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
