"""The audit of an org's exports, append-only for the org: `orgaudit_<org>.pipeline_exports`.

The org's role owns its schema `orgdata_<org>`, and the owner of a schema may drop any table in it,
whoever owns the table; so the audit lives in a schema of its own, `orgaudit_<org>`, owned by the
operator's role (made by the operator when it provisions the org: `provision`). The org's role gets:

- USAGE on the schema and SELECT on the table (its own exports, for `orgpipeline compliance`);
- INSERT on the columns an exporter states (what, as of when, where to, how masked); who inserted
  (`db_role`, from current_user), when (`started_at`), the org and the state (`running`) are
  column defaults it cannot supply;
- EXECUTE on `finish_export`, a SECURITY DEFINER function that moves one `running` row to
  `succeeded` or `failed` once, with its rows, bytes and SHA-256; nothing else can change a row.

No UPDATE, DELETE or TRUNCATE, no DROP (it owns neither table nor schema): a row, once written,
stays. An export of an org whose audit is missing is refused (the operator makes it at the org's
next reconcile); only an org without a role of its own gets it from the exporter (`ensure`).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from orgpipeline_api import store_names
from orgpipeline_api.orgschema import lock

TABLE = "pipeline_exports"
FINISH = "finish_export"
INSERTABLE = (
    "export_id",
    "table_name",
    "requested_by",
    "user_note",
    "os_user",
    "client_host",
    "as_of",
    "with_history",
    "format",
    "masked",
    "columns",
    "target",
    "formulas_raw",
)


def schema(org_id: str) -> str:
    """`orgaudit_<org>`: owned by the operator's role, never by the org's."""
    return f"orgaudit_{org_id}"


def table(org_id: str) -> sql.Composable:
    return sql.Identifier(schema(org_id), TABLE)


def exists(conn: psycopg.Connection[Any], org_id: str) -> bool:
    # The catalog, not to_regclass: readable whatever the login's privileges on the schema.
    row = conn.execute(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (schema(org_id), TABLE),
    ).fetchone()
    return row is not None


def provision(conn: psycopg.Connection[Any], org_id: str, *, grant: bool = True) -> None:
    """Makes (or repairs) the audit schema, table and function as the connection's role (the
    operator's), and grants the org's role what the module docstring says (`grant`). Idempotent;
    runs in the caller's transaction."""
    role = sql.Identifier(store_names.pg_role(org_id))
    audit = sql.Identifier(schema(org_id))
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(audit))
    conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(audit))
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {t} (export_id TEXT PRIMARY KEY,"
            " org_id TEXT NOT NULL DEFAULT {org} CHECK (org_id = {org}), table_name TEXT NOT NULL,"
            " requested_by TEXT, user_note TEXT, os_user TEXT,"
            " db_role TEXT NOT NULL DEFAULT coalesce(nullif(current_setting('orgpipeline.login', true), '')"
            " || ' as ' || current_user, current_user),"
            " client_host TEXT, started_at TIMESTAMPTZ NOT NULL DEFAULT now(), finished_at TIMESTAMPTZ,"
            " as_of TIMESTAMPTZ NOT NULL, with_history BOOLEAN NOT NULL, format TEXT NOT NULL,"
            " masked BOOLEAN NOT NULL, formulas_raw BOOLEAN NOT NULL DEFAULT false, columns JSONB NOT NULL,"
            " target TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'running'"
            " CHECK (status IN ('running', 'succeeded', 'failed')),"
            " rows BIGINT, bytes BIGINT, sha256 TEXT, error TEXT)"
        ).format(t=table(org_id), org=sql.Literal(org_id))
    )
    conn.execute(
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (started_at DESC)").format(
            sql.Identifier("idx_pipeline_exports_started"), table(org_id)
        )
    )
    # A definer's function: search_path pinned, every name qualified, one running row finished once.
    conn.execute(
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {f}(p_export_id text, p_failed boolean, p_rows bigint,"
            " p_bytes bigint, p_sha256 text, p_error text) RETURNS boolean"
            " LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$"
            " UPDATE {t} SET finished_at = now(),"
            " status = CASE WHEN p_failed THEN 'failed' ELSE 'succeeded' END,"
            " rows = p_rows, bytes = p_bytes, sha256 = p_sha256, error = left(p_error, 4000)"
            " WHERE export_id = p_export_id AND status = 'running' RETURNING true $f$"
        ).format(f=sql.Identifier(schema(org_id), FINISH), t=table(org_id))
    )
    conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC").format(_signature(org_id)))
    if not grant:
        return
    conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(table(org_id), role))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(audit, role))
    conn.execute(
        sql.SQL("GRANT SELECT, INSERT ({}) ON {} TO {}").format(
            sql.SQL(", ").join(map(sql.Identifier, INSERTABLE)), table(org_id), role
        )
    )
    conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(_signature(org_id), role))


def _signature(org_id: str) -> sql.Composable:
    return sql.SQL("{}(text, boolean, bigint, bigint, text, text)").format(
        sql.Identifier(schema(org_id), FINISH)
    )


def ensure(conn: psycopg.Connection[Any], org_id: str) -> bool:
    """Whether the audit is there. Made here only for an org without a role of its own (its data
    made by an administrator's runs, no operator): there is no tenant to keep it from. An org with
    a role gets it from the operator, which owns it."""
    if exists(conn, org_id):
        return True
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (store_names.pg_role(org_id),)).fetchone():
        return False
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock.key("ddl", org_id),))
        provision(conn, org_id, grant=False)
    return True


def drop(conn: psycopg.Connection[Any], org_id: str) -> None:
    """Drops the org's audit (at the org's deletion, with its data)."""
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema(org_id))))


def start(conn: psycopg.Connection[Any], org_id: str, values: dict[str, Any]) -> None:
    """Inserts the export's row (state `running`); `values` holds INSERTABLE columns only."""
    names = list(values)
    conn.execute(
        sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            table(org_id),
            sql.SQL(", ").join(map(sql.Identifier, names)),
            sql.SQL(", ").join(sql.Placeholder() * len(names)),
        ),
        [values[n] for n in names],
    )


def finish(
    conn: psycopg.Connection[Any],
    org_id: str,
    export_id: str,
    error: str | None,
    rows: int,
    size: int | None,
    sha256: str | None,
) -> None:
    conn.execute(
        sql.SQL("SELECT {}(%s, %s, %s, %s, %s, %s)").format(sql.Identifier(schema(org_id), FINISH)),
        (export_id, error is not None, rows, size, sha256, error),
    )
