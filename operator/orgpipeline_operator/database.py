"""Per-org data isolation and clean-up in PostgreSQL and MongoDB.

PostgreSQL: each org gets a login role `orgpipeline_org_<org>` that owns schema `orgdata_<org>` and
nothing else. The role is NOINHERIT, not a superuser, cannot create roles or databases, and has no
privileges on other schemas (PostgreSQL 15 no longer grants CREATE on `public` to PUBLIC; the
operator revokes it anyway), so an org's job credentials cannot read another org's tables.

MongoDB (FerretDB) and S3 (versitygw) credentials are not per org: FerretDB's user management and
versitygw's account API differ from MongoDB's and AWS IAM, so the jobs get the operator's
credentials for those (or, for S3, the Secret that spec.source.credentialsSecret names). Isolation
there rests on the collection and prefix names derived from the validated org id.

Every identifier is quoted with psycopg.sql; org ids are constrained by the CRD pattern as well.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
from collections.abc import Iterator

import psycopg
import pymongo
from orgpipeline_api import naming
from psycopg import sql


class DatabaseError(Exception):
    """PostgreSQL or MongoDB refused or could not be reached; a retry may help."""


def generate_password() -> str:
    return secrets.token_urlsafe(24)


PgConn = psycopg.Connection[tuple[object, ...]]


class Databases:
    """Admin connections to PostgreSQL (a small pool, made lazily) and MongoDB."""

    def __init__(self, postgres_dsn: str, mongo_uri: str, mongo_db: str, pool_size: int = 4) -> None:
        self._dsn = postgres_dsn
        self._mongo_uri = mongo_uri
        self._mongo_db = mongo_db
        self._idle: queue.LifoQueue[PgConn] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(pool_size)
        self._mongo: pymongo.MongoClient[dict[str, object]] | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _pg(self) -> Iterator[PgConn]:
        with self._slots:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = None
            if conn is None or conn.closed or conn.broken:
                conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
            try:
                yield conn
            finally:
                if not conn.closed and not conn.broken:
                    self._idle.put(conn)

    def _mongo_client(self) -> pymongo.MongoClient[dict[str, object]]:
        with self._lock:
            if self._mongo is None:
                self._mongo = pymongo.MongoClient(self._mongo_uri, serverSelectionTimeoutMS=10000)
            return self._mongo

    # --- PostgreSQL ---------------------------------------------------------------------------

    def provision(self, org_id: str, password: str | None) -> bool:
        """Creates (or repairs) the org's role and schema; sets the password when one is given.
        Returns whether the role had to be created.

        Idempotent: safe to call on every reconcile and after a crash half way.
        """
        role_name, schema_name = naming.pg_role(org_id), naming.pg_schema(org_id)
        role, schema = sql.Identifier(role_name), sql.Identifier(schema_name)
        try:
            with self._pg() as conn, conn.transaction():
                # Serialise provisioning of the same org across threads and operator replicas.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (role_name,))
                row = conn.execute(
                    "SELECT (SELECT rolname FROM pg_roles WHERE rolname = %s),"
                    " (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = %s)",
                    (role_name, schema_name),
                ).fetchone()
                exists = bool(row and row[0] is not None)
                owner = str(row[1]) if row and row[1] is not None else None
                if not exists:
                    conn.execute(
                        sql.SQL(
                            "CREATE ROLE {} LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE "
                            "NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 20"
                        ).format(role)
                    )
                    conn.execute(sql.SQL("ALTER ROLE {} SET search_path = {}").format(role, schema))
                if password is not None:
                    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(password)))
                if owner is None:
                    conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(schema, role))
                    conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(schema))
                elif owner.strip('"') != role_name:
                    conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(schema, role))
                    conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(schema))
                # PUBLIC may connect by default; a hardened database needs the explicit grant.
                can = conn.execute(
                    "SELECT has_database_privilege(%s, current_database(), 'CONNECT')", (role_name,)
                ).fetchone()
                if not exists and not (can and can[0]):
                    conn.execute(
                        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                            sql.Identifier(conn.info.dbname), role
                        )
                    )
        except psycopg.Error as exc:
            raise DatabaseError(f"PostgreSQL: cannot provision {naming.pg_role(org_id)}: {exc}") from exc
        return not exists

    def schema_owners(self) -> set[tuple[str, str]]:
        """(schema, owner role) of every schema owned by an org role: one query for what provision()
        checks org by org (an org whose pair is here needs nothing but, maybe, a new password)."""
        try:
            with self._pg() as conn:
                rows = conn.execute(
                    "SELECT n.nspname, r.rolname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner"
                    " WHERE r.rolname LIKE %s",
                    (naming.pg_role("") + "%",),
                ).fetchall()
        except psycopg.Error as exc:
            raise DatabaseError(f"PostgreSQL: cannot list the org schemas: {exc}") from exc
        return {(str(schema), str(role)) for schema, role in rows}

    def drop_postgres(self, org_id: str) -> None:
        """Drops the org's schema (with everything in it) and its role."""
        role_name = naming.pg_role(org_id)
        role = sql.Identifier(role_name)
        try:
            with self._pg() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (role_name,))
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                        sql.Identifier(naming.pg_schema(org_id))
                    )
                )
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role_name,)).fetchone():
                    conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(role))
                    conn.execute(sql.SQL("DROP ROLE {}").format(role))
        except psycopg.Error as exc:
            raise DatabaseError(f"PostgreSQL: cannot drop {role_name}: {exc}") from exc

    # --- MongoDB ------------------------------------------------------------------------------

    def drop_collections(self, org_id: str) -> list[str]:
        """Drops the org's raw_<org>_* collections; returns their names.

        Org ids have no underscore, so the prefix raw_<org>_ never matches another org's collections.
        """
        prefix = naming.mongo_collection(org_id, "")
        try:
            db = self._mongo_client()[self._mongo_db]
            names = [n for n in db.list_collection_names() if n.startswith(prefix)]
            for name in names:
                db.drop_collection(name)
        except pymongo.errors.PyMongoError as exc:
            raise DatabaseError(f"MongoDB: cannot drop the collections of org {org_id}: {exc}") from exc
        return names

    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait().close()
        if self._mongo is not None:
            self._mongo.close()
