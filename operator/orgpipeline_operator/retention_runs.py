"""The org's retention CronJob: its finished Jobs flow back into status.retention and the metrics.

The retention pod (`orgpipeline retention ... -o json`) writes one compact JSON object to its
termination message: {"kind": "retention", "result", "versionsDeactivated", "auditRowsRemoved",
"startedAt", "finishedAt", "error"}. Without one (killed, deadline), the Job's Failed condition and
the container's exit code say why, as for the tables' runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import kopf
from orgpipeline_api import v1alpha1
from orgpipeline_api.run_report import RunResult
from orgpipeline_api.v1alpha1 import OrgPipelineSpec
from orgpipeline_api.v1alpha1_status import RetentionRun
from pydantic import ValidationError

from orgpipeline_operator import kube, metrics, naming, runtime, status
from orgpipeline_operator.runtime import Runtime, log


def is_retention_job(job: Mapping[str, Any]) -> bool:
    labels = (job.get("metadata") or {}).get("labels") or {}
    return labels.get(naming.LABEL_ORG_COMPONENT) == naming.COMPONENT_RETENTION


def retention_run_from_job(job: dict[str, Any], pods: list[dict[str, Any]]) -> RetentionRun | None:
    """The RetentionRun of a finished retention Job and its pods; None while it runs."""
    outcome = status.job_finished(job)
    if outcome is None:
        return None
    jstatus = job.get("status") or {}
    finished = jstatus.get("completionTime") or next(
        (
            c.get("lastTransitionTime")
            for c in jstatus.get("conditions") or []
            if c.get("type") == outcome and c.get("status") == "True"
        ),
        None,
    )
    base: dict[str, Any] = {
        "job": job["metadata"]["name"],
        "startedAt": jstatus.get("startTime"),
        "finishedAt": finished,
    }
    terminated = sorted(
        (t for p in pods if (t := status._terminated(p))), key=lambda t: t.get("finishedAt") or ""
    )
    term: dict[str, Any] = terminated[-1] if terminated else {}
    report = next((r for t in reversed(terminated) if (r := _report(t.get("message")))), None)
    if report is not None:
        data = {**base, **{k: v for k, v in report.items() if v is not None and k in _REPORT_FIELDS}}
        if outcome == "Failed" or data.get("result") != RunResult.Succeeded.value:
            data["result"] = RunResult.Failed.value
            data.setdefault("error", status._failure_reason(job, term))
        try:
            return RetentionRun.model_validate(data)
        except ValidationError as exc:
            return RetentionRun.model_validate(
                {**base, "result": "Failed", "error": f"unreadable result: {exc.errors()[0]['msg']}"}
            )
    if outcome == "Complete":
        return RetentionRun.model_validate({**base, "result": "Succeeded"})
    return RetentionRun.model_validate(
        {**base, "result": "Failed", "error": status._failure_reason(job, term)}
    )


def _report(message: str | None) -> dict[str, Any] | None:
    """The retention report in a termination message (after any log lines), or None."""
    text = (message or "").strip()
    start = text.find("{")
    if start < 0:
        return None
    try:
        value = json.loads(text[start:])
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("kind") != naming.COMPONENT_RETENTION:
        return None
    return value


_REPORT_FIELDS = frozenset(
    {"result", "versionsDeactivated", "auditRowsRemoved", "startedAt", "finishedAt", "error"}
)


def _recorded(parent_status: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    """Whether the status already holds this Job's run, or a later one (the Job is history)."""
    known = status.parse(dict(parent_status)).retention
    last = known.last_run if known else None
    finished_at = (job.get("status") or {}).get("completionTime") or ""
    if last is None:
        return False
    return last.job == job["metadata"]["name"] or bool(finished_at and (last.finished_at or "") > finished_at)


def record_finished_job(rt: Runtime, job: Mapping[str, Any], parent: Mapping[str, Any] | None) -> bool:
    """Reads a finished retention Job into its OrgPipeline's status.retention and the metrics; False
    when nothing was to do (already recorded, an older Job of the history, still running)."""
    if parent is None or status.job_finished(dict(job)) is None:
        return False
    if _recorded(parent.get("status") or {}, job):
        return False
    name = job["metadata"]["name"]
    pods = rt.kube.list("v1", "Pod", job["metadata"]["namespace"], f"batch.kubernetes.io/job-name={name}")
    run = retention_run_from_job(dict(job), pods)
    if run is None:
        return False
    return _write(rt, parent, job, run)


def _write(rt: Runtime, parent: Mapping[str, Any], job: Mapping[str, Any], run: RetentionRun) -> bool:
    """Patches the run into the status; counts it in the metrics only once its patch landed, so a
    Job read twice (a watch event from before the status patch, another operator) counts once.
    False when a fresher status already holds it."""
    meta = parent["metadata"]
    current, raw, rv = dict(parent), dict(parent.get("status") or {}), meta.get("resourceVersion")
    for _attempt in range(5):
        try:
            spec = OrgPipelineSpec.model_validate(dict(current.get("spec") or {}))
        except ValueError:
            return False
        old = status.parse(raw)
        obs = status.Observation(generation=old.observed_generation, retention_run=run)
        new = status.compute_status(spec, old, obs, status.now_iso())
        patch = status.status_patch(raw, new)
        if patch is None:
            return False
        try:
            rt.kube.patch_status(meta["name"], patch, rv)
        except kube.ApiError as exc:
            if exc.status == 409:
                fresh = rt.kube.get(v1alpha1.API_VERSION, v1alpha1.KIND, meta["name"])
                if fresh is None or _recorded(fresh.get("status") or {}, job):
                    return False
                current, raw, rv = (
                    fresh,
                    dict(fresh.get("status") or {}),
                    fresh["metadata"]["resourceVersion"],
                )
                continue
            if exc.status == 404:
                return False
            raise kopf.TemporaryError(
                f"cannot record the retention run: {exc}", delay=rt.settings.retry_seconds
            ) from exc
        metrics.record_retention_run(
            spec.org_id, run.result.value, run.versions_deactivated, run.audit_rows_removed
        )
        metrics.set_org(spec.org_id, status.gauges(new))
        ref = {"apiVersion": v1alpha1.API_VERSION, "kind": v1alpha1.KIND, "metadata": current["metadata"]}
        if run.result == RunResult.Failed:
            runtime.warn(ref, reason="RetentionFailed", message=f"job {run.job}: {run.error or ''}"[:1000])
        else:
            runtime.info(
                ref,
                reason="RetentionSucceeded",
                message=f"job {run.job}: {run.versions_deactivated} versions deactivated, "
                f"{run.audit_rows_removed} audit rows removed",
            )
        log.info("%s: recorded retention %s of job %s", meta["name"], run.result.value, run.job)
        return True
    return False
