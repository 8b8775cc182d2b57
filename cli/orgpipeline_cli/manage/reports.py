"""`orgpipeline status`, `metrics` and `alerts`: how the orgs' pipelines are doing.

All three read the runs table each org's schema holds (`pipeline_runs`, one row per ingest, load or
run command); `metrics` adds MongoDB's load times and the stores' sizes; `alerts` prefers what the
operator wrote to the OrgPipeline status when a cluster is reachable.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import typer
from orgpipeline_api import store_names
from orgpipeline_api.run_report import FAILED_RESULTS
from rich.text import Text

from orgpipeline_cli.main import CommandFailed
from orgpipeline_cli.manage import aggregate, cluster, common, queries
from orgpipeline_cli.manage.common import (
    EXIT_FOUND,
    OrgOpt,
    OutputOpt,
    UserError,
    console,
    days_option,
    fmt_bytes,
    fmt_num,
    fmt_time,
    print_json,
    resolve_orgs,
    stores,
)
from orgpipeline_cli.output import Format, Table

RECENT_RUNS = 20
ALERT_HISTORY_RUNS = 500


def _by_table(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        out.setdefault(str(run["table_name"]), []).append(run)
    return out


# --- status ------------------------------------------------------------------------------------


def status(
    org_id: str | None = OrgOpt,
    days: int = days_option(7, "whose runs are shown"),
    output: Format = OutputOpt,
) -> None:
    """Recent runs per org and table: result, rows, duration, quality.

    Per org and table: the last run and its result, the period's runs, rows and failures, the
    latest quality score; then the most recent runs.

    Examples: `orgpipeline status`, `orgpipeline status --org-id 123 --days 7`.
    """
    with stores(need_mongo=False) as s:
        start = queries.since(days)
        orgs = []
        for org in resolve_orgs(s.conn, org_id):
            runs = queries.runs(s.org(org), org, start)
            grouped = _by_table(runs)
            tables = sorted(set(queries.list_tables(s.conn, org)) | set(grouped))
            orgs.append(
                {
                    "org_id": org,
                    "tables": [aggregate.table_summary(t, grouped.get(t, [])) for t in tables],
                    "recent_runs": [_run_view(r) for r in runs[:RECENT_RUNS]],
                }
            )
    document = {"days": days, "since": start, "orgs": orgs}
    if output == Format.json:
        print_json(document)
        return
    _render_status(document)


def _run_view(run: dict[str, Any]) -> dict[str, Any]:
    view = {k: v for k, v in run.items() if k != "breaches"}
    view["duration_seconds"] = aggregate.duration_seconds(run)
    view["breaches"] = [b.get("type") for b in run.get("breaches") or [] if isinstance(b, dict)]
    return view


def _result_style(result: Any) -> Text | str:
    if result in FAILED_RESULTS:
        return Text(str(result), style="red")
    if result in aggregate.FINISHED_OK:
        return Text(str(result), style="green")
    return "-" if result is None else str(result)


def _render_status(document: dict[str, Any]) -> None:
    out = console()
    summary = Table(title=f"Pipeline status, last {document['days']} day(s)")
    for name in (
        "org",
        "table",
        "last result",
        "last finished",
        "duration s",
        "runs",
        "ok",
        "failed",
        "rows read",
        "rejected",
        "quality",
    ):
        summary.add_column(
            name,
            justify="right"
            if name in ("runs", "ok", "failed", "rows read", "rejected", "quality", "duration s")
            else "left",
        )
    recent = Table(title=f"Recent runs (newest {RECENT_RUNS})")
    for name in (
        "started",
        "org",
        "table",
        "command",
        "trigger",
        "result",
        "rows",
        "new",
        "changed",
        "rejected",
        "duration s",
        "quality",
        "error",
    ):
        recent.add_column(name)
    for org in document["orgs"]:
        if not org["tables"]:
            summary.add_row(org["org_id"], "-", "no tables yet", *[""] * 8)
        for t in org["tables"]:
            summary.add_row(
                org["org_id"],
                t["table"],
                _result_style(t["last_result"]),
                fmt_time(t["last_finished_at"]),
                fmt_num(t["last_duration_seconds"]),
                str(t["runs"]),
                str(t["succeeded"]),
                str(t["failed"]),
                str(t["rows_read"]),
                str(t["rows_rejected"]),
                fmt_num(t["quality_score"]),
            )
        for r in org["recent_runs"]:
            recent.add_row(
                fmt_time(r["started_at"]),
                org["org_id"],
                r["table_name"],
                r["command"],
                Text(" ".join(filter(None, [r.get("trigger"), r.get("user_id")]))),
                _result_style(r["status"]),
                str(r["rows_read"]),
                str(r["inserted"]),
                str(r["updated"]),
                str(r["rejected"]),
                fmt_num(r["duration_seconds"]),
                fmt_num(r["quality_score"]),
                (r["error"] or "")[:80],
            )
    out.print(summary)
    if recent.row_count:
        out.print(recent)
    elif not document["orgs"]:
        out.print("No org has a schema yet.")


# --- metrics -----------------------------------------------------------------------------------


def metrics(
    org_id: str | None = OrgOpt,
    days: int = days_option(7, "over which rates and growth are computed"),
    output: Format = OutputOpt,
) -> None:
    """Ingestion rate, latency, error and success rates, storage and growth per org.

    Per org: ingestion rate (rows read per minute of ingesting runs), latency from a file's
    pickup to its versions' availability in PostgreSQL (`run`: the file's time; `ingest` then
    `load`: each version's landing to its load), error rate (rejected rows per 100 read) and success
    rate (of finished runs), storage (PostgreSQL schema incl. indexes + MongoDB collections) and
    its growth over the period: from the sizes the runs measure and record per table and day (the
    last day recorded before the period to the latest), or, before two days are recorded, an
    estimate (versions landed in the period x average bytes per version); `growth_source` says
    which.

    Examples: `orgpipeline metrics --org-id 123 --days 30`, `orgpipeline metrics --days 7`.
    """
    with stores() as s:
        start = queries.since(days)
        orgs = [_org_metrics(s, org, start, days) for org in resolve_orgs(s.conn, org_id)]
    document = {"days": days, "since": start, "orgs": orgs}
    if output == Format.json:
        print_json(document)
        return
    _render_metrics(document)


def _org_metrics(s: Any, org: str, start: Any, days: int) -> dict[str, Any]:
    tables = queries.list_tables(s.conn, org)
    stats = aggregate.run_stats(queries.runs(s.org(org), org, start))
    run_files = queries.run_file_latencies(s.org(org), org, start)
    lat = queries.latency(
        (s.mongo(org)[store_names.mongo_collection(org, t)] for t in tables), start, run_files
    )
    store = queries.storage(s.org(org), s.mongo(org), org, tables, start)
    per_version = store.total_bytes / store.versions if store.versions else None
    growth = round(per_version * store.versions_in_period) if per_version is not None else 0
    measured = _measured_storage(s.org(org), org, tables, start)
    grown = [t for t in measured if t["growth_bytes"] is not None]
    if grown:  # growth from the recorded daily sizes, not the estimate
        growth = sum(t["growth_bytes"] for t in grown)
        per_day = sum(t["growth_bytes_per_day"] or 0 for t in grown)
    else:
        per_day = growth / days
    return {
        "org_id": org,
        "tables": tables,
        **stats,
        "latency_versions": lat.versions,
        "latency_mean_seconds": round(lat.mean_seconds, 3) if lat.mean_seconds is not None else None,
        "latency_max_seconds": round(lat.max_seconds, 3) if lat.versions else None,
        "storage": {
            "postgres_bytes": store.postgres_bytes,
            "mongo_bytes": store.mongo_bytes,
            "total_bytes": store.total_bytes,
            "versions": store.versions,
            "versions_in_period": store.versions_in_period,
            "bytes_per_version": round(per_version, 1) if per_version is not None else None,
            "growth_bytes": growth,
            "growth_bytes_per_day": round(per_day),
            "growth_source": "measured" if grown else "estimate",
            "tables": measured,
        },
    }


def _measured_storage(conn: Any, org: str, tables: list[str], start: Any) -> list[dict[str, Any]]:
    """Per table: the latest recorded sizes (`orgpipeline_jobs.storage`, one row per day, written
    by the runs) and the growth from the last day recorded before the period to the latest."""
    from orgpipeline_jobs import storage

    out = []
    for table in tables:
        days = storage.history(conn, org, table, start.date())
        if not days:
            continue
        change = storage.growth(days)
        out.append(
            {
                "table": table,
                **days[-1].as_json(),
                "days_recorded": len(days),
                "growth_since": change.first.day.isoformat() if change else None,
                "growth_bytes": change.bytes if change else None,
                "growth_bytes_per_day": round(change.bytes_per_day)
                if change and change.bytes_per_day is not None
                else None,
            }
        )
    return out


def _render_metrics(document: dict[str, Any]) -> None:
    table = Table(title=f"Pipeline metrics, last {document['days']} day(s)")
    columns = (
        "org",
        "runs",
        "success %",
        "rows read",
        "error %",
        "rows/min",
        "latency s (mean/max)",
        "storage PG",
        "storage Mongo",
        "versions",
        "growth/day",
    )
    for name in columns:
        table.add_column(name, justify="left" if name == "org" else "right")
    for m in document["orgs"]:
        st = m["storage"]
        table.add_row(
            m["org_id"],
            str(m["runs"]),
            fmt_num(m["success_rate_percent"]),
            str(m["rows_read"]),
            fmt_num(m["error_rate_percent"]),
            fmt_num(m["ingestion_rows_per_minute"], 6),
            f"{fmt_num(m['latency_mean_seconds'])} / {fmt_num(m['latency_max_seconds'])}",
            fmt_bytes(st["postgres_bytes"]),
            fmt_bytes(st["mongo_bytes"]),
            f"{st['versions']} (+{st['versions_in_period']})",
            fmt_bytes(st["growth_bytes_per_day"]),
        )
    out = console()
    out.print(table)
    if not document["orgs"]:
        out.print("No org has a schema yet.")


# --- alerts ------------------------------------------------------------------------------------


class Severity(StrEnum):
    warning = "warning"
    critical = "critical"
    high = "high"


def alerts(
    org_id: str | None = OrgOpt,
    severity: Severity | None = typer.Option(
        None, "--severity", help="Only alerts of this severity: warning or critical ('high' means critical)."
    ),
    output: Format = OutputOpt,
) -> None:
    """Active alerts: failed runs and breached quality thresholds, per org and table.

    With KUBECONFIG set and the cluster reachable, an org's alerts are those the operator wrote to
    its OrgPipeline's status (source "cluster"); otherwise, and for orgs without an OrgPipeline,
    they are computed from the runs table (source "runs"). Exits 1 when any alert is listed, so a
    script can page on it.
    """
    view = cluster.read_orgpipelines()
    wanted = None if severity is None else ("critical" if severity == Severity.high else severity.value)
    found: list[dict[str, Any]] = []
    with stores(need_mongo=False) as s:
        known = set(queries.list_orgs(s.conn))
        if org_id is not None:
            if org_id not in known and org_id not in view.objects:
                raise UserError(f"unknown org {org_id!r}: no schema in PostgreSQL and no OrgPipeline")
            orgs = [org_id]
        else:
            orgs = sorted(known | set(view.objects))
        for org in orgs:
            if org in view.objects:
                found.extend(cluster.status_alerts(org, view.objects[org]))
            else:
                history = queries.runs(s.org(org), org, None, limit=ALERT_HISTORY_RUNS)
                found.extend(aggregate.alerts_from_runs(org, history))
    found = aggregate.filter_severity(found, wanted)
    source = "OrgPipeline status where one exists, else runs" if view.reachable else f"runs ({view.reason})"
    if output == Format.json:
        print_json({"cluster": view.reachable, "cluster_note": view.reason or None, "alerts": found})
    else:
        _render_alerts(found, source)
    if found:
        raise CommandFailed(f"{len(found)} active alert(s)", EXIT_FOUND)


def _render_alerts(found: list[dict[str, Any]], source: str) -> None:
    out = console()
    if not found:
        out.print(f"No active alerts (from {source}).")
        return
    table = Table(title="Active alerts", caption=f"from {source}")
    for name in ("severity", "org", "table", "type", "since", "message", "from"):
        table.add_column(name)
    for a in found:
        colour = "red" if a["severity"] == "critical" else "yellow"
        table.add_row(
            Text(str(a["severity"]), style=colour),
            a["org_id"],
            a["table"],
            a["type"],
            str(a["since"] or ""),
            a["message"],
            a["source"],
        )
    out.print(table)


def register(app: typer.Typer) -> None:
    common.register(app, "status", status)
    common.register(app, "metrics", metrics)
    common.register(app, "alerts", alerts)
