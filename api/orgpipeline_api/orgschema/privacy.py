"""Column classification and masking: one definition for the reader views and `export --mask`.

A column is `public`, `internal` (the default), `pii` or `sensitive` (spec.tables[].columns[].
classification). For a reader:
- pii values become a keyed pseudonym, `sha256:<hex of SHA-256(org key || value)>`: equal values
  give equal pseudonyms (joins and counts still work), and without the org's key, which only the
  pipeline's role can read, a guessed value cannot be checked against a pseudonym;
- sensitive values become `[REDACTED]`;
- NULL stays NULL (that a value is missing is not itself masked);
- the composite key, which is built from the business-key values, is pseudonymised the same way as
  soon as one business key is pii or sensitive.

What the operator last provisioned is recorded in `orgdata_<org>.pipeline_classification` (one row
per column), so the command line masks and reports without a manifest; the key lives in
`orgdata_<org>.pipeline_mask_key`. Both are created by whoever needs them first, under the org's
DDL lock.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql

from orgpipeline_api import store_names
from orgpipeline_api.orgschema import lock
from orgpipeline_api.orgschema.ddl import qualified
from orgpipeline_api.v1alpha1 import MASKED_CLASSIFICATIONS, Classification, OrgPipelineSpec, Table

CLASSIFICATION_TABLE = "pipeline_classification"
MASK_KEY_TABLE = "pipeline_mask_key"
REDACTED = "[REDACTED]"
PSEUDONYM_PREFIX = "sha256:"


def masks(classification: str | None) -> bool:
    return classification in MASKED_CLASSIFICATIONS


def key_is_masked(classes: Mapping[str, str], business_keys: Iterable[str] | None) -> bool:
    """Whether the composite key must be masked: a business key is pii or sensitive, or the keys
    are unknown and any column is (when in doubt, mask)."""
    if business_keys is None:
        return any(masks(c) for c in classes.values())
    return any(masks(classes.get(k)) for k in business_keys)


def masked(value: sql.Composable, classification: str | None, org_id: str) -> sql.Composable:
    """The SQL expression a reader sees for `value` (an expression over the raw table)."""
    if classification == Classification.sensitive:
        return sql.SQL("CASE WHEN {v} IS NULL THEN NULL ELSE {r} END").format(
            v=value, r=sql.Literal(REDACTED)
        )
    if classification == Classification.pii:
        return pseudonym(value, org_id)
    return value


def pseudonym(value: sql.Composable, org_id: str) -> sql.Composable:
    return sql.SQL(
        "CASE WHEN {v} IS NULL THEN NULL ELSE {p} || encode(sha256((SELECT k.key FROM {t} k) ||"
        " convert_to({v}::text, 'UTF8')), 'hex') END"
    ).format(v=value, p=sql.Literal(PSEUDONYM_PREFIX), t=qualified(org_id, MASK_KEY_TABLE))


def ensure_tables(conn: psycopg.Connection[Any], org_id: str) -> None:
    """Creates the classification record and the org's masking key when missing; commits."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock.key("ddl", org_id),))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (table_name TEXT NOT NULL, column_name TEXT NOT NULL,"
                " classification TEXT NOT NULL, business_key BOOLEAN NOT NULL DEFAULT FALSE,"
                " updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(), PRIMARY KEY (table_name, column_name))"
            ).format(qualified(org_id, CLASSIFICATION_TABLE))
        )
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),"
                " key BYTEA NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT NOW())"
            ).format(qualified(org_id, MASK_KEY_TABLE))
        )
        conn.execute(
            sql.SQL("INSERT INTO {} (key) VALUES (%s) ON CONFLICT DO NOTHING").format(
                qualified(org_id, MASK_KEY_TABLE)
            ),
            (secrets.token_bytes(32),),
        )


def ensure_view(conn: psycopg.Connection[Any], org_id: str, table: Table) -> bool:
    """Makes the reader's masked view of a table that has none, when the org has a reader (the
    operator made its role and its view schema): at the table's first run, which makes the table,
    or after a type change dropped the view. Returns whether it made one; one catalog query when
    there is nothing to do. `conn` is the org's own session (`tenant.session`): the view is the
    org's role's, as when the operator makes it; the operator re-makes the views when the
    classification changes."""
    views, reader = store_names.pg_view_schema(org_id), store_names.pg_reader_role(org_id)
    missing = (
        "SELECT 1 FROM pg_namespace n WHERE n.nspname = %s"
        " AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s)"
        " AND NOT EXISTS (SELECT 1 FROM pg_views WHERE schemaname = %s AND viewname = %s)"
    )
    args = (views, reader, views, table.name)
    if conn.execute(missing, args).fetchone() is None:
        return False
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock.key("ddl", org_id),))
        if conn.execute(missing, args).fetchone() is None:  # again, under the lock
            return False
        ensure_tables(conn, org_id)  # the masking key the view reads
        conn.execute(view_statement(org_id, table))
        conn.execute(
            sql.SQL("GRANT SELECT ON {}.{} TO {}").format(
                sql.Identifier(views), sql.Identifier(table.name), sql.Identifier(reader)
            )
        )
    return True


def record(conn: psycopg.Connection[Any], spec: OrgPipelineSpec) -> None:
    """Records the spec's classification of every column (replacing what was recorded); commits."""
    org_id = spec.org_id
    ensure_tables(conn, org_id)
    target = qualified(org_id, CLASSIFICATION_TABLE)
    rows = [
        (t.name, c.name, str(c.classification), c.name in t.business_keys)
        for t in spec.tables
        for c in t.columns
    ]
    with conn.transaction():
        current = {
            (str(r[0]), str(r[1]), str(r[2]), bool(r[3]))
            for r in conn.execute(
                sql.SQL("SELECT table_name, column_name, classification, business_key FROM {}").format(target)
            ).fetchall()
        }
        if current == set(rows):
            return
        conn.execute(sql.SQL("DELETE FROM {}").format(target))
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (table_name, column_name, classification, business_key)"
                    " VALUES (%s, %s, %s, %s)"
                ).format(target),
                rows,
            )


def recorded(conn: psycopg.Connection[Any], org_id: str) -> dict[str, dict[str, str]] | None:
    """{table: {column: classification}} as recorded for the org; None when nothing is."""
    exists = conn.execute(
        "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s",
        (store_names.pg_schema(org_id), CLASSIFICATION_TABLE),
    ).fetchone()
    if not exists:
        return None
    out: dict[str, dict[str, str]] = {}
    for table, column, classification in conn.execute(
        sql.SQL("SELECT table_name, column_name, classification FROM {} ORDER BY 1, 2").format(
            qualified(org_id, CLASSIFICATION_TABLE)
        )
    ).fetchall():
        out.setdefault(str(table), {})[str(column)] = str(classification)
    return out or None


def from_spec(spec: OrgPipelineSpec) -> dict[str, dict[str, str]]:
    return {t.name: {c.name: str(c.classification) for c in t.columns} for t in spec.tables}


def business_keys(conn: psycopg.Connection[Any], org_id: str, table: str) -> list[str] | None:
    """The key columns the pipeline uses for the table (the manifest's, or those it detected)."""
    exists = conn.execute(
        "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'pipeline_tables'",
        (store_names.pg_schema(org_id),),
    ).fetchone()
    if not exists:
        return None
    row = conn.execute(
        sql.SQL("SELECT business_keys FROM {} WHERE table_name = %s").format(
            qualified(org_id, "pipeline_tables")
        ),
        (table,),
    ).fetchone()
    return [str(k) for k in row[0]] if row else None


def source_file(alias: sql.Composable) -> sql.Composable:
    """The version's source file as `s3://bucket/key` (or the local path) from its metadata."""
    return sql.SQL(
        "CASE WHEN coalesce({a}.source_file_metadata->>'bucket', '') <> ''"
        " THEN 's3://' || ({a}.source_file_metadata->>'bucket') || '/' || ({a}.source_file_metadata->>'key')"
        " ELSE coalesce({a}.source_file_metadata->>'key', {a}.source_file_metadata->>'filename') END"
    ).format(a=alias)


def view_statement(org_id: str, table: Table) -> sql.Composed:
    """The reader's view of a table: every version, masked, with its validity.

    Columns: composite_key, version, change_type, valid_from, valid_to (NULL while current),
    is_current (the key's live version, not a DELETE), source_file, then the manifest's columns.
    A security barrier, owned by the org's role: the reader reads through it, never the table.
    """
    classes = {c.name: str(c.classification) for c in table.columns}
    r = sql.Identifier("r")
    ck = sql.SQL("r.composite_key")
    key = pseudonym(ck, org_id) if key_is_masked(classes, table.business_keys or None) else ck
    nxt = sql.SQL("lead(r.ingested_at) OVER (PARTITION BY r.composite_key ORDER BY r.version)")
    data = [
        sql.SQL("{} AS {}").format(
            masked(sql.SQL("r.{}").format(sql.Identifier(c.name)), str(c.classification), org_id),
            sql.Identifier(c.name),
        )
        for c in table.columns
    ]
    return sql.SQL(
        "CREATE VIEW {view} WITH (security_barrier) AS SELECT {key} AS composite_key, r.version,"
        " r.change_type, r.ingested_at AS valid_from, {nxt} AS valid_to,"
        " ({nxt} IS NULL AND r.change_type <> 'DELETE') AS is_current, {src} AS source_file, {data}"
        " FROM {raw} r WHERE r.org_id IN ({org})"
    ).format(
        view=sql.SQL(".").join(
            [sql.Identifier(store_names.pg_view_schema(org_id)), sql.Identifier(table.name)]
        ),
        key=key,
        nxt=nxt,
        src=source_file(r),
        data=sql.SQL(", ").join(data),
        raw=qualified(org_id, store_names.pg_table(table.name)),
        org=sql.SQL(", ").join(map(sql.Literal, store_names.record_org_ids(org_id))),
    )
