"""Pure aggregation behind the management commands: no servers, unit-tested directly.

- Quality: the data plane writes one report (the seed's shape) per file of a run; a period's report
  weighs each file's scores by its rows and sums the issue counts. Issues and recommendations are
  rebuilt by `orgpipeline_jobs.quality.QualityAccumulator` itself, so they read exactly as a run's.
- Runs: success and error rates, rows per minute.
- Alerts from the runs, for when no cluster is reachable: the run contract's rules applied to the
  runs (the data plane checked the thresholds against the manifest and reported the breaches).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from orgpipeline_api.run_report import FAILED_RESULTS, RunRow, assess
from orgpipeline_jobs import quality

from orgpipeline_cli.manage.queries import QualitySample

SCORES = ("overall_quality_score", "completeness_score", "validity_score", "consistency_score")
FINISHED_OK = {"Succeeded", "NoNewFiles"}


# --- quality -----------------------------------------------------------------------------------


def combine_reports(reports: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One report for many: counts summed, scores weighted by records, issues and recommendations
    rebuilt from the summed issue counts."""
    total = errors = warnings = 0
    weighted = dict.fromkeys(SCORES, 0.0)
    issues: Counter[tuple[str, str | None]] = Counter()
    for report in reports:
        n = int(report.get("total_records") or 0)
        total += n
        errors += int(report.get("records_with_errors") or 0)
        warnings += int(report.get("records_with_warnings") or 0)
        for name in SCORES:
            value = report.get(name)
            weighted[name] += n * float(value if value is not None else 1.0)
        for issue in report.get("quality_issues") or []:
            issues[(str(issue["issue_type"]), issue.get("field"))] += int(issue["count"])
    acc = quality.QualityAccumulator(completeness_columns=1, rows_read=total)
    acc.issues = issues
    rebuilt = acc.report()
    out: dict[str, Any] = {
        "total_records": total,
        "records_with_errors": errors,
        "records_with_warnings": warnings,
    }
    for name in SCORES:
        out[name] = round(weighted[name] / total, 4) if total else 1.0
    out["error_rate_percent"] = round(100.0 * errors / total, 4) if total else 0.0
    out["quality_issues"] = rebuilt["quality_issues"]
    out["recommendations"] = rebuilt["recommendations"]
    return out


def days_of(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def daily_trend(samples: Sequence[QualitySample], days: int, today: date) -> list[dict[str, Any]]:
    """One entry per calendar day (UTC) of the period, oldest first; days without data have no
    records and null scores."""
    by_day: dict[date, list[dict[str, Any]]] = {}
    for s in samples:
        by_day.setdefault(s.measured_at.astimezone(UTC).date(), []).append(s.report)
    out = []
    for day in days_of(today - timedelta(days=max(days, 1) - 1), today):
        reports = by_day.get(day)
        if not reports:
            out.append(
                {
                    "day": day.isoformat(),
                    "total_records": 0,
                    "records_with_errors": 0,
                    "overall_quality_score": None,
                    "completeness_score": None,
                    "error_rate_percent": None,
                }
            )
            continue
        r = combine_reports(reports)
        out.append(
            {
                "day": day.isoformat(),
                "total_records": r["total_records"],
                "records_with_errors": r["records_with_errors"],
                "overall_quality_score": r["overall_quality_score"],
                "completeness_score": r["completeness_score"],
                "error_rate_percent": r["error_rate_percent"],
            }
        )
    return out


# --- runs --------------------------------------------------------------------------------------


def duration_seconds(run: Mapping[str, Any]) -> float | None:
    start, end = run.get("started_at"), run.get("finished_at")
    if isinstance(start, datetime) and isinstance(end, datetime):
        return max(0.0, (end - start).total_seconds())
    return None


def run_stats(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts and rates over runs: success rate over finished runs, error rate over rows read,
    ingestion rate as rows read per minute of ingesting runs."""
    finished = [r for r in runs if r.get("status") != "Running"]
    ok = sum(1 for r in finished if r.get("status") in FINISHED_OK)
    failed = sum(1 for r in finished if r.get("status") in FAILED_RESULTS)
    rows = sum(int(r.get("rows_read") or 0) for r in finished)
    rejected = sum(int(r.get("rejected") or 0) for r in finished)
    ingesting = [r for r in finished if r.get("command") in ("ingest", "run")]
    minutes = sum((duration_seconds(r) or 0.0) for r in ingesting) / 60.0
    ingest_rows = sum(int(r.get("rows_read") or 0) for r in ingesting)
    durations = [d for r in finished if (d := duration_seconds(r)) is not None]
    return {
        "runs": len(runs),
        "running": len(runs) - len(finished),
        "succeeded": ok,
        "failed": failed,
        "success_rate_percent": round(100.0 * ok / len(finished), 2) if finished else None,
        "rows_read": rows,
        "rows_rejected": rejected,
        "error_rate_percent": round(100.0 * rejected / rows, 4) if rows else None,
        "versions_written": sum(
            int(r.get("inserted") or 0) + int(r.get("updated") or 0) + int(r.get("deleted") or 0)
            for r in finished
        ),
        "ingestion_rows_per_minute": round(ingest_rows / minutes, 1) if minutes > 0 else None,
        "mean_run_seconds": round(sum(durations) / len(durations), 3) if durations else None,
    }


def table_summary(table: str, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Status line of one table: its last run and the period's counts (runs newest first)."""
    last = next((r for r in runs if r.get("status") != "Running"), None)
    scored = next((r for r in runs if r.get("quality_score") is not None), None)
    stats = run_stats(runs)
    return {
        "table": table,
        "last_run": last.get("run_id") if last else None,
        "last_command": last.get("command") if last else None,
        "last_result": last.get("status") if last else None,
        "last_finished_at": last.get("finished_at") if last else None,
        "last_duration_seconds": duration_seconds(last) if last else None,
        "last_error": last.get("error") if last else None,
        "quality_score": scored.get("quality_score") if scored else None,
        **{k: stats[k] for k in ("runs", "running", "succeeded", "failed", "rows_read", "rows_rejected")},
    }


# --- alerts ------------------------------------------------------------------------------------


def alerts_from_runs(org_id: str, runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Active alerts of one org from its runs (newest first), per table, by the run contract's rules
    (`orgpipeline_api.run_report.assess`): RunFailed when its last finished run failed, and the
    breaches its last run that read rows reported, each since the start of its unbroken streak."""
    by_table: dict[str, list[RunRow]] = {}
    for run in runs:
        if run.get("status") != "Running":
            row = RunRow.model_validate(run)
            by_table.setdefault(row.table_name, []).append(row)
    alerts = []
    for table, finished in sorted(by_table.items()):
        for raised in assess(finished[0], None, finished[1:]).alerts:
            alerts.append(
                {
                    "org_id": org_id,
                    "severity": raised.severity.value,
                    "type": raised.type,
                    "table": table,
                    "message": raised.message,
                    "since": raised.since,
                    "source": "runs",
                }
            )
    return alerts


def filter_severity(alerts: Iterable[dict[str, Any]], severity: str | None) -> list[dict[str, Any]]:
    if severity is None:
        return list(alerts)
    return [a for a in alerts if a.get("severity") == severity]
