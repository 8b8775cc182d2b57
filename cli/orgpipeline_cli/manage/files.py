"""`orgpipeline files`: a table's source files with their state, and `files retry` to re-queue one.

The data plane records each file it reads in the org's `pipeline_files` (one row per file and
content: a changed object is a new file): `ingesting` while a run reads it, then `ingested`,
`rejected` (the file as a whole cannot be read: binary, no header, missing required columns) or
`quarantined` (a store refused its content half way; the rest of the table goes on). A run does not
take a rejected or quarantined file again; `files retry` marks it `queued`, and the next run of the
table (schedule, file arrival or `orgpipeline run-now`) reads it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import typer
from orgpipeline_api import store_names
from orgpipeline_api.orgschema.ddl import FILES_TABLE, qualified
from psycopg import sql
from psycopg.rows import dict_row
from rich.text import Text

from orgpipeline_cli.manage import common
from orgpipeline_cli.manage.common import UserError, console, fmt_time, print_json, stores
from orgpipeline_cli.output import Format, Table

RETRYABLE = ("quarantined", "rejected")
ROW_COUNTS = ("rows_read", "inserted", "updated", "unchanged", "rejected")


@dataclass(frozen=True)
class SourceFileState:
    """One row of pipeline_files as this command prints it."""

    name: str
    object_key: str
    file_id: str
    status: str
    counts: dict[str, Any]
    started_at: datetime | None
    finished_at: datetime | None
    run_id: str | None
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "object_key": self.object_key,
            "file_id": self.file_id,
            "status": self.status,
            **{k: self.counts.get(k) for k in ROW_COUNTS},
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "run_id": self.run_id,
            "error": self.error,
        }


def list_files(conn: psycopg.Connection[Any], org_id: str, table: str) -> list[SourceFileState]:
    """The table's files, newest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL(
                "SELECT file_id, object_key, status, counts, started_at, finished_at, run_id, error"
                " FROM {} WHERE table_name = %s ORDER BY started_at DESC, object_key"
            ).format(qualified(org_id, FILES_TABLE)),
            (table,),
        )
        return [
            SourceFileState(
                name=str(r["object_key"]).rsplit("/", 1)[-1],
                object_key=str(r["object_key"]),
                file_id=str(r["file_id"]),
                status=str(r["status"]),
                counts=dict(r["counts"] or {}),
                started_at=r["started_at"],
                finished_at=r["finished_at"],
                run_id=r["run_id"],
                error=r["error"],
            )
            for r in cur.fetchall()
        ]


def matching(found: list[SourceFileState], name: str) -> list[SourceFileState]:
    """The files `name` designates: its name (orders_1.csv), object key, s3:// URI or file id."""
    return [
        f
        for f in found
        if name in (f.name, f.object_key, f.file_id)
        or (name.startswith("s3://") and name.endswith("/" + f.object_key))
    ]


STORE_REFUSALS = ("landing", "warehouse")
"""Rejected rows of versions a store refused after the file was read (outbox replay, `load`): the
retry reads the file again, so they are judged again rather than left to contradict it."""


def requeue(conn: psycopg.Connection[Any], org_id: str, table: str, file_ids: list[str]) -> int:
    """Marks the files `queued` (only while they are still rejected or quarantined), in one
    transaction with dropping their store-refusal rejected rows."""
    with conn.transaction():
        cur = conn.execute(
            sql.SQL(
                "UPDATE {} SET status = 'queued' WHERE table_name = %s AND file_id = ANY(%s)"
                " AND status = ANY(%s) RETURNING file_id"
            ).format(qualified(org_id, FILES_TABLE)),
            (table, file_ids, list(RETRYABLE)),
        )
        queued = [r[0] for r in cur.fetchall()]
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE file_id = ANY(%s) AND issue_type = ANY(%s)").format(
                qualified(org_id, store_names.pg_rejected_rows(table))
            ),
            (queued, list(STORE_REFUSALS)),
        )
    return len(queued)


# --- the commands ------------------------------------------------------------------------------


def files(
    ctx: typer.Context,
    org_id: str | None = typer.Option(None, "--org-id", help="The org's id (spec.orgId)."),
    table: str | None = typer.Option(None, "--table", help="The table whose files are listed."),
    output: Format = common.OutputOpt,
) -> None:
    """A table's source files with their state: loaded (ingested), rejected, quarantined, ingesting
    or queued, with their rows and times.

    A rejected file could not be read as a whole (binary, no header, missing required columns); a
    quarantined one was refused by a store half way (a value PostgreSQL refuses, a document over
    MongoDB's limit): the rest of the table loads, the run reports a FileQuarantined alert, and
    `orgpipeline files retry` re-queues the file once it is fixed. -o json prints {"files": [...]}.

    Examples: `orgpipeline files --org-id 123 --table orders`,
    `orgpipeline files retry --org-id 123 --table orders --file orders_2.csv`.
    """
    if ctx.invoked_subcommand is not None:
        return
    if org_id is None or table is None:
        raise UserError("--org-id and --table are required (or a subcommand: retry)")
    with stores(need_mongo=False) as s:
        common.resolve_orgs(s.conn, org_id)
        common.resolve_tables(s.conn, org_id, table)
        found = list_files(s.org(org_id), org_id, table)
    if output == Format.json:
        print_json({"org_id": org_id, "table": table, "files": [f.as_json() for f in found]})
        return
    out = console()
    if not found:
        out.print(f"No files read yet for table {table} of org {org_id}.", markup=False)
        return
    listing = Table(title=f"Files of table {table} of org {org_id}")
    for name in (
        "file",
        "status",
        "rows",
        "inserted",
        "updated",
        "rejected",
        "started",
        "finished",
        "reason",
    ):
        listing.add_column(name, overflow="fold")
    for f in found:
        # Text, not markup: object keys and reasons are the uploader's text.
        listing.add_row(
            Text(f.name),
            Text(f.status),
            *(str(f.counts.get(k, "")) for k in ("rows_read", "inserted", "updated", "rejected")),
            fmt_time(f.started_at),
            fmt_time(f.finished_at),
            Text(f.error or ""),
        )
    out.print(listing)


def retry(
    org_id: str = common.OrgRequiredOpt,
    table: str = typer.Option(..., "--table", help="The file's table."),
    file: str = typer.Option(
        ..., "--file", help="The file: its name (orders_2.csv), object key or s3:// URI."
    ),
    output: Format = common.OutputOpt,
) -> None:
    """Re-queues a quarantined or rejected file: the next run of the table reads it again.

    Upload a corrected file instead when its content is wrong (a changed object is a new file);
    retry is for a file that failed on something since fixed (a column type, a limit).
    """
    with stores(need_mongo=False) as s:
        common.resolve_orgs(s.conn, org_id)
        common.resolve_tables(s.conn, org_id, table)
        own = s.org(org_id)
        chosen = matching(list_files(own, org_id, table), file)
        if not chosen:
            raise UserError(f"no file {file!r} was read for table {table} of org {org_id}")
        retryable = [f for f in chosen if f.status in RETRYABLE]
        if not retryable:
            states = ", ".join(sorted({f.status for f in chosen}))
            raise UserError(f"{file} is {states}: only a quarantined or rejected file can be retried")
        requeue(own, org_id, table, [f.file_id for f in retryable])
    if output == Format.json:
        print_json(
            {
                "org_id": org_id,
                "table": table,
                "requeued": [{"object_key": f.object_key, "was": f.status} for f in retryable],
            }
        )
        return
    for f in retryable:
        console().print(Text(f"{f.object_key}: {f.status} -> queued; the next run of {table} reads it again"))


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help=common.command_help(files),
        epilog=common.EXIT_CODES_HELP,
        invoke_without_command=True,
        no_args_is_help=False,
    )
    group.callback(invoke_without_command=True, epilog=common.EXIT_CODES_HELP)(files)
    common.register(group, "retry", retry)
    app.add_typer(group, name="files")
