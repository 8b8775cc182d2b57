"""`orgpipeline validate` and `retention`: is PostgreSQL what MongoDB says it is, and keeping it small.

validate streams both sides sorted by (composite key, version) and merge-joins them
(`compare.compare`), so it needs memory for one row per side plus the differences it lists.
retention applies the data plane's own function (`orgpipeline_jobs.retention.apply`) with the
org's policy, or with --dry-run counts what it would change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import typer
from orgpipeline_api import store_names
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from orgpipeline_cli.main import CommandFailed
from orgpipeline_cli.manage import cluster, common, compare, queries
from orgpipeline_cli.manage.common import (
    EXIT_FOUND,
    EXIT_UNAVAILABLE,
    OrgRequiredOpt,
    OutputOpt,
    TableOpt,
    UserError,
    console,
    print_json,
    resolve_orgs,
    resolve_tables,
    stores,
)
from orgpipeline_cli.output import Format, Table

KINDS = ("missing", "extra", "hash_mismatch")


# --- validate ----------------------------------------------------------------------------------


def validate(
    org_id: str = OrgRequiredOpt,
    table: str | None = TableOpt,
    limit: int = typer.Option(100, "--limit", min=0, max=100000, help="Differences listed per table."),
    output: Format = OutputOpt,
) -> None:
    """Compare MongoDB with PostgreSQL per key and version; exit 1 on any difference.

    Every active version MongoDB marks loaded must be an active row of raw_<table> whose business
    columns hash to the version's data_hash. Reports missing (in MongoDB only), extra (in
    PostgreSQL only) and hash_mismatch (a row changed behind the pipeline's back).

    Example: `orgpipeline validate --org-id 123`.
    """
    results = []
    with stores() as s:
        resolve_orgs(s.conn, org_id)
        tables = resolve_tables(s.conn, org_id, table)
        collections = {t: s.mongo(org_id)[store_names.mongo_collection(org_id, t)] for t in tables}
        err = Console(stderr=True)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        ) as progress:
            for t in tables:
                # No total: counting MongoDB's versions first is a pass over every document, and
                # FerretDB 1.x answers count_documents by holding them all in memory (past 12 GB at
                # 1M versions, measured); the exact figures come out of the comparison.
                task = progress.add_task(f"validate {t}", total=None)
                results.append(
                    _validate_table(
                        s.org(org_id), org_id, t, collections[t], limit, partial(progress.advance, task)
                    )
                )
    total = sum(r[k] for r in results for k in KINDS)
    document = {"org_id": org_id, "ok": total == 0, "differences": total, "tables": results}
    if output == Format.json:
        print_json(document)
    else:
        _render_validate(document)
    if total:
        raise CommandFailed(f"{total} difference(s) between MongoDB and PostgreSQL", EXIT_FOUND)


def _validate_table(
    conn: Any, org: str, table: str, collection: Any, limit: int, tick: Any
) -> dict[str, Any]:
    counted = {"mongo": 0, "postgres": 0}

    def mongo_side() -> Any:
        for ref in queries.mongo_versions(collection):
            counted["mongo"] += 1
            tick()
            yield ref

    def pg_side() -> Any:
        for ref in queries.pg_versions(conn, org, table):
            counted["postgres"] += 1
            yield ref

    found = dict.fromkeys(KINDS, 0)
    listed: list[dict[str, Any]] = []
    try:
        for diff in compare.compare(mongo_side(), pg_side()):
            found[diff.kind] += 1
            if len(listed) < limit:
                listed.append(vars(diff))
    except compare.UnsortedStream as exc:
        raise CommandFailed(f"table {table}: {exc}", EXIT_UNAVAILABLE) from None
    return {
        "table": table,
        "mongo_versions": counted["mongo"],
        "postgres_versions": counted["postgres"],
        **found,
        "listed": listed,
        "truncated": sum(found.values()) > len(listed),
    }


def _render_validate(document: dict[str, Any]) -> None:
    out = console()
    summary = Table(title=f"MongoDB vs PostgreSQL, org {document['org_id']}")
    for name in ("table", "MongoDB loaded", "PostgreSQL active", *KINDS, "result"):
        summary.add_column(name, justify="left" if name in ("table", "result") else "right")
    for r in document["tables"]:
        bad = sum(r[k] for k in KINDS)
        summary.add_row(
            r["table"],
            str(r["mongo_versions"]),
            str(r["postgres_versions"]),
            *(str(r[k]) for k in KINDS),
            Text("DIFFERS", style="red") if bad else Text("OK", style="green"),
        )
    out.print(summary)
    for r in document["tables"]:
        if not r["listed"]:
            continue
        diffs = Table(title=f"Differences in {r['table']}" + (" (first ones)" if r["truncated"] else ""))
        for name in ("kind", "composite key", "version", "MongoDB hash", "PostgreSQL hash"):
            diffs.add_column(name)
        for d in r["listed"]:
            diffs.add_row(
                d["kind"],
                d["composite_key"],
                str(d["version"]),
                (d["mongo_hash"] or "-")[:12],
                (d["postgres_hash"] or "-")[:12],
            )
        out.print(diffs)
    for kind, text in compare.KIND_HELP.items():
        out.print(f"  {kind}: {text}")


# --- retention ---------------------------------------------------------------------------------


def _spec_for(org_id: str, filename: Path | None) -> tuple[Any, str]:
    """The org's spec, from the manifest file or else from the cluster, and where it came from."""
    from orgpipeline_api.v1alpha1 import ManifestError, OrgPipelineSpec, load_manifest

    if filename is not None:
        try:
            _, spec = load_manifest(filename)
        except ManifestError as exc:
            raise UserError(str(exc)) from None
        if spec.org_id != org_id:
            raise UserError(f"{filename} is the manifest of org {spec.org_id}, not {org_id}")
        return spec, str(filename)
    view = cluster.read_orgpipelines()
    obj = view.objects.get(org_id)
    if obj is None:
        why = view.reason or "the cluster has no OrgPipeline with this orgId"
        raise UserError(f"no retention policy for org {org_id}: pass -f MANIFEST ({why})")
    try:
        spec = OrgPipelineSpec.model_validate(obj.get("spec") or {})
    except ValueError as exc:
        raise UserError(
            f"the cluster's OrgPipeline {obj['metadata']['name']} does not validate: {exc}"
        ) from None
    return spec, f"OrgPipeline {obj['metadata']['name']}"


def retention(
    org_id: str = OrgRequiredOpt,
    table: str | None = typer.Option(None, "--table", help="One table of the manifest; default every table."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would change; change nothing."),
    filename: Path | None = typer.Option(
        None,
        "-f",
        "--filename",
        help="The org's OrgPipeline manifest; default: the org's OrgPipeline in the cluster (KUBECONFIG).",
    ),
    output: Format = OutputOpt,
) -> None:
    """Apply (or --dry-run) the org's retention policy from its manifest.

    Applies spec.retention: keep the last keepVersions versions of
    every record active (older ones get is_active = false in PostgreSQL and MongoDB), delete
    change-log, rejected-row, quality-metric and run rows older than auditLogDays. Reports per
    table what it changed, or with --dry-run what it would change.

    Examples: `orgpipeline retention --org-id 123 --dry-run`,
    `orgpipeline retention --org-id 123 -f org-123.yaml`.
    """
    spec, source = _spec_for(org_id, filename)
    names = [t.name for t in spec.tables]
    if table is not None and table not in names:
        raise UserError(f"unknown table {table!r}; the manifest has: {', '.join(names)}")
    tables = [table] if table else names
    now = datetime.now(UTC)
    results = []
    if dry_run:
        with stores(need_mongo=False) as s:
            existing = set(queries.list_tables(s.conn, org_id))
            for t in tables:
                counts = (
                    queries.retention_preview(s.org(org_id), org_id, t, spec.retention, now)
                    if t in existing
                    else dict.fromkeys(RETENTION_COLUMNS, 0)
                )
                results.append({"table": t, **counts})
    else:
        from orgpipeline_api.errors import ConfigurationError, PipelineError, ServerUnavailable
        from orgpipeline_jobs import retention as policy
        from orgpipeline_jobs.settings import Settings

        try:
            settings = Settings.from_env()
            for t in tables:
                applied = policy.apply(settings, spec, t, now)
                results.append(
                    {
                        k: v
                        for k, v in applied.items()
                        if k not in ("org_id", "keep_versions", "audit_log_days")
                    }
                )
        except PipelineError as exc:
            # In the operator's retention CronJob the pod's termination message carries the outcome.
            policy.write_termination_log(policy.termination_report(results, now, f"{exc.stage}: {exc}"))
            if isinstance(exc, ConfigurationError):  # exit 2, as stores() maps it for every other command
                raise UserError(str(exc)) from None
            if isinstance(exc, ServerUnavailable):
                raise CommandFailed(str(exc), EXIT_UNAVAILABLE) from None
            raise
        policy.write_termination_log(policy.termination_report(results, now))
    document = {
        "org_id": org_id,
        "dry_run": dry_run,
        "policy": {
            "keep_versions": spec.retention.keep_versions,
            "audit_log_days": spec.retention.audit_log_days,
            "source": source,
        },
        "tables": results,
    }
    if output == Format.json:
        print_json(document)
        return
    _render_retention(document)


RETENTION_COLUMNS = (
    "versions_deactivated",
    "change_log_deleted",
    "rejected_rows_deleted",
    "quality_metrics_deleted",
    "runs_deleted",
)


def _render_retention(document: dict[str, Any]) -> None:
    policy = document["policy"]
    verb = "would change (dry run, nothing changed)" if document["dry_run"] else "changed"
    table = Table(
        title=f"Retention of org {document['org_id']}: {verb}",
        caption=f"keep {policy['keep_versions']} versions, {policy['audit_log_days']} days of audit rows "
        f"(from {policy['source']})",
    )
    table.add_column("table")
    for name in RETENTION_COLUMNS:
        table.add_column(name.replace("_", " "), justify="right")
    for r in document["tables"]:
        table.add_row(r["table"], *(str(r.get(k, 0)) for k in RETENTION_COLUMNS))
    console().print(table)


def register(app: typer.Typer) -> None:
    common.register(app, "validate", validate)
    common.register(app, "retention", retention)
