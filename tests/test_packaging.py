"""What ships: the wheel and the container image's build context carry the product only.

Dev tools (sandboxes, the dev broker, the dev stack, the demo) live in `devtools/`, which
neither the wheel nor the Dockerfile takes; the sandbox's signing key is generated at start,
so no private key is in the repository at all. Modules stay small enough to read whole.
"""

from __future__ import annotations

import ast
import fnmatch
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 400
_KEY_MARKERS = (b"PRIVATE KEY-----",)


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_the_wheel_holds_the_product_and_its_data_only(wheel_files: dict[str, bytes]) -> None:
    packages = {name.split("/", 1)[0] for name in wheel_files if "/" in name}
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert packages == {"consumer", f"erasure_worker-{version}.dist-info"}
    assert not [name for name in wheel_files if "sandbox" in name or "demo" in name]
    assert "consumer/ledger/migrations/sqlite/0001_initial.sql" in wheel_files
    assert "consumer/schemas/subject_erasure_requested.avsc" in wheel_files
    keys = [name for name, data in wheel_files.items() if any(m in data for m in _KEY_MARKERS)]
    assert keys == []


def test_the_image_build_context_leaves_dev_tools_out() -> None:
    """The Dockerfile copies from a context that .dockerignore cuts down to an allow-list."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "the context must start from nothing"
    allowed = [rule[1:].rstrip("/") for rule in rules if rule.startswith("!")]
    assert sorted(allowed) == ["README.md", "consumer", "pyproject.toml", "schemas"]
    copied = [
        line.split()[1]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and "--from" not in line
    ]
    assert not [path for path in copied if fnmatch.fnmatch(path, "*devtools*")]


def _python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def test_no_product_module_imports_the_dev_tools() -> None:
    offenders = []
    for path in _python_files("consumer"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] in {"devtools", "tests"}]
    assert offenders == []


def test_no_module_is_longer_than_a_reader_can_hold() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in _python_files("consumer", "devtools")
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_the_dev_tools_store_no_private_key() -> None:
    """The Monetate sandbox signs with a key pair made when it starts."""
    holders = [
        str(path.relative_to(ROOT))
        for path in _python_files("consumer", "devtools")
        if any(marker in path.read_bytes() for marker in _KEY_MARKERS)
    ]
    assert holders == []
