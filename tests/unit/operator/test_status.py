"""Pure status logic: Job + pods -> last run; runs -> alerts; conditions per the API conventions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orgpipeline_api import v1alpha1
from orgpipeline_api.v1alpha1_status import OrgPipelineStatus, RunResult
from orgpipeline_operator import status

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "org-123.yaml"
SPEC = v1alpha1.load_manifest(EXAMPLE)[1]
T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z", "2026-01-01T00:10:00Z"


def job(name: str = "ingest-orders-1", outcome: str | None = "Complete", reason: str = "") -> dict[str, Any]:
    conds = (
        [{"type": outcome, "status": "True", "reason": reason, "lastTransitionTime": T1}] if outcome else []
    )
    st: dict[str, Any] = {"startTime": T0, "conditions": conds}
    if outcome == "Complete":
        st["completionTime"] = T1
    return {"metadata": {"name": name, "namespace": "org-123", "labels": {}}, "status": st}


def pod(message: str | None, exit_code: int = 0) -> dict[str, Any]:
    term = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error", "finishedAt": T1}
    if message is not None:
        term["message"] = message
    return {"status": {"containerStatuses": [{"name": "orgpipeline", "state": {"terminated": term}}]}}


def report(**kw: Any) -> str:
    base = {
        "runId": "r1",
        "orgId": "123",
        "table": "orders",
        "result": "Succeeded",
        "files": ["orders_1.csv"],
        "rowsRead": 10,
        "inserted": 7,
        "updated": 2,
        "deleted": 0,
        "unchanged": 1,
        "rejected": 0,
        "qualityScore": 0.99,
        "completenessScore": 1.0,
        "errorRatePercent": 0.0,
        "breaches": [],
        "startedAt": T0,
        "finishedAt": T1,
        "error": None,
    }
    base.update(kw)
    return json.dumps(base)


def test_running_job_has_no_result() -> None:
    assert status.last_run_from_job(job(outcome=None), []) is None


def test_termination_message_becomes_last_run() -> None:
    run = status.last_run_from_job(job(), [pod(report())])
    assert run is not None
    assert (run.result, run.rows_read, run.inserted, run.quality_score) == (RunResult.Succeeded, 10, 7, 0.99)
    assert run.files == ["orders_1.csv"] and run.job == "ingest-orders-1" and run.finished_at == T1
    assert (run.postgres_bytes, run.mongo_bytes) == (None, None)  # a report of an older release


def test_the_reported_storage_sizes_reach_the_last_run() -> None:
    run = status.last_run_from_job(job(), [pod(report(postgresBytes=81920, mongoBytes=40960))])
    assert run is not None and (run.postgres_bytes, run.mongo_bytes) == (81920, 40960)


def test_failed_job_without_message_is_failed_with_reason() -> None:
    run = status.last_run_from_job(job(outcome="Failed", reason="BackoffLimitExceeded"), [pod(None, 1)])
    assert run is not None and run.result == RunResult.Failed
    assert "BackoffLimitExceeded" in (run.error or "") and "exit code 1" in (run.error or "")


def test_garbage_message_does_not_crash() -> None:
    run = status.last_run_from_job(job(), [pod("panic: something {not json")])
    assert run is not None and run.result == RunResult.Succeeded


def test_malformed_or_oversized_report_is_a_failed_run_with_its_reason() -> None:
    cut = report(files=["f" * 5000])[:4096]  # what the kubelet keeps of an oversized message
    for message, reason in ((cut, "unreadable result"), (report(rowsRead=-1), "unreadable result")):
        run = status.last_run_from_job(job(), [pod(message)])
        assert run is not None and run.result == RunResult.Failed
        assert reason in (run.error or ""), run.error
        st = _status_with(message)
        healthy = st.condition(status.HEALTHY)
        assert [a.type for a in st.alerts] == ["RunFailed"] and "unreadable result" in st.alerts[0].message
        assert healthy is not None and healthy.status == "False"


def _status_with(run_json: str, old: OrgPipelineStatus | None = None, now: str = T2) -> OrgPipelineStatus:
    run = status.last_run_from_job(job(), [pod(run_json)])
    assert run is not None
    obs = status.Observation(
        generation=1,
        database=status.Check(True, "Provisioned"),
        resources=status.Check(True, "Applied"),
        runs={"orders": run},
    )
    return status.compute_status(SPEC, old or OrgPipelineStatus(), obs, now)


def test_quality_below_threshold_raises_critical_alert_and_summary() -> None:
    st = _status_with(report(qualityScore=0.5))
    assert [(a.type, a.table, a.severity.value) for a in st.alerts] == [
        ("QualityBelowThreshold", "orders", "critical")
    ]
    assert st.active_alerts == 1 and st.quality_score == 0.5 and st.last_run_time == T1
    healthy = st.condition(status.HEALTHY)
    assert healthy is not None and healthy.status == "False" and healthy.reason == "AlertsActive"
    ready = st.condition(status.READY)
    assert ready is not None and ready.status == "True"


def test_reported_breaches_become_alerts() -> None:
    breach = {"type": "ErrorRateAboveThreshold", "message": "5% rejected", "value": 5, "threshold": 1}
    st = _status_with(report(breaches=[breach], errorRatePercent=5.0))
    assert [a.type for a in st.alerts] == ["ErrorRateAboveThreshold"]
    assert st.alerts[0].message == "5% rejected"


def test_failed_run_raises_run_failed() -> None:
    st = _status_with(report(result="Failed", error="S3 unreachable"))
    assert [a.type for a in st.alerts] == ["RunFailed"] and "S3 unreachable" in st.alerts[0].message


def test_alert_keeps_since_and_clears_when_a_later_run_is_good() -> None:
    first = _status_with(report(qualityScore=0.5), now=T1)
    again = _status_with(report(qualityScore=0.4), old=first, now=T2)
    assert again.alerts[0].since == first.alerts[0].since
    good = _status_with(report(qualityScore=0.99), old=again)
    assert good.alerts == [] and good.active_alerts == 0


def test_condition_transition_time_moves_only_on_change() -> None:
    conds = status.set_condition([], "Ready", True, "Reconciled", "", 1, T0)
    conds = status.set_condition(conds, "Ready", True, "Reconciled", "", 2, T1)
    assert conds[0].last_transition_time == T0 and conds[0].observed_generation == 2
    conds = status.set_condition(conds, "Ready", False, "ApplyFailed", "boom", 2, T2)
    assert conds[0].last_transition_time == T2 and conds[0].reason == "ApplyFailed"


def test_unchanged_status_needs_no_patch() -> None:
    st = _status_with(report())
    raw = status.dump(st)
    obs = status.Observation(
        generation=1, database=status.Check(True, "Provisioned"), resources=status.Check(True, "Applied")
    )
    again = status.compute_status(SPEC, status.parse(raw), obs, "2030-01-01T00:00:00Z")
    assert status.status_patch(raw, again) is None


def test_invalid_spec_is_a_false_condition() -> None:
    obs = status.Observation(generation=3, spec_error=status.Check(False, "InvalidSpec", "spec.x: bad"))
    st = status.compute_status(None, OrgPipelineStatus(), obs, T0)
    ready = st.condition(status.READY)
    assert ready is not None and (ready.status, ready.reason, ready.observed_generation) == (
        "False",
        "InvalidSpec",
        3,
    )


def test_removed_table_drops_its_status_and_alerts() -> None:
    st = _status_with(report(qualityScore=0.1))
    spec = SPEC.model_copy(update={"tables": [SPEC.tables[1]]})
    obs = status.Observation(
        generation=2, database=status.Check(True, "Provisioned"), resources=status.Check(True, "Applied")
    )
    after = status.compute_status(spec, st, obs, T2)
    assert [t.name for t in after.tables] == ["customers"] and after.alerts == []


def test_gauges() -> None:
    g = status.gauges(_status_with(report()))
    assert g["ready"] is True and g["rows"]["inserted"] == 7 and g["lastSuccess"] is not None


def test_run_now_annotation_values() -> None:
    from orgpipeline_operator import runs

    assert runs.requested_tables(" orders, customers ,orders,") == ["orders", "customers"]
    assert runs.requested_tables("") == [] and runs.requested_tables("*") == ["*"]


def test_stored_values_in_store_errors_stay_out_of_last_run_and_conditions() -> None:
    """A run that failed on a value reports the table, column and reason; the value (a card number,
    an email) never reaches lastRun.error, the RunFailed alert or a condition."""
    secrets = ("4111-1111-1111-1111", "alice@example.com", "Alice Liddell")
    errors = (
        'database error: invalid input syntax for type integer: "4111-1111-1111-1111"',
        'database error: duplicate key value violates unique constraint "k"\n'
        "DETAIL:  Key (email)=(alice@example.com) already exists.",
        "E11000 duplicate key error collection: orgraw_1.c index: _id_ dup key:"
        " { _id: \"alice@example.com\" }, full error: {'name': 'Alice Liddell'}",
    )
    for error in errors:
        run = status.last_run_from_job(job(), [pod(report(result="Failed", error=error))])
        assert run is not None and run.error
        assert not any(s in run.error for s in secrets), run.error
        assert run.error.split(":")[0] in error  # the reason is still there
        failed = status.last_run_from_job(
            job(outcome="Failed", reason="BackoffLimitExceeded"), [pod(error, 1)]
        )
        assert failed is not None and not any(s in (failed.error or "") for s in secrets), failed.error
        st = _status_with(report(result="Failed", error=error))
        assert not any(s in a.message for a in st.alerts for s in secrets)
    conds = status.set_condition([], "DatabaseReady", False, "X", errors[0], 1, T1)
    assert "4111" not in conds[0].message and "invalid input syntax for type integer" in conds[0].message
