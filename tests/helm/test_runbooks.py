"""Every alert links its runbook: the `runbook_url` of each rule, in the rules file Prometheus
may load as it is and in the PrometheusRule the chart renders, ends in an anchor of
docs/runbooks.md whose section is that alert's. An on-call engineer following the link must
land on the right "Meaning / Investigate / Fix", so a renamed alert or heading fails here.
"""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.helm.chart import CHART, ROOT, render

# The page, as a path in the repository: the default link target.
RUNBOOKS_PATH = "docs/runbooks.md"
RUNBOOKS = ROOT / RUNBOOKS_PATH
RULES_FILE = CHART / "files" / "alerts.yaml"
GIT_HOST_PAGE = "https://git.example.com/privacy/erasure-worker/-/blob/main/docs/runbooks.md"


def anchor(heading: str) -> str:
    """The fragment GitHub and GitLab give a Markdown heading: lower case, punctuation
    dropped, spaces turned into hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    """The level-2 headings of docs/runbooks.md (one per alert), by their anchor."""
    headings = re.findall(r"^## (.+)$", RUNBOOKS.read_text(), re.MULTILINE)
    return {anchor(heading): heading for heading in headings}


def alert_rules(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def source_rules() -> list[dict[str, Any]]:
    return alert_rules(yaml.safe_load(RULES_FILE.read_text())["groups"])


def assert_links_its_runbook(rule: dict[str, Any], page: str) -> None:
    """The rule's runbook_url is `page#anchor`, and that anchor is the rule's own section."""
    url = rule["annotations"].get("runbook_url")
    assert url, f"{rule['alert']} has no runbook_url"
    base, _, fragment = url.partition("#")
    assert base == page, rule["alert"]
    assert runbook_sections().get(fragment) == rule["alert"], (rule["alert"], fragment)


def test_runbooks_have_one_section_per_alert() -> None:
    assert sorted(runbook_sections().values()) == sorted(rule["alert"] for rule in source_rules())


def test_the_rules_file_links_every_alert_to_its_runbook() -> None:
    """Loaded into Prometheus as it is, the file carries the page's repository path."""
    for rule in source_rules():
        assert_links_its_runbook(rule, RUNBOOKS_PATH)


@pytest.mark.parametrize("base_url", [None, GIT_HOST_PAGE])
def test_the_chart_links_every_alert_to_its_runbook(base_url: str | None) -> None:
    """By default the chart keeps the repository path; a base URL (the page on the team's
    Git host) replaces it on every alert."""
    settings: dict[str, Any] = {"enabled": True}
    if base_url:
        settings["runbookBaseUrl"] = base_url
    rule = render({"prometheusRule": settings}).one("PrometheusRule")
    rendered = alert_rules(rule["spec"]["groups"])
    assert len(rendered) == len(source_rules())
    for alert in rendered:
        assert_links_its_runbook(alert, base_url or RUNBOOKS_PATH)


@pytest.mark.parametrize("base_url", ["https://git.example.com/runbooks.md#top", "docs/run books"])
def test_a_base_url_that_would_break_the_anchors_is_refused(base_url: str) -> None:
    with pytest.raises(helm.HelmError, match="/prometheusRule/runbookBaseUrl"):
        render({"prometheusRule": {"enabled": True, "runbookBaseUrl": base_url}})
