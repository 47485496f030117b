"""A strict little sandbox of the "fifth" vendor's API (see `fifth_vendor.py`), built on
`devtools.sandbox.server` like every vendor sandbox: bearer tokens from client
credentials, at most 100 emails a call, jobs that finish after `job_seconds`."""

from __future__ import annotations

import hmac
import itertools
import secrets
import threading
from dataclasses import dataclass

from devtools.sandbox.server import (
    Request,
    Response,
    Router,
    Sandbox,
    json_response,
    parse_json_body,
)

CLIENT_ID = "fifth-client"
CLIENT_SECRET = "fifth-secret"
MAX_IDS_PER_CALL = 100


@dataclass(frozen=True)
class _Job:
    done_at: float
    results: dict[str, str]


class FifthSandbox(Sandbox):
    def __init__(self, *, job_seconds: float = 0.02) -> None:
        router = Router()
        router.add("POST", "/v1/token", self._token)
        router.add("PUT", "/v1/erasure-api", self._enable)
        router.add("POST", "/v1/erasures", self._submit)
        router.add("GET", "/v1/erasures/{job_id}", self._status)
        super().__init__(router)
        self._job_seconds = job_seconds
        self._lock = threading.Lock()
        self._secret = CLIENT_SECRET
        self._tokens: set[str] = set()
        self._enabled = False
        self._held: set[str] = set()
        self._jobs: dict[str, _Job] = {}
        self._job_ids = itertools.count(1)

    def add_contact(self, email: str) -> None:
        with self._lock:
            self._held.add(email)

    def enable_erasure(self) -> None:
        with self._lock:
            self._enabled = True

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def rotate_secret(self, secret: str) -> None:
        """Our client secret stops working: token requests get 401, issued tokens too."""
        with self._lock:
            self._secret = secret
            self._tokens.clear()

    def _token(self, request: Request) -> Response:
        body = _json(request)
        given = body.get("client_secret") if isinstance(body, dict) else None
        with self._lock:
            if not (
                isinstance(body, dict)
                and body.get("client_id") == CLIENT_ID
                and isinstance(given, str)
                and hmac.compare_digest(given, self._secret)
            ):
                return json_response(401, {"error": "invalid_client"})
            token = secrets.token_urlsafe(16)
            self._tokens.add(token)
        return json_response(200, {"access_token": token, "expires_in": 3600})

    def _refused(self, request: Request) -> Response | None:
        scheme, _, token = (request.header("authorization") or "").partition(" ")
        with self._lock:
            if scheme != "Bearer" or token not in self._tokens:
                return json_response(401, {"error": "invalid_token"})
        return None

    def _enable(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        if _json(request) != {"enabled": True}:
            return json_response(400, {"error": "bad_request"})
        with self._lock:
            changed, self._enabled = not self._enabled, True
        return json_response(200, {"changed": changed})

    def _submit(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = _json(request)
        emails = body.get("emails") if isinstance(body, dict) else None
        if (
            not isinstance(emails, list)
            or not 1 <= len(emails) <= MAX_IDS_PER_CALL
            or not all(isinstance(email, str) and email for email in emails)
        ):
            return json_response(400, {"error": "bad_request"})
        with self._lock:
            if not self._enabled:
                return json_response(409, {"error": "erasure_disabled"})
            results = {email: "erased" if email in self._held else "absent" for email in emails}
            self._held.difference_update(emails)
            job_id = f"job-{next(self._job_ids)}"
            self._jobs[job_id] = _Job(self.clock.now() + self._job_seconds, results)
        return json_response(202, {"job_id": job_id})

    def _status(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        with self._lock:
            job = self._jobs.get(request.params["job_id"])
        if job is None:
            return json_response(404, {"error": "not_found"})
        if self.clock.now() < job.done_at:
            return json_response(200, {"state": "running"})
        return json_response(200, {"state": "done", "results": job.results})


def _json(request: Request) -> object:
    try:
        return parse_json_body(request.body)
    except ValueError:
        return None
