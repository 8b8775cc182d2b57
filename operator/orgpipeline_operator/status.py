"""Pure status logic: finished Jobs -> per-table last runs; runs + spec -> alerts; conditions.

Nothing here talks to the API. The reconcile and the Job watcher call these functions with what
they observed and write back whatever differs from the current status (nothing, when nothing did).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orgpipeline_api.run_report import RunResult, TerminationReport, UnreadableReport, assess, without_values
from orgpipeline_api.v1alpha1 import OrgPipelineSpec
from orgpipeline_api.v1alpha1_status import (
    Alert,
    Condition,
    ConditionStatus,
    LastRun,
    OrgPipelineStatus,
    RetentionRun,
    RetentionStatus,
    TableStatus,
)
from pydantic import ValidationError

from orgpipeline_operator import naming

READY = "Ready"
DATABASE_READY = "DatabaseReady"
RESOURCES_READY = "ResourcesReady"
SUSPENDED = "Suspended"
HEALTHY = "Healthy"
CONDITION_ORDER = (READY, DATABASE_READY, RESOURCES_READY, SUSPENDED, HEALTHY)


def now_iso(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- Job results -------------------------------------------------------------------------------


def _job_condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


def job_finished(job: dict[str, Any]) -> str | None:
    """'Complete' or 'Failed' once the Job controller has decided, else None."""
    for type_ in ("Complete", "Failed"):
        if _job_condition(job, type_):
            return type_
    return None


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for cs in statuses:
        if cs.get("name") == naming.CONTAINER or len(statuses) == 1:
            term = (cs.get("state") or {}).get("terminated")
            if term:
                return dict(term)
    return None


def last_run_from_job(job: dict[str, Any], pods: list[dict[str, Any]]) -> LastRun | None:
    """The table's LastRun from a finished Job and its pods; None while the Job is running."""
    outcome = job_finished(job)
    if outcome is None:
        return None
    name = job["metadata"]["name"]
    jstatus = job.get("status") or {}
    # The newest pod that terminated carries the result of the last attempt.
    terminated = [(p, t) for p in pods if (t := _terminated(p))]
    terminated.sort(key=lambda pt: pt[1].get("finishedAt") or "")
    report: TerminationReport | None = None
    unreadable: str | None = None
    term: dict[str, Any] = {}
    for _pod, t in reversed(terminated):
        term = t
        try:
            report = TerminationReport.from_message(t.get("message"))
        except UnreadableReport as exc:
            unreadable = f"unreadable result: {exc}"
            break
        if report:
            break
    finished = jstatus.get("completionTime") or (_job_condition(job, outcome) or {}).get("lastTransitionTime")
    started = jstatus.get("startTime")
    if report:
        try:
            return _reported_run(name, report, outcome, started, finished, _failure_reason(job, term))
        except ValidationError as exc:  # within the compact form's limits, beyond the status' ones
            unreadable = f"unreadable result: {exc.errors()[0]['msg']}"
    if outcome == "Complete" and unreadable is None:
        return LastRun(job=name, result=RunResult.Succeeded, started_at=started, finished_at=finished)
    reasons = [unreadable, _failure_reason(job, term) if outcome == "Failed" or not unreadable else None]
    error = without_values("; ".join(r for r in reasons if r))[:4096]
    return LastRun(job=name, result=RunResult.Failed, started_at=started, finished_at=finished, error=error)


def _reported_run(
    job: str, report: TerminationReport, outcome: str, started: str | None, finished: str | None, why: str
) -> LastRun:
    """The LastRun of a Job whose pod left a report; a Job the controller failed failed, whatever
    the report says."""
    result = RunResult.Failed if outcome == "Failed" else report.result
    return LastRun(
        job=job,
        run_id=report.run_id,
        result=result,
        files=report.files[:100],
        rows_read=report.rows_read,
        inserted=report.inserted,
        updated=report.updated,
        deleted=report.deleted,
        unchanged=report.unchanged,
        rejected=report.rejected,
        quality_score=report.quality_score,
        completeness_score=report.completeness_score,
        error_rate_percent=report.error_rate_percent,
        breaches=report.breaches[:20],
        started_at=report.started_at or started,
        finished_at=report.finished_at or finished,
        error=without_values(report.error) if report.error else (why if result == RunResult.Failed else None),
        trigger=report.trigger,
        triggered_by=report.triggered_by,
        trigger_reason=report.trigger_reason,
        business_keys=report.business_keys[:8],
        business_keys_detected=report.business_keys_detected,
        postgres_bytes=report.postgres_bytes,
        mongo_bytes=report.mongo_bytes,
    )


def _failure_reason(job: dict[str, Any], term: dict[str, Any]) -> str:
    cond = _job_condition(job, "Failed") or {}
    parts = [p for p in (cond.get("reason"), cond.get("message")) if p]
    if term:
        parts.append(
            f"container exit code {term.get('exitCode')}"
            + (f" ({term['reason']})" if term.get("reason") else "")
        )
        msg = without_values((term.get("message") or "").strip())
        if msg:
            parts.append(msg[-500:])
    return "; ".join(parts) or "the job failed"


def is_newer(run: LastRun, than: LastRun | None) -> bool:
    if than is None:
        return True
    if run.job == than.job:
        return run != than
    return (run.finished_at or "") >= (than.finished_at or "")


# --- alerts ------------------------------------------------------------------------------------


def compute_alerts(
    spec: OrgPipelineSpec, tables: list[TableStatus], old: list[Alert], now: str
) -> list[Alert]:
    """Active alerts from each table's last run; an alert that persists keeps its `since`."""
    since = {(a.type, a.table): a.since for a in old}
    alerts = []
    for ts in tables:
        if ts.last_run is None:
            continue
        for raised in assess(ts.last_run, spec.quality_thresholds).alerts:
            alerts.append(
                Alert(
                    severity=raised.severity,
                    type=raised.type,
                    table=ts.name,
                    message=raised.message,
                    since=since.get((raised.type, ts.name)) or raised.since or now,
                )
            )
    return alerts


# --- conditions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """The outcome of one aspect of a reconcile, for its condition."""

    ok: bool
    reason: str
    message: str = ""


@dataclass
class Observation:
    """What a reconcile found; None for an aspect it did not look at (keeps the old condition)."""

    generation: int | None
    spec_error: Check | None = None
    database: Check | None = None
    resources: Check | None = None
    runs: dict[str, LastRun] = field(default_factory=dict)
    children_hash: str | None = None
    retention_run: RetentionRun | None = None


def set_condition(
    conds: list[Condition],
    type_: str,
    ok: bool | None,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[Condition]:
    status = ConditionStatus.unknown if ok is None else ConditionStatus.true if ok else ConditionStatus.false
    old = next((c for c in conds if c.type == type_), None)
    ltt = old.last_transition_time if old is not None and old.status == status else now
    new = Condition(
        type=type_,
        status=status,
        observed_generation=generation,
        last_transition_time=ltt,
        reason=reason,
        message=without_values(message)[:32768],
    )
    rest = [c for c in conds if c.type != type_] + [new]
    return sorted(rest, key=lambda c: CONDITION_ORDER.index(c.type) if c.type in CONDITION_ORDER else 99)


def compute_status(
    spec: OrgPipelineSpec | None, old: OrgPipelineStatus, obs: Observation, now: str
) -> OrgPipelineStatus:
    """The whole new status from the old one and what was observed."""
    conds = list(old.conditions)
    gen = obs.generation
    if spec is None:  # the spec passed the schema but not the model: a False condition, no crash
        err = obs.spec_error or Check(False, "InvalidSpec", "the spec is invalid")
        conds = set_condition(conds, READY, False, err.reason, err.message, gen, now)
        return old.model_copy(update={"conditions": conds, "observed_generation": gen})

    tables = []
    for t in spec.tables:
        prev = old.table(t.name)
        run = obs.runs.get(t.name) or (prev.last_run if prev else None)
        tables.append(
            TableStatus(
                name=t.name,
                cron_job=naming.cronjob(t.name),
                schedule=t.schedule,
                suspended=bool(spec.suspend or t.suspend),
                **_business_keys(t.business_keys, run, prev),
                last_run=run,
            )
        )
    alerts = compute_alerts(spec, tables, old.alerts, now)

    for type_, check in ((DATABASE_READY, obs.database), (RESOURCES_READY, obs.resources)):
        if check is not None:
            conds = set_condition(conds, type_, check.ok, check.reason, check.message, gen, now)
    suspended = spec.suspend
    conds = set_condition(
        conds,
        SUSPENDED,
        suspended,
        "SpecSuspended" if suspended else "Active",
        "spec.suspend is true: every CronJob is suspended" if suspended else "",
        gen,
        now,
    )
    conds = set_condition(
        conds,
        HEALTHY,
        not alerts,
        "AlertsActive" if alerts else "NoAlerts",
        "; ".join(f"{a.table}: {a.type}" for a in alerts),
        gen,
        now,
    )
    ready = _ready(obs, conds)
    conds = set_condition(conds, READY, ready.ok, ready.reason, ready.message, gen, now)

    runs = [t.last_run for t in tables if t.last_run]
    scores = [r.quality_score for r in runs if r.quality_score is not None]
    finished = [r.finished_at for r in runs if r.finished_at]
    succeeded = [r.finished_at for r in runs if r.finished_at and r.result != RunResult.Failed]
    return OrgPipelineStatus(
        observed_generation=gen if obs.resources is not None else old.observed_generation,
        namespace=naming.namespace(spec.org_id),
        conditions=conds,
        tables=tables,
        alerts=alerts,
        table_count=len(spec.tables),
        quality_score=min(scores) if scores else None,
        active_alerts=len(alerts),
        last_run_time=max(finished) if finished else None,
        last_success_time=max(succeeded) if succeeded else None,
        children_hash=obs.children_hash or old.children_hash,
        retention=RetentionStatus(
            cron_job=naming.RETENTION_CRONJOB,
            schedule=spec.retention.schedule,
            suspended=spec.suspend,
            last_run=obs.retention_run or (old.retention.last_run if old.retention else None),
        ),
    )


def _business_keys(given: list[str], run: LastRun | None, prev: TableStatus | None) -> dict[str, Any]:
    """The keys in use: the spec's, else those the last run detected (kept from the status while
    a run reports none: a failed run, or one that found no new file)."""
    if given:
        return {"business_keys": list(given), "business_keys_detected": False}
    if run is not None and run.business_keys:
        return {"business_keys": run.business_keys, "business_keys_detected": True}
    if prev is not None and prev.business_keys_detected:
        return {"business_keys": prev.business_keys, "business_keys_detected": True}
    return {"business_keys": [], "business_keys_detected": False}


def _ready(obs: Observation, conds: list[Condition]) -> Check:
    if obs.spec_error is not None:
        return obs.spec_error
    for type_ in (DATABASE_READY, RESOURCES_READY):
        c = next((c for c in conds if c.type == type_), None)
        if c is None:
            return Check(False, "Reconciling", f"{type_} not yet observed")
        if c.status != ConditionStatus.true:
            return Check(False, c.reason, c.message)
    return Check(True, "Reconciled", "namespace, credentials, database and CronJobs are in place")


def dump(status: OrgPipelineStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, mode="json", exclude_none=True)


def parse(raw: dict[str, Any] | None) -> OrgPipelineStatus:
    """The current status as a model; an unreadable one counts as empty (it will be rewritten)."""
    try:
        return OrgPipelineStatus.model_validate(raw or {})
    except ValidationError:
        return OrgPipelineStatus()


def status_patch(old_raw: dict[str, Any] | None, new: OrgPipelineStatus) -> dict[str, Any] | None:
    """A merge patch turning the old status into the new one, or None when they are equal."""
    old = {k: v for k, v in (old_raw or {}).items()}
    new_raw = dump(new)
    if old == new_raw:
        return None
    patch: dict[str, Any] = {k: v for k, v in new_raw.items() if old.get(k) != v}
    for key in old:
        if key not in new_raw:
            patch[key] = None
    return patch


def new_alerts(old: list[Alert], new: list[Alert]) -> list[Alert]:
    seen = {(a.type, a.table) for a in old}
    return [a for a in new if (a.type, a.table) not in seen]


def gauges(status: OrgPipelineStatus) -> dict[str, Any]:
    """The per-org metric values of a status (see metrics.set_org)."""
    rows: dict[str, int] = {}
    for t in status.tables:
        if t.last_run:
            for kind, value in (
                ("rowsRead", t.last_run.rows_read),
                ("inserted", t.last_run.inserted),
                ("updated", t.last_run.updated),
                ("deleted", t.last_run.deleted),
                ("unchanged", t.last_run.unchanged),
                ("rejected", t.last_run.rejected),
            ):
                rows[kind] = rows.get(kind, 0) + value
    last_success = None
    if status.last_success_time:
        try:
            last_success = datetime.fromisoformat(status.last_success_time.replace("Z", "+00:00")).timestamp()
        except ValueError:
            last_success = None
    ready = status.condition(READY)
    return {
        "retention": status.retention.last_run if status.retention else None,
        "tables": {t.name: t.last_run for t in status.tables if t.last_run},
        "ready": ready is not None and ready.status == ConditionStatus.true,
        "alerts": status.active_alerts,
        "quality": status.quality_score,
        "lastSuccess": last_success,
        "rows": rows,
    }
