"""Per-org data isolation and clean-up in PostgreSQL and MongoDB.

PostgreSQL: each org gets a login role `orgpipeline_org_<org>` that owns schema `orgdata_<org>` and
nothing else. The role is NOINHERIT, not a superuser, cannot create roles or databases, and has no
privileges on other schemas (PostgreSQL 15 no longer grants CREATE on `public` to PUBLIC), so an
org's job credentials cannot read another org's tables.

The operator's own role needs no superuser (operator/README.md, "Isolation", lists what it needs):
it creates roles (CREATEROLE), schemas (CREATE on the database) and is made a member of each org
and reader role it creates (CREATE SCHEMA ... AUTHORIZATION, DROP SCHEMA and DROP OWNED BY ask for
it). It never works inside an org's schema itself: the tenant owns what is there and its triggers
and functions would run with the operator's privileges. That work (views, the classification
record, column changes) runs in `tenant.session`, logged in as a delegate of the org's role.

MongoDB: each org's collections live in a database of its own (`orgraw_<org>`) that only the org's
identity may read and write; see `Databases.provision_mongo` (FerretDB: the org's PostgreSQL role,
granted the tables of that database's schema; MongoDB: a user with readWrite on it).

Every identifier is quoted with psycopg.sql; org ids are constrained by the CRD pattern as well.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import cast

import psycopg
import psycopg.conninfo
import pymongo
import pymongo.errors
from orgpipeline_api import store_names, stores
from orgpipeline_api.errors import LockTimeout
from orgpipeline_api.orgschema import ddl, exportaudit, lock, retype, tenant
from orgpipeline_api.orgschema import privacy as orgprivacy
from orgpipeline_api.v1alpha1 import OrgPipelineSpec
from psycopg import sql

log = logging.getLogger(__name__)
_warned_temporary = threading.Event()
TENANT_DEADLINE_SECONDS = 900.0
"""The longest the operator works in an org's schema at once (a column type change of a large table
is the long part): then the delegate's backend is ended, so a tenant's code that never returns holds
one of the operator's workers that long at most (and the reconcile fails, to be retried)."""


class DatabaseError(Exception):
    """PostgreSQL or MongoDB refused or could not be reached; a retry may help."""


class SchemaChangeRefused(Exception):
    """The manifest changes a column's type and a stored value does not convert: nothing changed,
    and a retry cannot help until the manifest or the data does (the message names both)."""


def generate_password() -> str:
    return secrets.token_urlsafe(24)


PgConn = psycopg.Connection[tuple[object, ...]]

_MEMBER = (
    "(EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.roleid = r.oid"
    " AND m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user))"
    " OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user))"
)
"""Whether the session's role may act as role `r` (a direct member, or a superuser), read from the
catalog: pg_has_role() would have PostgreSQL recompute every role the operator belongs to (two per
org) after each change of any role, the bulk of its CPU per org at thousands of orgs."""


def password_verifier(password: str) -> sql.Composable:
    """`PASSWORD <verifier>`: the SCRAM verifier made here (`tenant.LOGIN_SCRAM_ITERATIONS`), so the
    server does not hash and no statement holds the password."""
    return sql.SQL("PASSWORD {}").format(
        sql.Literal(tenant.scram_verifier(password, tenant.LOGIN_SCRAM_ITERATIONS))
    )


ORG_PASSWORD_SECONDS = 120.0
"""How long a password given to `provision` is kept for the org's next `provision_reader` (the same
reconcile), which then works in the org's schema logged in as the org rather than as a delegate."""


def _relations(kinds: str) -> str:
    """The names of a schema's relations of the given relkinds (`%s`: the schema's name), found
    through the schema's dependants (an index) rather than a scan of pg_class, which holds ~15
    relations per org."""
    return (
        "SELECT c.relname::text FROM pg_depend d JOIN pg_class c ON c.oid = d.objid"
        " WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = to_regnamespace(quote_ident(%s))"
        f" AND d.refobjsubid = 0 AND d.classid = 'pg_class'::regclass AND c.relkind IN ({kinds})"
    )


def _ensure_member(conn: PgConn, *roles: str) -> None:
    """Makes the operator's role a member of the given roles (those that exist) where it is not:
    owning through them is what lets it make and drop their schemas and DROP OWNED BY them. On
    PostgreSQL 15 CREATEROLE may grant any non-superuser role, which also repairs a membership the
    org's own login revoked (a role may revoke members of itself from its own session there)."""
    rows = conn.execute(
        f"SELECT rolname FROM pg_roles r WHERE rolname = ANY(%s) AND NOT {_MEMBER}", (list(roles),)
    ).fetchall()
    for (name,) in rows:
        conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(str(name))))


def _provision_export_audit(conn: PgConn, org_id: str) -> None:
    """The org's export audit, owned by the operator's role (`exportaudit`: append-only for the
    org). In a savepoint: a failure leaves the org's exports refused (they need the audit), never
    its runs, and is retried at the next provisioning."""
    if exportaudit.exists(conn, org_id):
        return  # one query: provision() runs at every reconcile that is not a resync
    try:
        with conn.transaction():
            exportaudit.provision(conn, org_id)
    except psycopg.Error as exc:
        log.warning("org %s: export audit not provisioned (exports wait for it): %s", org_id, exc)


DATABASE_ACL_LOCK = "orgpipeline: the database's grants"


def _lock_database_acl(conn: PgConn) -> None:
    """Takes the lock that serialises GRANT and REVOKE on the database (until the transaction
    ends): every org's grant rewrites the database's one catalog row, and two at once fail with
    'tuple concurrently updated' (78 of 300 orgs made at once, each then retried)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (DATABASE_ACL_LOCK,))


def _revoke_database(conn: PgConn, role_name: str) -> None:
    """Revokes what the role was granted on the database (CONNECT, TEMPORARY), whoever granted it:
    DROP OWNED BY leaves the grants of another grantor (the operator's, when a superuser drops), and
    DROP ROLE refuses a role that still has them. In the caller's transaction."""
    # The grantors this session may act as (itself, or any when a superuser): a grant by another
    # (a superuser, for an org made by an earlier superuser operator) is left to DROP ROLE to name.
    grantors = conn.execute(
        "SELECT DISTINCT r.rolname::text, r.rolname = current_user FROM pg_database d,"
        " aclexplode(d.datacl) a JOIN pg_roles r ON r.oid = a.grantor WHERE d.datname = current_database()"
        " AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s) AND pg_has_role(r.oid, 'MEMBER')",
        (role_name,),
    ).fetchall()
    if grantors:
        _lock_database_acl(conn)
    for grantor, itself in grantors:
        if not itself:
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(str(grantor))))
        conn.execute(
            sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(
                sql.Identifier(conn.info.dbname), sql.Identifier(role_name)
            )
        )
        conn.execute("RESET ROLE")


def _raw_columns(conn: PgConn, org_id: str) -> dict[str, dict[str, str]]:
    """{table: {column: type}} of the org's raw_<table> tables, in one catalog query."""
    rows = conn.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_depend d"
        " JOIN pg_class c ON c.oid = d.objid JOIN pg_attribute a ON a.attrelid = c.oid"
        " WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = to_regnamespace(quote_ident(%s))"
        " AND d.refobjsubid = 0 AND d.classid = 'pg_class'::regclass AND c.relkind = 'r'"
        " AND starts_with(c.relname, 'raw_') AND a.attnum > 0 AND NOT a.attisdropped",
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

    def __init__(
        self,
        postgres_dsn: str,
        mongo_uri: str,
        mongo_db: str,
        pool_size: int = 4,
        *,
        mongo_users: str = "ferretdb",
        ferretdb_database: str = "ferretdb",
    ) -> None:
        self._dsn = postgres_dsn
        self._mongo_uri = mongo_uri
        self._mongo_db = mongo_db  # the shared database of earlier releases (moved out of)
        self._mongo_users = mongo_users
        self._ferretdb_database = ferretdb_database
        self._ferret_lock = threading.Lock()
        self._ferret_conn: PgConn | None = None
        self._idle: queue.LifoQueue[PgConn] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(pool_size)
        self._mongo: pymongo.MongoClient[dict[str, object]] | None = None
        self._lock = threading.Lock()
        self._org_passwords: dict[str, tuple[str, float]] = {}

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
                    " (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = %s),"
                    f" (SELECT {_MEMBER} FROM pg_roles r WHERE rolname = %s),"
                    " (SELECT has_database_privilege(oid, current_database(), 'CONNECT')"
                    "  AND has_database_privilege(oid, current_database(), 'TEMPORARY')"
                    "  FROM pg_roles WHERE rolname = %s)",
                    (role_name, schema_name, role_name, role_name),
                ).fetchone()
                exists = bool(row and row[0] is not None)
                owner = str(row[1]) if row and row[1] is not None else None
                member, database_ok = bool(row and row[2]), bool(row and row[3])
                if not exists:
                    conn.execute(
                        sql.SQL(
                            "CREATE ROLE {} LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE "
                            "NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 20"
                        ).format(role)
                    )
                    conn.execute(sql.SQL("ALTER ROLE {} SET search_path = {}").format(role, schema))
                if not member:
                    conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
                if password is not None:
                    conn.execute(sql.SQL("ALTER ROLE {} {}").format(role, password_verifier(password)))
                if owner is None:
                    # A new schema grants PUBLIC nothing (no REVOKE: one less walk of the operator's
                    # memberships). Its view schema comes with it, next (`provision_reader` finds it),
                    # while PostgreSQL's list of those memberships is likely still valid.
                    conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(schema, role))
                    views = store_names.pg_view_schema(org_id)
                    if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (views,)).fetchone():
                        conn.execute(
                            sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(views), role)
                        )
                elif owner.strip('"') != role_name:
                    conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(schema, role))
                    conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(schema))
                # PUBLIC may connect and make temporary tables by default; a hardened database
                # (PUBLIC has no TEMPORARY, so that reader roles cannot write) needs the explicit
                # grants: the jobs stage rows in temporary tables.
                if not database_ok:
                    _lock_database_acl(conn)
                    conn.execute(
                        sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
                            sql.Identifier(conn.info.dbname), role
                        )
                    )
                _provision_export_audit(conn, org_id)
        except (psycopg.Error, stores.StoreUnavailable) as exc:
            raise DatabaseError(f"PostgreSQL: cannot provision {store_names.pg_role(org_id)}: {exc}") from exc
        if password is not None:
            self._keep_password(org_id, password)
        return not exists

    def _keep_password(self, org_id: str, password: str) -> None:
        now = time.monotonic()
        with self._lock:
            for org, (_, since) in list(self._org_passwords.items()):
                if now - since > ORG_PASSWORD_SECONDS:
                    del self._org_passwords[org]
            self._org_passwords[org_id] = (password, now)

    def _take_password(self, org_id: str) -> str | None:
        """The org's password given to `provision` moments ago, if any (taken once)."""
        with self._lock:
            kept = self._org_passwords.pop(org_id, None)
        if kept is None or time.monotonic() - kept[1] > ORG_PASSWORD_SECONDS:
            return None
        return kept[0]

    def schema_owners(self) -> set[tuple[str, str]]:
        """(schema, owner role) of every schema owned by an org role: one query for what provision()
        checks org by org (an org whose pair is here needs nothing but, maybe, a new password)."""
        try:
            with self._pg() as conn:
                # Only where provision() would do nothing: the operator is a member of the role, and
                # the role may connect and make temporary tables.
                # ... and the org's export audit is there (an org made before it gets it at start).
                rows = conn.execute(
                    "SELECT n.nspname, r.rolname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner"
                    " WHERE r.rolname LIKE %s AND pg_has_role(r.oid, 'USAGE')"
                    " AND to_regclass(quote_ident('orgaudit_' || substr(r.rolname, %s))"
                    "  || '.' || quote_ident(%s)) IS NOT NULL"
                    " AND has_database_privilege(r.oid, current_database(), 'CONNECT')"
                    " AND has_database_privilege(r.oid, current_database(), 'TEMPORARY')",
                    (
                        store_names.pg_role("") + "%",
                        len(store_names.pg_role("")) + 1,
                        exportaudit.TABLE,
                    ),
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
                _ensure_member(conn, role_name)
                # DROP runs none of the tenant's code (event triggers are a superuser's).
                exportaudit.drop(conn, org_id)
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                        sql.Identifier(store_names.pg_schema(org_id))
                    )
                )
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role_name,)).fetchone():
                    # DROP OWNED BY revokes the role's grants on the database too (its one row):
                    # under the lock of every GRANT there, or a concurrent org's provisioning fails
                    # with 'tuple concurrently updated'.
                    _lock_database_acl(conn)
                    conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(role))
                    _revoke_database(conn, role_name)
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
        The work in the org's schemas runs in `tenant.session` (a delegate of the org's role), never
        in the operator's own session.
        """
        org_id = spec.org_id
        owner, reader = store_names.pg_role(org_id), store_names.pg_reader_role(org_id)
        views = store_names.pg_view_schema(org_id)
        # A table with a reserved column name is refused by its own job, with the reason; no view.
        tables = [t for t in spec.tables if not any(c.name in ddl.RESERVED_COLUMNS for c in t.columns)]
        try:
            with self._pg() as conn:
                # Roles, grants and the view schema: nothing of the tenant's runs in these statements.
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
                        # A default it may turn off: what keeps it read-only is that it has no
                        # privilege to write, make temporary objects or create anything.
                        conn.execute(
                            sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(
                                sql.Identifier(reader)
                            )
                        )
                    # The org's role only: CREATE SCHEMA ... AUTHORIZATION asks for it. The reader owns
                    # nothing, so membership in it waits for its deletion (`drop_reader`), and the
                    # operator belongs to one role per org, not two (what PostgreSQL walks after each
                    # role change).
                    _ensure_member(conn, owner)
                    temporary = conn.execute(
                        "SELECT has_database_privilege(%s, current_database(), 'TEMPORARY')", (reader,)
                    ).fetchone()
                    if temporary and temporary[0] and not _warned_temporary.is_set():
                        _warned_temporary.set()
                        log.warning(
                            "PUBLIC may create temporary tables in database %s: the reader roles can"
                            " write there; REVOKE TEMPORARY ON DATABASE %s FROM PUBLIC (operator/README.md,"
                            " Isolation)",
                            conn.info.dbname,
                            conn.info.dbname,
                        )
                    if password is not None:
                        conn.execute(
                            sql.SQL("ALTER ROLE {} {}").format(
                                sql.Identifier(reader), password_verifier(password)
                            )
                        )
                    if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (views,)).fetchone():
                        conn.execute(
                            sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
                                sql.Identifier(views), sql.Identifier(owner)
                            )
                        )
                # Inside the org's schemas only as the org's role, logged in as its delegate: what
                # it makes is its own, as when its jobs make it, and a trigger of the tenant's that
                # resets the role gets the delegate (no more than the org), never the operator.
                # One transaction: a refused type change leaves every table and view as it was.
                with self._org_session(conn, org_id) as own, own.transaction():
                    own.execute("SELECT pg_advisory_xact_lock(%s)", (lock.key("ddl", org_id),))
                    # As the schema's owner (the grantor either way): the operator's GRANT would
                    # have PostgreSQL walk all the operator's memberships to find that grantor.
                    own.execute(
                        sql.SQL(
                            "REVOKE ALL ON SCHEMA {v} FROM PUBLIC; GRANT USAGE ON SCHEMA {v} TO {r}"
                        ).format(v=sql.Identifier(views), r=sql.Identifier(reader))
                    )
                    existing = own.execute(_relations("'v'"), (views,)).fetchall()
                    for (name,) in existing:
                        own.execute(
                            sql.SQL("DROP VIEW {}.{}").format(
                                sql.Identifier(views), sql.Identifier(str(name))
                            )
                        )
                    current = _raw_columns(own, org_id)
                    made = [t for t in tables if t.name in current]  # the rest: their first run
                    for table in made:
                        want = {c.name: retype.pg_type_name(c.type) for c in table.columns}
                        if current[table.name].items() >= want.items():
                            continue  # as the spec says
                        ddl.ensure_schema(own, org_id, table)  # new columns, type changes
                    orgprivacy.record(own, spec)
                    for table in made:
                        own.execute(orgprivacy.view_statement(org_id, table))
                        own.execute(
                            sql.SQL("GRANT SELECT ON {}.{} TO {}").format(
                                sql.Identifier(views), sql.Identifier(table.name), sql.Identifier(reader)
                            )
                        )
        except retype.TypeChangeRefused as exc:
            raise SchemaChangeRefused(str(exc)) from None
        except LockTimeout as exc:
            raise DatabaseError(f"PostgreSQL: {exc}") from None
        except tenant.TenantSessionRefused as exc:
            raise DatabaseError(f"PostgreSQL: {exc}") from None
        except (psycopg.Error, stores.StoreUnavailable) as exc:
            raise DatabaseError(f"PostgreSQL: cannot provision {reader}: {exc}") from exc

    @contextlib.contextmanager
    def _org_session(self, admin: PgConn, org_id: str) -> Iterator[PgConn]:
        """A session as the org's role (`tenant`): logged in as the org when `provision` was just
        given its password (the create and password paths), else through a delegate."""
        password = self._take_password(org_id)
        with contextlib.ExitStack() as stack:
            own: PgConn | None = None
            if password is not None:
                try:
                    own = stack.enter_context(
                        tenant.org_login(self._dsn, org_id, password, admin, TENANT_DEADLINE_SECONDS)
                    )
                except psycopg.OperationalError as exc:  # changed meanwhile: a delegate, as without
                    log.info("org %s: not logged in as its role (%s); through a delegate", org_id, exc)
            if own is None:
                own = stack.enter_context(
                    tenant.session(self._dsn, org_id, admin=admin, deadline=TENANT_DEADLINE_SECONDS)
                )
            yield own

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
                _ensure_member(conn, reader, store_names.pg_role(org_id))
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

    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait().close()
        if self._mongo is not None:
            self._mongo.close()
        if self._ferret_conn is not None:
            self._ferret_conn.close()

    # --- MongoDB: one database per org, and the org's identity on it ---------------------------

    def provision_mongo(self, org_id: str, tables: Iterable[str], password: str | None) -> list[str]:
        """Makes the org's MongoDB database and its collections, gives the org's identity read and
        write on them and nothing else, and moves the org's collections out of the shared database
        of earlier releases. Returns the names of the collections moved.

        The collections are made with the operator's own MongoDB identity, so the org owns nothing
        in FerretDB's PostgreSQL database: it gets row privileges on its collections' tables, never
        CREATE, so it cannot plant a trigger, view or function there that a more privileged session
        (the operator, FerretDB loading its catalogue, an admin's `status`) would then run. A table
        added later gets its collection at the next reconcile; a run before that is refused.

        With ORGPIPELINE_MONGO_USERS=mongodb the org instead gets a MongoDB user with readWrite on
        its database (createUser, or updateUser for a new password). Idempotent, and safe after a
        crash half way (the move copies by _id and drops the old collection last).
        """
        name = store_names.mongo_database(org_id)
        try:
            db = self._mongo_client()[name]
            wanted = {store_names.mongo_collection(org_id, t) for t in tables}
            for coll in sorted(wanted - set(db.list_collection_names())):
                with contextlib.suppress(pymongo.errors.CollectionInvalid):  # made meanwhile
                    db.create_collection(coll)
            moved = self._move_shared(org_id)
            if self._mongo_users == "mongodb":
                self._mongodb_user(org_id, password)
                for coll in sorted(wanted):  # idempotent: an index already there is left as is
                    db[coll].create_indexes(stores.mongo_index_models())
        except pymongo.errors.PyMongoError as exc:
            raise DatabaseError(f"MongoDB: cannot provision database {name}: {exc}") from exc
        if self._mongo_users == "ferretdb":
            self._ferretdb_grants(org_id)
            self._ferretdb_indexes(org_id)
        return moved

    def _ferretdb_indexes(self, org_id: str) -> None:
        """The landing store's indexes (`stores.LANDING_INDEXES`) on the org's collections, made in
        PostgreSQL by the operator, who owns the tables (the org has row privileges only). One read
        finds what is missing: on an empty table (a new collection) they are made at once, on one
        with documents (a collection of an earlier release) CONCURRENTLY, so its runs go on
        writing meanwhile; an invalid leftover of an interrupted build is made again."""
        schema = store_names.mongo_database(org_id)
        prefix = store_names.mongo_collection(org_id, "")
        try:
            with self._ferret_pg() as conn:
                rows = conn.execute(
                    sql.SQL(
                        "SELECT c.relname::text, pg_relation_size(c.oid) = 0,"
                        " coalesce(array_agg(i.relname::text) FILTER (WHERE x.indisvalid), '{{}}'),"
                        " coalesce(array_agg(i.relname::text) FILTER (WHERE NOT x.indisvalid), '{{}}')"
                        " FROM {} m JOIN pg_class c ON c.relname = m._jsonb ->> 'table'"
                        " AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = %s)"
                        " LEFT JOIN pg_index x ON x.indrelid = c.oid"
                        " LEFT JOIN pg_class i ON i.oid = x.indexrelid"
                        " WHERE starts_with(m._jsonb ->> '_id', %s) GROUP BY c.oid, c.relname"
                    ).format(sql.Identifier(schema, FERRETDB_METADATA)),
                    (schema, prefix),
                ).fetchall()
                at_once: list[sql.Composable] = []  # new collections' (empty tables): one round trip
                for row in rows:
                    table, empty = str(row[0]), bool(row[1])
                    valid, invalid = set(cast(list[str], row[2])), set(cast(list[str], row[3]))
                    for index in stores.LANDING_INDEXES:
                        index_name = stores.ferretdb_index_name(table, index)
                        if index_name in valid:
                            continue
                        if index_name in invalid:
                            conn.execute(
                                sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
                                    sql.Identifier(schema, index_name)
                                )
                            )
                        statement = stores.ferretdb_index_sql(schema, table, index, concurrently=not empty)
                        if empty:
                            at_once.append(statement)
                            continue
                        # UniqueViolation: another replica made it at the same moment.
                        with contextlib.suppress(psycopg.errors.UniqueViolation):
                            conn.execute(statement)
                if at_once:
                    with contextlib.suppress(psycopg.errors.UniqueViolation):
                        conn.execute(sql.SQL("; ").join(at_once))
        except (psycopg.Error, stores.StoreUnavailable) as exc:
            raise DatabaseError(f"PostgreSQL: cannot index FerretDB schema {schema}: {exc}") from exc

    def _ferretdb_grants(self, org_id: str) -> None:
        """The org's PostgreSQL role gets SELECT, INSERT, UPDATE, DELETE on its collections' tables
        (FerretDB runs a client's commands logged in as the client), nothing else: no CREATE, so it
        can neither make a collection nor a database, nor touch another org's schema.

        Every login may read the schema's catalogue (USAGE, and SELECT on FerretDB's metadata table):
        FerretDB 1.x loads its catalogue once, as the first client to arrive after a start, and
        would otherwise know only that client's databases. It shows database and collection names,
        no documents (FerretDB's catalogue is shared by all its users anyway).
        """
        role, schema = store_names.pg_role(org_id), store_names.mongo_database(org_id)
        try:
            with self._ferret_pg() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("ferretdb:" + schema,))
                row = conn.execute(
                    "SELECT (SELECT 1 FROM pg_roles WHERE rolname = %s),"
                    " (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = %s),"
                    " (SELECT pg_has_role(current_user, nspowner, 'USAGE') FROM pg_namespace"
                    " WHERE nspname = %s), current_user",
                    (role, schema, schema),
                ).fetchone()
                if not row or row[0] is None or row[1] is None:
                    raise DatabaseError(f"PostgreSQL: role {role} or FerretDB schema {schema} is missing")
                if not row[2]:
                    # FerretDB made it as the operator's MongoDB login; only its owner may grant.
                    raise DatabaseError(
                        f"PostgreSQL: FerretDB schema {schema} belongs to {row[1]}, not to {row[3]}:"
                        " ORGPIPELINE_MONGO_URI must log in as ORGPIPELINE_POSTGRES_DSN's role"
                    )
                if conn.execute(
                    "SELECT has_database_privilege(%s, current_database(), 'CREATE')", (role,)
                ).fetchone() == (True,):
                    raise DatabaseError(
                        f"PostgreSQL: {role} may create schemas in database {self._ferretdb_database}"
                        " (FerretDB databases): REVOKE CREATE ON DATABASE from PUBLIC and the role"
                    )
                owned = conn.execute(
                    "SELECT count(*) FROM pg_depend d JOIN pg_class c ON c.oid = d.objid"
                    " WHERE d.refclassid = 'pg_namespace'::regclass"
                    " AND d.refobjid = to_regnamespace(quote_ident(%s)) AND d.classid = 'pg_class'::regclass"
                    " AND c.relowner = %s::regrole",
                    (schema, role),
                ).fetchone()
                if owned and owned[0]:
                    raise DatabaseError(f"PostgreSQL: {role} owns objects in FerretDB schema {schema}")
                # The FerretDB databases of the operator's that this org reads (its own, the shared
                # one of earlier releases) whose catalogue is not yet readable by all; every other
                # org's is made readable by its own provisioning (not a scan of them all per org).
                hidden = conn.execute(
                    "SELECT n.nspname FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid"
                    " WHERE n.nspname = ANY(%s) AND c.relname = %s AND c.relkind = 'r'"
                    " AND n.nspowner = current_user::regrole"
                    " AND NOT has_schema_privilege('public', n.oid, 'USAGE')",
                    ([schema, self._mongo_db], FERRETDB_METADATA),
                ).fetchall()
                for (name,) in hidden:
                    conn.execute(
                        sql.SQL("GRANT USAGE ON SCHEMA {} TO PUBLIC").format(sql.Identifier(str(name)))
                    )
                    conn.execute(
                        sql.SQL("GRANT SELECT ON {}.{} TO PUBLIC").format(
                            sql.Identifier(str(name)), sql.Identifier(FERRETDB_METADATA)
                        )
                    )
                ident = sql.Identifier(schema)
                missing = conn.execute(
                    "SELECT tablename FROM ("
                    + _relations("'r', 'p'")
                    + ") t (tablename) WHERE tablename <> %s AND NOT ("
                    + " AND ".join(
                        f"has_table_privilege(%s, format('%%I.%%I', %s::text, tablename), '{p}')"
                        for p in ROW_PRIVILEGES
                    )
                    + ")",
                    (schema, FERRETDB_METADATA, *([role, schema] * len(ROW_PRIVILEGES))),
                ).fetchall()
                for (table,) in missing:
                    conn.execute(
                        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {}.{} TO {}").format(
                            ident, sql.Identifier(str(table)), sql.Identifier(role)
                        )
                    )
        except (psycopg.Error, stores.StoreUnavailable) as exc:
            raise DatabaseError(
                f"PostgreSQL: cannot grant {role} its FerretDB schema {schema}: {exc}"
            ) from exc

    @contextlib.contextmanager
    def _ferret_pg(self) -> Iterator[PgConn]:
        """One connection to FerretDB's PostgreSQL database, kept between calls, one call at a time
        (made when first needed: only the FerretDB path uses it)."""
        with self._ferret_lock:
            conn = self._ferret_conn
            if conn is None or conn.closed or conn.broken:
                dsn = psycopg.conninfo.make_conninfo(self._dsn, dbname=self._ferretdb_database)
                conn = self._ferret_conn = stores.connect_postgres(dsn)
            yield conn

    def _mongodb_user(self, org_id: str, password: str | None) -> None:
        """MongoDB proper: the org's user, readWrite on its database only."""
        if password is None:
            return  # the Secret's password is set when the Secret is written
        db = self._mongo_client()[store_names.mongo_database(org_id)]
        roles = [{"role": "readWrite", "db": db.name}]
        user = store_names.pg_role(org_id)
        try:
            db.command("updateUser", user, pwd=password, roles=roles)
        except pymongo.errors.OperationFailure as exc:
            if exc.code != USER_NOT_FOUND:
                raise
            db.command("createUser", user, pwd=password, roles=roles)

    def _move_shared(self, org_id: str) -> list[str]:
        """Moves the org's raw_<org>_* collections from the shared database of earlier releases
        into its own: copies in batches by _id (skipping the documents already copied), checks
        that every document of the batch is there, and drops the old collection only then. Run
        again after a crash, it carries on; a version is never lost, and never doubled (the copy
        keeps each document's _id, which is unique)."""
        client = self._mongo_client()
        shared, own = client[self._mongo_db], client[store_names.mongo_database(org_id)]
        if shared.name == own.name:
            return []
        prefix = store_names.mongo_collection(org_id, "")  # org ids have no '_': never another org's
        moved = []
        for coll in sorted(n for n in shared.list_collection_names() if n.startswith(prefix)):
            src, dst = shared[coll], own[coll]
            last: object = None
            while True:
                batch = list(
                    src.find({} if last is None else {"_id": {"$gt": last}}).sort("_id", 1).limit(MOVE_BATCH)
                )
                if not batch:
                    break
                ids = [d["_id"] for d in batch]
                there = {d["_id"] for d in dst.find({"_id": {"$in": ids}}, {"_id": 1})}
                new = [d for d in batch if d["_id"] not in there]
                if new:
                    dst.insert_many(new, ordered=True)
                if dst.count_documents({"_id": {"$in": ids}}) != len(ids):
                    raise DatabaseError(f"MongoDB: moving {shared.name}.{coll}: a batch did not arrive whole")
                last = ids[-1]
            shared.drop_collection(coll)
            moved.append(coll)
        return moved

    def drop_collections(self, org_id: str) -> list[str]:
        """Drops the org's MongoDB database (its collections) and what is left of its collections in
        the shared database of earlier releases (and, on MongoDB, its user); returns the collections'
        names. Run before `drop_postgres`: the role's grants in FerretDB's database go with the schema.
        """
        name = store_names.mongo_database(org_id)
        prefix = store_names.mongo_collection(org_id, "")
        try:
            client = self._mongo_client()
            shared = client[self._mongo_db]
            old = (
                [n for n in shared.list_collection_names() if n.startswith(prefix)]
                if shared.name != name
                else []
            )
            names = client[name].list_collection_names() + old
            client.drop_database(name)
            for coll in old:
                shared.drop_collection(coll)
            if self._mongo_users == "mongodb":
                with contextlib.suppress(pymongo.errors.OperationFailure):  # not there: done
                    client[name].command("dropUser", store_names.pg_role(org_id))
        except pymongo.errors.PyMongoError as exc:
            raise DatabaseError(f"MongoDB: cannot drop the collections of org {org_id}: {exc}") from exc
        return sorted(names)


FERRETDB_METADATA = "_ferretdb_database_metadata"
"""FerretDB 1.x's table of a database's collections (in the database's schema)."""
ROW_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
MOVE_BATCH = 1000
USER_NOT_FOUND = 11


def org_mongo_uri(base_uri: str, org_id: str, password: str, users: str = "ferretdb") -> str:
    """The org's MongoDB URI: `base_uri`'s hosts and options, logged in as the org (FerretDB: its
    PostgreSQL role, authMechanism=PLAIN; MongoDB: its user, authSource its database), with the
    org's database as the default database."""
    scheme, _, rest = base_uri.partition("://")
    authority, _, tail = rest.partition("/")
    authority, _, bare_query = authority.partition("?")  # mongodb://host?opts (no slash)
    hosts = authority.rpartition("@")[2]
    query = tail.partition("?")[2] or bare_query
    database_name = store_names.mongo_database(org_id)
    options = [
        o for o in query.split("&") if o and o.split("=")[0].lower() not in ("authmechanism", "authsource")
    ]
    options.append("authMechanism=PLAIN" if users == "ferretdb" else f"authSource={database_name}")
    user = urllib.parse.quote(store_names.pg_role(org_id), safe="")
    secret = urllib.parse.quote(password, safe="")
    return f"{scheme}://{user}:{secret}@{hosts}/{database_name}?{'&'.join(options)}"
