"""Sandboxes that answer as slowly as a vendor in another region, and a Monetate status
limit with room for an early call: what the vendor-throughput benchmark stands on."""

from __future__ import annotations

import time

import pytest
import requests

from devtools.sandbox.__main__ import _parser
from devtools.sandbox.voyado import VoyadoSandbox
from tests.devtools.sandbox.test_monetate_sandbox import (
    DATASET,
    STATUS,
    call,
    get_token,
    keys,
    new_box,
)

__all__ = ["keys"]  # the module's fixture, shared


def test_every_answer_comes_after_the_latency() -> None:
    with VoyadoSandbox() as sandbox:
        sandbox.set_latency(0.3)
        started = time.monotonic()
        answer = requests.get(f"{sandbox.base_url}/no-such-path", timeout=5)
        took = time.monotonic() - started
        (logged,) = sandbox.calls
    assert answer.status_code == 404
    assert took >= 0.3
    assert logged.timestamp - started >= 0.3, "logged when answered"


def test_latency_is_never_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        VoyadoSandbox().set_latency(-0.1)


def test_the_command_takes_latency_in_milliseconds(capsys: pytest.CaptureFixture[str]) -> None:
    assert _parser().parse_args(["--latency-ms", "150"]).latency_ms == 150.0
    with pytest.raises(SystemExit):
        _parser().parse_args(["--latency-ms", "soon"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "milliseconds from 0 to 60000" in error


def test_a_burst_of_two_lets_one_status_check_come_early(keys: tuple[str, str]) -> None:
    sandbox = new_box(keys[1], data_get_rate_per_second=2.0, data_get_burst=2)
    try:
        sandbox.add_dataset(DATASET)
        token = get_token(sandbox, keys[0])
        statuses = [
            call(sandbox, "GET", STATUS, token, params={"customer_id": f"C-{n}"}).status_code
            for n in range(3)
        ]
    finally:
        sandbox.stop()
    assert statuses == [200, 200, 429]
