"""The auditor's report as written, over a real ledger: CSV that a spreadsheet opens
cleanly (header first, a column group per vendor, totals after a blank row, no formula
it would run), one JSON document, and never an identity value."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import pytest

from consumer.cli import main
from consumer.ledger import Ledger
from consumer.model import Status
from consumer.ops.report import csv_safe, write_report
from tests.ledger.test_audit_chain import finish, sql
from tests.ledger.test_ledger_contract import T0, new_request, record

WINDOW = (T0, T0 + timedelta(days=1))
VENDORS = ("voyado", "acoustic")


def three_requests(ledger: Ledger) -> list[str]:
    """One COMPLETED late (due before it finished), one FAILED, one open that named a
    vendor whose name a spreadsheet would run as a formula."""
    late = finish(ledger, new_request("voyado", "acoustic"), now=T0 + timedelta(hours=1))
    sql(ledger, "UPDATE requests SET due_at = requested_at WHERE request_id = ?", (late,))
    failed = finish(ledger, new_request("voyado"), Status.FAILED, T0 + timedelta(hours=2))
    sql(
        ledger,
        "UPDATE jobs SET vendor_job_id = '-2+3' WHERE vendor_job_id LIKE ?",
        (f"job-{failed[:8]}%",),
    )
    odd = new_request("acoustic", skipped=[("=HYPERLINK(1)", "not enabled")])
    record(ledger, odd, now=T0 + timedelta(hours=3))
    return [late, failed, odd.request.request_id]


def report(ledger: Ledger, fmt: str) -> str:
    out = io.StringIO()
    with ledger.report(*WINDOW) as rows:
        write_report(rows, fmt, VENDORS, WINDOW, out)
    return out.getvalue()


def test_csv_has_a_header_a_row_per_request_and_then_totals(ledger: Ledger) -> None:
    late, failed, odd = three_requests(ledger)
    text = report(ledger, "csv")
    table = list(csv.reader(io.StringIO(text)))
    header, rows, totals = table[0], table[1:4], table[5:]
    assert header[:8] == [
        "request_id", "regulation", "received_at", "due_at", "extended_days", "status",
        "finished_at", "finished_after_due",
    ]  # fmt: skip
    assert header[8:] == [
        "voyado_status", "voyado_job_ids", "voyado_finished_at", "acoustic_status",
        "acoustic_job_ids", "acoustic_finished_at", "other_vendors",
    ]  # fmt: skip
    assert [row[0] for row in rows] == [late, failed, odd] and table[4] == []
    first = dict(zip(header, rows[0], strict=True))
    assert (first["status"], first["finished_after_due"], first["voyado_status"]) == (
        "COMPLETED", "yes", "COMPLETED",
    )  # fmt: skip
    assert first["finished_at"] == "2024-05-01T13:00:00.000Z"
    assert first["acoustic_job_ids"] == f"job-{late[:8]}-acoustic"
    second = dict(zip(header, rows[1], strict=True))
    assert (second["finished_after_due"], second["voyado_job_ids"]) == ("no", "'-2+3")
    third = dict(zip(header, rows[2], strict=True))
    assert (third["finished_at"], third["finished_after_due"], third["voyado_status"]) == (
        "",
        "",
        "",
    )
    assert third["other_vendors"] == "'=HYPERLINK(1): SKIPPED"
    assert totals[0] == ["regulation", "status", "requests", "finished_after_due"]
    assert totals[1:] == [
        ["GDPR", "COMPLETED", "1", "1"],
        ["GDPR", "FAILED", "1", "0"],
        ["GDPR", "RECEIVED", "1", "0"],
        ["GDPR", "ALL", "3", "1"],
        ["ALL", "COMPLETED", "1", "1"],
        ["ALL", "FAILED", "1", "0"],
        ["ALL", "RECEIVED", "1", "0"],
        ["ALL", "ALL", "3", "1"],
    ]


def test_json_is_one_document_with_every_request_and_the_totals(ledger: Ledger) -> None:
    late, failed, odd = three_requests(ledger)
    document = json.loads(report(ledger, "json"))
    assert (document["from"], document["to"]) == (
        "2024-05-01T12:00:00.000Z",
        "2024-05-02T12:00:00.000Z",
    )
    assert [r["request_id"] for r in document["requests"]] == [late, failed, odd]
    first = document["requests"][0]
    assert first["finished_after_due"] is True and first["extended_days"] == 0
    assert [v["vendor"] for v in first["vendors"]] == ["acoustic", "voyado"]
    assert document["requests"][1]["vendors"][0]["vendor_job_ids"] == ["-2+3"]
    assert document["requests"][2]["finished_at"] is None
    totals = document["totals"]
    assert (totals["requests"], totals["finished_after_due"]) == (3, 1)
    assert totals["by_regulation"] == {"GDPR": {"requests": 3, "finished_after_due": 1}}
    assert totals["by_status"]["FAILED"] == {"requests": 1, "finished_after_due": 0}
    assert len(totals["by_regulation_and_status"]) == 3


def test_an_empty_window_still_gives_a_header_and_zero_totals(ledger: Ledger) -> None:
    assert report(ledger, "csv").splitlines()[-1] == "ALL,ALL,0,0"
    document = json.loads(report(ledger, "json"))
    assert (document["requests"], document["totals"]["requests"]) == ([], 0)


def test_no_identity_value_reaches_the_report(ledger: Ledger) -> None:
    news = [new_request("voyado", "acoustic", per_vendor=2) for _ in range(3)]
    for new in news:
        finish(ledger, new)
    text = report(ledger, "csv") + report(ledger, "json")
    assert not [i for new in news for i in new.items if i.identity_value in text]


def test_only_text_that_a_spreadsheet_would_run_is_quoted() -> None:
    assert [csv_safe(c) for c in ("=1", "+1", "-1", "@A1", "\tx", "\rx")] == [
        "'=1", "'+1", "'-1", "'@A1", "'\tx", "'\rx",
    ]  # fmt: skip
    assert [csv_safe(c) for c in ("2024-05-01", "job 1", -3, "")] == ["2024-05-01", "job 1", -3, ""]


def write_config(tmp_path: Path, ledger_url: str, **retention: object) -> str:
    """A configuration for the ledger-only commands: Voyado enabled, no broker needed."""
    config = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9"},
        "ledger": {"url": ledger_url},
        "vendors": {"voyado": {"base_url": "https://voyado.example", "api_key": "k"}},
        "retention": retention,
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    return str(path)


def test_report_goes_to_stdout_or_whole_to_a_file_and_works_after_minimisation(
    ledger: Ledger, ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    late, failed, odd = three_requests(ledger)
    ledger.minimise(T0 + timedelta(days=1), b"k" * 16, timedelta(0), 10)
    config = write_config(tmp_path, ledger_url)
    assert main(["report", "--config", config, "--from", "2024-05-01", "--to", "2024-05-02"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("request_id,regulation,") and lines[0].endswith(
        "voyado_status,voyado_job_ids,voyado_finished_at,other_vendors"
    )
    assert [line.split(",")[0] for line in lines[1:4]] == [late, failed, odd]
    output = tmp_path / "out" / "report.json"
    output.parent.mkdir()
    window = ["--from", "2024-05-01T13:00:00Z", "--to", "2024-05-01T14:00:00Z"]
    args = ["report", "--config", config, *window, "--format", "json", "--output", str(output)]
    assert main(args) == 0
    assert capsys.readouterr().err == f"report: 1 request(s) written to {output}\n"
    assert [r["request_id"] for r in json.loads(output.read_text())["requests"]] == [late]
    assert [p.name for p in output.parent.iterdir()] == ["report.json"]
    assert main(["status", "--config", config, late, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "COMPLETED"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--from", "2024-13-01", "--to", "2024-05-02"], "--from takes a date"),
        (["--from", "2024-05-02", "--to", "2024-05-01"], "--to must come after --from"),
        (["--from", "2024-05-01", "--to", "2024-05-02", "--format", "xml"], "--format is one of"),
        (
            ["--from", "2024-05-01", "--to", "2024-05-02", "--output", "/nonexistent/dir/r.csv"],
            "cannot write /nonexistent/dir/r.csv",
        ),
    ],
)
def test_a_bad_option_is_one_line_and_exit_1(
    ledger: Ledger,
    ledger_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    message: str,
) -> None:
    assert main(["report", "--config", write_config(tmp_path, ledger_url), *options]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"erasure-worker: {message}")
