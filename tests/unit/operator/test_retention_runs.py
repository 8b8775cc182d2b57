"""Pure retention logic: the retention pod's report -> status.retention.lastRun; the spec's keys and
the retention CronJob in the status."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orgpipeline_api import v1alpha1
from orgpipeline_api.v1alpha1_status import OrgPipelineStatus, RetentionRun, RunResult
from orgpipeline_jobs import retention
from orgpipeline_operator import retention_runs, status

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "org-123.yaml"
SPEC = v1alpha1.load_manifest(EXAMPLE)[1]
T0, T1 = "2026-01-01T03:00:00Z", "2026-01-01T03:00:09Z"


def job(outcome: str | None = "Complete") -> dict[str, Any]:
    conds = [{"type": outcome, "status": "True", "lastTransitionTime": T1}] if outcome else []
    st: dict[str, Any] = {"startTime": T0, "conditions": conds}
    if outcome == "Complete":
        st["completionTime"] = T1
    labels = {"orgpipeline.io/component": "retention"}
    return {"metadata": {"name": "retention-1", "namespace": "org-123", "labels": labels}, "status": st}


def pod(message: str | None, exit_code: int = 0) -> dict[str, Any]:
    term: dict[str, Any] = {"exitCode": exit_code, "finishedAt": T1}
    if message is not None:
        term["message"] = message
    return {"status": {"containerStatuses": [{"name": "orgpipeline", "state": {"terminated": term}}]}}


def counts(versions: int, change_log: int, runs: int) -> dict[str, Any]:
    return {
        "table": "orders",
        "versions_deactivated": versions,
        "change_log_deleted": change_log,
        "rejected_rows_deleted": 0,
        "quality_metrics_deleted": 0,
        "runs_deleted": runs,
    }


def test_the_retention_report_sums_the_tables_and_the_operator_reads_it() -> None:
    started = datetime(2026, 1, 1, 3, tzinfo=UTC)
    report = retention.termination_report([counts(3, 4, 1), counts(2, 0, 5)], started)
    assert report["versionsDeactivated"] == 5 and report["auditRowsRemoved"] == 10
    run = retention_runs.retention_run_from_job(job(), [pod(json.dumps(report))])
    assert run is not None and run.result == RunResult.Succeeded
    assert (run.versions_deactivated, run.audit_rows_removed) == (5, 10)
    assert run.job == "retention-1" and run.started_at == "2026-01-01T03:00:00Z"


def test_a_failed_retention_keeps_its_error() -> None:
    report = retention.termination_report([], datetime.now(UTC), "postgres: cannot connect")
    run = retention_runs.retention_run_from_job(job("Failed"), [pod(json.dumps(report), 3)])
    assert run is not None and run.result == RunResult.Failed
    assert run.error == "postgres: cannot connect"


def test_no_message_and_a_running_job() -> None:
    assert retention_runs.retention_run_from_job(job(None), []) is None
    done = retention_runs.retention_run_from_job(job(), [pod(None)])
    assert done is not None and done.result == RunResult.Succeeded and done.versions_deactivated == 0
    failed = retention_runs.retention_run_from_job(job("Failed"), [pod("boom", 1)])
    assert failed is not None and failed.result == RunResult.Failed and "exit code 1" in (failed.error or "")
    assert retention_runs.is_retention_job(job()) and not retention_runs.is_retention_job({"metadata": {}})


def test_status_shows_the_retention_cronjob_and_keeps_its_last_run() -> None:
    run = RetentionRun(job="retention-1", result=RunResult.Succeeded, versions_deactivated=2, finished_at=T1)
    obs = status.Observation(generation=1, retention_run=run)
    first = status.compute_status(SPEC, OrgPipelineStatus(), obs, T1)
    assert first.retention is not None and first.retention.cron_job == "retention"
    assert first.retention.schedule == "@daily" and first.retention.last_run == run
    later = status.compute_status(SPEC, first, status.Observation(generation=1), T1)
    assert later.retention is not None and later.retention.last_run == run
    suspended = SPEC.model_copy(update={"suspend": True})
    assert status.compute_status(suspended, later, status.Observation(generation=2), T1).retention.suspended  # type: ignore[union-attr]


def test_status_shows_each_tables_business_keys_and_whether_detected() -> None:
    new = status.compute_status(SPEC, OrgPipelineStatus(), status.Observation(generation=1), T1)
    keys = {t.name: (t.business_keys, t.business_keys_detected) for t in new.tables}
    for table in SPEC.tables:
        assert keys[table.name] == (list(table.business_keys), False)


def test_keys_a_run_detected_show_as_detected_and_stay_after_a_run_without_keys() -> None:
    tables = [t.model_copy(update={"business_keys": []}) for t in SPEC.tables]
    spec = SPEC.model_copy(update={"tables": tables})
    name = tables[0].name
    report = {"result": "Succeeded", "businessKeys": ["order_id"], "businessKeysDetected": True}
    pod_ = pod(json.dumps(report))
    run = status.last_run_from_job({**job(), "metadata": {"name": "ingest-1", "labels": {}}}, [pod_])
    assert run is not None and run.business_keys == ["order_id"]
    first = status.compute_status(spec, OrgPipelineStatus(), status.Observation(1, runs={name: run}), T1)
    table = first.table(name)
    assert table is not None and (table.business_keys, table.business_keys_detected) == (["order_id"], True)
    quiet = run.model_copy(update={"job": "ingest-2", "business_keys": [], "result": RunResult.NoNewFiles})
    later = status.compute_status(spec, first, status.Observation(1, runs={name: quiet}), T1)
    assert later.table(name).business_keys == ["order_id"]  # type: ignore[union-attr]
