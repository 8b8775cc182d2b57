"""raw_{table}_pending_loads: the batches `ingest` landed in MongoDB (postgres_status "pending")
that `load` has not loaded yet.

With it, `load` and every `run` know from one indexed PostgreSQL read whether there is anything to
load, instead of asking MongoDB for pending documents (FerretDB scans the whole collection for that:
a cost that grew with the table, on every run). The row is written in the same transaction as the
batch's heads, after MongoDB has the documents, and removed once they are marked loaded. A table
made before this existed gets the row ALL once, which means "look at every pending document".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from orgpipeline_api import store_names
from orgpipeline_api.orgschema.ddl import qualified
from psycopg import sql

ALL = "*"


def add(conn: psycopg.Connection[Any], org_id: str, table: str, batch_id: str) -> None:
    conn.execute(
        sql.SQL("INSERT INTO {} (batch_id) VALUES (%s) ON CONFLICT DO NOTHING").format(
            qualified(org_id, store_names.pg_pending_loads(table))
        ),
        (batch_id,),
    )


def batches(conn: psycopg.Connection[Any], org_id: str, table: str) -> list[str]:
    rows = conn.execute(
        sql.SQL("SELECT batch_id FROM {} ORDER BY batch_id").format(
            qualified(org_id, store_names.pg_pending_loads(table))
        )
    ).fetchall()
    return [str(r[0]) for r in rows]


def remove(conn: psycopg.Connection[Any], org_id: str, table: str, batch_ids: Sequence[str]) -> None:
    if batch_ids:
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE batch_id = ANY(%s)").format(
                qualified(org_id, store_names.pg_pending_loads(table))
            ),
            (list(batch_ids),),
        )
