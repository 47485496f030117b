"""The chart's NetworkPolicy (off by default) and `httpHost`, rendered offline and checked the
way the API server would (kubernetes-validate, strict, oldest and newest supported
Kubernetes) plus what the schema leaves open: the policy selects the worker's pods, lets
only the configured peers reach only the metrics port, and leaves egress open unless rules
are given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from consumer.config import load_settings
from tests.helm.chart import (
    CHART,
    NAMESPACE,
    Rendered,
    container,
    kube_version_range,
    render,
    worker_config,
)

KUBE_VERSIONS = kube_version_range()
PROMETHEUS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
    "podSelector": {"matchLabels": {"app": "prometheus"}},
}
EGRESS = [
    {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
    {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 9092}]},
]


def policy(values: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = render({"networkPolicy": values}).one("NetworkPolicy")
    return found


def pod_labels(result: Rendered) -> dict[str, str]:
    labels: dict[str, str] = result.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def test_no_policy_unless_enabled() -> None:
    assert render({}).all("NetworkPolicy") == []


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_enabled_policy_is_valid_and_lint_clean(kube_version: str) -> None:
    values = {"networkPolicy": {"enabled": True, "metricsFrom": [PROMETHEUS], "egress": EGRESS}}
    validated = kubernetes_validate.validate(
        render(values).one("NetworkPolicy"), kube_version, strict=True
    )
    assert validated == kube_version
    report = helm.lint(
        CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}.0"
    )
    problems = [message for message in report["messages"] if message["severity"] >= 2]
    assert not problems and not report["errors"], problems or report["errors"]


def test_defaults_admit_only_prometheus_to_the_metrics_port_and_leave_egress_open() -> None:
    result = render({"networkPolicy": {"enabled": True}})
    spec = result.one("NetworkPolicy")["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels(result).items()
    assert spec["policyTypes"] == ["Ingress"]
    assert "egress" not in spec
    [rule] = spec["ingress"]
    assert rule["ports"] == [{"port": "http-metrics", "protocol": "TCP"}]
    assert [port["name"] for port in container(result)["ports"]] == ["http-metrics"]
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["networkPolicy"]
    assert rule["from"] == defaults["metricsFrom"]
    assert rule["from"][0]["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "prometheus"}
    }


def test_configured_peers_and_egress_rules_are_used_verbatim() -> None:
    spec = policy({"enabled": True, "metricsFrom": [PROMETHEUS], "egress": EGRESS})["spec"]
    assert spec["ingress"][0]["from"] == [PROMETHEUS]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["egress"] == EGRESS


def test_no_peers_lets_no_pod_in() -> None:
    spec = policy({"enabled": True, "metricsFrom": []})["spec"]
    assert spec["ingress"] == []
    assert spec["policyTypes"] == ["Ingress"]


@pytest.mark.parametrize(
    "values",
    [
        {"networkPolicy": {"enabled": True, "ingress": []}},
        {"networkPolicy": {"enabled": True, "metricsFrom": [{"namespace": "monitoring"}]}},
        {"networkPolicy": {"enabled": True, "metricsFrom": [{}]}},
        {"httpHost": "http://0.0.0.0"},
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError, match="values don't meet the specifications"):
        render(values)


def test_http_host_reaches_the_worker_config(tmp_path: Path) -> None:
    default = worker_config(render({}))["http"]
    assert default == {"port": 8000}
    config = worker_config(render({"httpHost": "::"}))
    assert config["http"] == {"port": 8000, "host": "::"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert load_settings(path, {}).http.host == "::"
    path.write_text(yaml.safe_dump({**config, "http": default}))
    assert load_settings(path, {}).http.host == "0.0.0.0"
