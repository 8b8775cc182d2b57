"""raw_{table}_heads: the latest version of every key, kept in PostgreSQL for change detection.

Change detection is set-based: a batch's (composite_key, data_hash) go to a session-local staging
table in one COPY, and one join against the heads returns only the rows that are not plainly
unchanged (new key, changed hash, deleted head, a head written by this same file, or a key repeated
within the batch). An unchanged re-run therefore moves two short strings per row to the server and
nothing back; there are no per-key round trips and no map of the table's heads in memory.
(MongoDB/FerretDB would scan the collection for an `$in`, so the heads live here.)

The heads are updated in the same PostgreSQL transaction as the batch's other bookkeeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import pyarrow as pa
from orgpipeline_api import store_names
from orgpipeline_api.orgschema.ddl import qualified
from psycopg import sql

from orgpipeline_jobs.warehouse import copytext

STAGE = sql.Identifier("_orgpipeline_classify")
STAGE_COLUMNS = ("idx", "composite_key", "data_hash", "repeated")


@dataclass
class StagedBatch:
    """What change detection needs of a batch, ready to send: its rows in the staging table's COPY
    format. Built by `of` away from the connection's thread (the read-ahead thread), so that the
    thread that waits for PostgreSQL only sends bytes."""

    text: list[memoryview]

    @classmethod
    def of(cls, keys: pa.Array, hashes: pa.Array, repeated: pa.Array) -> StagedBatch:
        """Composite keys and data hashes (strings), and whether each row's key occurs more than
        once in the batch (bool), as rows (idx, composite_key, data_hash, repeated)."""
        idx = pa.array(range(len(keys)), pa.int64())
        return cls(copytext.copy_text([idx, keys, hashes, repeated]))


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
_TEXT, _INT = pa.string(), pa.int64()
HEAD_TYPES = [_TEXT, _INT, _TEXT, _TEXT, _TEXT, _TEXT, _INT, _TEXT]
HeadRow = tuple[str, int, str, str, str, str, int, str | None]
"""(composite_key, version, data_hash, change_type, data as JSON text, file_id, line, seen_file)"""


_PREPARE = sql.SQL(
    "SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true),"
    " set_config('jit', 'off', true);"
    " CREATE TEMP TABLE IF NOT EXISTS {} (idx INTEGER, composite_key TEXT, data_hash TEXT,"
    " repeated BOOLEAN) ON COMMIT DELETE ROWS"
).format(STAGE)
"""For the rest of the transaction, join a batch to the heads by key probes (through the heads'
hash index on the key, see `orgschema.ddl`): a batch is small next to the heads of a large table,
and a hash or merge join would read every head for every batch (quadratic over a file), a probe
per staged key stays linear. No JIT: compiling
costs more than these statements run. And the session's staging table, emptied at each commit.
One round trip (two statements, no parameters)."""


def classify_batch(
    conn: psycopg.Connection[Any],
    org_id: str,
    table: str,
    file_id: str,
    staged: StagedBatch,
    *,
    mark_seen: bool = False,
) -> dict[int, Head | None]:
    """The rows of a batch that are not plainly unchanged, with their heads (None for a new key).

    The batch's keys and hashes go to the staging table in one COPY, one join against the heads
    classifies them; with `mark_seen` (snapshot mode) every staged key's head is marked as seen in
    this file. One transaction: the staging table is emptied by its commit. A head's `data` comes
    along only where a new version will need it (changed_fields)."""
    heads_table = qualified(org_id, store_names.pg_heads(table))
    with conn.transaction():
        conn.execute(_PREPARE)
        copytext.send(conn, STAGE, STAGE_COLUMNS, staged.text)
        rows = conn.execute(
            sql.SQL(
                "SELECT s.idx, h.version, h.data_hash, h.change_type, h.file_id, h.line,"
                " CASE WHEN s.repeated OR (h.change_type <> 'DELETE' AND h.data_hash <> s.data_hash)"
                " THEN h.data END"
                " FROM {} s LEFT JOIN {} h ON h.composite_key = s.composite_key"
                " WHERE h.composite_key IS NULL OR h.change_type = 'DELETE' OR h.data_hash <> s.data_hash"
                " OR h.file_id = %s OR s.repeated"
            ).format(STAGE, heads_table),
            (file_id,),
        ).fetchall()
        if mark_seen:
            # Only read once the whole file is in (`unseen`): safe to commit ahead of the versions
            # (a rerun marks the same keys again).
            conn.execute(
                sql.SQL(
                    "UPDATE {} h SET seen_file = %s FROM {} s"
                    " WHERE h.composite_key = s.composite_key AND h.seen_file IS DISTINCT FROM %s"
                ).format(heads_table, STAGE),
                (file_id, file_id),
            )
    return {r[0]: (None if r[1] is None else Head(r[1], r[2], r[3], r[4], r[5], r[6])) for r in rows}


def upsert(conn: psycopg.Connection[Any], org_id: str, table: str, rows: Sequence[HeadRow]) -> None:
    """Sets the heads of the given keys (inside the caller's transaction).

    Heads of first versions (a first load) are copied straight in: their keys have no head yet
    (the run lock keeps other runs out; a rerun's keys are not new). Should one be there all the
    same, the copy is undone and the rows go the general way: staging and an upsert."""
    if not rows:
        return
    target = qualified(org_id, store_names.pg_heads(table))
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in HEAD_COLUMNS)
    by_column = zip(*rows, strict=True)
    text = copytext.copy_text(
        [pa.array(values, kind) for values, kind in zip(by_column, HEAD_TYPES, strict=True)]
    )
    if all(row[1] == 1 for row in rows):
        try:
            with conn.transaction():  # a savepoint
                copytext.send(conn, target, HEAD_COLUMNS, text)
            return
        except psycopg.errors.UniqueViolation:
            pass
    stage = sql.Identifier(f"_stage_{table}_heads")
    conn.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS").format(stage, target)
    )
    copytext.send(conn, stage, HEAD_COLUMNS, text)
    updates = sql.SQL(", ").join(
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in HEAD_COLUMNS[1:]
    )
    conn.execute(
        sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT (composite_key) DO UPDATE SET {}").format(
            target, cols, cols, stage, updates
        )
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
        ).format(qualified(org_id, store_names.pg_heads(table))),
        (file_id, after, limit),
    ).fetchall()
    return [(r[0], Head(r[1], r[2], r[3], r[4], r[5], r[6])) for r in rows]
