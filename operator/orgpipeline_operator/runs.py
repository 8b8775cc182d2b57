"""Runs: the run-now annotation makes one-off Jobs; finished Jobs flow back into the status.

A finished Job's result is its container's termination message (the data plane's compact JSON);
when there is none (killed, deadline, image trouble), the Job's Failed condition and the
container's exit code say why. The result lands in status.tables[].lastRun and may raise alerts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from orgpipeline_api import triggers, v1alpha1
from orgpipeline_api.run_report import AlertType, RunResult
from orgpipeline_api.v1alpha1 import OrgPipelineSpec
from orgpipeline_api.v1alpha1_status import LastRun, OrgPipelineStatus

from orgpipeline_operator import (
    backoff,
    builders,
    cache,
    kube,
    metrics,
    naming,
    ownership,
    retention_runs,
    runtime,
    status,
)
from orgpipeline_operator.runtime import Runtime, StatusWrite, log


def requested_tables(value: str | None) -> list[str]:
    """`orders` or `orders,customers` or `*` (every table) -> table names, in order, without repeats."""
    names = [n.strip() for n in (value or "").split(",") if n.strip()]
    return list(dict.fromkeys(names))


def refused_run(uid: str, org_id: str) -> str | None:
    """Why the OrgPipeline may not start runs (None: it may). It must be the org id's recorded owner
    with the namespace the operator made for it: a refused OrgPipeline's Job would run in the
    owner's namespace with the owner's credentials, and one stopped by a namespace someone else
    made would write into it. A refusal, not a retry: a handler still retrying holds the
    finalizer of an OrgPipeline being deleted."""
    owner = cache.CACHE.org_owner_record(org_id)
    if owner is not None and owner.uid != uid:
        return f"orgId {org_id} belongs to OrgPipeline {owner.name}"
    if owner is None or owner.namespace_uid is None:
        return f"orgId {org_id} is not (yet) reconciled for this OrgPipeline (see its Ready condition)"
    return None


RUN_NOW_RETRIES = backoff.Streak(first=1.0, cap=30.0)
"""Run-now Job creations that failed in a row, per OrgPipeline: each retry waits longer (from
ORGPIPELINE_RETRY_SECONDS, doubling to 30 s, jittered), so an unreachable API server or a namespace
still being made is not asked at a fixed pace by every org at once."""


def run_now(
    rt: Runtime,
    name: str,
    uid: str,
    spec_raw: Mapping[str, Any],
    value: str | None,
    active: Iterable[str],
    body: Mapping[str, Any],
) -> list[str]:
    """Creates one Job per requested table unless one is already running; returns the Jobs made.

    `active` are the tables with a running Job (from the Jobs index): like the CronJob's
    concurrencyPolicy Forbid, a second run of a table never overlaps the first. The Job's name is
    derived from the request (`naming.manual_job_name`: uid, table, when the annotation was
    written), so running this twice for one request (a repeated event, a cache that has not yet
    seen the first Job) meets AlreadyExists and makes no second Job.
    """
    tables = requested_tables(value)
    if not tables:
        return []
    spec = OrgPipelineSpec.model_validate(dict(spec_raw))
    if tables == ["*"]:
        tables = [t.name for t in spec.tables]
    target = builders.Target(name, uid, spec, rt.job_settings)
    running = set(active)
    metadata = body.get("metadata") or {}
    requested_at = naming.run_now_requested_at(metadata)
    trigger = triggers.run_now_request(metadata.get("annotations") or {}, naming.run_now_manager(metadata))
    made = []
    for table_name in tables:
        table = spec.table(table_name)
        if table is None:
            runtime.warn(body, reason="RunNowUnknownTable", message=f"no table {table_name!r} in spec.tables")
            continue
        if table_name in running:
            runtime.info(body, reason="RunNowSkipped", message=f"{table_name}: a run is already active")
            continue
        manifest = builders.build_manual_job(target, table, requested_at, trigger)
        try:
            job = rt.kube.create(manifest)
        except kube.ApiError as exc:
            if exc.status == 409 and exc.reason == "AlreadyExists":  # this request's Job: made before
                log.info("%s/%s: run-now Job %s already made", name, table_name, manifest["metadata"]["name"])
                continue
            if exc.transient or exc.status == 404:  # 404: the namespace is not there yet
                wait, _ = RUN_NOW_RETRIES.failed(name, str(exc), first=rt.settings.retry_seconds)
                raise kopf.TemporaryError(f"cannot create the run-now Job: {exc}", delay=wait) from exc
            runtime.warn(body, reason="RunNowFailed", message=f"{table_name}: {exc.message}"[:1000])
            continue
        job_name = job["metadata"]["name"]
        made.append(job_name)
        who = f" for {trigger.user}" if trigger.user else ""
        runtime.info(body, reason="RunNowStarted", message=f"{table_name}: Job {job_name}{who}")
    RUN_NOW_RETRIES.succeeded(name)
    return made


def record_finished_job(rt: Runtime, job: Mapping[str, Any], parent: Mapping[str, Any] | None) -> bool:
    """Reads a finished Job's result into its OrgPipeline's status; False when nothing was to do.

    `parent` is the OrgPipeline as the index last saw it; the write re-reads on a conflict. Only a
    run of the parent's org counts (`is_run_of`): a Job elsewhere with its labels, or one the
    operator did not make, leaves the status alone.
    """
    if parent is None or not is_run_of(job, parent):
        return False
    if retention_runs.is_retention_job(job):
        return retention_runs.record_finished_job(rt, job, parent)
    labels = job["metadata"].get("labels") or {}
    pipeline, table = labels.get(naming.LABEL_PIPELINE), labels.get(naming.LABEL_TABLE)
    if not pipeline or not table or parent is None or status.job_finished(dict(job)) is None:
        return False
    name = job["metadata"]["name"]
    raw = dict(parent.get("status") or {})
    known = status.parse(raw).table(table)
    if known and known.last_run and known.last_run.job == name:
        return False  # already recorded (a re-list after a restart, or a later event of the same Job)
    finished_at = (job.get("status") or {}).get("completionTime") or ""
    if known and known.last_run and finished_at and (known.last_run.finished_at or "") > finished_at:
        return False  # an older Job of the history; the newer result stays
    # The status above may lag behind a write of this very run (the Job's next event, or the
    # resync, came before the status did): one recording per Job in this process, or it counts twice.
    if not cache.CACHE.claim_job(pipeline, name):
        return False
    try:
        return _record(rt, job, parent, table)
    except BaseException:
        cache.CACHE.release_job(pipeline, name)
        raise


def is_run_of(job: Mapping[str, Any], parent: Mapping[str, Any]) -> bool:
    """Whether the Job is a run of the OrgPipeline `parent` (ownership.is_org_run, with the uids of
    the CronJobs the operator made for it, as watched)."""
    meta = parent.get("metadata") or {}
    org = str((parent.get("spec") or {}).get("orgId") or "")
    pipeline = str(meta.get("name") or "")
    return ownership.is_org_run(job, org, str(meta.get("uid") or ""), cache.CACHE.cronjob_uids(pipeline))


def _record(rt: Runtime, job: Mapping[str, Any], parent: Mapping[str, Any], table: str) -> bool:
    name = job["metadata"]["name"]
    pods = rt.kube.list("v1", "Pod", job["metadata"]["namespace"], f"batch.kubernetes.io/job-name={name}")
    run = status.last_run_from_job(dict(job), pods)
    if run is None:
        cache.CACHE.release_job(str(job["metadata"]["labels"][naming.LABEL_PIPELINE]), name)
        return False
    metrics.JOB_RESULTS.labels(result=run.result.value).inc()
    metrics.record_run(str((parent.get("spec") or {}).get("orgId") or ""), table, run)
    for breach in run.breaches:  # thresholds and anomalies the run reported, by type
        metrics.RUN_BREACHES.labels(type=breach.type).inc()
    _write_run(rt, parent, table, run)
    return True


def _write_run(rt: Runtime, parent: Mapping[str, Any], table: str, run: LastRun) -> None:
    def compute(obj: Mapping[str, Any], old: OrgPipelineStatus) -> OrgPipelineStatus | None:
        try:
            spec = OrgPipelineSpec.model_validate(dict(obj.get("spec") or {}))
        except ValueError:
            return None
        prev = old.table(table)
        if prev and prev.last_run and not status.is_newer(run, prev.last_run):
            return None
        obs = status.Observation(generation=old.observed_generation, runs={table: run})
        new = status.compute_status(spec, old, obs, status.now_iso())
        metrics.set_org(spec.org_id, status.gauges(new))
        return new

    written = rt.patch_status(parent, compute, "record the run")
    if not isinstance(written, StatusWrite):
        return
    new, meta = written.new, written.obj["metadata"]
    ref = {"apiVersion": v1alpha1.API_VERSION, "kind": v1alpha1.KIND, "metadata": meta}
    if run.result == RunResult.Failed:
        runtime.warn(
            ref, reason="RunFailed", message=f"{table}: job {run.job} failed: {run.error or ''}"[:1000]
        )
    else:
        runtime.info(ref, reason=f"Run{run.result.value}", message=f"{table}: job {run.job}")
    for alert in status.new_alerts(written.old.alerts, new.alerts):
        if alert.type != AlertType.RunFailed:
            runtime.warn(ref, reason=alert.type, message=f"{alert.table}: {alert.message}"[:1000])
    log.info("%s/%s: recorded %s of job %s", meta["name"], table, run.result.value, run.job)
