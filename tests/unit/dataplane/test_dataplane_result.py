"""The termination-log object the operator reads: its keys, and always under 4096 bytes."""

from __future__ import annotations

import json
from pathlib import Path

from orgpipeline_api.run_report import RunReport
from orgpipeline_jobs import pipeline


def result(files: int) -> RunReport:
    return RunReport.model_validate(
        {
            "run_id": "r1",
            "org_id": "123",
            "table": "orders",
            "result": "Succeeded",
            "files": [
                {
                    "name": f"orders_{i:05d}_with_a_rather_long_name.csv",
                    "uri": "u",
                    "file_id": "f",
                    "status": "ingested",
                }
                for i in range(files)
            ],
            "rows_read": 10,
            "inserted": 8,
            "updated": 1,
            "deleted": 0,
            "unchanged": 0,
            "rejected": 1,
            "quality_score": 0.9,
            "completeness_score": 1.0,
            "error_rate_percent": 10.0,
            "breaches": [
                {"type": "ErrorRateAboveThreshold", "message": "m", "value": 10.0, "threshold": 1.0}
            ],
            "started_at": "s",
            "finished_at": "f",
            "error": "x" * 5000,
        }
    )


def test_keys_match_the_contract(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    pipeline.write_termination_log(result(2), str(path))
    data = json.loads(path.read_text())
    assert set(data) == {
        "runId",
        "orgId",
        "table",
        "result",
        "files",
        "rowsRead",
        "inserted",
        "updated",
        "deleted",
        "unchanged",
        "rejected",
        "qualityScore",
        "completenessScore",
        "errorRatePercent",
        "breaches",
        "startedAt",
        "finishedAt",
        "error",
        "trigger",
        "triggeredBy",
        "triggerReason",
        "businessKeys",
        "businessKeysDetected",
        "postgresBytes",
        "mongoBytes",
    }
    assert data["files"] == [
        "orders_00000_with_a_rather_long_name.csv",
        "orders_00001_with_a_rather_long_name.csv",
    ]


def test_many_files_are_truncated_under_the_limit() -> None:
    text = result(500).termination_message()
    compact = json.loads(text)
    assert len(text.encode()) < 4096
    assert compact["files"][-1].endswith("more")
