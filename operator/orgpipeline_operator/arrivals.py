"""File arrivals kept where the next active replica finds them: `orgpipeline_operator.file_arrivals`.

Every replica's webhook stores the objects a notification reports (one INSERT, committed before the
sender gets its 200), so a notification is not lost when the active replica dies with its batch
pending, nor while the standby takes over: the standby accepts too. The active replica routes the
stored rows, batches them (`file_events.Batches`, the row ids in `Batch.rows`) and forgets a batch's
rows once its Job exists (or there is nothing to run). A Job made just before a crash is found
again: the rows are still there, the rebuilt batch has the same name, the Job exists (409).

In the operator's own schema (claims.py): org roles have no privilege on it. Operators that share a
cluster (ORGPIPELINE_LABEL_SELECTOR) share the table: each stores and reads its own `scope` (its
selector) only, so none forgets what another's orgs were sent.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from orgpipeline_operator import claims, database
from orgpipeline_operator.file_events import ObjectCreated

TABLE = sql.Identifier(claims.SCHEMA, "file_arrivals")
_DDL = (
    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(claims.SCHEMA)),
    sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, scope text NOT NULL, bucket text NOT NULL,"
        " key text NOT NULL, principal text NOT NULL DEFAULT '',"
        " received_at timestamptz NOT NULL DEFAULT clock_timestamp())"
    ).format(TABLE),
)
_LOCK = "orgpipeline_operator.file_arrivals"
_made: weakref.WeakSet[database.Databases] = weakref.WeakSet()
_made_lock = threading.Lock()


@dataclass(frozen=True)
class Arrival:
    id: int
    obj: ObjectCreated
    received_at: str
    """UTC ISO time it was stored: names the batch it opens, whichever replica rebuilds it."""


def _ensure(db: database.Databases, conn: database.PgConn) -> None:
    with _made_lock:
        if db in _made:
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK,))
            for statement in _DDL:
                conn.execute(statement)
        _made.add(db)


def _rows(cur: psycopg.Cursor[tuple[object, ...]]) -> list[Arrival]:
    return [
        Arrival(int(str(i)), ObjectCreated(str(b), str(k), str(who)), str(at))
        for i, b, k, who, at in cur.fetchall()
    ]


_AT = "to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"


def record(db: database.Databases, scope: str, objects: Iterable[ObjectCreated]) -> list[Arrival]:
    """Stores the objects (one statement); their rows, in order."""
    objects = list(objects)
    if not objects:
        return []
    try:
        with db.admin_connection() as conn:
            _ensure(db, conn)
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {} (scope, bucket, key, principal)"
                        " SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::text[])"
                        " RETURNING id, bucket, key, principal, " + _AT
                    ).format(TABLE),
                    (
                        scope,
                        [o.bucket for o in objects],
                        [o.key for o in objects],
                        [o.principal for o in objects],
                    ),
                )
                return sorted(_rows(cur), key=lambda a: a.id)
    except psycopg.Error as exc:
        raise database.DatabaseError(f"PostgreSQL: cannot store file arrivals: {exc}") from exc


def pending(db: database.Databases, scope: str) -> list[Arrival]:
    """Every stored arrival not yet forgotten, oldest first."""
    try:
        with db.admin_connection() as conn:
            _ensure(db, conn)
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "SELECT id, bucket, key, principal, " + _AT + " FROM {} WHERE scope = %s ORDER BY id"
                    ).format(TABLE),
                    (scope,),
                )
                return _rows(cur)
    except psycopg.Error as exc:
        raise database.DatabaseError(f"PostgreSQL: cannot read file arrivals: {exc}") from exc


def forget(db: database.Databases, ids: Iterable[int]) -> None:
    ids = sorted(set(ids))
    if not ids:
        return
    try:
        with db.admin_connection() as conn:
            conn.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(TABLE), (ids,))
    except psycopg.Error as exc:
        raise database.DatabaseError(f"PostgreSQL: cannot forget file arrivals: {exc}") from exc
