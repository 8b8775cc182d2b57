"""Records written before `org_id` took the seed's form: rewritten once, at the table's next run.

Older releases stored the bare org id (`'123'`) in `org_id`; records now hold `org_123`
(`store_names.record_org_id`), so the seed's own SQL (`WHERE org_id = 'org_123'`) finds them.
`migrate` runs under the table's run lock, in the org's own session, before the run writes
anything: raw_T, raw_T_change_log and raw_T_quality_metrics rows, the MongoDB version documents,
and the reader's masked view (re-made by `privacy.ensure_view` with the new literal). It records
itself in `pipeline_migrations`; a table made by this release is recorded as done when it is made
(`record_new`: nothing to rewrite, and no MongoDB connection for it). Later runs look at neither:
the table's schema stamp (`ddl.is_current`) is written only once the migration is done.

No version is lost or doubled: the PostgreSQL rows change in one transaction, keys and versions
untouched (a version somehow present in both forms keeps its new-form row only, so the primary key
holds); MongoDB documents keep their `_id` (`{composite_key}|v{version}`) and only change a field,
which a crash mid-way leaves for the next run to finish (the record of the migration commits last).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from orgpipeline_api import store_names
from orgpipeline_api.orgschema import lock
from orgpipeline_api.orgschema.ddl import MIGRATIONS_TABLE, qualified

NAME = "record_org_id"


def _ensure_table(conn: psycopg.Connection[Any], org_id: str) -> None:
    target = qualified(org_id, MIGRATIONS_TABLE)
    if conn.execute("SELECT to_regclass(%s)", (target.as_string(conn),)).fetchone() != (None,):
        return
    with conn.transaction():  # two tables' first runs at once: one creates it
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock.key("ddl", org_id),))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (table_name TEXT NOT NULL, migration TEXT NOT NULL,"
                " done_at TIMESTAMPTZ NOT NULL DEFAULT now(), counts JSONB,"
                " PRIMARY KEY (table_name, migration))"
            ).format(target)
        )


def done(conn: psycopg.Connection[Any], org_id: str, table: str) -> bool:
    row = conn.execute(
        sql.SQL("SELECT 1 FROM {} WHERE table_name = %s AND migration = %s").format(
            qualified(org_id, MIGRATIONS_TABLE)
        ),
        (table, NAME),
    ).fetchone()
    return row is not None


def record_new(conn: psycopg.Connection[Any], org_id: str, table: str) -> None:
    """Records the migration as done for a table `ddl.ensure_schema` has just made: its records
    are all of the new form."""
    _ensure_table(conn, org_id)
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (table_name, migration, counts) VALUES (%s, %s, '{{}}')"
            " ON CONFLICT (table_name, migration) DO NOTHING"
        ).format(qualified(org_id, MIGRATIONS_TABLE)),
        (table, NAME),
    )


def migrate(
    conn: psycopg.Connection[Any], org_id: str, table: str, collection: Any | None
) -> dict[str, int] | None:
    """Rewrites the table's records of the bare id to `org_<id>` (see the module docstring); `conn`
    is the org's autocommit session holding the table's run lock, `collection` the table's MongoDB
    collection. Returns the rows and documents changed, or None when it was done before."""
    _ensure_table(conn, org_id)
    if done(conn, org_id, table):
        return None
    old, new = org_id, store_names.record_org_id(org_id)
    counts: dict[str, int] = {}
    with conn.transaction():
        for label, name, version in (
            ("versions", store_names.pg_table(table), "version"),
            ("change_log", store_names.pg_change_log(table), "new_version"),
        ):
            target = qualified(org_id, name)
            conn.execute(
                sql.SQL(
                    "DELETE FROM {t} o WHERE o.org_id = %(old)s AND EXISTS (SELECT 1 FROM {t} n"
                    " WHERE n.org_id = %(new)s AND n.composite_key = o.composite_key AND n.{v} = o.{v})"
                ).format(t=target, v=sql.Identifier(version)),
                {"old": old, "new": new},
            )
            counts[label] = conn.execute(
                sql.SQL("UPDATE {} SET org_id = %s WHERE org_id = %s").format(target), (new, old)
            ).rowcount
        counts["quality_metrics"] = conn.execute(
            sql.SQL("UPDATE {} SET org_id = %s WHERE org_id = %s").format(
                qualified(org_id, store_names.pg_quality_metrics(table))
            ),
            (new, old),
        ).rowcount
        _drop_stale_view(conn, org_id, table, new)
        if collection is not None:
            counts["documents"] = collection.update_many(
                {"org_id": old}, {"$set": {"org_id": new}}
            ).modified_count
        conn.execute(
            sql.SQL("INSERT INTO {} (table_name, migration, counts) VALUES (%s, %s, %s)").format(
                qualified(org_id, MIGRATIONS_TABLE)
            ),
            (table, NAME, Jsonb(counts)),
        )
    return counts


def _drop_stale_view(conn: psycopg.Connection[Any], org_id: str, table: str, new: str) -> None:
    """Drops the reader's view when it filters on the bare id only (made by an older release):
    `privacy.ensure_view` makes it again, with its grant, right after."""
    view = sql.SQL(".").join([sql.Identifier(store_names.pg_view_schema(org_id)), sql.Identifier(table)])
    row = conn.execute(
        "SELECT position(quote_literal(%s::text) IN pg_get_viewdef(c.oid)) FROM pg_class c"
        " WHERE c.oid = to_regclass(%s)",
        (new, view.as_string(conn)),
    ).fetchone()
    if row is not None and row[0] == 0:
        conn.execute(sql.SQL("DROP VIEW {}").format(view))
