"""The run contract: one report in each of its forms, and one rule set for breaches and alerts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from orgpipeline_api.run_report import (
    TERMINATION_LOG_LIMIT,
    Breach,
    RunReport,
    RunResult,
    RunRow,
    TerminationReport,
    UnreadableReport,
    assess,
)
from orgpipeline_api.v1alpha1 import QualityThresholds


def report(**fields: Any) -> RunReport:
    base: dict[str, Any] = {
        "run_id": "r1",
        "org_id": "123",
        "table": "orders",
        "result": "Succeeded",
        "rows_read": 10,
        "inserted": 10,
        "quality_score": 1.0,
        "completeness_score": 1.0,
        "error_rate_percent": 0.0,
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:01:00+00:00",
    }
    return RunReport.model_validate({**base, **fields})


def test_the_termination_message_reads_back_as_the_same_run() -> None:
    run = report(breaches=[Breach(type="ErrorRateAboveThreshold", message="m", value=5.0, threshold=1.0)])
    back = TerminationReport.from_message(run.termination_message())
    assert back is not None
    assert (back.run_id, back.result, back.rows_read, back.inserted) == ("r1", RunResult.Succeeded, 10, 10)
    assert back.breaches == run.breaches


def test_the_pipeline_runs_row_carries_the_result_and_json_columns() -> None:
    row = report(error="boom", result="Failed").run_row()
    assert row["status"] == "Failed" and row["error"] == "boom" and row["rows_read"] == 10
    assert json.loads(row["breaches"]) == [] and json.loads(row["quality_report"]) is None


@pytest.mark.parametrize(
    "message",
    [
        '{"runId": "r1", "result": "Succeeded", "rowsRead": 1',  # cut by the kubelet
        '{"runId": "r1", "result": "Exploded"}',  # not a result
        '{"runId": "r1", "result": "Succeeded", "rowsRead": -4}',
        '{"runId": "r1", "result": "Succeeded", "files": ["' + "f" * TERMINATION_LOG_LIMIT + '"]}',
    ],
)
def test_a_malformed_or_oversized_report_is_refused_with_a_reason(message: str) -> None:
    with pytest.raises(UnreadableReport) as raised:
        TerminationReport.from_message(message)
    assert str(raised.value)


def test_log_lines_are_no_report() -> None:
    assert TerminationReport.from_message("panic: something {not json") is None
    assert TerminationReport.from_message("") is None and TerminationReport.from_message(None) is None


def test_thresholds_breached_and_their_alerts() -> None:
    run = report(quality_score=0.5, error_rate_percent=5.0)
    found = assess(run, QualityThresholds())
    assert [b.type for b in found.breaches] == ["QualityBelowThreshold", "ErrorRateAboveThreshold"]
    assert [(a.type, a.severity.value) for a in found.alerts] == [
        ("ErrorRateAboveThreshold", "warning"),
        ("QualityBelowThreshold", "critical"),
    ]
    assert found.alerts[1].message == "overall quality score 0.5 is below 0.95"
    assert assess(report(rows_read=0, quality_score=0.0), QualityThresholds()).breaches == []


def test_a_reported_breach_wins_over_the_same_threshold_checked_again() -> None:
    reported = Breach(type="QualityBelowThreshold", message="as the job saw it", value=0.5, threshold=0.9)
    found = assess(report(quality_score=0.5, breaches=[reported]), QualityThresholds())
    assert found.breaches == [reported]


def row(status: str, minutes_ago: int, **fields: Any) -> RunRow:
    finished = datetime(2026, 1, 1, 12, tzinfo=UTC) - timedelta(minutes=minutes_ago)
    base = {"run_id": f"r{minutes_ago}", "table_name": "orders", "command": "run", "status": status}
    return RunRow.model_validate({**base, "finished_at": finished, **fields})


def test_an_alert_lasts_since_the_start_of_its_streak_and_a_load_clears_no_breach() -> None:
    breach = [{"type": "CompletenessBelowThreshold", "message": "low"}]
    runs = [
        row("Interrupted", 1, error="killed"),
        row("Succeeded", 5, command="load"),
        row("Succeeded", 10, rows_read=5, breaches=breach),
        row("Succeeded", 20, rows_read=5, breaches=breach),
        row("Succeeded", 30, rows_read=5),
    ]
    alerts = assess(runs[0], None, runs[1:]).alerts
    assert [a.type for a in alerts] == ["RunFailed", "CompletenessBelowThreshold"]
    assert (
        alerts[0].message == "run run r1 interrupted: killed"
        and alerts[0].since == runs[0].finished_at.isoformat()
    )  # type: ignore[union-attr]
    assert alerts[1].since == runs[3].finished_at.isoformat()  # type: ignore[union-attr]
