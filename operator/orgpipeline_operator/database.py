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
from dataclasses import dataclass

import psycopg
import pymongo
from orgpipeline_api import store_names, stores
from orgpipeline_api.errors import LockTimeout
from orgpipeline_api.orgschema import ddl, lock, retype
from orgpipeline_api.orgschema import privacy as orgprivacy
from orgpipeline_api.v1alpha1 import OrgPipelineSpec
from psycopg import sql


class DatabaseError(Exception):
    """PostgreSQL or MongoDB refused or could not be reached; a retry may help."""


class SchemaChangeRefused(Exception):
    """The manifest changes a column's type and a stored value does not convert: nothing changed,
    and a retry cannot help until the manifest or the data does (the message names both)."""


def generate_password() -> str:
    return secrets.token_urlsafe(24)


PgConn = psycopg.Connection[tuple[object, ...]]


def _raw_columns(conn: PgConn, org_id: str) -> dict[str, dict[str, str]]:
    """{table: {column: type}} of the org's raw_<table> tables, in one catalog query."""
    rows = conn.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = 'r' AND starts_with(c.relname, 'raw_')"
        " AND a.attnum > 0 AND NOT a.attisdropped",
        (store_names.pg_schema(org_id),),
    ).fetchall()
    out: dict[str, dict[str, str]] = {}
    for relname, column, type_ in rows:
        out.setdefault(str(relname)[len("raw_") :], {})[str(column)] = str(type_)
    return out


@dataclass(frozen=True)
class ReaderState:
    """What PostgreSQL holds of an org's read-only access: whether its reader role exists, the
    views in its view schema, and the tables a run has made (`raw_<table>`, by table name)."""

    role: bool = False
    views: frozenset[str] = frozenset()
    made: frozenset[str] = frozenset()

    def ready(self, spec: OrgPipelineSpec) -> bool:
        """The role exists and every table of the spec that a run has made has its view."""
        wanted = {
            t.name
            for t in spec.tables
            if t.name in self.made and not any(c.name in ddl.RESERVED_COLUMNS for c in t.columns)
        }
        return self.role and wanted <= self.views


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
                conn = stores.connect_postgres(self._dsn)
            try:
                yield conn
            finally:
                if not conn.closed and not conn.broken:
                    self._idle.put(conn)

    def admin_connection(self) -> contextlib.AbstractContextManager[PgConn]:
        """A pooled connection as the operator's own role, for the operator's own tables (claims.py)."""
        return self._pg()

    def _mongo_client(self) -> pymongo.MongoClient[dict[str, object]]:
        with self._lock:
            if self._mongo is None:
                self._mongo = stores.mongo_client(self._mongo_uri, ping=False)
            return self._mongo

    # --- PostgreSQL ---------------------------------------------------------------------------

    def provision(self, org_id: str, password: str | None) -> bool:
        """Creates (or repairs) the org's role and schema; sets the password when one is given.
        Returns whether the role had to be created.

        Idempotent: safe to call on every reconcile and after a crash half way.
        """
        role_name, schema_name = store_names.pg_role(org_id), store_names.pg_schema(org_id)
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
        except (psycopg.Error, stores.StoreUnavailable) as exc:
            raise DatabaseError(f"PostgreSQL: cannot provision {store_names.pg_role(org_id)}: {exc}") from exc
        return not exists

    def schema_owners(self) -> set[tuple[str, str]]:
        """(schema, owner role) of every schema owned by an org role: one query for what provision()
        checks org by org (an org whose pair is here needs nothing but, maybe, a new password)."""
        try:
            with self._pg() as conn:
                rows = conn.execute(
                    "SELECT n.nspname, r.rolname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner"
                    " WHERE r.rolname LIKE %s",
                    (store_names.pg_role("") + "%",),
                ).fetchall()
        except psycopg.Error as exc:
            raise DatabaseError(f"PostgreSQL: cannot list the org schemas: {exc}") from exc
        return {(str(schema), str(role)) for schema, role in rows}

    def drop_postgres(self, org_id: str) -> None:
        """Drops the org's schema (with everything in it), its views, its role and its reader role."""
        self.drop_reader(org_id)
        role_name = store_names.pg_role(org_id)
        role = sql.Identifier(role_name)
        try:
            with self._pg() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (role_name,))
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                        sql.Identifier(store_names.pg_schema(org_id))
                    )
                )
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role_name,)).fetchone():
                    conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(role))
                    conn.execute(sql.SQL("DROP ROLE {}").format(role))
        except (psycopg.Error, stores.StoreUnavailable) as exc:
            raise DatabaseError(f"PostgreSQL: cannot drop {role_name}: {exc}") from exc

    # --- the org's read-only role and its masked views (issue 13) ------------------------------

    def provision_reader(self, spec: OrgPipelineSpec, password: str | None) -> None:
        """Creates (or repairs) the org's read-only role and its view schema, records the
        classification, and brings the tables that exist (made by a run) to the spec with one masked
        view each (`orgprivacy.view_statement`).

        A table no run has made yet costs nothing here: its first run makes it, and its view
        (`orgprivacy.ensure_view`), under the org's DDL lock. Making every table of a new org on
        create was about 0.1 s of PostgreSQL CPU per org (three tables: ~100 relations with their
        indexes), as much as the operator's own CPU per org, for tables a Job makes anyway.

        The reader role `orgpipeline_reader_<org>` has USAGE on `orgview_<org>` and SELECT on its
        views, nothing in `orgdata_<org>`; its sessions are read-only. The views are owned by the
        org's role (the work runs as that role, so every object it makes is the org's), which is
        what lets them read the raw tables; pii and sensitive columns come out masked. Idempotent;
        the views are replaced in one transaction, so a reader never sees a half-made set.
        Needs the admin connection to be allowed to SET ROLE to the org's role (a superuser, or a
        member of it).
        """
        org_id = spec.org_id
        owner, reader = store_names.pg_role(org_id), store_names.pg_reader_role(org_id)
        views = store_names.pg_view_schema(org_id)
        # A table with a reserved column name is refused by its own job, with the reason; no view.
        tables = [t for t in spec.tables if not any(c.name in ddl.RESERVED_COLUMNS for c in t.columns)]
        try:
            with self._pg() as conn:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (reader,))
                    if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (reader,)).fetchone():
                        conn.execute(
                            sql.SQL(
                                "CREATE ROLE {} LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE "
                                "NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 20"
                            ).format(sql.Identifier(reader))
                        )
                        conn.execute(
                            sql.SQL("ALTER ROLE {} SET search_path = {}").format(
                                sql.Identifier(reader), sql.Identifier(views)
                            )
                        )
                        conn.execute(
                            sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(
                                sql.Identifier(reader)
                            )
                        )
                    if password is not None:
                        conn.execute(
                            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                                sql.Identifier(reader), sql.Literal(password)
                            )
                        )
                    if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (views,)).fetchone():
                        conn.execute(
                            sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
                                sql.Identifier(views), sql.Identifier(owner)
                            )
                        )
                    conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(views)))
                    conn.execute(
                        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                            sql.Identifier(views), sql.Identifier(reader)
                        )
                    )
                # As the org's role from here on: what it makes is its own, as when its jobs make it.
                # One transaction: a refused type change leaves every table and view as it was.
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
                try:
                    with conn.transaction():
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock.key("ddl", org_id),))
                        existing = conn.execute(
                            "SELECT viewname FROM pg_views WHERE schemaname = %s", (views,)
                        ).fetchall()
                        for (name,) in existing:
                            conn.execute(
                                sql.SQL("DROP VIEW {}.{}").format(
                                    sql.Identifier(views), sql.Identifier(str(name))
                                )
                            )
                        current = _raw_columns(conn, org_id)
                        made = [t for t in tables if t.name in current]  # the rest: their first run
                        for table in made:
                            want = {c.name: retype.pg_type_name(c.type) for c in table.columns}
                            if current[table.name].items() >= want.items():
                                continue  # as the spec says
                            ddl.ensure_schema(conn, org_id, table)  # new columns, type changes
                        orgprivacy.record(conn, spec)
                        for table in made:
                            conn.execute(orgprivacy.view_statement(org_id, table))
                            conn.execute(
                                sql.SQL("GRANT SELECT ON {}.{} TO {}").format(
                                    sql.Identifier(views), sql.Identifier(table.name), sql.Identifier(reader)
                                )
                            )
                finally:
                    conn.execute("RESET ROLE")
        except retype.TypeChangeRefused as exc:
            raise SchemaChangeRefused(str(exc)) from None
        except LockTimeout as exc:
            raise DatabaseError(f"PostgreSQL: {exc}") from None
        except psycopg.Error as exc:
            raise DatabaseError(f"PostgreSQL: cannot provision {reader}: {exc}") from exc

    def reader_ready(self, spec: OrgPipelineSpec) -> bool:
        """Whether the reader role exists and has one view per table of the spec that a run has
        made (one query)."""
        return self._readers(spec.org_id).get(spec.org_id, ReaderState()).ready(spec)

    def readers(self) -> dict[str, ReaderState]:
        """`reader_ready`'s inputs for every org at once, by org id (one query, at start-up)."""
        return self._readers(None)

    def _readers(self, org_id: str | None) -> dict[str, ReaderState]:
        role, views, data = (
            store_names.pg_reader_role(""),
            store_names.pg_view_schema(""),
            store_names.pg_schema(""),
        )
        if org_id is None:
            names = (role + "%", views + "%", data + "%")
            where = "rolname LIKE %s", "schemaname LIKE %s", "schemaname LIKE %s"
        else:
            names = (
                store_names.pg_reader_role(org_id),
                store_names.pg_view_schema(org_id),
                store_names.pg_schema(org_id),
            )
            where = "rolname = %s", "schemaname = %s", "schemaname = %s"
        query = (
            f"SELECT 'r', substr(rolname, {len(role) + 1}), '' FROM pg_roles WHERE {where[0]}"
            f" UNION ALL SELECT 'v', substr(schemaname, {len(views) + 1}), viewname::text FROM pg_views"
            f" WHERE {where[1]}"
            f" UNION ALL SELECT 't', substr(schemaname, {len(data) + 1}), substr(tablename, 5) FROM pg_tables"
            f" WHERE {where[2]} AND starts_with(tablename, 'raw_')"
        )
        try:
            with self._pg() as conn:
                rows = conn.execute(query, names).fetchall()
        except psycopg.Error as exc:
            raise DatabaseError(f"PostgreSQL: cannot check the reader roles: {exc}") from exc
        found: dict[str, dict[str, set[str]]] = {}
        for what, org, name in rows:
            found.setdefault(str(org), {"r": set(), "v": set(), "t": set()})[str(what)].add(str(name))
        return {
            org: ReaderState(bool(f["r"]), frozenset(f["v"]), frozenset(f["t"])) for org, f in found.items()
        }

    def drop_reader(self, org_id: str) -> None:
        """Drops the org's read-only role and its view schema."""
        reader = store_names.pg_reader_role(org_id)
        try:
            with self._pg() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (reader,))
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                        sql.Identifier(store_names.pg_view_schema(org_id))
                    )
                )
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (reader,)).fetchone():
                    conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(reader)))
                    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(reader)))
        except psycopg.Error as exc:
            raise DatabaseError(f"PostgreSQL: cannot drop {reader}: {exc}") from exc

    # --- MongoDB ------------------------------------------------------------------------------

    def drop_collections(self, org_id: str) -> list[str]:
        """Drops the org's raw_<org>_* collections; returns their names.

        Org ids have no underscore, so the prefix raw_<org>_ never matches another org's collections.
        """
        prefix = store_names.mongo_collection(org_id, "")
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
