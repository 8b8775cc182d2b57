"""raw_{table}_heads: the latest version of every key, kept in PostgreSQL for change detection.

One indexed `= ANY(...)` query per batch finds the batch's current versions; MongoDB (FerretDB)
would scan the whole collection for an `$in`. The heads are updated in the same PostgreSQL
transaction as the batch's other bookkeeping, after its MongoDB documents are written, so after a
crash they never point to a version MongoDB lacks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from orgpipeline_api import naming
from psycopg import sql

from orgpipeline_jobs.warehouse.ddl import qualified


@dataclass
class Head:
    version: int
    data_hash: str
    change_type: str
    file_id: str
    line: int
    data: dict[str, Any] | None = None


HEAD_COLUMNS = [
    "composite_key",
    "version",
    "data_hash",
    "change_type",
    "data",
    "file_id",
    "line",
    "seen_file",
]


def lookup(conn: psycopg.Connection[Any], org_id: str, table: str, keys: Sequence[str]) -> dict[str, Head]:
    if not keys:
        return {}
    rows = conn.execute(
        sql.SQL(
            "SELECT composite_key, version, data_hash, change_type, file_id, line FROM {} "
            "WHERE composite_key = ANY(%s)"
        ).format(qualified(org_id, naming.pg_heads(table))),
        (list(keys),),
    ).fetchall()
    return {r[0]: Head(r[1], r[2], r[3], r[4], r[5]) for r in rows}


def fetch_data(conn: psycopg.Connection[Any], org_id: str, table: str, keys: Sequence[str]) -> dict[str, Any]:
    if not keys:
        return {}
    rows = conn.execute(
        sql.SQL("SELECT composite_key, data FROM {} WHERE composite_key = ANY(%s)").format(
            qualified(org_id, naming.pg_heads(table))
        ),
        (list(keys),),
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def upsert(
    conn: psycopg.Connection[Any],
    org_id: str,
    table: str,
    rows: Sequence[tuple[str, int, str, str, dict[str, Any], str, int, str | None]],
) -> None:
    """Sets the heads of the given keys (inside the caller's transaction)."""
    if not rows:
        return
    target = qualified(org_id, naming.pg_heads(table))
    stage = sql.Identifier(f"_stage_{table}_heads")
    conn.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS").format(stage, target)
    )
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in HEAD_COLUMNS)
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, cols)) as copy:
        for ck, version, data_hash, change_type, data, file_id, line, seen in rows:
            copy.write_row(
                (
                    ck,
                    version,
                    data_hash,
                    change_type,
                    json.dumps(data, ensure_ascii=False),
                    file_id,
                    line,
                    seen,
                )
            )
    updates = sql.SQL(", ").join(
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in HEAD_COLUMNS[1:]
    )
    conn.execute(
        sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT (composite_key) DO UPDATE SET {}").format(
            target, cols, cols, stage, updates
        )
    )


def mark_seen(
    conn: psycopg.Connection[Any], org_id: str, table: str, keys: Sequence[str], file_id: str
) -> None:
    if keys:
        conn.execute(
            sql.SQL("UPDATE {} SET seen_file = %s WHERE composite_key = ANY(%s)").format(
                qualified(org_id, naming.pg_heads(table))
            ),
            (file_id, list(keys)),
        )


def unseen(
    conn: psycopg.Connection[Any], org_id: str, table: str, file_id: str, after: str, limit: int
) -> list[tuple[str, Head]]:
    """Live keys a snapshot file did not contain, in key order after `after` (keyset paging)."""
    rows = conn.execute(
        sql.SQL(
            "SELECT composite_key, version, data_hash, change_type, file_id, line, data FROM {} "
            "WHERE seen_file IS DISTINCT FROM %s AND change_type <> 'DELETE' AND composite_key > %s "
            "ORDER BY composite_key LIMIT %s"
        ).format(qualified(org_id, naming.pg_heads(table))),
        (file_id, after, limit),
    ).fetchall()
    return [(r[0], Head(r[1], r[2], r[3], r[4], r[5], r[6])) for r in rows]
