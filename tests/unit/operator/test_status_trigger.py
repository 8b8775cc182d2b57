"""Who and why of a run, from the data plane's report to the OrgPipeline's last-run status."""

from __future__ import annotations

from orgpipeline_api import triggers
from orgpipeline_api.run_report import TRIGGER_REASON_LIMIT, RunReport, RunResult, TerminationReport
from orgpipeline_operator import status
from test_status import job, pod


def run_report(**kw: object) -> RunReport:
    return RunReport.model_validate(
        {
            "run_id": "r1",
            "org_id": "123",
            "table": "orders",
            "result": RunResult.Succeeded,
            "started_at": "2026-11-28T10:00:00+00:00",
            "finished_at": "2026-11-28T10:01:00+00:00",
            **kw,
        }
    )


def test_a_run_now_run_reaches_the_last_run_status() -> None:
    report = run_report(trigger=triggers.Trigger.run_now, triggered_by="alice", trigger_reason="late file")
    last = status.last_run_from_job(job(), [pod(report.termination_message())])
    assert last is not None
    assert (last.trigger, last.triggered_by, last.trigger_reason) == ("run-now", "alice", "late file")
    camel = last.model_dump(by_alias=True, exclude_none=True)
    assert {"trigger", "triggeredBy", "triggerReason"} <= set(camel)


def test_the_compact_form_cuts_a_long_reason_and_keeps_the_rest() -> None:
    report = run_report(trigger=triggers.Trigger.schedule, trigger_reason="r" * 5000)
    compact = TerminationReport.from_message(report.termination_message())
    assert compact is not None and compact.trigger == "schedule" and compact.triggered_by is None
    assert compact.trigger_reason == "r" * TRIGGER_REASON_LIMIT
    assert report.as_json()["trigger_reason"] == "r" * 5000  # the whole reason stays in the full report


def test_a_report_from_an_older_job_has_no_trigger() -> None:
    last = status.last_run_from_job(job(), [pod('{"runId": "r1", "result": "Succeeded"}')])
    assert last is not None and last.trigger is None and last.triggered_by is None
