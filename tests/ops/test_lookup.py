"""`erasure-worker lookup`'s logic over a real ledger: the person's requests found by the
value as given and, once minimised, through the keyed hash; never the value in output."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import pytest

from consumer.cli import main
from consumer.ledger import Ledger
from consumer.model import Status
from consumer.ops.inputs import BadInput
from consumer.ops.lookup import identity, lookup, lookup_json, lookup_text
from tests.ledger.test_audit_chain import finish
from tests.ledger.test_ledger_contract import T0, new_request
from tests.ops.test_report import write_config

KEY = b"the operator's key"


@pytest.mark.parametrize("argument", ["jane@example.com", "=jane@example.com", "email=", " ="])
def test_anything_but_type_equals_value_is_one_line_without_the_value(argument: str) -> None:
    with pytest.raises(BadInput) as refused:
        identity(argument)
    assert "jane" not in str(refused.value) and "\n" not in str(refused.value)


def test_the_value_may_hold_an_equals_sign() -> None:
    assert identity("customer_key=a=b") == ("customer_key", "a=b")


def test_a_request_is_found_before_and_after_minimisation(ledger: Ledger) -> None:
    new = new_request("voyado", "monetate")
    rid = finish(ledger, new)
    failed = new_request("voyado")
    finish(ledger, failed, Status.FAILED, T0 + timedelta(hours=1))
    argument = f"email={new.items[0].identity_value}"
    kind, hits = lookup(ledger, argument, KEY)
    assert (kind, [hit.request_id for hit in hits]) == ("email", [rid])
    ledger.minimise(T0, KEY, timedelta(0), 10)
    _, hits = lookup(ledger, argument, KEY)
    text = lookup_text(kind, hits, 0)
    header, row = text.splitlines()
    assert header.split() == ["REQUEST", "REGULATION", "STATUS", "RECEIVED", "FINISHED", "MATCHED"]
    assert row.split() == [
        rid,
        "GDPR",
        "COMPLETED",
        "2024-05-01",
        "12:00",
        "2024-05-01",
        "12:00",
        "keyed",
        "hash",
    ]
    assert json.loads(json.dumps(lookup_json(hits))) == [
        {
            "request_id": rid,
            "regulation": "GDPR",
            "status": "COMPLETED",
            "received_at": "2024-05-01T12:00:00.000Z",
            "finished_at": "2024-05-01T12:00:00.000Z",
            "matched": "keyed_hash",
        }
    ]
    assert new.items[0].identity_value not in text
    _, kept = lookup(ledger, f"email={failed.items[0].identity_value}", KEY)
    assert [(hit.status, hit.minimised) for hit in kept] == [(Status.FAILED, False)]


def test_without_the_key_minimised_requests_are_out_of_reach_and_it_says_so(
    ledger: Ledger,
) -> None:
    new = new_request("voyado")
    finish(ledger, new)
    ledger.minimise(T0, KEY, timedelta(0), 10)
    kind, hits = lookup(ledger, f"email={new.items[0].identity_value}", None)
    text = lookup_text(kind, hits, ledger.minimised_requests())
    assert text.splitlines() == [
        "no request carried this email identifier",
        "note: 1 request(s) have minimised identifiers and no retention.hash_key is"
        " configured: they cannot be matched",
    ]


def test_the_command_reads_the_value_from_stdin_and_matches_through_the_configured_key(
    ledger: Ledger,
    ledger_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    new = new_request("voyado")
    rid = finish(ledger, new)
    value = new.items[0].identity_value
    ledger.minimise(T0, KEY, timedelta(0), 10)
    monkeypatch.setenv("TEST_HASH_KEY", KEY.decode())
    config = write_config(tmp_path, ledger_url, hash_key="${TEST_HASH_KEY}")
    monkeypatch.setattr("sys.stdin", io.StringIO(value + "\n"))
    assert main(["lookup", "--config", config, "email=-", "--json"]) == 0
    out = capsys.readouterr().out
    assert [hit["request_id"] for hit in json.loads(out)] == [rid] and value not in out
    assert main(["lookup", "--config", config, value]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("erasure-worker: lookup takes TYPE=VALUE")
    assert value not in captured.err + captured.out


def test_a_type_that_looks_like_a_value_is_not_echoed() -> None:
    assert (
        lookup_text("jane@example.com", [], 0) == "no request carried this (that type) identifier"
    )
