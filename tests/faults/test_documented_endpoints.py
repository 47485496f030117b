"""Documented endpoints only (issue 7, item 11): each sandbox serves exactly the calls the
vendor documentation describes (shared/vendor-docs, VENDOR-FACTS) and answers 404 to any
other path and 405 to another method on a documented path, as a strict reading of the API
would; and `setup` (twice) and `check` reach the vendors only through documented calls.

Before this, `setup` and `check` read Monetate's dataset back with `GET .../schema/{name}/`,
which no documentation describes: against the vendor a second `setup` would fail and
`check` would report the dataset missing.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import requests

from consumer import cli
from devtools.sandbox import acquia_cdp, monetate
from devtools.sandbox.fleet import ACOUSTIC_DATABASE, MONETATE_DATASET, SECRETS, SandboxFleet
from devtools.sandbox.monetate import MonetateSandbox
from tests.support.worker import worker_setup

MONETATE_ACCOUNT = f"/api/data/v1/{monetate.DEFAULT_SHORTNAME}/production"
CDP_ERASURE = f"/v2/{acquia_cdp.DEFAULT_TENANT_ID}/dw/dataerasure"

# (method, path) the documentation describes, per sandbox. Without credentials or a body
# each answers something of its own (400, 401, 415...), never "no such endpoint".
DOCUMENTED: dict[str, list[tuple[str, str]]] = {
    "voyado": [
        (method, f"{prefix}/{endpoint}")
        for prefix in ("/api/admin/v4/event-data", "/api/admin/v3/event-data")
        for method, endpoint in (("POST", "create-remove-customer-job"), ("GET", "job-status"))
    ],
    "monetate": [
        ("GET", "/api/auth/v0/refresh/"),
        ("POST", f"{MONETATE_ACCOUNT}/schema/"),
        ("POST", f"{MONETATE_ACCOUNT}/data/{MONETATE_DATASET}/"),
        ("GET", f"{MONETATE_ACCOUNT}/customer_data_privacy/status/"),
    ],
    "acquia_cdp": [("POST", "/authentication"), ("POST", CDP_ERASURE)],
    "acoustic": [
        ("POST", "/oauth/token"),
        ("POST", f"/rest/databases/{ACOUSTIC_DATABASE}/gdpr_erasure"),
        ("GET", "/rest/gdpr_jobs/1/status"),
        ("GET", "/rest/gdpr_jobs/1/response"),
    ],
}
# Paths no documentation describes: 404.
UNDOCUMENTED_PATHS: dict[str, list[tuple[str, str]]] = {
    "voyado": [
        ("GET", "/"),
        ("GET", "/api/admin/v4/event-data/jobs"),
        ("POST", "/api/admin/v4/event-data/remove-customer"),
        ("GET", "/api/admin/v5/event-data/job-status"),
    ],
    "monetate": [
        ("GET", f"{MONETATE_ACCOUNT}/schema/{MONETATE_DATASET}/"),
        ("GET", f"{MONETATE_ACCOUNT}/schema/{MONETATE_DATASET}"),
        ("GET", f"{MONETATE_ACCOUNT}/data/{MONETATE_DATASET}/rows/"),
        ("GET", "/api/auth/v0/token/"),
        ("GET", "/"),
    ],
    "acquia_cdp": [
        ("GET", f"{CDP_ERASURE}/status"),
        ("GET", f"/v2/{acquia_cdp.DEFAULT_TENANT_ID}/customers"),
        ("POST", "/v1/authentication"),
        ("GET", "/"),
    ],
    "acoustic": [
        ("GET", "/rest/gdpr_jobs/1"),
        ("GET", "/rest/gdpr_jobs/1/cancel"),
        ("GET", f"/rest/databases/{ACOUSTIC_DATABASE}"),
        ("POST", "/oauth/authorize"),
        ("GET", "/"),
    ],
}
# Documented paths asked with a method the documentation does not give them: 405.
WRONG_METHODS: dict[str, list[tuple[str, str]]] = {
    "voyado": [
        ("GET", "/api/admin/v4/event-data/create-remove-customer-job"),
        ("DELETE", "/api/admin/v4/event-data/job-status"),
    ],
    "monetate": [
        ("GET", f"{MONETATE_ACCOUNT}/schema/"),
        ("GET", f"{MONETATE_ACCOUNT}/data/{MONETATE_DATASET}/"),
        ("DELETE", f"{MONETATE_ACCOUNT}/data/{MONETATE_DATASET}/"),
        ("POST", "/api/auth/v0/refresh/"),
    ],
    "acquia_cdp": [("GET", CDP_ERASURE), ("DELETE", CDP_ERASURE), ("GET", "/authentication")],
    "acoustic": [
        ("GET", f"/rest/databases/{ACOUSTIC_DATABASE}/gdpr_erasure"),
        ("DELETE", "/rest/gdpr_jobs/1/status"),
        ("PUT", "/oauth/token"),
    ],
}


@pytest.fixture(scope="module")
def fleet() -> Iterator[SandboxFleet]:
    with SandboxFleet() as running:
        yield running


def status_of(fleet: SandboxFleet, vendor: str, method: str, path: str) -> int:
    url = fleet.all[vendor].base_url + path
    return requests.request(method, url, timeout=5).status_code


@pytest.mark.parametrize("vendor", sorted(DOCUMENTED))
def test_documented_calls_are_served(fleet: SandboxFleet, vendor: str) -> None:
    answers = {call: status_of(fleet, vendor, *call) for call in DOCUMENTED[vendor]}
    assert {call: status for call, status in answers.items() if status in (404, 405)} == {}


@pytest.mark.parametrize("vendor", sorted(UNDOCUMENTED_PATHS))
def test_undocumented_paths_and_methods_are_refused(fleet: SandboxFleet, vendor: str) -> None:
    paths = {call: status_of(fleet, vendor, *call) for call in UNDOCUMENTED_PATHS[vendor]}
    methods = {call: status_of(fleet, vendor, *call) for call in WRONG_METHODS[vendor]}
    assert paths == dict.fromkeys(paths, 404)
    assert methods == dict.fromkeys(methods, 405)


def test_setup_and_check_use_documented_calls_only(
    tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`setup` twice (the second one meets the documented 400 "exists" answer) and `check`,
    against sandboxes that refuse anything undocumented: every call is routed, the dataset
    is created once, and `check` says it cannot verify the dataset rather than guessing."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    with SandboxFleet(set_up=False) as fresh:
        setup = worker_setup(
            tmp_path, kafka_bootstrap, "docs", partitions=1, vendors=fresh.vendors_config()
        )
        path = setup.config_path
        outputs = [run("setup", path), run("setup", path), run("check", path)]
        calls = {vendor: sandbox.calls for vendor, sandbox in fresh.all.items()}
        assert fresh.sandbox(MonetateSandbox).has_dataset(MONETATE_DATASET)
    assert [code for code, _ in outputs] == [0, 0, 0], outputs
    unrouted = [
        (vendor, call.method, call.path, call.status)
        for vendor, vendor_calls in calls.items()
        for call in vendor_calls
        if call.status in (404, 405)
    ]
    assert unrouted == []
    schema_answers = [c.status for c in calls["monetate"] if c.path.endswith("/schema/")]
    assert schema_answers == [201, 400]
    assert f"dataset {MONETATE_DATASET} created" in outputs[0][1]
    assert f"dataset {MONETATE_DATASET} already exists" in outputs[1][1]
    monetate_line = next(line for line in outputs[2][1].splitlines() if line.startswith("monetate"))
    assert monetate_line.split()[1] == "ok"
    assert f"dataset {MONETATE_DATASET} not checked" in monetate_line


def run(command: str, config: Path) -> tuple[int, str]:
    """The command in-process (same code path as the console script); exit code and output."""
    output = io.StringIO()
    with redirect_stdout(output):
        code = cli.main([command, "--config", str(config)])
    return code, output.getvalue()
