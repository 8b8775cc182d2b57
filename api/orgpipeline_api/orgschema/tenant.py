"""Sessions inside an org's schema whose most privileged identity is the org's own role.

The org's role owns `orgdata_<org>` and `orgview_<org>`, so it can put triggers, functions, rules,
policies and views there, and that code runs as whoever touches the object. `SET ROLE` from a more
privileged session is no boundary: the tenant's code can `RESET ROLE`. So every piece of work in
an org's schema (the operator's views and classification record, the command line's exports and
reports, a run started by hand with an administrator's DSN) runs in a session from `session()`:

- logged in as the org's role already (the jobs, with the org's Secret): that connection, as is,
  at no cost (no query: libpq knows the login);
- otherwise, when the org's role exists: a new connection logged in as a throwaway delegate, a
  LOGIN role `orgpipeline_tmp_<org>_<random>` with a random password valid ten minutes, NOINHERIT,
  member of the org's role only, that `SET ROLE`s to the org's role (so what it makes is the
  org's). A `RESET ROLE` in the tenant's code gets back to the delegate, which can do nothing the
  org's role cannot. The delegate is dropped when the session ends; leftovers of a crash are swept
  (expired, no session) when one is made, at most once a minute. A `deadline` ends the session's
  backend when the tenant's code would hold the caller longer;
- otherwise (no org role: a run by hand on a database no operator provisions) the connection as is,
  when the schema is missing or owned by this login or a superuser, who alone could have put code
  there; a schema owned by anyone else is refused.

Making a delegate needs a login that may create roles and grant the org's role (a superuser, or
the operator's role: CREATEROLE, and on PostgreSQL 16 the ADMIN option that creating the org's
role gives it).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from orgpipeline_api import store_names, stores

log = logging.getLogger(__name__)

DELEGATE_PREFIX = "orgpipeline_tmp_"
DELEGATE_LIFETIME = "10 minutes"
"""How long the delegate's password lets it log in (its one session may last longer)."""
SCRAM_ITERATIONS = 16
"""Key stretching protects guessable passwords; a delegate's is 192 random bits, valid ten minutes,
so PostgreSQL's 4096 would only cost each session ~3.5 ms (making the verifier, then logging in)."""
LOGIN_SCRAM_ITERATIONS = 4096
"""The org and reader logins' verifiers: PostgreSQL's own default, made by the operator
(`scram_verifier`) rather than by the server from a plaintext password, so that provisioning costs
the database no key stretching and no statement (pg_stat_statements, log_statement) holds a password."""
SWEEP_SECONDS = 60.0
_last_sweep = 0.0

Conn = psycopg.Connection[Any]


class TenantSessionRefused(Exception):
    """No session as the org's role can be made from this login; the message says why (one line)."""


def delegate_name(org_id: str) -> str:
    """A fresh delegate name (org ids have at most 32 characters: the name stays under 63)."""
    return f"{DELEGATE_PREFIX}{org_id.replace('-', '_')}_{secrets.token_hex(4)}"


def scram_verifier(password: str, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677): sent instead of
    the password, so that no statement log ever holds a delegate's password."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def is_org_login(conn: Conn, org_id: str) -> bool:
    """Whether `conn` is logged in as the org's own role (no round trip)."""
    return bool(conn.info.user == store_names.pg_role(org_id))


@contextlib.contextmanager
def session(
    dsn: str, org_id: str, admin: Conn | None = None, deadline: float | None = None
) -> Iterator[Conn]:
    """An autocommit connection to work in the org's schema with, as the module docstring says.

    `admin`, when given, is an open autocommit connection made with `dsn` (it is used for the
    checks and the delegate, and is what comes back when it may be used as is); without it one is
    made and closed. `deadline` (seconds) bounds a delegate's session: then its backend is
    terminated, which the tenant's code cannot catch (it can catch a statement timeout or a
    cancel), so that no tenant holds the caller (the operator's worker) for longer.
    Raises TenantSessionRefused, or stores.StoreUnavailable when PostgreSQL cannot be reached.
    """
    own = admin is None
    conn = admin if admin is not None else stores.connect_postgres(dsn)
    try:
        if is_org_login(conn, org_id):
            yield conn
            return
        role = store_names.pg_role(org_id)
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s),"
            " (SELECT r.rolname = current_user OR r.rolsuper FROM pg_namespace n"
            "  JOIN pg_roles r ON r.oid = n.nspowner WHERE n.nspname = %s),"
            " (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = %s)",
            (role, store_names.pg_schema(org_id), store_names.pg_schema(org_id)),
        ).fetchone()
        assert row is not None
        if not row[0]:
            if row[1] is None or row[1]:
                yield conn  # no tenant: nobody but this login or a superuser could have put code there
                return
            raise TenantSessionRefused(
                f"schema {store_names.pg_schema(org_id)} is owned by {row[2]}, neither {conn.info.user}"
                f" nor the org's role {role}: not working in it as {conn.info.user}"
            )
        with _delegate(dsn, conn, org_id, deadline) as tenant:
            yield tenant
    finally:
        if own:
            conn.close()


@contextlib.contextmanager
def org_login(
    dsn: str, org_id: str, password: str, admin: Conn, deadline: float | None = None
) -> Iterator[Conn]:
    """A session logged in as the org's own role with its password (what its jobs use): no
    delegate to make and drop, so no role to create, grant and drop (each of which makes every
    backend recompute the operator's role memberships, thousands of them at thousands of orgs).
    The same identity as a delegate acting as the org, with the same `deadline`: `admin` (a member
    of the org's role) ends the backend when the tenant's code would hold the caller longer.
    Raises psycopg.OperationalError when the password is not (or no longer) the role's."""
    conn = psycopg.connect(
        psycopg.conninfo.make_conninfo(dsn, user=store_names.pg_role(org_id), password=password),
        autocommit=True,
        connect_timeout=stores.CONNECT_TIMEOUT_SECONDS,
    )
    try:
        conn.execute(
            sql.SQL("SET search_path = {}; SET orgpipeline.login = {}").format(
                sql.Identifier(store_names.pg_schema(org_id)), sql.Literal(conn_user(admin))
            )
        )
        with _deadline(admin, conn, deadline, conn_user(conn)):
            yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def _delegate(dsn: str, admin: Conn, org_id: str, deadline: float | None) -> Iterator[Conn]:
    """A connection logged in as a fresh delegate of the org's role, acting as that role."""
    global _last_sweep
    role, name, password = store_names.pg_role(org_id), delegate_name(org_id), secrets.token_urlsafe(24)
    if time.monotonic() - _last_sweep > SWEEP_SECONDS:  # leftovers are rare: not on every session
        _last_sweep = time.monotonic()
        sweep(admin)
    try:
        with admin.transaction():
            until = admin.execute(f"SELECT (now() + interval '{DELEGATE_LIFETIME}')::text").fetchone()
            assert until is not None
            admin.execute(
                sql.SQL(
                    "CREATE ROLE {} LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
                    " NOBYPASSRLS CONNECTION LIMIT 1 PASSWORD {} VALID UNTIL {}"
                ).format(sql.Identifier(name), sql.Literal(scram_verifier(password)), sql.Literal(until[0]))
            )
            admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(name)))
            # Membership in the delegate: what lets this login terminate its backend (`deadline`)
            # and DROP OWNED BY it.
            admin.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise TenantSessionRefused(
            f"cannot act as {role}: {conn_user(admin)} may not make a delegate of it"
            f" ({stores.first_line(exc)}); log in as {role}, or as a role with CREATEROLE that may grant it"
        ) from None
    try:
        conn = stores.connect_postgres(psycopg.conninfo.make_conninfo(dsn, user=name, password=password))
        try:
            # The org's own login has its schema first on its search path: the same here. Who the
            # delegate acts for goes in `orgpipeline.login` (an export records it).
            conn.execute(
                sql.SQL("SET ROLE {}; SET search_path = {}; SET orgpipeline.login = {}").format(
                    sql.Identifier(role),
                    sql.Identifier(store_names.pg_schema(org_id)),
                    sql.Literal(conn_user(admin)),
                )
            )
            with _deadline(admin, conn, deadline, name):
                yield conn
        finally:
            conn.close()
    finally:
        drop_delegate(admin, name)


@contextlib.contextmanager
def _deadline(admin: Conn, conn: Conn, deadline: float | None, name: str) -> Iterator[None]:
    """While inside: `admin` ends `conn`'s backend (`name`'s session) once `deadline` seconds have
    passed (None: no bound)."""
    if deadline is None:
        yield
        return
    timer = threading.Timer(deadline, _terminate, (admin, conn.info.backend_pid, name))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _terminate(admin: Conn, pid: int, name: str) -> None:
    """Ends a delegate's backend that outlived its deadline (the admin connection is idle meanwhile:
    its owner waits on the delegate's)."""
    log.warning("the session of %s outlived its deadline: terminating its backend %d", name, pid)
    try:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    except psycopg.Error as exc:
        log.warning("cannot terminate the backend of %s: %s", name, stores.first_line(exc))


def conn_user(conn: Conn) -> str:
    return str(conn.info.user)


def drop_delegate(admin: Conn, name: str) -> None:
    """Drops a delegate; what the tenant's code granted to it goes with it. A failure is logged and
    left to the sweep (the delegate can do no more than the org's role, and only ten minutes long)."""
    ident = sql.Identifier(name)
    try:
        try:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
        except psycopg.errors.DependentObjectsStillExist:
            # The tenant's code granted it something: DROP OWNED BY needs the delegate's privileges.
            with admin.transaction():
                admin.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(ident))  # a sweep's leftover
                admin.execute(sql.SQL("DROP OWNED BY {}").format(ident))
                admin.execute(sql.SQL("DROP ROLE {}").format(ident))
    except psycopg.Error as exc:
        log.warning(
            "cannot drop the delegate role %s (left to the next sweep): %s", name, stores.first_line(exc)
        )


def sweep(admin: Conn) -> list[str]:
    """Drops the delegates whose password expired and that have no session (left by a crash)."""
    rows = admin.execute(
        "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s) AND rolvaliduntil < now()"
        " AND NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE usename = rolname)",
        (DELEGATE_PREFIX,),
    ).fetchall()
    names = [str(r[0]) for r in rows]
    for name in names:
        drop_delegate(admin, name)
    return names
