"""Who owns an org id: recorded in PostgreSQL, beside the org's data, where tenants cannot write.

`orgpipeline_operator.org_owners` holds one row per org id: the uid and name of the OrgPipeline that
owns it (the first to claim it) and the uid of the namespace the operator made for it.
`orgpipeline_operator.org_refusals` holds the OrgPipelines refused an org id because another held
it. The schema is the operator's own (made by the operator's role, which needs only CREATE on the
database for it); org roles have no privilege on it, so no tenant can rewrite who owns what (a
COMMENT on a tenant's own schema could be).

The rules (issue 22): an org id held by another OrgPipeline is refused; a refused OrgPipeline stays
refused (it never inherits the org when the owner goes: with deletionPolicy Delete its deletion
would drop the first owner's data); deleting the owner releases the id, and an OrgPipeline created
after that takes it. The deletion handler drops data only when the recorded owner is the object
being deleted.
"""

from __future__ import annotations

import threading
import weakref
from typing import LiteralString

import psycopg
from orgpipeline_api import stores
from psycopg import sql

from orgpipeline_operator import database
from orgpipeline_operator.ownership import Owner

SCHEMA = "orgpipeline_operator"
_DDL = (
    "CREATE SCHEMA IF NOT EXISTS {schema}",
    "CREATE TABLE IF NOT EXISTS {owners} ("
    " org_id text PRIMARY KEY, owner_uid text NOT NULL, owner_name text NOT NULL,"
    " namespace_uid text, claimed_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS {refusals} ("
    " org_id text NOT NULL, uid text NOT NULL, name text NOT NULL, held_by text NOT NULL,"
    " refused_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (org_id, uid))",
)


def _q(text: LiteralString) -> sql.Composed:
    """A statement on the operator's tables, their names quoted."""
    return sql.SQL(text).format(
        schema=sql.Identifier(SCHEMA),
        owners=sql.Identifier(SCHEMA, "org_owners"),
        refusals=sql.Identifier(SCHEMA, "org_refusals"),
    )


def _owner(row: tuple[object, ...]) -> Owner:
    return Owner(str(row[0]), str(row[1]), str(row[2]) if row[2] else None)


_LOCK = "orgpipeline_operator.claims"
_made: weakref.WeakSet[database.Databases] = weakref.WeakSet()
_made_lock = threading.Lock()


class Refused(Exception):
    """The OrgPipeline may not have the org id; the message says who holds it."""

    def __init__(self, message: str, owner: Owner | None) -> None:
        super().__init__(message)
        self.owner = owner


def _ensure(db: database.Databases, conn: database.PgConn) -> None:
    """The schema and tables, made once per process (IF NOT EXISTS, under an advisory lock: two
    operators starting together must not both try)."""
    with _made_lock:
        if db in _made:
            return
        with conn.transaction():
            conn.execute(_q("SELECT pg_advisory_xact_lock(hashtext(%s))"), (_LOCK,))
            for statement in _DDL:
                conn.execute(_q(statement))
        _made.add(db)


def claim(db: database.Databases, org_id: str, uid: str, name: str) -> Owner:
    """Claims the org id for OrgPipeline `name` (uid `uid`); returns the owner (this one, or the
    one that holds the id: then this one is recorded as refused). Raises Refused when this
    OrgPipeline was refused before (it stays refused, whoever holds the id now)."""
    try:
        with db.admin_connection() as conn:
            _ensure(db, conn)
            with conn.transaction():
                conn.execute(_q("SELECT pg_advisory_xact_lock(hashtext(%s))"), (f"{_LOCK}/{org_id}",))
                row = conn.execute(
                    _q("SELECT owner_uid, owner_name, namespace_uid FROM {owners} WHERE org_id = %s"),
                    (org_id,),
                ).fetchone()
                if row is not None:
                    owner = _owner(row)
                    if owner.uid != uid:
                        conn.execute(
                            _q(
                                "INSERT INTO {refusals} (org_id, uid, name, held_by)"
                                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"
                            ),
                            (org_id, uid, name, owner.name),
                        )
                    return owner
                refused = conn.execute(
                    _q("SELECT held_by FROM {refusals} WHERE org_id = %s AND uid = %s"),
                    (org_id, uid),
                ).fetchone()
                if refused is not None:
                    raise Refused(
                        f"orgId {org_id} belonged to OrgPipeline {refused[0]} when this OrgPipeline "
                        "was refused it; a refused OrgPipeline never inherits an org id (delete and "
                        "re-create it to claim the id now)",
                        None,
                    )
                conn.execute(
                    _q("INSERT INTO {owners} (org_id, owner_uid, owner_name) VALUES (%s, %s, %s)"),
                    (org_id, uid, name),
                )
                return Owner(uid, name)
    except (psycopg.Error, stores.StoreUnavailable) as exc:
        raise database.DatabaseError(f"PostgreSQL: cannot claim orgId {org_id}: {exc}") from exc


def refuse(db: database.Databases, org_id: str, uid: str, name: str, held_by: str) -> None:
    """Records that OrgPipeline `name` (uid `uid`) was refused the org id, held by `held_by`: it
    stays refused (claim() raises Refused) until it is deleted (release())."""
    try:
        with db.admin_connection() as conn:
            _ensure(db, conn)
            conn.execute(
                _q(
                    "INSERT INTO {refusals} (org_id, uid, name, held_by) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT DO NOTHING"
                ),
                (org_id, uid, name, held_by),
            )
    except (psycopg.Error, stores.StoreUnavailable) as exc:
        raise database.DatabaseError(
            f"PostgreSQL: cannot record the refusal of orgId {org_id}: {exc}"
        ) from exc


def owner(db: database.Databases, org_id: str) -> Owner | None:
    """The recorded owner of the org id, or None."""
    try:
        with db.admin_connection() as conn:
            _ensure(db, conn)
            row = conn.execute(
                _q("SELECT owner_uid, owner_name, namespace_uid FROM {owners} WHERE org_id = %s"),
                (org_id,),
            ).fetchone()
    except (psycopg.Error, stores.StoreUnavailable) as exc:
        raise database.DatabaseError(f"PostgreSQL: cannot read the owner of orgId {org_id}: {exc}") from exc
    return _owner(row) if row else None


def owners(db: database.Databases) -> dict[str, Owner]:
    """Every recorded owner, by org id (read once at start-up into the cache)."""
    try:
        with db.admin_connection() as conn:
            _ensure(db, conn)
            rows = conn.execute(
                _q("SELECT org_id, owner_uid, owner_name, namespace_uid FROM {owners}")
            ).fetchall()
    except (psycopg.Error, stores.StoreUnavailable) as exc:
        raise database.DatabaseError(f"PostgreSQL: cannot read the org owners: {exc}") from exc
    return {str(r[0]): _owner(r[1:]) for r in rows}


def record_namespace(db: database.Databases, org_id: str, uid: str, namespace_uid: str) -> None:
    """Records the uid of the namespace the operator made (or found its own) for the owner."""
    try:
        with db.admin_connection() as conn:
            _ensure(db, conn)
            conn.execute(
                _q("UPDATE {owners} SET namespace_uid = %s WHERE org_id = %s AND owner_uid = %s"),
                (namespace_uid, org_id, uid),
            )
    except (psycopg.Error, stores.StoreUnavailable) as exc:
        raise database.DatabaseError(
            f"PostgreSQL: cannot record the namespace of orgId {org_id}: {exc}"
        ) from exc


def release(db: database.Databases, org_id: str, uid: str) -> None:
    """The OrgPipeline `uid` is deleted: its claim on the org id (if it held it) and its refusal
    (if it was refused) go."""
    try:
        with db.admin_connection() as conn:
            _ensure(db, conn)
            with conn.transaction():
                conn.execute(_q("DELETE FROM {owners} WHERE org_id = %s AND owner_uid = %s"), (org_id, uid))
                conn.execute(_q("DELETE FROM {refusals} WHERE org_id = %s AND uid = %s"), (org_id, uid))
    except (psycopg.Error, stores.StoreUnavailable) as exc:
        raise database.DatabaseError(f"PostgreSQL: cannot release orgId {org_id}: {exc}") from exc
