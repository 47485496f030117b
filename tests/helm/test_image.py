"""The container image the chart runs, checked without a Docker engine: the Dockerfile's
stages and instructions, and the build context its .dockerignore leaves."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field

import yaml

from tests.helm.chart import CHART, CONFIG_PATH, ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [argument for word, argument in self.instructions if word == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined."""
    joined = re.sub(r"\\\n", " ", text)
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, argument = line.partition(" ")
        keyword, argument = keyword.upper(), argument.strip()
        if keyword == "ARG" and not stages:
            name, _, default = argument.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = argument.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            stages.append(Stage(image, words[2] if len(words) > 2 else None))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, argument))
    return args, stages


def in_context(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` (the last matching pattern wins; a pattern that
    matches a directory matches everything under it)."""
    kept = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        regex = (
            re.escape(body).replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        )
        if re.fullmatch(rf"{regex}(/.*)?", path):
            kept = negated
    return kept


def ignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_multi_stage_build_on_a_slim_python() -> None:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    assert len(stages) >= 2
    final = stages[-1]
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim(-\w+)?", final.image)
    assert match, final.image
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(part) for part in re.findall(r"\d+", requires)[:2])
    assert (int(match.group(1)), int(match.group(2))) >= minimum
    builders = {stage.name for stage in stages[:-1]}
    copies = final.all("COPY")
    assert copies and all(re.match(r"--from=(\S+)", copy) for copy in copies), copies
    assert {re.match(r"--from=(\S+)", copy).group(1) for copy in copies} <= builders  # type: ignore[union-attr]


def test_final_stage_has_no_build_tools_or_sources() -> None:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    final = stages[-1]
    for command in final.all("RUN"):
        assert not re.search(r"\b(pip|apt-get|apt|gcc|make|build-essential)\b", command), command
    assert not final.all("ADD")


def test_runs_as_the_charts_non_root_user_with_the_worker_entrypoint() -> None:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    final = stages[-1]
    (user,) = final.all("USER")
    uid, _, gid = user.partition(":")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert int(uid) == values["podSecurityContext"]["runAsUser"] != 0
    assert int(gid) == values["podSecurityContext"]["runAsGroup"]
    (entrypoint,) = final.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["erasure-worker", "run"]
    environment = dict(item.split("=", 1) for env in final.all("ENV") for item in shlex.split(env))
    assert environment["ERASURE_CONFIG"] == CONFIG_PATH
    assert final.all("EXPOSE") == [str(values["httpPort"])]


def test_build_context_holds_what_the_build_copies_and_nothing_local() -> None:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    patterns = ignore_patterns()
    for stage in stages[:-1]:
        for copy in stage.all("COPY"):
            *sources, _ = copy.split()
            for source in sources:
                assert in_context(source.rstrip("/"), patterns), f"COPY {source} is ignored"
    for local in (".venv", ".git", "var", "tests", "helm", "bench", ".mypy_cache"):
        assert not in_context(local, patterns), f"{local} is in the build context"
    # Symlinks in the package (consumer/schemas -> ../schemas) must land in the context too.
    for path in (ROOT / "consumer").rglob("*"):
        if path.is_symlink():
            target = path.resolve().relative_to(ROOT).as_posix()
            assert in_context(target, patterns), f"{path.relative_to(ROOT)} -> {target}"
            copied = {
                source.rstrip("/")
                for stage in stages[:-1]
                for copy in stage.all("COPY")
                for source in copy.split()[:-1]
            }
            assert any(target == c or target.startswith(f"{c}/") for c in copied), target


def test_dockerignore_matcher() -> None:
    patterns = ["*", "!consumer/", "**/__pycache__"]
    assert in_context("consumer/cli.py", patterns)
    assert not in_context("consumer/__pycache__/cli.pyc", patterns)
    assert not in_context("tests/test_cli.py", patterns)


def test_chart_default_image_is_this_image() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert values["image"]["repository"] == "erasure-worker"
    assert f"erasure-worker:{chart['appVersion']}" in DOCKERFILE.read_text()


def test_parser_reads_stages() -> None:
    args, stages = parse_dockerfile(
        "ARG BASE=python:3.11-slim\nFROM ${BASE} AS build\nRUN a \\\n  b\nFROM ${BASE}\nUSER 1\n"
    )
    assert args == {"BASE": "python:3.11-slim"}
    assert [(s.image, s.name) for s in stages] == [
        ("python:3.11-slim", "build"),
        ("python:3.11-slim", None),
    ]
    assert stages[0].all("RUN") == ["a    b"]
