"""FileQuarantined: a standing breach, raised by the newest run whether or not it read rows, and
store error texts without the values they quote."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from orgpipeline_api.run_report import AlertType, RunReport, RunRow, TerminationReport, assess, without_values

QUARANTINED = [{"type": "FileQuarantined", "message": "1 file(s) quarantined: orders_2.csv", "value": 1.0}]


def row(status: str, minutes_ago: int, **fields: Any) -> RunRow:
    finished = datetime(2026, 1, 1, 12, tzinfo=UTC) - timedelta(minutes=minutes_ago)
    base = {"run_id": f"r{minutes_ago}", "table_name": "orders", "command": "run", "status": status}
    return RunRow.model_validate({**base, "finished_at": finished, **fields})


def test_a_quarantined_file_is_a_critical_alert_even_from_a_run_that_read_nothing() -> None:
    runs = [
        row("NoNewFiles", 1, rows_read=0, breaches=QUARANTINED),
        row("Succeeded", 10, rows_read=5, breaches=QUARANTINED),
        row("Succeeded", 20, rows_read=5),
    ]
    found = assess(runs[0], None, runs[1:])
    assert [b.type for b in found.breaches] == ["FileQuarantined"]
    [alert] = found.alerts
    assert (alert.type, alert.severity.value) == (AlertType.FileQuarantined, "critical")
    assert alert.message == "1 file(s) quarantined: orders_2.csv"
    assert alert.since == runs[1].finished_at.isoformat()  # type: ignore[union-attr]


def test_the_newest_run_without_it_clears_it_but_a_run_that_read_nothing_keeps_other_breaches() -> None:
    breach = [{"type": "CompletenessBelowThreshold", "message": "low"}]
    cleared = [
        row("NoNewFiles", 1, rows_read=0),
        row("Succeeded", 10, rows_read=5, breaches=[*breach, *QUARANTINED]),
    ]
    assert [a.type for a in assess(cleared[0], None, cleared[1:]).alerts] == ["CompletenessBelowThreshold"]


def test_store_messages_lose_the_values_they_quote() -> None:
    assert without_values('invalid input syntax for type integer: "4111 1111"') == (
        'invalid input syntax for type integer: "…"'
    )
    assert "secret" not in without_values("duplicate key\nDETAIL:  Key (email)=(secret) already exists.")
    assert "secret" not in without_values('E11000 dup key: { email: "secret" }')


def test_the_operator_reads_the_alert_from_the_termination_message_of_a_run_that_read_nothing() -> None:
    run = RunReport.model_validate(
        {
            "run_id": "r1",
            "org_id": "123",
            "table": "orders",
            "result": "NoNewFiles",
            "started_at": "2026-01-01T00:00:00+00:00",
            "finished_at": "2026-01-01T00:01:00+00:00",
            "files": [],
            "breaches": QUARANTINED,
        }
    )
    back = TerminationReport.from_message(run.termination_message())
    assert back is not None
    [alert] = assess(back).alerts
    assert (alert.type, alert.severity.value) == ("FileQuarantined", "critical")
