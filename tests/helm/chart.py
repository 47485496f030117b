"""Rendering the Helm chart offline (helm-python-sdk: Helm's Go SDK in a bundled shared
library, no `helm` binary, no cluster) and the value sets the chart tests render.

Each value set is what an operator would write for one way of running the worker; the
tests render each one and check the objects the way the API server and Prometheus
Operator would, plus the things their schemas leave open.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "erasure-worker"
RELEASE = "demo"
NAMESPACE = "privacy"
CONFIG_PATH = "/etc/erasure-worker/config.yaml"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    """One `helm template`: every object, and the raw text per template file."""

    objects: tuple[Manifest, ...]
    files: dict[str, str]

    def all(self, kind: str) -> list[Manifest]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Manifest:
        found = [obj for obj in self.all(kind) if name is None or obj["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
        return found[0]

    @property
    def notes(self) -> str:
        return self.files[f"{CHART.name}/templates/NOTES.txt"]

    def template(self, name: str) -> str:
        return self.files[f"{CHART.name}/templates/{name}"]


def render(values: dict[str, Any], release: str = RELEASE) -> Rendered:
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values, name=release, namespace=NAMESPACE)
    objects = tuple(
        obj
        for path, text in sorted(files.items())
        if path.endswith((".yaml", ".yml"))
        for obj in yaml.safe_load_all(text)
        if obj
    )
    return Rendered(objects, files)


def kube_version_range() -> tuple[str, str]:
    """The oldest and newest Kubernetes minor versions Chart.yaml's kubeVersion admits."""
    constraint = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    match = re.fullmatch(r">=\s*1\.(\d+)\.0-0\s+<\s*1\.(\d+)\.0-0", constraint)
    assert match, f"kubeVersion {constraint!r} is not '>=1.A.0-0 <1.B.0-0'"
    return f"1.{match.group(1)}", f"1.{int(match.group(2)) - 1}"


def container(rendered: Rendered) -> Manifest:
    containers = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: Manifest = containers[0]
    return result


def worker_config(rendered: Rendered) -> dict[str, Any]:
    text = rendered.one("ConfigMap", f"{RELEASE}-erasure-worker")["data"]["config.yaml"]
    config: dict[str, Any] = yaml.safe_load(text)
    return config


def worker_environment(rendered: Rendered, existing: dict[str, str]) -> dict[str, str]:
    """The environment the worker container would get: literal `env`, every key of the
    Secrets in `envFrom` (rendered ones decoded; `existing` stands in for Secrets the
    chart does not own)."""
    spec = container(rendered)
    # A `valueFrom` variable comes from an object the chart does not own: any value will do.
    environment = {var["name"]: var.get("value", "from-elsewhere") for var in spec.get("env", [])}
    secrets = {obj["metadata"]["name"]: obj for obj in rendered.all("Secret")}
    for source in spec.get("envFrom", []):
        name = source["secretRef"]["name"]
        if name in secrets:
            environment.update(
                {
                    key: base64.b64decode(value).decode()
                    for key, value in secrets[name]["data"].items()
                }
            )
        else:
            environment.update(existing)
    return environment


ACOUSTIC = {
    "base_url": "https://api-campaign-us-5.goacoustic.com",
    "client_id": "erasure-worker",
    "client_secret": "${ACOUSTIC_CLIENT_SECRET}",
    "refresh_token": "${ACOUSTIC_REFRESH_TOKEN}",
    "database_ids": [10091, 10092],
    "lookup_fields": {"EMAIL": "email", "CUSTOMER_ID": "customer_id"},
    "batch_size": 2000,
}
ACOUSTIC_SECRETS = {
    "ACOUSTIC_CLIENT_SECRET": "acoustic-secret-7f3a",
    "ACOUSTIC_REFRESH_TOKEN": "acoustic-refresh-7f3a",
}

# The examples of the chart's README (helm/erasure-worker/README.md), as value sets.
CONFLUENT_CLOUD_KAFKA = {
    "bootstrap_servers": "pkc-12345.eu-west-1.aws.confluent.cloud:9092",
    "group_id": "erasure-worker-prod",
    "schema_registry_url": "https://${SR_API_KEY}:${SR_API_SECRET}@psrc-12345.eu-central-1.aws.confluent.cloud",
    "config": {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "PLAIN",
        "sasl.username": "${KAFKA_API_KEY}",
        "sasl.password": "${KAFKA_API_SECRET}",
        "client.id": "erasure-worker",
        "session.timeout.ms": 45000,
    },
}

PEM = "-----BEGIN PRIVATE KEY-----\nMII7f3a\n-----END PRIVATE KEY-----\n"

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "postgresql-3-replicas": {
        "replicaCount": 3,
        "ledger": {
            "type": "postgresql",
            "postgresql": {
                "url": "postgresql://erasure:${LEDGER_DB_PASSWORD}@postgres.db:5432/erasure"
            },
        },
        "config": {
            "kafka": {"bootstrap_servers": "kafka-0.kafka:9092,kafka-1.kafka:9092"},
            "vendors": {"acoustic": ACOUSTIC},
        },
        "secrets": {"values": {"LEDGER_DB_PASSWORD": "pg-pass-7f3a", **ACOUSTIC_SECRETS}},
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "erasure-worker"}},
            }
        ],
    },
    "sqlite-pvc": {
        # Asked for 3, gets 1: SQLite has one writer.
        "replicaCount": 3,
        "ledger": {
            "type": "sqlite",
            "sqlite": {
                "mountPath": "/data",
                "persistence": {
                    "storageClassName": "fast-ssd",
                    "size": "5Gi",
                    "keep": False,
                    "annotations": {"backup.example.com/schedule": "daily"},
                },
            },
        },
        "config": {"vendors": {"acoustic": ACOUSTIC}},
        "secrets": {"values": ACOUSTIC_SECRETS},
    },
    "everything-on": {
        "image": {
            "repository": "registry.example.com/privacy/erasure-worker",
            "digest": "sha256:" + "ab" * 32,
            "pullPolicy": "Always",
        },
        "imagePullSecrets": [{"name": "regcred"}],
        "ledger": {
            "type": "postgresql",
            "postgresql": {"url": "postgresql://erasure:${LEDGER_DB_PASSWORD}@pg:5432/erasure"},
        },
        "replicaCount": 2,
        "httpPort": 9100,
        "config": {
            "kafka": CONFLUENT_CLOUD_KAFKA,
            "vendors": {
                "acoustic": ACOUSTIC,
                "voyado": {
                    "base_url": "https://acme.elevate-api.cloud",
                    "api_key": "${VOYADO_API_KEY}",
                    "api_version": "v3",
                },
                "monetate": {
                    "base_url": "https://api.monetate.net",
                    "shortname": "acme",
                    "dataset": "erasure_requests",
                    "api_username": "api-123-erasure",
                    "private_key": "${MONETATE_PRIVATE_KEY}",
                    "overdue_after_seconds": 86400,
                },
                "acquia_cdp": {
                    "base_url": "https://api6.agilone.com",
                    "auth_url": "https://api6.agilone.com",
                    "tenant_id": 1234,
                    "username": "${CDP_USERNAME}",
                    "password": "${CDP_PASSWORD}",
                    "weekly_quota": 5000,
                },
            },
            "deadlines": {
                "gdpr_days": 28,
                "ccpa_days": 40,
                "other_days": 25,
                "gdpr_extension_days": 56,
            },
            "retention": {"hash_key": "${ERASURE_HASH_KEY}", "identifiers_after_days": 30},
        },
        "secrets": {
            "values": {
                "LEDGER_DB_PASSWORD": "pg-pass-7f3a",
                "ERASURE_HASH_KEY": "hash-key-7f3a-of-32-characters!",
                "KAFKA_API_KEY": "kafka-key-7f3a",
                "KAFKA_API_SECRET": "kafka-secret-7f3a",
                "SR_API_KEY": "sr-key-7f3a",
                "SR_API_SECRET": "sr-secret-7f3a",
                "VOYADO_API_KEY": "voyado-key-7f3a",
                "MONETATE_PRIVATE_KEY": PEM,
                **ACOUSTIC_SECRETS,
            }
        },
        # A variable from elsewhere: the CDP username from another Secret.
        "extraEnv": [
            {
                "name": "CDP_USERNAME",
                "valueFrom": {"secretKeyRef": {"name": "cdp", "key": "username"}},
            },
            {"name": "CDP_PASSWORD", "value": "from-extra-env"},
        ],
        "extraVolumes": [{"name": "kafka-ca", "secret": {"secretName": "kafka-ca"}}],
        "extraVolumeMounts": [{"name": "kafka-ca", "mountPath": "/etc/kafka-ca", "readOnly": True}],
        "podAnnotations": {"example.com/team": "privacy"},
        "podLabels": {"team": "privacy"},
        "priorityClassName": "high",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "privacy"}],
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
        "service": {"annotations": {"example.com/scrape": "false"}},
        "podDisruptionBudget": {"maxUnavailable": None, "minAvailable": 1},
        "serviceMonitor": {
            "enabled": True,
            "labels": {"release": "kube-prometheus-stack"},
            "interval": "15s",
            "relabelings": [
                {"action": "replace", "targetLabel": "cluster", "replacement": "prod-eu"}
            ],
        },
        "prometheusRule": {
            "enabled": True,
            "labels": {"release": "kube-prometheus-stack"},
            "additionalRuleLabels": {"team": "privacy"},
            "runbookBaseUrl": "https://git.example.com/privacy/erasure-worker/-/blob/main/docs/runbooks.md",
            "disabledAlerts": ["ErasureWorkerNotReady"],
        },
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Privacy"}},
    },
    "existing-secret": {
        "ledger": {
            "type": "postgresql",
            "postgresql": {"url": "postgresql://erasure:${LEDGER_DB_PASSWORD}@pg:5432/erasure"},
        },
        "config": {"kafka": CONFLUENT_CLOUD_KAFKA, "vendors": {"acoustic": ACOUSTIC}},
        "secrets": {"existingSecret": "erasure-worker-credentials"},
    },
}

# What the `existing-secret` value set's Secret holds (created outside the chart).
EXISTING_SECRET = {
    "LEDGER_DB_PASSWORD": "pg-pass-7f3a",
    "KAFKA_API_KEY": "kafka-key-7f3a",
    "KAFKA_API_SECRET": "kafka-secret-7f3a",
    "SR_API_KEY": "sr-key-7f3a",
    "SR_API_SECRET": "sr-secret-7f3a",
    **ACOUSTIC_SECRETS,
}
