"""The worker's HTTP endpoints as an operator or a kubelet sees them: probes and /metrics."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str] | None:
    """(status, body) of `GET http://127.0.0.1:port/path`, None if nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as reply:
            return reply.status, reply.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode("utf-8")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def http_status(port: int, path: str, timeout: float = 5.0) -> int | None:
    """The status `GET path` answers with, None if nothing answers."""
    answer = http_get(port, path, timeout)
    return None if answer is None else answer[0]


MetricKey = tuple[str, frozenset[tuple[str, str]]]


def parse_metrics(text: str) -> dict[MetricKey, float]:
    samples: dict[MetricKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def metric(samples: dict[MetricKey, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def metric_names(samples: dict[MetricKey, float]) -> set[str]:
    return {name for name, _ in samples}
