"""`erasure-worker verify`'s one line over a real ledger: intact with what was checked and
the head hash (exit 0), or the first entry that does not match, named (exit 1)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from consumer.cli import main
from consumer.ledger import Ledger
from consumer.ledger.records import ChainBreak
from consumer.ops.verify import describe, verify_text
from tests.ledger.test_audit_chain import events_in, finish, sql
from tests.ledger.test_ledger_contract import T0, new_request
from tests.ops.test_report import write_config


def test_an_intact_trail_is_one_line_with_its_head_hash(ledger: Ledger) -> None:
    finish(ledger, new_request("voyado"))
    old = finish(ledger, new_request("voyado"), now=T0 - timedelta(days=800))
    ledger.mark_published([event.seq for event in ledger.pending_events(100)], T0)
    ledger.delete_expired(T0, timedelta(days=730), 10)
    report = ledger.verify_chain()
    line, code = verify_text(report)
    assert code == 0
    assert line == (
        "audit trail intact: 5 entries verified; 5 deleted by retention, vouched for by"
        f" checkpoints; head at position 10: {report.head_hash}"
    )
    assert old not in line


def test_a_tampered_trail_names_the_event(ledger: Ledger) -> None:
    finish(ledger, new_request("voyado", "monetate"))
    seq, event_id, request_id = events_in(ledger)[3]
    sql(ledger, "UPDATE events SET vendor_job_id = 'another' WHERE seq = ?", (seq,))
    line, code = verify_text(ledger.verify_chain())
    assert code == 1
    assert line == (
        f"audit trail broken: event seq {seq} (event_id {event_id}, request {request_id}):"
        " its hash does not match its content and the chain"
    )


def test_every_kind_of_break_is_named() -> None:
    assert describe(ChainBreak("action", 7, "3", "r-1", "recorded outside the chain")) == (
        "operator action 3 (request r-1): recorded outside the chain"
    )
    assert describe(ChainBreak("checkpoint", 7, None, None, "gone")) == (
        "the retention checkpoint after position 7: gone"
    )
    assert describe(ChainBreak("head", 9, None, None, "missing")) == (
        "the chain head (position 9): missing"
    )


def test_the_command_exits_0_when_intact_and_1_naming_the_event(
    ledger: Ledger, ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    finish(ledger, new_request("voyado"))
    config = write_config(tmp_path, ledger_url)
    assert main(["verify", "--config", config]) == 0
    assert capsys.readouterr().out.startswith("audit trail intact: 5 entries verified;")
    seq, *_ = events_in(ledger)[1]
    sql(ledger, "DELETE FROM events WHERE seq = ?", (seq,))
    assert main(["verify", "--config", config]) == 1
    line = capsys.readouterr().out
    assert line.startswith(f"audit trail broken: event seq {seq + 1} ")
    assert line.endswith(f"entries after position {seq - 1} are missing\n")
