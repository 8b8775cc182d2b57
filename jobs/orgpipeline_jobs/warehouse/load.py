"""Loading version documents into raw_{table} and raw_{table}_change_log with COPY.

Within the caller's transaction: COPY straight into the tables under a savepoint (the fast, usual
path); if a version is already there (a load replayed after a crash between the PostgreSQL commit
and the MongoDB status update), COPY into temporary staging tables instead and insert with
ON CONFLICT DO NOTHING, so a replay adds nothing and fails nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg
import pyarrow as pa
from orgpipeline_api import store_names
from orgpipeline_api.orgschema.ddl import qualified
from orgpipeline_api.v1alpha1 import Table
from psycopg import sql

from orgpipeline_jobs.warehouse import copytext, rows


def _copy(
    conn: psycopg.Connection[Any],
    target: sql.Composable,
    columns: Sequence[str],
    rows: Iterable[tuple[Any, ...]] = (),
    text: Sequence[memoryview] = (),
) -> None:
    """COPY of Python rows (adapted by psycopg) or of ready COPY text."""
    if text:
        copytext.send(conn, target, columns, text)
        return
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        target, sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def copy_batch(
    conn: psycopg.Connection[Any],
    org_id: str,
    table: Table,
    raw_parts: Sequence[dict[str, pa.Array]],
    log_parts: Sequence[dict[str, pa.Array]],
) -> None:
    """Writes versions and their change-log rows given column-wise (one or more blocks' worth, the
    same columns in each, none empty) in one COPY per table; inside a transaction."""
    if not raw_parts:
        return
    raw_text = [buf for p in raw_parts for buf in copytext.copy_text(list(p.values()))]
    log_text = [buf for p in log_parts for buf in copytext.copy_text(list(p.values()))]
    _replay_safe(
        conn,
        table,
        org_id,
        lambda target: _copy(conn, target, list(raw_parts[0]), text=raw_text),
        lambda target: _copy(conn, target, list(log_parts[0]), text=log_text),
    )


def copy_versions(
    conn: psycopg.Connection[Any], org_id: str, table: Table, docs: Sequence[dict[str, Any]]
) -> None:
    """Writes the versions and their change-log rows; must run inside a transaction."""
    if not docs:
        return
    business = [c.name for c in table.columns]
    raw_cols = rows.raw_columns(business)
    _replay_safe(
        conn,
        table,
        org_id,
        lambda target: _copy(conn, target, raw_cols, (rows.pg_row(d, business) for d in docs)),
        lambda target: _copy(conn, target, rows.CHANGE_LOG_COLUMNS, map(rows.change_log_row, docs)),
    )


def _replay_safe(
    conn: psycopg.Connection[Any],
    table: Table,
    org_id: str,
    copy_raw: Callable[[sql.Composable], None],
    copy_log: Callable[[sql.Composable], None],
) -> None:
    """COPY straight in; if a version is already there (a replay), through staging tables and
    ON CONFLICT DO NOTHING instead."""
    business = [c.name for c in table.columns]
    raw_cols = rows.raw_columns(business)
    raw = qualified(org_id, store_names.pg_table(table.name))
    log = qualified(org_id, store_names.pg_change_log(table.name))
    try:
        with conn.transaction():
            copy_raw(raw)
            copy_log(log)
        return
    except psycopg.errors.UniqueViolation:
        pass
    stage_raw = sql.Identifier(f"_stage_{table.name}")
    stage_log = sql.Identifier(f"_stage_{table.name}_log")
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        ).format(stage_raw, raw)
    )
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        ).format(stage_log, log)
    )
    conn.execute(sql.SQL("TRUNCATE {}, {}").format(stage_raw, stage_log))
    copy_raw(stage_raw)
    copy_log(stage_log)
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in raw_cols)
    conn.execute(
        sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
            raw, cols, cols, stage_raw
        )
    )
    log_cols = sql.SQL(", ").join(sql.Identifier(c) for c in rows.CHANGE_LOG_COLUMNS)
    conn.execute(
        sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
            log, log_cols, log_cols, stage_log
        )
    )
