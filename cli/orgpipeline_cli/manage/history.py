"""`orgpipeline quality` and `audit`: what the data looked like over time and how it changed.

`quality` reads the per-file reports in raw_<table>_quality_metrics; `audit` reads
raw_<table>_change_log and, for one record, every version document of its key in the MongoDB raw
landing (which keeps them all, loaded or not).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer
from orgpipeline_api import store_names
from rich.text import Text

from orgpipeline_cli.manage import aggregate, charts, common, queries
from orgpipeline_cli.manage.common import (
    OrgOpt,
    OutputOpt,
    TableOpt,
    UserError,
    console,
    days_option,
    fmt_num,
    fmt_time,
    print_json,
    resolve_orgs,
    resolve_tables,
    stores,
)
from orgpipeline_cli.output import Format, Table

SCORE_LABELS = [
    ("overall_quality_score", "overall quality"),
    ("completeness_score", "completeness"),
    ("validity_score", "validity"),
    ("consistency_score", "consistency"),
]
METADATA_FIELDS = queries.NON_BUSINESS_COLUMNS | {
    "_id",
    "table",
    "previous_data_hash",
    "file_id",
    "batch_id",
    "run_id",
    "loaded_at",
}


# --- quality -----------------------------------------------------------------------------------


def quality(
    org_id: str | None = OrgOpt,
    table: str | None = TableOpt,
    days: int = days_option(30, "whose files are reported"),
    output: Format = OutputOpt,
) -> None:
    """Quality report (scores, issues, recommendations) and its daily trend.

    The seed's quality report over the period: records, errors and warnings, the overall,
    completeness, validity and consistency scores, the issues with counts and percentages of
    records, recommendations; per table; and the trend per day (UTC) with a sparkline.

    Examples: `orgpipeline quality --org-id 123 --days 30`,
    `orgpipeline quality --org-id 123 --table orders --days 7`, `orgpipeline quality --days 7`.
    """
    if table is not None and org_id is None:
        raise UserError("--table needs --org-id")
    now = datetime.now(UTC)
    start = queries.since(days, now)
    orgs = []
    with stores(need_mongo=False) as s:
        for org in resolve_orgs(s.conn, org_id):
            samples: list[queries.QualitySample] = []
            per_table = {}
            for t in resolve_tables(s.conn, org, table):
                mine = queries.quality_samples(s.org(org), org, t, start)
                samples.extend(mine)
                per_table[t] = aggregate.combine_reports(x.report for x in mine)
            orgs.append(
                {
                    "org_id": org,
                    "report": aggregate.combine_reports(x.report for x in samples),
                    "tables": per_table,
                    "trend": aggregate.daily_trend(samples, days, now.date()),
                }
            )
    document = {"days": days, "since": start, "table": table, "orgs": orgs}
    if output == Format.json:
        print_json(document)
        return
    out = console()
    for entry in orgs:
        _render_quality(out, entry, days)
    if not orgs:
        out.print("No org has a schema yet.")


def _render_quality(out: Any, org: dict[str, Any], days: int) -> None:
    report = org["report"]
    scores = Table(title=f"Quality report: org {org['org_id']}, last {days} day(s)", show_header=False)
    scores.add_column("metric", style="bold")
    scores.add_column("value", justify="right")
    scores.add_column("")
    scores.add_row("total records", str(report["total_records"]), "")
    scores.add_row("records with errors", str(report["records_with_errors"]), "")
    scores.add_row("records with warnings", str(report["records_with_warnings"]), "")
    for key, label in SCORE_LABELS:
        scores.add_row(label, f"{report[key]:.4f}", charts.bar(report[key]))
    scores.add_row("error rate", f"{report['error_rate_percent']:.2f}%", "")
    out.print(scores)
    if report["quality_issues"]:
        issues = Table(title="Quality issues")
        for name in ("issue", "field", "count", "% of records"):
            issues.add_column(name, justify="right" if name in ("count", "% of records") else "left")
        for i in report["quality_issues"]:
            issues.add_row(i["issue_type"], i["field"] or "-", str(i["count"]), f"{i['percentage']:.2f}")
        out.print(issues)
    for line in report["recommendations"]:
        out.print(f"  • {line}", markup=False)
    if len(org["tables"]) > 1:
        per = Table(title="Per table")
        for name in ("table", "records", "errors", "overall", "completeness", "error %"):
            per.add_column(name, justify="left" if name == "table" else "right")
        for name, r in org["tables"].items():
            per.add_row(
                name,
                str(r["total_records"]),
                str(r["records_with_errors"]),
                f"{r['overall_quality_score']:.4f}",
                f"{r['completeness_score']:.4f}",
                f"{r['error_rate_percent']:.2f}",
            )
        out.print(per)
    _render_trend(out, org["trend"])


def _render_trend(out: Any, trend: list[dict[str, Any]]) -> None:
    values = [d["overall_quality_score"] for d in trend]
    present = [v for v in values if v is not None]
    if not present:
        out.print("Trend: no files in the period.")
        return
    line = charts.sparkline(values)
    out.print(
        f"Trend (overall quality per day, {trend[0]['day']} .. {trend[-1]['day']}, "
        f"min {min(present):.4f}, max {max(present):.4f}):"
    )
    out.print(f"  {line}")
    daily = Table(title="Days with files")
    for name in ("day", "records", "errors", "overall", "", "error %"):
        daily.add_column(name, justify="left" if name in ("day", "") else "right")
    for d in trend:
        if d["overall_quality_score"] is None:
            continue
        daily.add_row(
            d["day"],
            str(d["total_records"]),
            str(d["records_with_errors"]),
            f"{d['overall_quality_score']:.4f}",
            charts.bar(d["overall_quality_score"], 10),
            f"{d['error_rate_percent']:.2f}",
        )
    out.print(daily)


# --- audit -------------------------------------------------------------------------------------


def audit(
    org_id: str | None = OrgOpt,
    table: str | None = TableOpt,
    composite_key: str | None = typer.Option(
        None, "--composite-key", help="One record's key: print its full version history (ignores --days)."
    ),
    limit: int = typer.Option(100, "--limit", min=1, max=100000, help="Most recent changes to list."),
    days: int | None = typer.Option(
        None,
        "--days",
        min=1,
        max=3650,
        help="Period in days, ending now, whose changes are listed; default: all history.",
    ),
    output: Format = OutputOpt,
) -> None:
    """Change history; with --composite-key, one record's full version history.

    Change history from the change log: newest first, with version, change type, changed fields,
    user, trigger (schedule, run-now, file-arrival or manual) with its reason, and source file;
    and per table the period's INSERT/UPDATE/DELETE counts. With --composite-key, that record's
    every version from the MongoDB raw landing, with the old and new value of each changed field,
    and the trigger of the run that wrote it.

    Examples: `orgpipeline audit --org-id 123 --limit 100`,
    `orgpipeline audit --org-id 123 --composite-key org_123_orders_ORD001_CUST456_2024-01-15`.
    """
    if table is not None and org_id is None:
        raise UserError("--table needs --org-id")
    start = queries.since(days) if days is not None else None
    with stores(need_mongo=composite_key is not None) as s:
        orgs = resolve_orgs(s.conn, org_id)
        if composite_key is not None:
            _record_history(s, orgs, table, composite_key, output)
            return
        changes: list[dict[str, Any]] = []
        counts: list[dict[str, Any]] = []
        for org in orgs:
            for t in resolve_tables(s.conn, org, table):
                for row in queries.change_log(s.org(org), org, t, start, limit):
                    changes.append({"org_id": org, **row})
                counts.append({"org_id": org, "table": t, **queries.change_counts(s.org(org), org, t, start)})
    changes.sort(key=lambda c: c["change_timestamp"], reverse=True)
    document = {"days": days, "since": start, "limit": limit, "counts": counts, "changes": changes[:limit]}
    if output == Format.json:
        print_json(document)
        return
    _render_changes(document)


def _render_changes(document: dict[str, Any]) -> None:
    out = console()
    period = f"in the last {document['days']} day(s)" if document["days"] else "in all history"
    counts = Table(title=f"Changes {period}")
    for name in ("org", "table", "INSERT", "UPDATE", "DELETE"):
        counts.add_column(name, justify="left" if name in ("org", "table") else "right")
    for c in document["counts"]:
        counts.add_row(c["org_id"], c["table"], *(str(c.get(k, 0)) for k in ("INSERT", "UPDATE", "DELETE")))
    out.print(counts)
    log = Table(title=f"Change log (newest {document['limit']})")
    for name in (
        "time",
        "org",
        "table",
        "composite key",
        "version",
        "change",
        "changed fields",
        "user",
        "trigger",
        "file",
    ):
        log.add_column(name)
    for c in document["changes"]:
        log.add_row(
            fmt_time(c["change_timestamp"]),
            c["org_id"],
            c["table_name"],
            c["composite_key"],
            f"{c['old_version'] or '-'} → {c['new_version']}",
            c["change_type"],
            ", ".join(c.get("changed_fields") or []),
            c.get("changed_by_user_id") or "",
            Text(trigger_text(c.get("trigger"))),
            _file_line(c.get("source_info") or {}),
        )
    out.print(log)


def trigger_text(trigger: dict[str, Any] | None) -> str:
    """`run-now: corrected file` — what started the change's run and why (the user has a column)."""
    if not trigger:
        return ""
    reason = trigger.get("reason")
    return f"{trigger.get('type') or ''}: {reason}" if reason else str(trigger.get("type") or "")


def _file_line(source: dict[str, Any]) -> str:
    """`file:line` of a version's source (the change log's source_info, a document's source_file)."""
    return f"{source.get('filename') or source.get('name') or ''}:{source.get('line') or ''}".strip(":")


def _record_history(s: Any, orgs: list[str], table: str | None, key: str, output: Format) -> None:
    for org in orgs:
        for t in resolve_tables(s.conn, org, table):
            if not queries.key_belongs(org, t, key):
                continue
            docs = queries.version_history(s.mongo(org)[store_names.mongo_collection(org, t)], key)
            if docs:
                versions = _versions(docs)
                if output == Format.json:
                    print_json({"org_id": org, "table": t, "composite_key": key, "versions": versions})
                else:
                    _render_versions(org, t, key, versions)
                return
    raise UserError(
        f"no record with composite key {key!r}" + (f" in org {orgs[0]}" if len(orgs) == 1 else "")
    )


def _versions(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    previous: dict[str, Any] = {}
    for doc in docs:
        data = {k: v for k, v in doc.items() if k not in METADATA_FIELDS}
        changes = {f: {"old": previous.get(f), "new": data.get(f)} for f in doc.get("changed_fields") or []}
        source = (doc.get("audit_trail") or {}).get("source_file") or {}
        out.append(
            {
                "version": doc["version"],
                "change_type": doc.get("change_type"),
                "changed_fields": doc.get("changed_fields") or [],
                "changes": changes,
                "data": data,
                "data_hash": doc.get("data_hash"),
                "changed_by_user_id": doc.get("changed_by_user_id"),
                "ingested_at": doc.get("ingested_at"),
                "loaded_at": doc.get("loaded_at"),
                "postgres_status": doc.get("postgres_status"),
                "is_active": doc.get("is_active"),
                "quality": doc.get("data_quality"),
                "source_file": source,
                "run_id": doc.get("run_id"),
                "trigger": ((doc.get("audit_trail") or {}).get("processing_metadata") or {}).get("trigger"),
            }
        )
        previous = data
    return out


def _render_versions(org: str, table: str, key: str, versions: list[dict[str, Any]]) -> None:
    out = console()
    history = Table(title=f"Version history of {key} (org {org}, table {table})")
    columns = (
        "version",
        "change",
        "changes",
        "user",
        "trigger",
        "ingested",
        "postgres",
        "active",
        "quality",
        "file",
    )
    for name in columns:
        history.add_column(name)
    for v in versions:
        if v["change_type"] == "INSERT":
            changes = ", ".join(f"{k}={val}" for k, val in v["data"].items())
        else:
            changes = "; ".join(f"{f}: {c['old']} → {c['new']}" for f, c in v["changes"].items())
        quality = v["quality"] or {}
        history.add_row(
            str(v["version"]),
            v["change_type"] or "",
            changes,
            v["changed_by_user_id"] or "",
            Text(trigger_text(v["trigger"])),
            fmt_time(v["ingested_at"]),
            v["postgres_status"] or "",
            "yes" if v["is_active"] else "no",
            f"{quality.get('status', '')} {fmt_num(quality.get('quality_score'))}",
            _file_line(v["source_file"]),
        )
    out.print(history)


def register(app: typer.Typer) -> None:
    common.register(app, "quality", quality)
    common.register(app, "audit", audit)
