"""A column type changed in the manifest: applied to raw_T when every stored value converts, else
refused, naming the column, how many stored values do not convert and why, never a value: the
message reaches cluster-wide objects (the OrgPipeline's conditions and lastRun, Events, the Job's
termination message and logs) whatever the column's classification. The org's role finds the
values in its own schema.

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
    """Stored values do not convert to the column's new type; nothing was changed. The message
    names the table, the column, the types, the count and the reason: no stored value."""

    stage = "schema"

    def __init__(self, table: str, column: str, old: str, new: str, count: int | None, reason: str) -> None:
        found = (
            "stored values do not convert"
            if count is None
            else f"{count} stored value{'s do' if count != 1 else ' does'} not convert"
        )
        super().__init__(
            f"table {table}: column {column} cannot change type from {old} to {new}: {found}"
            f" ({reason}); nothing was changed — fix or remove the values in"
            f" {store_names.pg_table(table)}.{column}, or keep the type"
        )
        self.table, self.column, self.count = table, column, count


def refusal_reason(exc: psycopg.Error, new: str) -> str:
    """Why PostgreSQL refused the conversion, without the value: its messages for data exceptions
    (SQLSTATE class 22) quote the value (`invalid input syntax for type integer: "..."`), so
    those are named by their kind; other messages name types and columns only."""
    state = exc.sqlstate or ""
    if state == "22003":
        return f"out of range for {new}"
    if state.startswith("22"):
        return f"not valid as {new} (SQLSTATE {state})"
    return (exc.diag.message_primary or type(exc).__name__).strip()


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
            count = _failing_count(conn, target, column, old, new)
            if count:
                raise TypeChangeRefused(table.name, column, old, new, count, "they would be rounded")
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
            reason = refusal_reason(exc, new)
            count = _failing_count(conn, target, column, old, new)
            raise TypeChangeRefused(table.name, column, old, new, count or None, reason) from None
    return changes


def _numeric(pg_type: str) -> bool:
    return pg_type in ("integer", "bigint", "smallint", "double precision", "real") or pg_type.startswith(
        "numeric"
    )


def _failing_count(
    conn: psycopg.Connection[Any], target: sql.Composable, column: str, old: str, new: str
) -> int | None:
    """How many stored values of `column` `::new` refuses (or changes); None when they cannot be
    counted."""
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
                    "SELECT count(*) FROM {t} WHERE {c} IS NOT NULL AND NOT pg_temp.orgpipeline_converts({c})"
                ).format(c=sql.Identifier(column), t=target)
            ).fetchone()
            conn.execute("DROP FUNCTION pg_temp.orgpipeline_converts")
    except psycopg.Error:
        return None
    return None if row is None else int(row[0])
