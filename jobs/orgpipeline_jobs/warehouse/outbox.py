"""raw_{table}_outbox: version documents committed to PostgreSQL and not yet confirmed in MongoDB.

The fused `run` commits a batch to PostgreSQL first, with the batch's BSON documents here, and then
writes them to MongoDB; once MongoDB has them the row is removed. A run that died in between leaves
the row, and the next run of the table replays it before anything else (deterministic `_id`s make
the replay add nothing that is already there).

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


def put(conn: psycopg.Connection[Any], org_id: str, table: str, batch_id: str, documents: bytes) -> None:
    """Keeps a batch's documents (concatenated BSON, stored compressed), inside the caller's
    transaction."""
    conn.execute(
        sql.SQL("INSERT INTO {} (batch_id, documents) VALUES (%s, %s) ON CONFLICT DO NOTHING").format(
            qualified(org_id, store_names.pg_outbox(table))
        ),
        (batch_id, pack(documents)),
    )


def waiting(conn: psycopg.Connection[Any], org_id: str, table: str) -> bool:
    """Whether an interrupted run left batches to replay (one indexed read)."""
    target = qualified(org_id, store_names.pg_outbox(table))
    return conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(target)).fetchone() == (True,)


def pending(conn: psycopg.Connection[Any], org_id: str, table: str) -> Iterator[tuple[str, bytes]]:
    """The batches left by an interrupted run, one at a time, in batch order."""
    target = qualified(org_id, store_names.pg_outbox(table))
    ids = [r[0] for r in conn.execute(sql.SQL("SELECT batch_id FROM {} ORDER BY batch_id").format(target))]
    for batch_id in ids:
        row = conn.execute(
            sql.SQL("SELECT documents FROM {} WHERE batch_id = %s").format(target), (batch_id,)
        ).fetchone()
        if row is not None:
            yield batch_id, unpack(bytes(row[0]))


def remove(conn: psycopg.Connection[Any], org_id: str, table: str, batch_ids: Sequence[str]) -> None:
    if batch_ids:
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE batch_id = ANY(%s)").format(
                qualified(org_id, store_names.pg_outbox(table))
            ),
            (list(batch_ids),),
        )
