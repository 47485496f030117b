"""The `retention` section (contract §4): its defaults, a hash key that is required once
minimisation is on and never shows, and one clear line when it is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.cli import main
from consumer.config import ConfigError, RetentionSettings, load_settings

BASE = "kafka: {bootstrap_servers: x}\nledger: {url: 'sqlite:///l.db'}\n"
KEY = "a key of thirty-two characters!!"


def load(tmp_path: Path, retention: str, env: dict[str, str] | None = None) -> RetentionSettings:
    path = tmp_path / "config.yaml"
    path.write_text(BASE + retention, encoding="utf-8")
    return load_settings(path, env or {}).retention


def test_defaults_keep_identifiers_and_delete_requests_after_two_years(tmp_path: Path) -> None:
    retention = load(tmp_path, "")
    assert repr(retention) == (
        "RetentionSettings(hash_key=None, identifiers_after_days=None, requests_days=730.0)"
    )


def test_the_key_comes_from_the_environment_and_never_shows(tmp_path: Path) -> None:
    text = "retention: {hash_key: '${KEY}', identifiers_after_days: 0}\n"
    retention = load(tmp_path, text, {"KEY": KEY})
    assert KEY not in repr(retention) and KEY not in str(retention)
    assert retention.hash_key_bytes == KEY.encode()


@pytest.mark.parametrize(
    ("retention", "problem"),
    [
        ("{identifiers_after_days: 30}", "retention: Value error, hash_key is required once"),
        ("{hash_key: short, identifiers_after_days: 1}", "retention.hash_key: Value error, must"),
        ("{requests_days: 0}", "retention.requests_days: Input should be greater than 0"),
        ("{identifiers_after_days: -1, hash_key: '${KEY}'}", "retention.identifiers_after_days"),
        ("{keep_forever: true}", "retention.keep_forever: unknown key"),
    ],
)
def test_bad_retention_is_one_line_naming_the_key(
    tmp_path: Path, retention: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, f"retention: {retention}\n", {"KEY": KEY})
    assert problem in str(refused.value) and "short" not in str(refused.value)


def test_minimisation_without_a_key_stops_the_worker_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BASE + "retention: {identifiers_after_days: 30}\n", encoding="utf-8")
    assert main(["run", "--config", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(
        "retention: Value error, hash_key is required once identifiers_after_days is set"
        ' (e.g. hash_key: "${ERASURE_HASH_KEY}")'
    )
