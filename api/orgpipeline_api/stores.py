"""Connections to the stores, made the same way by the jobs, the command line and the operator.

One place for connect timeouts, `tz_aware` MongoDB clients and the one-line message of a server
that cannot be reached (`StoreUnavailable`); callers map it to their own error or exit code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    import pymongo  # imported by mongo_client: a run that lands nothing never connects to MongoDB

CONNECT_TIMEOUT_SECONDS = 10
MONGO_TIMEOUT_MS = 8000


class StoreUnavailable(Exception):
    """A store could not be reached; the message is one line naming it."""

    def __init__(self, store: str, message: str) -> None:
        super().__init__(f"{store} unreachable: {message}")
        self.store = store


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect_postgres(dsn: str, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.OperationalError as exc:
        raise StoreUnavailable("PostgreSQL", first_line(exc)) from None


def mongo_client(uri: str, *, ping: bool = True) -> pymongo.MongoClient[dict[str, Any]]:
    """A client with the shared timeouts; `ping` checks the server now rather than at first use."""
    import pymongo
    import pymongo.errors

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        uri, tz_aware=True, serverSelectionTimeoutMS=MONGO_TIMEOUT_MS, connectTimeoutMS=MONGO_TIMEOUT_MS
    )
    if ping:
        try:
            client.admin.command("ping")
        except pymongo.errors.PyMongoError as exc:
            client.close()
            raise StoreUnavailable("MongoDB", str(exc).split(",")[0]) from None
    return client


# --- the landing store's indexes ---------------------------------------------------------------


@dataclass(frozen=True)
class LandingIndex:
    """A secondary index of every raw_<org>_<table> collection, for the reader named in `why`."""

    name: str
    keys: tuple[tuple[str, int], ...]
    why: str
    pending_only: bool = False
    """Only documents with postgres_status "pending" (a partial index: the few a load still has to
    take, not every version ever landed; the versions `run` lands need no entry)."""


LANDING_INDEXES = (
    LandingIndex(
        "composite_key_1_version_1",
        (("composite_key", 1), ("version", 1)),
        "`audit --composite-key`: one key's versions, in order",
    ),
    LandingIndex("pending_batch_id_1", (("batch_id", 1),), "`load` and `run`: pending versions", True),
)
"""What the landing store's readers filter on beyond `_id`; the operator makes them with each
collection (and on existing ones at their next reconcile). `validate` reads every loaded version,
which no index makes cheaper."""


def mongo_index_models(indexes: Sequence[LandingIndex] = LANDING_INDEXES) -> list[Any]:
    """The indexes as MongoDB's createIndexes takes them (MongoDB proper)."""
    from pymongo import IndexModel

    return [
        IndexModel(
            list(i.keys),
            name=i.name,
            **({"partialFilterExpression": {"postgres_status": "pending"}} if i.pending_only else {}),
        )
        for i in indexes
    ]


def ferretdb_index_name(table: str, index: LandingIndex) -> str:
    """A PostgreSQL index name for `index` on FerretDB's table `table`, unique in the schema and
    under 63 bytes whatever the table's name."""
    digest = hashlib.sha256(f"{table}\0{index.name}".encode()).hexdigest()[:16]
    return f"orgpipeline_{digest}"


def ferretdb_index_sql(schema: str, table: str, index: LandingIndex, *, concurrently: bool) -> sql.Composed:
    """The PostgreSQL index that serves `index` on FerretDB 1.x's PostgreSQL backend.

    FerretDB pushes an equality filter down as `(_jsonb -> 'field') @> '"value"'`, which its own
    btree indexes (what createIndexes makes) cannot answer, so the operator makes these directly:
    a GIN jsonb_path_ops index on the first field, which answers that `@>` (the further fields are
    sorted by FerretDB among the few documents found); a pending-only index is a small btree over
    the pending documents, which the planner takes for `postgres_status @> '"pending"'`. FerretDB
    does not list them (listIndexes shows its own) and drops them with the collection's table."""
    field = sql.Literal(index.keys[0][0])
    target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    head = sql.SQL(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS" if concurrently else "CREATE INDEX IF NOT EXISTS"
    )
    name = sql.Identifier(ferretdb_index_name(table, index))
    if index.pending_only:
        return sql.SQL(
            "{} {} ON {} ((_jsonb -> {})) WHERE (_jsonb -> 'postgres_status') @> '\"pending\"'"
        ).format(head, name, target, field)
    return sql.SQL("{} {} ON {} USING gin ((_jsonb -> {}) jsonb_path_ops)").format(head, name, target, field)
