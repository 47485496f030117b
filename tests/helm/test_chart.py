"""The Helm chart, rendered offline for every value set and checked the way the API server
(kubernetes-validate, strict, oldest and newest supported Kubernetes), Prometheus Operator
(its models) and the worker itself (`load_settings` on the rendered ConfigMap) would check
it, plus what those schemas leave open: probe paths, ports, pull policy, selectors,
security settings, ledger modes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as prometheus_operator
from pydantic import BaseModel

from consumer.config import (
    DeadlineSettings,
    KafkaSettings,
    RetentionSettings,
    Settings,
    load_settings,
    vendors_model,
)
from consumer.vendors import registry
from tests.helm.chart import (
    CHART,
    CONFIG_PATH,
    EXISTING_SECRET,
    NAMESPACE,
    RELEASE,
    ROOT,
    VALUE_SETS,
    Rendered,
    container,
    kube_version_range,
    render,
    worker_config,
    worker_environment,
)

OLDEST, NEWEST = kube_version_range()
KUBE_VERSIONS = (OLDEST, NEWEST)
FULLNAME = f"{RELEASE}-erasure-worker"
CRD_KINDS: dict[str, type[BaseModel]] = {
    "ServiceMonitor": prometheus_operator.ServiceMonitor,
    "PrometheusRule": prometheus_operator.PrometheusRule,
}
PULL_POLICIES = {"Always", "IfNotPresent", "Never"}
SQLITE_SETS = ("defaults", "sqlite-pvc")
_cache: dict[str, Rendered] = {}


def rendered(name: str) -> Rendered:
    if name not in _cache:
        _cache[name] = render(VALUE_SETS[name])
    return _cache[name]


def pod_spec(result: Rendered) -> dict[str, Any]:
    spec: dict[str, Any] = result.one("Deployment")["spec"]["template"]["spec"]
    return spec


def pod_labels(result: Rendered) -> dict[str, str]:
    labels: dict[str, str] = result.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def round_trip(model: type[BaseModel], obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the operator's model reads it: unknown fields are dropped, so a
    difference from the input is a field the CRD does not have."""
    dumped: dict[str, Any] = model.model_validate(obj).model_dump(
        by_alias=True, exclude_none=True, mode="json"
    )
    return dumped


# -- the chart as a whole -------------------------------------------------------------


def test_chart_versions_match_the_project_and_the_validators() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]
    known = {
        ".".join(version.split(".")[:2]) for version in kubernetes_validate.utils.all_versions()
    }
    assert {OLDEST, NEWEST} <= known, f"kubernetes-validate knows {sorted(known)}"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_is_clean(name: str, kube_version: str) -> None:
    report = helm.lint(
        CHART, VALUE_SETS[name], strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}.0"
    )
    problems = [message for message in report["messages"] if message["severity"] >= 2]
    assert not problems and not report["errors"], problems or report["errors"]


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_object_is_valid_kubernetes(name: str, kube_version: str) -> None:
    for obj in rendered(name).objects:
        if obj["kind"] in CRD_KINDS:
            continue
        validated = kubernetes_validate.validate(obj, kube_version, strict=True)
        assert validated == kube_version, (obj["kind"], validated)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_prometheus_operator_objects_match_their_models(name: str) -> None:
    for obj in rendered(name).objects:
        if obj["kind"] in CRD_KINDS:
            assert round_trip(CRD_KINDS[obj["kind"]], obj) == obj


def test_the_validators_reject_what_the_api_server_would() -> None:
    """The checks above can fail: an unknown field is an error in strict mode, and the
    model round trip loses a field the CRD does not have."""
    result = rendered("everything-on")
    deployment = copy.deepcopy(result.one("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicies"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, NEWEST, strict=True)
    monitor = copy.deepcopy(result.one("ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["scrapeInterval"] = "15s"
    assert round_trip(prometheus_operator.ServiceMonitor, monitor) != monitor


def test_defaults_render_only_the_core_objects() -> None:
    result = rendered("defaults")
    kinds = sorted(obj["kind"] for obj in result.objects)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]
    assert all(obj["metadata"]["namespace"] == NAMESPACE for obj in result.objects)


# -- the Deployment -------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_deployment_runs_the_worker_with_probes_on_its_port(name: str) -> None:
    result = rendered(name)
    spec = container(result)
    config = worker_config(result)
    assert spec["command"] == ["erasure-worker"]
    assert spec["args"] == ["run", "--config", CONFIG_PATH]
    assert {"name": "ERASURE_CONFIG", "value": CONFIG_PATH} in spec["env"]
    assert spec["imagePullPolicy"] in PULL_POLICIES
    (port,) = spec["ports"]
    assert port == {
        "name": "http-metrics",
        "containerPort": config["http"]["port"],
        "protocol": "TCP",
    }
    probes = {
        kind: spec[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness", "readiness")
    }
    assert probes == {
        "startup": {"path": "/healthz", "port": "http-metrics"},
        "liveness": {"path": "/healthz", "port": "http-metrics"},
        "readiness": {"path": "/readyz", "port": "http-metrics"},
    }
    assert pod_spec(result)["terminationGracePeriodSeconds"] > 30
    config_mount = next(m for m in spec["volumeMounts"] if m["name"] == "config")
    assert f"{config_mount['mountPath']}/config.yaml" == CONFIG_PATH


def test_image_defaults_to_the_projects_image_at_app_version() -> None:
    assert container(rendered("defaults"))["image"] == "erasure-worker:0.2.0"
    assert container(rendered("defaults"))["imagePullPolicy"] == "IfNotPresent"
    pinned = container(rendered("everything-on"))
    assert pinned["image"] == "registry.example.com/privacy/erasure-worker@sha256:" + "ab" * 32
    assert pinned["imagePullPolicy"] == "Always"
    assert container(render({"image": {"tag": "0.2.0-rc1"}}))["image"] == "erasure-worker:0.2.0-rc1"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_config_and_secret_checksums_roll_the_pods(name: str) -> None:
    result = rendered(name)
    annotations = result.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    for kind in ("config", "secret"):
        text = result.template(f"{'configmap' if kind == 'config' else 'secret'}.yaml")
        assert annotations[f"checksum/{kind}"] == hashlib.sha256(text.encode()).hexdigest()


def test_a_config_or_secret_change_changes_the_checksums() -> None:
    base = VALUE_SETS["sqlite-pvc"]
    before = rendered("sqlite-pvc").one("Deployment")["spec"]["template"]["metadata"]
    changed_config = render({**base, "config": {**base["config"], "deadlines": {"gdpr_days": 20}}})
    changed_secret = render(
        {**base, "secrets": {"values": {**base["secrets"]["values"], "X": "y"}}}
    )
    after_config = changed_config.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    after_secret = changed_secret.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert after_config["checksum/config"] != before["annotations"]["checksum/config"]
    assert after_config["checksum/secret"] == before["annotations"]["checksum/secret"]
    assert after_secret["checksum/secret"] != before["annotations"]["checksum/secret"]
    assert after_secret["checksum/config"] == before["annotations"]["checksum/config"]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_secure_defaults(name: str) -> None:
    result = rendered(name)
    pod = pod_spec(result)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    context = container(result)["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    # Writable: only the /tmp emptyDir and, with SQLite, the ledger's claim.
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    writable = {
        mount["mountPath"]: next(k for k in volumes[mount["name"]] if k != "name")
        for mount in container(result)["volumeMounts"]
        if not mount.get("readOnly")
    }
    expected = {"/tmp": "emptyDir"}
    if name in SQLITE_SETS:
        ledger_path = worker_config(result)["ledger"]["url"].removeprefix("sqlite:///")
        expected[ledger_path.removesuffix("/ledger.db")] = "persistentVolumeClaim"
    assert writable == expected
    assert volumes["tmp"]["emptyDir"]["sizeLimit"]


# -- ledger modes ---------------------------------------------------------------------


@pytest.mark.parametrize("name", SQLITE_SETS)
def test_sqlite_runs_one_replica_with_recreate_on_a_claim(name: str) -> None:
    result = rendered(name)
    deployment = result.one("Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    claim = result.one("PersistentVolumeClaim")
    assert claim["metadata"]["name"] == f"{FULLNAME}-ledger"
    (ledger,) = [v for v in pod_spec(result)["volumes"] if v["name"] == "ledger"]
    assert ledger["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    mount = next(m for m in container(result)["volumeMounts"] if m["name"] == "ledger")
    assert worker_config(result)["ledger"]["url"] == f"sqlite:///{mount['mountPath']}/ledger.db"


def test_sqlite_claim_settings_and_the_ignored_replica_count() -> None:
    defaults = rendered("defaults").one("PersistentVolumeClaim")
    assert defaults["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert "storageClassName" not in defaults["spec"]
    assert defaults["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert defaults["spec"]["accessModes"] == ["ReadWriteOnce"]
    result = rendered("sqlite-pvc")
    claim = result.one("PersistentVolumeClaim")
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["metadata"]["annotations"] == {"backup.example.com/schedule": "daily"}
    assert "replicaCount=3 was ignored" in result.notes
    no_provisioning = render({"ledger": {"sqlite": {"persistence": {"storageClassName": ""}}}})
    assert no_provisioning.one("PersistentVolumeClaim")["spec"]["storageClassName"] == ""


def test_sqlite_on_an_existing_claim() -> None:
    result = render({"ledger": {"sqlite": {"persistence": {"existingClaim": "ledger-2024"}}}})
    assert result.all("PersistentVolumeClaim") == []
    (ledger,) = [v for v in pod_spec(result)["volumes"] if v["name"] == "ledger"]
    assert ledger["persistentVolumeClaim"]["claimName"] == "ledger-2024"


def test_postgresql_scales_out_with_a_rolling_update() -> None:
    result = rendered("postgresql-3-replicas")
    deployment = result.one("Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert result.all("PersistentVolumeClaim") == []
    assert all(v["name"] != "ledger" for v in pod_spec(result)["volumes"])
    assert worker_config(result)["ledger"]["url"].startswith(
        "postgresql://erasure:${LEDGER_DB_PASSWORD}@"
    )
    assert result.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert "ignored" not in result.notes


# -- configuration and secrets --------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_config_is_what_the_worker_loads(name: str, tmp_path: Path) -> None:
    """The ConfigMap has the contract's shape, and the worker's own loader accepts it with
    exactly the environment the pod gets (Secrets in envFrom, literal env)."""
    result = rendered(name)
    config = worker_config(result)
    assert set(config) == {"kafka", "ledger", "http", "vendors", "deadlines", "retention"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    existing = EXISTING_SECRET if VALUE_SETS[name].get("secrets", {}).get("existingSecret") else {}
    settings = load_settings(path, worker_environment(result, existing))
    assert isinstance(settings, Settings)
    assert settings.http.port == container(result)["ports"][0]["containerPort"]
    configmap = result.one("ConfigMap", FULLNAME)["data"]["config.yaml"]
    for secret in VALUE_SETS[name].get("secrets", {}).get("values", {}).values():
        assert secret not in configmap, "a secret value leaked into the ConfigMap"


def test_everything_on_config_carries_the_operator_values() -> None:
    config = worker_config(rendered("everything-on"))
    assert config["http"] == {"port": 9100}
    assert config["kafka"]["config"]["security.protocol"] == "SASL_SSL"
    assert config["kafka"]["config"]["sasl.password"] == "${KAFKA_API_SECRET}"
    assert config["kafka"]["config"]["session.timeout.ms"] == 45000
    assert config["vendors"]["acoustic"]["database_ids"] == [10091, 10092]
    assert config["deadlines"] == {
        "gdpr_days": 28,
        "ccpa_days": 40,
        "other_days": 25,
        "gdpr_extension_days": 56,
        "ccpa_extension_days": 45,
        "other_extension_days": 60,
    }
    assert config["retention"] == {
        "hash_key": "${ERASURE_HASH_KEY}",
        "identifiers_after_days": 30,
        "requests_days": 730,
    }


def test_inline_secrets_become_a_secret_in_env_from() -> None:
    result = rendered("postgresql-3-replicas")
    secret = result.one("Secret")
    assert secret["metadata"]["name"] == FULLNAME
    assert set(secret["data"]) == {
        "LEDGER_DB_PASSWORD",
        "ACOUSTIC_CLIENT_SECRET",
        "ACOUSTIC_REFRESH_TOKEN",
    }
    assert container(result)["envFrom"] == [{"secretRef": {"name": FULLNAME}}]


def test_an_existing_secret_replaces_the_rendered_one() -> None:
    result = rendered("existing-secret")
    assert result.all("Secret") == []
    assert container(result)["envFrom"] == [{"secretRef": {"name": "erasure-worker-credentials"}}]
    defaults = rendered("defaults")
    assert defaults.all("Secret") == [] and "envFrom" not in container(defaults)


# -- Services, budgets and monitoring -------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_selectors_find_the_pods_and_ports_line_up(name: str) -> None:
    result = rendered(name)
    labels = pod_labels(result)
    deployment = result.one("Deployment")
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = result.one("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == container(result)["ports"][0]["name"]
    assert (
        result.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items()
        <= labels.items()
    )
    assert (
        pod_spec(result)["serviceAccountName"] == result.one("ServiceAccount")["metadata"]["name"]
    )
    for monitor in result.all("ServiceMonitor"):
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
        )
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] == service_port["name"]
        assert endpoint["path"] == "/metrics"


def test_service_monitor_settings() -> None:
    monitor = rendered("everything-on").one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["interval"] == "15s" and endpoint["scrapeTimeout"] == "10s"
    assert endpoint["relabelings"][0]["targetLabel"] == "cluster"


def test_prometheus_rule_is_the_alerts_file() -> None:
    """One source: files/alerts.yaml, less the disabled alerts, plus the extra labels and
    runbook links."""
    source = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    rule = rendered("everything-on").one("PrometheusRule")
    values = VALUE_SETS["everything-on"]["prometheusRule"]
    expected = []
    for group in source["groups"]:
        rules = []
        for source_rule in group["rules"]:
            if source_rule["alert"] in values["disabledAlerts"]:
                continue
            alert = copy.deepcopy(source_rule)
            alert["labels"] = {**alert["labels"], "team": "privacy"}
            alert["annotations"]["runbook_url"] = (
                f"{values['runbookBaseUrl']}#{alert['alert'].lower()}"
            )
            rules.append(alert)
        expected.append({"name": group["name"], "rules": rules})
    assert rule["spec"] == {"groups": expected}
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    plain = render({"prometheusRule": {"enabled": True}}).one("PrometheusRule")
    assert plain["spec"] == {"groups": source["groups"]}


def test_dashboard_configmap_carries_the_sidecar_label() -> None:
    configmap = rendered("everything-on").one("ConfigMap", f"{FULLNAME}-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Privacy"}
    text = (CHART / "dashboards" / "erasure-worker.json").read_text()
    assert configmap["data"]["erasure-worker.json"] == text.rstrip("\n")
    assert json.loads(configmap["data"]["erasure-worker.json"])["uid"] == "erasure-worker"


def test_budget_takes_min_available_when_max_unavailable_is_null() -> None:
    budget = rendered("everything-on").one("PodDisruptionBudget")["spec"]
    assert budget["minAvailable"] == 1 and "maxUnavailable" not in budget


def test_notes_tell_how_to_read_logs_metrics_and_the_consumer_group() -> None:
    notes = rendered("existing-secret").notes
    assert f"kubectl logs -n {NAMESPACE} deploy/{FULLNAME}" in notes
    assert f"kubectl port-forward -n {NAMESPACE} svc/{FULLNAME} 8000:8000" in notes
    assert "/metrics" in notes and "/readyz" in notes
    assert "--describe --group erasure-worker-prod" in notes
    assert "pkc-12345.eu-west-1.aws.confluent.cloud:9092" in notes


# -- values and their schema ----------------------------------------------------------

ACOUSTIC_NO_SECRETS = {
    "base_url": "https://api-campaign-us-5.goacoustic.com",
    "client_id": "c",
    "client_secret": "${ACOUSTIC_CLIENT_SECRET}",
    "refresh_token": "${ACOUSTIC_REFRESH_TOKEN}",
    "database_ids": [1],
}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        (
            {"config": {"kafka": {"bootstrap_servers": "k:9092", "groupId": "x"}}},
            "'groupId' not allowed",
        ),
        (
            {"config": {"vendors": {"acoustic": {**ACOUSTIC_NO_SECRETS, "batchsize": 5}}}},
            "'batchsize' not allowed",
        ),
        ({"config": {"vendors": {"mailchimp": {}}}}, "'mailchimp' not allowed"),
        ({"ledger": {"type": "postgresql"}}, "/ledger/postgresql/url"),
        ({"ledger": {"type": "mysql"}}, "/ledger/type"),
        ({"replicaCount": 0}, "/replicaCount"),
        ({"terminationGracePeriodSeconds": 30}, "/terminationGracePeriodSeconds"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        (
            {"secrets": {"values": {"not-an-env-name": "x"}}},
            "invalid propertyName 'not-an-env-name'",
        ),
        ({"prometheusRule": {"disabledAlerts": ["NoSuchAlert"]}}, "/prometheusRule/disabledAlerts"),
        (
            {"config": {"vendors": {"acoustic": ACOUSTIC_NO_SECRETS}}},
            r"config references \$\{ACOUSTIC_CLIENT_SECRET\}",
        ),
        ({"config": {"retention": {"identifiers_after_days": 30}}}, "/config/retention"),
        (
            {"config": {"retention": {"hash_key": "an-inline-key-of-some-length"}}},
            "/config/retention/hash_key",
        ),
        (
            {"config": {"retention": {"hash_key": "${ERASURE_HASH_KEY}"}}},
            r"config references \$\{ERASURE_HASH_KEY\}",
        ),
    ],
)
def test_bad_values_fail_at_render_time(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(values)


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


def test_schema_rejects_unknown_keys_everywhere_it_owns_the_shape() -> None:
    def walk(node: dict[str, Any], path: str) -> None:
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
            for key, child in node["properties"].items():
                walk(child, f"{path}.{key}")

    walk(_schema(), "values")


@pytest.mark.parametrize(
    ("schema_path", "model"),
    [
        (("config",), None),
        (("config", "kafka"), KafkaSettings),
        (("config", "vendors"), vendors_model()),
        *(
            (("config", "vendors", name), entry.settings)
            for name, entry in registry.entries().items()
        ),
        (("config", "deadlines"), DeadlineSettings),
        (("config", "retention"), RetentionSettings),
    ],
)
def test_config_schema_follows_the_worker_settings(
    schema_path: tuple[str, ...], model: type[BaseModel] | None
) -> None:
    """The values schema names exactly the keys the worker's settings take, so a typo
    fails at `helm install` rather than at the pod's start, and a new setting cannot be
    forgotten here."""
    node = _schema()
    for key in schema_path:
        node = node["properties"][key]
    if model is None:  # `ledger` and `http` come from the chart's own values.
        fields = set(Settings.model_fields) - {"ledger", "http"}
    else:
        fields = set(model.model_fields)
    assert set(node["properties"]) == fields
    if model is not None:
        required = {name for name, field in model.model_fields.items() if field.is_required()}
        assert set(node.get("required", [])) == required


def test_every_value_is_documented() -> None:
    """helm-docs style: each leaf value has a `# --` comment right above it, and each
    schema property a description."""
    schema = _schema()
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented: set[str] = set()
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z_][\w.]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([*(k for _, k in stack), key])
        stack.append((indent, key))
        above = number - 1
        while (
            above >= 0
            and lines[above].strip().startswith("#")
            and not lines[above].strip().startswith("# --")
        ):
            above -= 1
        if above >= 0 and lines[above].strip().startswith("# --"):
            documented.add(path)

    def leaves(node: dict[str, Any], values: Any, path: str) -> list[str]:
        if "properties" in node and isinstance(values, dict) and values:
            return [
                leaf
                for key, value in values.items()
                for leaf in leaves(node["properties"][key], value, f"{path}.{key}".lstrip("."))
            ]
        return [path]

    def undescribed(node: dict[str, Any], path: str) -> list[str]:
        missing = [] if "description" in node or not path else [path]
        for key, child in node.get("properties", {}).items():
            missing += undescribed(child, f"{path}.{key}".lstrip("."))
        return missing

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert [leaf for leaf in leaves(schema, defaults, "") if leaf not in documented] == []
    assert undescribed(schema, "") == []
