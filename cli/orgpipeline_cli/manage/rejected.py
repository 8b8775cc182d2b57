"""`orgpipeline rejected`: the rows a run did not accept, with their text, ready to fix and upload.

The data plane keeps every rejected row in `raw_<table>_rejected_rows` (file, line, reason and the
row's text) and each file's header, as the file spells it, in `pipeline_files`. This command reads
them: a table or JSON for people and scripts, or (`-o csv`) the header followed by the rejected rows
as they were, which a user corrects and uploads as a new file.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import psycopg
import typer
from orgpipeline_api import store_names
from orgpipeline_api.orgschema.ddl import FILES_TABLE, qualified
from orgpipeline_jobs.rowtext import MAX_RAW_TEXT, csv_record
from psycopg import sql
from psycopg.rows import dict_row
from rich.text import Text

from orgpipeline_cli.manage import common
from orgpipeline_cli.manage.common import UserError, console, fmt_time, print_json, stores
from orgpipeline_cli.output import Table

DEFAULT_LIMIT = 100
STREAM_BATCH = 2000


class RejectedFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


@dataclass(frozen=True)
class Filters:
    """What the user asked for: one table of one org, optionally one file and one run."""

    org_id: str
    table: str
    file: str | None
    run_id: str | None


@dataclass(frozen=True)
class RejectedRow:
    """One rejected row as this command prints it."""

    file: str
    uri: str
    file_id: str
    line: int
    issue_type: str
    field: str | None
    reason: str
    raw: str
    raw_truncated: bool
    run_id: str
    rejected_at: Any
    header: tuple[str, ...] | None

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "uri": self.uri,
            "file_id": self.file_id,
            "line": self.line,
            "issue_type": self.issue_type,
            "field": self.field,
            "reason": self.reason,
            "raw": self.raw,
            "raw_truncated": self.raw_truncated,
            "run_id": self.run_id,
            "rejected_at": self.rejected_at,
        }


def file_name(uri: str) -> str:
    """The file's name: the last part of its object key or path."""
    return uri.rsplit("/", 1)[-1]


def safe_csv_text(text: str) -> str:
    """One record's CSV text with each field a spreadsheet would run as a formula (see
    `export.neutralise_formula`) behind a leading `'`; the text as it is when no field is."""
    from orgpipeline_jobs.export import FORMULA_LEADS, neutralise_formula

    if not any(lead in text for lead in FORMULA_LEADS):
        return text
    fields = next(csv.reader(io.StringIO(text)), [])
    if all(neutralise_formula(f) == f for f in fields):
        return text
    return csv_record([neutralise_formula(f) for f in fields])


def csv_lines(rows: Iterable[RejectedRow], formulas_raw: bool = False) -> Iterator[str]:
    """The original header, then each row's text: a CSV file to correct and upload again; fields
    that start like a formula get a leading `'` unless `formulas_raw`.

    Every row must come from files that share one recorded header (UserError otherwise: the rows
    of files with different columns do not make one file).
    """
    safe = (lambda text: text) if formulas_raw else safe_csv_text
    header: tuple[str, ...] | None = None
    header_file = ""
    for row in rows:
        if row.header is None:
            raise UserError(
                f"the header of {row.file} was not recorded (ingested by an earlier version): "
                "use -o json for its rows"
            )
        if header is None:
            header, header_file = row.header, row.file
            yield safe(csv_record(header)) + "\n"
        elif row.header != header:
            raise UserError(
                f"{header_file} and {row.file} have different headers: choose one file with --file"
            )
        yield safe(row.raw) + "\n"


# --- queries -----------------------------------------------------------------------------------


def _where(f: Filters) -> tuple[sql.Composable, list[Any]]:
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    if f.file is not None:
        clauses.append(sql.SQL("(r.source = %s OR f.object_key = %s OR r.file_id = %s OR r.source LIKE %s)"))
        params += [f.file, f.file, f.file, "%/" + _like_escape(f.file)]
    if f.run_id is not None:
        clauses.append(sql.SQL("r.run_id = %s"))
        params.append(f.run_id)
    where = sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("TRUE")
    return where, params


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _from(f: Filters) -> sql.Composable:
    return sql.SQL("{} r LEFT JOIN {} f ON f.table_name = {} AND f.file_id = r.file_id").format(
        qualified(f.org_id, store_names.pg_rejected_rows(f.table)),
        qualified(f.org_id, FILES_TABLE),
        sql.Literal(f.table),
    )


def count(conn: psycopg.Connection[Any], f: Filters) -> int:
    where, params = _where(f)
    row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(_from(f), where), params).fetchone()
    return int(row[0]) if row else 0


def rows(conn: psycopg.Connection[Any], f: Filters, limit: int | None) -> Iterator[RejectedRow]:
    """The matching rows, newest file first and in line order within a file; streamed."""
    where, params = _where(f)
    statement = sql.SQL(
        "SELECT r.file_id, r.line, r.run_id, r.source, r.issue_type, r.field, r.reason, r.text,"
        # Through to_jsonb: a schema no run has brought up to date yet lacks these two columns.
        " coalesce((to_jsonb(r)->>'text_truncated')::boolean, false) AS text_truncated, r.rejected_at,"
        " to_jsonb(f)->'header' AS header"
        " FROM {} WHERE {} ORDER BY f.started_at DESC NULLS LAST, r.file_id, r.line {}"
    ).format(_from(f), where, sql.SQL("LIMIT %s") if limit is not None else sql.SQL(""))
    with conn.transaction(), conn.cursor(name=f"rejected_{f.table}", row_factory=dict_row) as cur:
        cur.itersize = STREAM_BATCH
        cur.execute(statement, [*params, limit] if limit is not None else params)
        for r in cur:
            yield RejectedRow(
                file=file_name(r["source"]),
                uri=r["source"],
                file_id=r["file_id"],
                line=int(r["line"]),
                issue_type=r["issue_type"],
                field=r["field"],
                reason=r["reason"],
                raw=r["text"] or "",
                raw_truncated=bool(r["text_truncated"]),
                run_id=r["run_id"],
                rejected_at=r["rejected_at"],
                header=tuple(r["header"]) if r["header"] is not None else None,
            )


def _check_one_header(conn: psycopg.Connection[Any], f: Filters) -> None:
    """-o csv: the matching rows come from files with one recorded header (checked before writing)."""
    where, params = _where(f)
    found = conn.execute(
        sql.SQL(
            "SELECT to_jsonb(f)->'header', min(r.source) FROM {} WHERE {} GROUP BY 1 ORDER BY 2 LIMIT 2"
        ).format(_from(f), where),
        params,
    ).fetchall()
    for header, source in found:
        if header is None:
            raise UserError(
                f"the header of {file_name(source)} was not recorded (ingested by an earlier version):"
                " use -o json for its rows"
            )
    if len(found) > 1:
        names = " and ".join(file_name(source) for _, source in found)
        raise UserError(f"{names} have different headers: choose one file with --file")


def _check_filters(conn: psycopg.Connection[Any], f: Filters) -> None:
    """Unknown file or run: exit 2 with what the table does have."""
    if f.file is not None:
        found = conn.execute(
            sql.SQL(
                "SELECT 1 FROM {} WHERE table_name = %s AND (object_key = %s OR file_id = %s"
                " OR object_key LIKE %s OR 's3://' || bucket || '/' || object_key = %s) LIMIT 1"
            ).format(qualified(f.org_id, FILES_TABLE)),
            (f.table, f.file, f.file, "%/" + _like_escape(f.file), f.file),
        ).fetchone()
        if found is None:
            raise UserError(f"no file {f.file!r} was read for table {f.table} of org {f.org_id}")
    if f.run_id is not None:
        found = conn.execute(
            sql.SQL("SELECT 1 FROM {} WHERE run_id = %s AND table_name = %s").format(
                qualified(f.org_id, store_names.PG_RUNS_TABLE)
            ),
            (f.run_id, f.table),
        ).fetchone()
        if found is None:
            raise UserError(f"no run {f.run_id!r} of table {f.table} in org {f.org_id}")


# --- the command -------------------------------------------------------------------------------


def rejected(
    org_id: str = common.OrgRequiredOpt,
    table: str = typer.Option(..., "--table", help="The table whose rejected rows are listed."),
    file: str | None = typer.Option(
        None, "--file", help="One source file: its name (orders_1.csv), object key or s3:// URI."
    ),
    run_id: str | None = typer.Option(None, "--run", help="One run's rows (run_id, as `status` lists it)."),
    limit: int | None = typer.Option(
        None,
        "--limit",
        min=1,
        max=10_000_000,
        help=f"Rows to list (default {DEFAULT_LIMIT}; with -o csv, every row).",
    ),
    output: RejectedFormat = typer.Option(
        RejectedFormat.table,
        "-o",
        "--output",
        help="table (default); json: one object, the rows under `rows`, and `total`; "
        "csv: the file's header and the rejected rows as they were, to fix and upload again.",
    ),
    raw_formulas: bool = typer.Option(
        False,
        "--raw-formulas",
        help="-o csv: write fields starting with = + - @ tab or CR as they are (by default they get"
        " a leading ' so that a spreadsheet shows them rather than runs them).",
    ),
) -> None:
    """Rejected rows of a table: file, line, reason and the row's text.

    Lists the rows the pipeline did not accept (missing or invalid values, malformed records, bytes
    that are not UTF-8, oversized fields), newest file first, in line order. -o json prints
    {"rows": [{"file", "line", "reason", "raw", ...}], "total"}; `total` counts every matching row,
    `rows` holds at most --limit. -o csv writes the original header followed by the rows' text
    (a row cut at 65,536 characters is written as stored, with a warning on stderr); the rows must
    come from files with one header (else --file). No rejected rows is not an error: exit 0, with
    a message (table), an empty list (json) or nothing on stdout (csv).

    Examples: `orgpipeline rejected --org-id 123 --table orders`,
    `orgpipeline rejected --org-id 123 --table orders --file orders_2.csv -o csv > orders_2_fixed.csv`.
    """
    f = Filters(org_id, table, file, run_id)
    if limit is None and output != RejectedFormat.csv:
        limit = DEFAULT_LIMIT
    with stores(need_mongo=False) as s:
        common.resolve_orgs(s.conn, org_id)
        common.resolve_tables(s.conn, org_id, table)
        own = s.org(org_id)  # the org's tables: as the org's role
        _check_filters(own, f)
        total = count(own, f)
        if output == RejectedFormat.csv:
            _check_one_header(own, f)
            _write_csv(rows(own, f, limit), total, f, raw_formulas)
            return
        found = list(rows(own, f, limit))
    if output == RejectedFormat.json:
        print_json(
            {
                "org_id": org_id,
                "table": table,
                "file": file,
                "run": run_id,
                "limit": limit,
                "total": total,
                "rows": [r.as_json() for r in found],
            }
        )
        return
    _render(f, found, total)


def _write_csv(found: Iterable[RejectedRow], total: int, f: Filters, formulas_raw: bool) -> None:
    truncated = 0

    def counted() -> Iterator[RejectedRow]:
        nonlocal truncated
        for row in found:
            truncated += row.raw_truncated
            yield row

    for text in csv_lines(counted(), formulas_raw):
        sys.stdout.write(text)
    sys.stdout.flush()
    if total == 0:
        print(f"orgpipeline: no rejected rows {_scope(f)}", file=sys.stderr)
    if truncated:
        print(
            f"orgpipeline: warning: {truncated} row(s) were stored cut at {MAX_RAW_TEXT} characters"
            " (oversized fields): complete them before uploading",
            file=sys.stderr,
        )


def _scope(f: Filters) -> str:
    text = f"for table {f.table} of org {f.org_id}"
    if f.file is not None:
        text += f", file {f.file}"
    if f.run_id is not None:
        text += f", run {f.run_id}"
    return text


def _render(f: Filters, found: list[RejectedRow], total: int) -> None:
    out = console()
    if not found:
        out.print(f"No rejected rows {_scope(f)}.", markup=False)
        return
    listing = Table(title=f"Rejected rows {_scope(f)}: {len(found)} of {total}")
    for name in ("file", "line", "reason", "raw", "run", "rejected at"):
        listing.add_column(name, overflow="fold")
    for r in found:
        raw = r.raw if len(r.raw) <= 120 else r.raw[:119] + "…"
        # Text, not markup: a row's content may hold brackets that rich would read as styles.
        cells = (Text(r.file), str(r.line), Text(r.reason), Text(raw), r.run_id, fmt_time(r.rejected_at))
        listing.add_row(*cells)
    out.print(listing)


def register(app: typer.Typer) -> None:
    common.register(app, "rejected", rejected)
