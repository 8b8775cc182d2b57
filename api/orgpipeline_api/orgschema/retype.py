"""A column type changed in the manifest: applied to raw_T when every stored value converts, else
refused, naming the column and a value that does not convert.

Runs inside `ddl.ensure_schema`'s transaction (the org's DDL lock), and takes the table's run lock
for the transaction before it alters anything, so no run of the table is half way when the type
changes; a run that holds it longer than LOCK_WAIT makes this a transient error (retry later).
`ALTER TABLE ... ALTER COLUMN ... TYPE ... USING col::new` rewrites the table in the same
transaction: either every column changes or, on any refusal, nothing does.

The org's masked views (schema `orgview_<org>`) read the column, and PostgreSQL refuses to alter a
column a view uses: the table's view is dropped in the same transaction, and the operator, whose
view hash includes the column types, makes it again. Only raw_T changes: MongoDB keeps the versions
as they were landed, and the change-detection heads keep their JSON, so a key whose value changes
form with the type (the text "7" becomes the integer 7) gets one UPDATE version at its next file.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from orgpipeline_api import store_names
from orgpipeline_api.errors import ConfigurationError, LockTimeout
from orgpipeline_api.orgschema import lock
from orgpipeline_api.v1alpha1 import Table

LOCK_WAIT = "30s"

# The manifest's types as PostgreSQL's format_type() spells them.
_PG_NAMES = {
    "text": "text",
    "integer": "integer",
    "bigint": "bigint",
    "double precision": "double precision",
    "boolean": "boolean",
    "date": "date",
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
}


class TypeChangeRefused(ConfigurationError):
    """A stored value does not convert to the column's new type; nothing was changed."""

    stage = "schema"

    def __init__(self, table: str, column: str, old: str, new: str, value: str | None, reason: str) -> None:
        shown = "NULL" if value is None else repr(value if len(value) <= 80 else value[:77] + "...")
        super().__init__(
            f"table {table}: column {column} cannot change type from {old} to {new}: stored value {shown}"
            f" does not convert ({reason}); nothing was changed — fix or remove the value, or keep the type"
        )
        self.table, self.column, self.value = table, column, value


def pg_type_name(manifest_type: str) -> str:
    """`decimal(10,2)` -> `numeric(10,2)`, `timestamptz` -> `timestamp with time zone`, ..."""
    if manifest_type.startswith("decimal("):
        return "numeric" + manifest_type[len("decimal") :]
    return _PG_NAMES[manifest_type]


def current_types(conn: psycopg.Connection[Any], schema: str, relation: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
        (schema, relation),
    ).fetchall()
    return {str(n): str(t) for n, t in rows}


def apply(conn: psycopg.Connection[Any], org_id: str, table: Table) -> list[tuple[str, str, str]]:
    """Changes the types that differ from the manifest's; returns (column, old, new) of each.
    Must run inside a transaction. TypeChangeRefused when a stored value does not convert."""
    schema, raw = store_names.pg_schema(org_id), store_names.pg_table(table.name)
    have = current_types(conn, schema, raw)
    changes = [
        (c.name, have[c.name], pg_type_name(c.type))
        for c in table.columns
        if c.name in have and have[c.name] != pg_type_name(c.type)
    ]
    if not changes:
        return []
    target = sql.SQL(".").join([sql.Identifier(schema), sql.Identifier(raw)])
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (LOCK_WAIT,))
    try:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock.key("run", org_id, table.name),))
    except psycopg.errors.LockNotAvailable:
        raise LockTimeout(
            f"table {table.name}: a run holds the table for more than {LOCK_WAIT}; the type change waits"
        ) from None
    conn.execute("SELECT set_config('lock_timeout', '0', true)")
    conn.execute(
        sql.SQL("DROP VIEW IF EXISTS {}").format(
            sql.SQL(".").join(
                [sql.Identifier(store_names.pg_view_schema(org_id)), sql.Identifier(table.name)]
            )
        )
    )
    for column, old, new in changes:
        # Numbers must keep their value: PostgreSQL would round 10.55 to 10.6 or 10.5 to 11 silently.
        if _numeric(old) and _numeric(new):
            value = _failing_value(conn, target, column, old, new)
            if value is not None:
                raise TypeChangeRefused(table.name, column, old, new, value, "it would be rounded")
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {c} TYPE {t} USING {c}::{t}").format(
                        target, c=sql.Identifier(column), t=sql.SQL(new)
                    )
                )
        except psycopg.errors.InsufficientPrivilege:
            raise
        except psycopg.Error as exc:
            reason = (exc.diag.message_primary or str(exc)).strip()
            value = _failing_value(conn, target, column, old, new)
            raise TypeChangeRefused(table.name, column, old, new, value, reason) from None
    return changes


def _numeric(pg_type: str) -> bool:
    return pg_type in ("integer", "bigint", "smallint", "double precision", "real") or pg_type.startswith(
        "numeric"
    )


def _failing_value(
    conn: psycopg.Connection[Any], target: sql.Composable, column: str, old: str, new: str
) -> str | None:
    """One stored value of `column` that `::new` refuses (as text), or None if none is found."""
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    "CREATE OR REPLACE FUNCTION pg_temp.orgpipeline_converts(v {old}) RETURNS boolean"
                    " LANGUAGE plpgsql AS $f$ BEGIN RETURN {test};"
                    " EXCEPTION WHEN others THEN RETURN false; END $f$"
                ).format(
                    old=sql.SQL(old),
                    test=sql.SQL(
                        "(v::{new})::{old} = v" if _numeric(old) and _numeric(new) else "v::{new} IS NOT NULL"
                    ).format(new=sql.SQL(new), old=sql.SQL(old)),
                )
            )
            row = conn.execute(
                sql.SQL(
                    "SELECT {c}::text FROM {t}"
                    " WHERE {c} IS NOT NULL AND NOT pg_temp.orgpipeline_converts({c}) LIMIT 1"
                ).format(c=sql.Identifier(column), t=target)
            ).fetchone()
            conn.execute("DROP FUNCTION pg_temp.orgpipeline_converts")
    except psycopg.Error:
        return None
    return None if row is None else str(row[0])
