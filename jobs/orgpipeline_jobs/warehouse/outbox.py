"""raw_{table}_outbox: version documents committed to PostgreSQL and not yet confirmed in MongoDB.

The fused `run` commits a batch to PostgreSQL first, with the batch's BSON documents here, and then
writes them to MongoDB; once MongoDB has them the row is removed. A run that died in between leaves
the row, and the next run of the table replays it before anything else (deterministic `_id`s make
the replay add nothing that is already there).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from orgpipeline_api import store_names
from orgpipeline_api.orgschema.ddl import qualified
from psycopg import sql


def put(conn: psycopg.Connection[Any], org_id: str, table: str, batch_id: str, documents: bytes) -> None:
    """Keeps a batch's documents (concatenated BSON), inside the caller's transaction."""
    conn.execute(
        sql.SQL("INSERT INTO {} (batch_id, documents) VALUES (%s, %s) ON CONFLICT DO NOTHING").format(
            qualified(org_id, store_names.pg_outbox(table))
        ),
        (batch_id, documents),
    )


def pending(conn: psycopg.Connection[Any], org_id: str, table: str) -> Iterator[tuple[str, bytes]]:
    """The batches left by an interrupted run, one at a time, in batch order."""
    target = qualified(org_id, store_names.pg_outbox(table))
    ids = [r[0] for r in conn.execute(sql.SQL("SELECT batch_id FROM {} ORDER BY batch_id").format(target))]
    for batch_id in ids:
        row = conn.execute(
            sql.SQL("SELECT documents FROM {} WHERE batch_id = %s").format(target), (batch_id,)
        ).fetchone()
        if row is not None:
            yield batch_id, bytes(row[0])


def remove(conn: psycopg.Connection[Any], org_id: str, table: str, batch_ids: Sequence[str]) -> None:
    if batch_ids:
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE batch_id = ANY(%s)").format(
                qualified(org_id, store_names.pg_outbox(table))
            ),
            (list(batch_ids),),
        )
