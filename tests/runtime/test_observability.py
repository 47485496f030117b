"""What an operator watches: the live worker's /metrics passes `promtool check metrics`;
the alert rules (helm/erasure-worker/files/alerts.yaml) pass `promtool check rules` and
their unit tests over synthetic series; every metric an alert or a dashboard panel reads
is one the worker exports; docs/ documents every metric and every alert.

promtool comes from Debian's `prometheus` package (`make test` installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from consumer.runtime import metrics
from devtools import devstack
from devtools.sandbox.acoustic import AcousticSandbox
from devtools.sandbox.fleet import ACOUSTIC_DATABASE
from tests.support.http import http_get, http_status
from tests.support.waiting import wait_until
from tests.support.worker import worker_setup

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "erasure-worker"
ALERTS = CHART / "files" / "alerts.yaml"
ALERT_TESTS = CHART / "tests-promtool" / "alerts_test.yaml"
DASHBOARD = CHART / "dashboards" / "erasure-worker.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
# Read by the not-ready alert: kube-state-metrics and Prometheus' own scrape health.
KUBERNETES_METRICS = frozenset({"kube_pod_status_ready", "kube_pod_status_phase", "up"})
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


# -- the catalog: what the worker exports ---------------------------------------------


def defined_metrics() -> dict[str, MetricWrapperBase]:
    """Every metric of consumer/runtime/metrics.py, by the name it is documented under (counters
    with `_total`, histograms by their base name)."""
    found: dict[str, MetricWrapperBase] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            name = value._name + ("_total" if value._type == "counter" else "")
            found[name] = value
    return found


def exported_series_names() -> frozenset[str]:
    """The sample names a query may use: counters' `_total`, histograms' `_bucket`, `_sum`
    and `_count`, gauges' own name (never the `_created` timestamps)."""
    names: set[str] = set()
    for name, metric in defined_metrics().items():
        if metric._type == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return frozenset(names)


_PROMQL_WORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "and",
        "or",
        "unless",
        "inf",
        "nan",
    }
)


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads: identifiers that are not functions,
    aggregations, keywords, label names or parts of strings, matchers and durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\S+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)(\s*\()?", text):
        if match.group(2) is None and match.group(1).lower() not in _PROMQL_WORDS:
            names.add(match.group(1))
    return names


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (vendor, le) (rate(erasure_vendor_call_duration_seconds_bucket{job=~"$job",'
        ' outcome!="ok"}[$__rate_interval])) / on (vendor) group_left max(up offset 5m)'
        " unless erasure_items > bool 0.2e3"
    )
    assert metric_names(expr) == {
        "erasure_vendor_call_duration_seconds_bucket",
        "up",
        "erasure_items",
    }


def test_metrics_module_is_the_whole_registry() -> None:
    registered = {family.name for family in metrics.REGISTRY.collect()}
    assert registered == {metric._name for metric in defined_metrics().values()}


# -- the live worker ------------------------------------------------------------------


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (make system-deps)")
    return path


def run_promtool(
    promtool: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`promtool ARGS`, its output kept for the assertion message."""
    return subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def sandbox() -> Iterator[AcousticSandbox]:
    sandbox = devstack.start_acoustic_sandbox(job_seconds=0.2)
    yield sandbox
    sandbox.stop()


def scraped_samples(text: str) -> dict[str, list[dict[str, str]]]:
    samples: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(dict(sample.labels))
    return samples


def test_live_worker_metrics_pass_promtool(
    kafka_bootstrap: str, sandbox: AcousticSandbox, tmp_path: Path, promtool: str
) -> None:
    """A worker that has consumed, dead-lettered, called the vendor and published events;
    its /metrics lints clean, carries every metric of the catalog, and no label value is
    a request id or an identity."""
    setup = worker_setup(tmp_path, kafka_bootstrap, "observability", partitions=2, acoustic=sandbox)
    samples = devstack.sample_requests(4, known_fraction=0.5)
    for email in samples.known_emails:
        sandbox.add_contact(ACOUSTIC_DATABASE, {"EMAIL": email})
    devstack.produce_requests(setup.kafka, samples.requests, devstack.malformed_messages()[:2])
    worker = setup.start_worker()
    try:
        wanted = {
            "erasure_requests_total",
            "erasure_dlq_messages_total",
            "erasure_vendor_calls_total",
            "erasure_vendor_call_duration_seconds_bucket",
            "erasure_completion_seconds_count",
            "erasure_status_events_total",
            "erasure_consumer_lag",
        }

        def rich_scrape() -> str | None:
            answer = http_get(setup.http_port, "/metrics")
            if worker.poll() is not None:
                raise AssertionError(f"worker exited {worker.returncode}{setup.log_tail()}")
            text = answer[1] if answer is not None and answer[0] == 200 else ""
            return text if wanted <= set(scraped_samples(text)) else None

        text = wait_until(rich_scrape, timeout=45, message="a scrape with every kind of sample")
        assert http_status(setup.http_port, "/healthz") == 200
        assert wait_until(lambda: http_status(setup.http_port, "/readyz") == 200, timeout=10)
    finally:
        exit_code = devstack.stop_worker(worker)
    assert exit_code == 0

    result = run_promtool(promtool, "check", "metrics", stdin=text)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr

    documented = defined_metrics()
    families = {family.name for family in text_string_to_metric_families(text)}
    # The text parser names counter families without `_total`.
    exposed = {name for name in documented if name.removesuffix("_total") in families}
    assert exposed == set(documented)
    for name, series in scraped_samples(text).items():
        for labels in series:
            for value in labels.values():
                assert "@" not in value and not UUID.search(value), (name, labels)


# -- alert rules ----------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alert_rules_pass_promtool_check_and_unit_tests(promtool: str) -> None:
    check = run_promtool(promtool, "check", "rules", str(ALERTS))
    assert check.returncode == 0, check.stdout + check.stderr
    unit = run_promtool(promtool, "test", "rules", str(ALERT_TESTS))
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_rule_unit_tests_pin_the_thresholds(promtool: str, tmp_path: Path) -> None:
    """The unit tests fail when an alert's threshold moves: here the vendor error ratio."""
    (tmp_path / "files").mkdir()
    (tmp_path / "tests-promtool").mkdir()
    original = ALERTS.read_text()
    assert ") > 0.2\n" in original
    (tmp_path / "files" / "alerts.yaml").write_text(original.replace(") > 0.2\n", ") > 0.5\n"))
    shutil.copy(ALERT_TESTS, tmp_path / "tests-promtool" / ALERT_TESTS.name)
    unit = run_promtool(
        promtool, "test", "rules", str(tmp_path / "tests-promtool" / ALERT_TESTS.name)
    )
    assert unit.returncode != 0
    assert "ErasureVendorFailing" in unit.stdout + unit.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert firing == names and quiet == names


def test_alerts_read_only_exported_metrics_and_carry_their_text() -> None:
    exported = exported_series_names()
    for rule in alert_rules():
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= exported | KUBERNETES_METRICS, (rule["alert"], used - exported)
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_alert_names_match_the_charts_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    disabled = schema["properties"]["prometheusRule"]["properties"]["disabledAlerts"]
    assert set(disabled["items"]["enum"]) == {rule["alert"] for rule in alert_rules()}


# -- the dashboard --------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in node.get("panels", []):
        yield panel
        yield from panels(panel)


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target."""
    return [
        (f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["expr"])
        for panel in panels(dashboard())
        for target in panel.get("targets", [])
    ]


def test_dashboard_queries_read_only_exported_metrics() -> None:
    exported = exported_series_names()
    used: set[str] = set()
    for where, expr in dashboard_queries():
        names = metric_names(expr)
        assert names, where
        assert names <= exported, (where, names - exported)
        used |= names
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            match = re.match(r"label_values\((\w+)", variable["definition"])
            assert match and match.group(1) in exported, variable["name"]
    # The panels the issue asks for: ingest, status flow per vendor, vendor latency and
    # errors, backlog, deadlines at risk, dead letters.
    assert {
        "erasure_requests_total",
        "erasure_items",
        "erasure_status_events_total",
        "erasure_vendor_call_duration_seconds_bucket",
        "erasure_vendor_calls_total",
        "erasure_outbox_backlog",
        "erasure_consumer_lag",
        "erasure_requests_at_risk",
        "erasure_requests_overdue",
        "erasure_dlq_messages_total",
    } <= used


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses each query (as a recording rule), Grafana's variables filled in."""
    substitutions = {"$__rate_interval": "5m", "$__range": "6h", "$__interval": "1m"}
    rules = []
    for index, (where, query) in enumerate(dashboard_queries()):
        expr = query
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        assert "$__" not in expr, where
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = run_promtool(promtool, "check", "rules", str(path))
    assert check.returncode == 0, check.stdout + check.stderr


def test_dashboard_panels_are_laid_out() -> None:
    all_panels = list(panels(dashboard()))
    ids = [panel["id"] for panel in all_panels]
    assert len(ids) == len(set(ids))
    for panel in all_panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and panel.get("description"), panel["title"]


# -- the docs -------------------------------------------------------------------------


def doc_section(doc: Path, heading: str) -> str:
    text = doc.read_text()
    start = text.index(heading)
    level = heading.split(" ", maxsplit=1)[0]
    following = re.search(rf"^#{{1,{len(level)}}} ", text[start + len(heading) :], re.MULTILINE)
    end = start + len(heading) + following.start() if following else len(text)
    return text[start:end]


def test_docs_document_every_metric() -> None:
    rows = {}
    for line in doc_section(METRICS_DOC, "# Metrics").splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) >= 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    defined = defined_metrics()
    assert set(rows) == set(defined)
    for name, metric in defined.items():
        _, kind, labels, meaning, usage = rows[name][:5]
        assert kind == metric._type, name
        assert set(re.findall(r"`(\w+)`", labels)) == set(metric._labelnames), name
        assert meaning and usage, name


def test_docs_have_a_runbook_for_every_alert() -> None:
    runbooks = doc_section(RUNBOOKS, "# Alerts and runbooks")
    for rule in alert_rules():
        section = doc_section(RUNBOOKS, f"## {rule['alert']}")
        assert section in runbooks
        for part in ("Meaning", "Investigate", "Fix"):
            assert f"**{part}" in section, (rule["alert"], part)
