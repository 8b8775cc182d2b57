"""`orgpipeline export` and `compliance`: data out of the pipeline, and the record of it.

`export` writes one table as of a time (see `orgpipeline_jobs.export`), masked on request the way the
org's read-only role sees it, and records every export. `compliance` lists, per table, the columns
and their classification, and who exported what (with which pii or sensitive columns unmasked).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from orgpipeline_api import store_names
from orgpipeline_api.errors import ServerUnavailable
from orgpipeline_api.orgschema import privacy
from orgpipeline_jobs import export as exporting

from orgpipeline_cli.main import CommandFailed
from orgpipeline_cli.manage.common import (
    EXIT_UNAVAILABLE,
    OrgRequiredOpt,
    OutputOpt,
    UserError,
    command_help,
    console,
    fmt_time,
    print_json,
    resolve_orgs,
    stores,
)
from orgpipeline_cli.output import Format, Table

EXPORT_EXIT_HELP = (
    "Exit codes: 0 exported (and recorded); 2 usage or user error (bad time, unknown org or table, "
    "target not writable, no classification for --mask); 3 a store (PostgreSQL, S3) cannot be reached."
)
COMPLIANCE_EXIT_HELP = "Exit codes: 0 done; 2 usage or user error (unknown org); 3 a store cannot be reached."


def export(
    org_id: str = OrgRequiredOpt,
    table: str = typer.Option(..., "--table", help="The table to export."),
    target: str = typer.Option(..., "--output", help="A file path, or s3://bucket/key."),
    as_of: str | None = typer.Option(
        None, "--as-of", help="ISO-8601 time (no zone: UTC; a date: its midnight); default: now."
    ),
    with_history: bool = typer.Option(False, "--with-history", help="Every version ingested by then."),
    fmt: exporting.Format = typer.Option(exporting.Format.csv, "--format", help="csv, parquet or jsonl."),
    mask: bool = typer.Option(
        False,
        "--mask",
        help="pii columns pseudonymised, sensitive ones redacted (as the reader role sees them).",
    ),
    manifest: Path | None = typer.Option(
        None,
        "-f",
        "--manifest",
        hidden=True,
        help="Refused: masking takes the classification the operator recorded, never a manifest's.",
    ),
    user: str | None = typer.Option(
        None,
        "--user",
        envvar="ORGPIPELINE_USER",
        help="A note on who asks (recorded beside the identity the cluster gives, not as it).",
    ),
    raw_formulas: bool = typer.Option(
        False,
        "--raw-formulas",
        help="CSV: write cells starting with = + - @ tab or CR as they are (by default they get a"
        " leading ' so that a spreadsheet shows them rather than runs them).",
    ),
) -> None:
    """Exports a table as the pipeline knew it at a time, and records the export.

    One row per key whose version was live at --as-of (deleted keys left out), or with --with-history
    every version ingested by then; each row with composite_key, version, change_type, valid_from,
    valid_to (only when the next version was known by then), source_file and the data columns.
    Parquet keeps the columns' types. Streams in batches; the target appears only when complete,
    readable by its owner only (0600). --mask takes the classification the operator recorded.
    Every export is recorded in orgaudit_<org>.pipeline_exports (who, when, what, as of when),
    which the org's role can add to but not change or delete; who is the user the cluster
    authenticates with the kubeconfig (as `run-now`), when there is one. See `orgpipeline compliance`.

    Examples: `orgpipeline export --org-id 123 --table orders --as-of 2026-11-01T00:00:00Z --format
    parquet --output orders.parquet`, `orgpipeline export --org-id 123 --table orders --mask
    --output s3://exports/123/orders.csv`.
    """
    moment = _as_of(as_of)
    if manifest is not None:
        raise UserError(
            "export takes no -f: masking and the audit use the classification the operator recorded"
            " (`orgpipeline compliance` shows it)"
        )
    identity = caller_identity()
    with stores(need_mongo=False) as s:
        resolve_orgs(s.conn, org_id)
        classes = (privacy.recorded(s.org(org_id), org_id) or {}).get(table)
        # The keys the pipeline uses (the manifest's, or those it detected), as recorded.
        keys = privacy.business_keys(s.org(org_id), org_id, table)
        request = exporting.Request(
            org_id=org_id,
            table=table,
            target=target,
            format=fmt,
            as_of=moment,
            with_history=with_history,
            mask=mask,
            classes=classes,
            business_keys=keys,
            requested_by=identity,
            user_note=user,
            formulas_raw=raw_formulas,
        )
        from orgpipeline_jobs.settings import Settings

        try:
            result = exporting.run(s.org(org_id), Settings.from_env(), request)
        except exporting.ExportError as exc:
            raise UserError(str(exc)) from None
        except ServerUnavailable as exc:
            raise CommandFailed(str(exc), EXIT_UNAVAILABLE) from None
    masked = [c["name"] for c in result.columns if c["masked"]]
    print(
        f"exported {result.rows} rows of {org_id}/{table} as of {result.as_of.isoformat()} to {result.target}"
        f" ({result.format}, {result.bytes} bytes, sha256 {result.sha256}"
        + (f", masked: {', '.join(masked)}" if masked else "")
        + f"); recorded as export {result.export_id}"
    )


def _as_of(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return exporting.parse_as_of(text)
    except exporting.ExportError as exc:
        raise UserError(str(exc)) from None


def caller_identity() -> str | None:
    """The user the API server authenticates for the kubeconfig (a SelfSubjectReview, as `run-now`
    asks it), or None without a kubeconfig; a kubeconfig that does not answer is a warning, and the
    export goes on recorded with its database role and OS user."""
    import os

    from orgpipeline_cli.manage import runnow

    path = os.environ.get("KUBECONFIG", "").strip().split(os.pathsep)[0]
    if not path and not (Path.home() / ".kube" / "config").is_file():
        return None
    try:
        api = runnow._client()
    except UserError as exc:
        print(f"orgpipeline: warning: identity unknown ({exc})", file=sys.stderr)
        return None
    try:
        return runnow.whoami(api)
    except CommandFailed as exc:
        print(f"orgpipeline: warning: identity unknown ({exc})", file=sys.stderr)
        return None
    finally:
        api.close()


def compliance(org_id: str = OrgRequiredOpt, output: Format = OutputOpt) -> None:
    """Classified columns per table, and who exported what.

    Per table, each column with its classification (as the operator last recorded it from the
    manifest) and how the org's reader role sees it (raw, pseudonymised, redacted); then every
    export: when, by whom (person, OS user, database role, host), which table, as of when, format,
    target, rows, SHA-256, and which pii or sensitive columns left unmasked.

    Example: `orgpipeline compliance --org-id 123 -o json`.
    """
    from orgpipeline_cli.manage import queries

    with stores(need_mongo=False) as s:
        resolve_orgs(s.conn, org_id)
        recorded = privacy.recorded(s.org(org_id), org_id) or {}
        tables = sorted(set(recorded) | set(queries.list_tables(s.conn, org_id)))
        columns: list[dict[str, Any]] = []
        for t in tables:
            classes = recorded.get(t, {})
            for name, classification in classes.items():
                columns.append(
                    {
                        "table": t,
                        "column": name,
                        "classification": classification,
                        "reader_sees": _reader_sees(classification),
                    }
                )
            if t not in recorded:
                columns.append({"table": t, "column": None, "classification": None, "reader_sees": "nothing"})
        exports = _exports(s.org(org_id), org_id)
        reader = _reader(s.conn, org_id)
    doc = {
        "org_id": org_id,
        "classification_recorded": bool(recorded),
        "reader": reader,
        "columns": columns,
        "exports": exports,
    }
    if output == Format.json:
        print_json(doc)
        return
    out = console()
    grid = Table(title=f"Classified columns of org {org_id}")
    for head in ("table", "column", "classification", "reader sees"):
        grid.add_column(head)
    for c in columns:
        grid.add_row(
            c["table"],
            c["column"] or "(no classification recorded)",
            c["classification"] or "-",
            c["reader_sees"],
        )
    out.print(grid)
    views = ", ".join(reader["views"]) or "none"
    out.print(
        f"Read-only role {reader['role']}: {'present' if reader['exists'] else 'absent'};"
        f" masked views in {reader['schema']}: {views}",
        markup=False,
    )
    log = Table(title="Exports (all fields with -o json)")
    for head in ("started", "by", "table", "as of", "rows", "status", "target", "unmasked pii/sensitive"):
        log.add_column(head, overflow="fold")
    for e in exports:
        what = f"{e['table']} ({e['format']}{', history' if e['with_history'] else ''}"
        what += ", masked)" if e["masked"] else ")"
        log.add_row(
            fmt_time(e["started_at"]),
            f"{e['requested_by'] or '-'}"
            + (f" [note: {e['user_note']}]" if e.get("user_note") else "")
            + f" ({e['db_role']})",
            what,
            fmt_time(e["as_of"]),
            "-" if e["rows"] is None else str(e["rows"]),
            e["status"],
            e["target"],
            ", ".join(e["unmasked_protected_columns"]) or "-",
        )
    out.print(log if exports else "No exports recorded.")


def _reader(conn: Any, org_id: str) -> dict[str, Any]:
    """The org's read-only role and the views it reads (made by the operator)."""
    role, schema = store_names.pg_reader_role(org_id), store_names.pg_view_schema(org_id)
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None
    rows = conn.execute(
        "SELECT viewname FROM pg_views WHERE schemaname = %s ORDER BY 1", (schema,)
    ).fetchall()
    return {"role": role, "exists": exists, "schema": schema, "views": [str(r[0]) for r in rows]}


def _reader_sees(classification: str) -> str:
    return {"pii": "pseudonym (keyed sha256)", "sensitive": "[REDACTED]"}.get(classification, "value")


def _exports(conn: Any, org_id: str) -> list[dict[str, Any]]:
    from orgpipeline_api.orgschema import exportaudit
    from orgpipeline_api.orgschema.ddl import qualified
    from psycopg import sql
    from psycopg.rows import dict_row

    fields = (
        "export_id, started_at, finished_at, requested_by, {note} AS user_note, os_user, db_role,"
        " client_host, table_name AS table, as_of, with_history, format, masked, {raw} AS formulas_raw,"
        " columns, target, status, rows, bytes, sha256, error, {trusted} AS append_only"
    )
    parts = []
    if exportaudit.exists(conn, org_id):
        parts.append(
            sql.SQL(
                "SELECT " + fields.format(note="user_note", raw="formulas_raw", trusted="true") + " FROM {}"
            ).format(exportaudit.table(org_id))
        )
    # Exports recorded before the audit had a schema of its own, in a table the org could change.
    legacy = conn.execute(
        "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s",
        (store_names.pg_schema(org_id), exporting.EXPORTS_TABLE),
    ).fetchone()
    if legacy:
        parts.append(
            sql.SQL(
                "SELECT " + fields.format(note="NULL::text", raw="false", trusted="false") + " FROM {}"
            ).format(qualified(org_id, exporting.EXPORTS_TABLE))
        )
    if not parts:
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            sql.SQL("{} ORDER BY started_at DESC").format(sql.SQL(" UNION ALL ").join(parts))
        ).fetchall()
    for row in rows:
        row["unmasked_protected_columns"] = [
            c["name"]
            for c in row["columns"]
            if privacy.masks(c.get("classification")) and not c.get("masked")
        ]
    return list(rows)


def register(app: typer.Typer) -> None:
    app.command("export", help=command_help(export), epilog=EXPORT_EXIT_HELP)(export)
    app.command("compliance", help=command_help(compliance), epilog=COMPLIANCE_EXIT_HELP)(compliance)
