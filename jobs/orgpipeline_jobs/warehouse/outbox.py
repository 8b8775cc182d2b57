"""raw_{table}_outbox: version documents on their way to MongoDB.

The fused `run` keeps a batch's BSON documents here before anything else of the batch, `committed`
false, then writes them to MongoDB while it commits the batch's PostgreSQL part (raw rows, change
log, heads) in a second transaction that also sets `committed`; once MongoDB has them and that
transaction is committed, the row is removed. The two writes overlap (they were one after the
other) and each store still ends with exactly what the other has:
- a row left `committed` (the run died before MongoDB had the batch): the next run replays it
  (deterministic `_id`s make the replay add nothing already there);
- a row left not `committed` (the run died, or PostgreSQL refused the batch, before its part was
  committed): its documents are withdrawn from MongoDB (`withdraw`), so MongoDB never keeps a
  version PostgreSQL does not have, and the file's rerun writes them again.

The documents are kept zstd-compressed (level 1): version documents repeat their field names and
run metadata, so a part's BSON shrinks to ~6% for ~3 ms of CPU per thousand documents, where
writing and deleting the plain BSON cost PostgreSQL ~30 ms (measured: 160 MB of BSON per 100,000
versions). A compressed row starts with `_MAGIC`, which no BSON can start with (its first four
bytes, a document's length, would be negative); rows without it (older releases) are plain BSON.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

import psycopg
from orgpipeline_api import store_names
from orgpipeline_api.orgschema.ddl import qualified
from psycopg import sql

_MAGIC = b"\xff\xffz1"

if TYPE_CHECKING:
    import pyarrow as pa


@cache
def _codec() -> pa.Codec:
    import pyarrow as pa  # at the first batch: a run with nothing to write imports no pyarrow

    return pa.Codec("zstd", compression_level=1)


def pack(documents: bytes) -> bytes:
    """Concatenated BSON -> the stored form: magic, uncompressed size, zstd frame."""
    compressed: bytes = _codec().compress(documents, asbytes=True)
    return _MAGIC + struct.pack("<Q", len(documents)) + compressed


def unpack(stored: bytes) -> bytes:
    """The stored form (or plain BSON of an older release) -> concatenated BSON."""
    if not stored.startswith(_MAGIC):
        return stored
    (size,) = struct.unpack_from("<Q", stored, len(_MAGIC))
    plain: bytes = _codec().decompress(stored[len(_MAGIC) + 8 :], decompressed_size=size, asbytes=True)
    return plain


def put(
    conn: psycopg.Connection[Any],
    org_id: str,
    table: str,
    batch_id: str,
    documents: bytes,
    committed: bool = True,
) -> None:
    """Keeps a batch's documents (concatenated BSON, stored compressed). `committed` false: the
    batch's PostgreSQL part is not committed yet (`commit` says when it is)."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (batch_id, documents, committed) VALUES (%s, %s, %s) ON CONFLICT (batch_id)"
            " DO UPDATE SET documents = excluded.documents, committed = excluded.committed"
        ).format(qualified(org_id, store_names.pg_outbox(table))),
        (batch_id, pack(documents), committed),
    )


def commit(conn: psycopg.Connection[Any], org_id: str, table: str, batch_id: str) -> None:
    """Marks the batch's PostgreSQL part committed, inside the transaction that writes it."""
    conn.execute(
        sql.SQL("UPDATE {} SET committed = TRUE WHERE batch_id = %s").format(
            qualified(org_id, store_names.pg_outbox(table))
        ),
        (batch_id,),
    )


def waiting(conn: psycopg.Connection[Any], org_id: str, table: str) -> bool:
    """Whether an interrupted run left batches to replay (one indexed read)."""
    target = qualified(org_id, store_names.pg_outbox(table))
    return conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(target)).fetchone() == (True,)


def pending(conn: psycopg.Connection[Any], org_id: str, table: str) -> Iterator[tuple[str, bytes, bool]]:
    """The batches left by an interrupted run, one at a time, in batch order: (batch_id,
    concatenated BSON, whether the batch's PostgreSQL part is committed)."""
    target = qualified(org_id, store_names.pg_outbox(table))
    ids = [r[0] for r in conn.execute(sql.SQL("SELECT batch_id FROM {} ORDER BY batch_id").format(target))]
    for batch_id in ids:
        row = conn.execute(
            sql.SQL("SELECT documents, committed FROM {} WHERE batch_id = %s").format(target), (batch_id,)
        ).fetchone()
        if row is not None:
            yield batch_id, unpack(bytes(row[0])), bool(row[1])


def remove(conn: psycopg.Connection[Any], org_id: str, table: str, batch_ids: Sequence[str]) -> None:
    if batch_ids:
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE batch_id = ANY(%s)").format(
                qualified(org_id, store_names.pg_outbox(table))
            ),
            (list(batch_ids),),
        )
