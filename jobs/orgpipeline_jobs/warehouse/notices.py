"""Warnings a table raises once: the org's `pipeline_notices` (table, kind, subject, first seen).

Some findings hold for every later run until someone acts (a detected business key that a later
file repeats, a column that looks like personal data while classified public): reported by every run
they would be noise. A run reports such a finding only when this table has no row for it yet, and
records it in the same step, so the alert and its Warning Event come once.
"""

from __future__ import annotations

from typing import Any

import psycopg
from orgpipeline_api.orgschema import lock
from orgpipeline_api.orgschema.ddl import qualified
from psycopg import sql

NOTICES_TABLE = "pipeline_notices"


def ensure(conn: psycopg.Connection[Any], org_id: str) -> None:
    """Creates the notices table of the org when missing (under the org's DDL lock, as the schema's
    other objects are made)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock.key("ddl", org_id),))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (table_name TEXT NOT NULL, kind TEXT NOT NULL,"
                " subject TEXT NOT NULL, message TEXT, first_seen TIMESTAMPTZ NOT NULL DEFAULT NOW(),"
                " PRIMARY KEY (table_name, kind, subject))"
            ).format(qualified(org_id, NOTICES_TABLE))
        )


def first_time(
    conn: psycopg.Connection[Any], org_id: str, table: str, kind: str, subject: str, message: str = ""
) -> bool:
    """Records the finding; True when the table had not recorded it before (report it now)."""
    ensure(conn, org_id)
    with conn.transaction():
        row = conn.execute(
            sql.SQL(
                "INSERT INTO {} (table_name, kind, subject, message) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING RETURNING 1"
            ).format(qualified(org_id, NOTICES_TABLE)),
            (table, kind, subject, message),
        ).fetchone()
    return row is not None
