"""DDL of the org's schema `orgdata_{org_id}`: the seed's tables plus the pipeline's bookkeeping.

Per table T (names from `orgpipeline_api.store_names`):
- raw_T: typed business columns, the seed's audit columns, PRIMARY KEY (org_id, composite_key,
  version) and the seed's indexes; one row per version.
- raw_T_change_log, raw_T_quality_metrics: the seed's audit tables (the change log gets a unique
  (org_id, composite_key, new_version) so a replayed load adds nothing).
- raw_T_heads: the latest version of each key, what change detection compares against (FerretDB
  cannot push `$in` down to PostgreSQL, so a batch lookup there would scan the collection).
- raw_T_rejected_rows: every row that did not become a version, with file, line, reason and its
  text (bounded; text_truncated when cut).
- raw_T_outbox: version documents on their way to MongoDB (`committed`: the batch's PostgreSQL
  part is committed, so they are replayed; not yet: they are withdrawn from MongoDB).
Per org: pipeline_runs (one row per command run) and pipeline_files (one row per source file, with
the header as the file spells it).

Every statement is idempotent (IF NOT EXISTS) and runs under a transaction-level advisory lock of
the org, so concurrent first runs of two tables cannot race on CREATE SCHEMA.

A run checks first whether the table's objects are current (`is_current`: one catalog query of
the stamp `mark_current` leaves on raw_T, and of the objects' shape) and runs these statements only
when they are not: about 30 statements, most of a short run's PostgreSQL round trips, were
repeated by every run.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from orgpipeline_api import store_names
from orgpipeline_api.orgschema import lock, retype
from orgpipeline_api.v1alpha1 import Table

AUDIT_COLUMNS = [
    ("version", "INTEGER NOT NULL DEFAULT 1"),
    ("data_hash", "TEXT"),
    ("change_type", "VARCHAR(10) DEFAULT 'INSERT'"),
    ("changed_fields", "JSONB"),
    ("changed_by_user_id", "TEXT"),
    ("previous_version", "INTEGER"),
    ("audit_trail", "JSONB"),
    ("ingested_at", "TIMESTAMPTZ NOT NULL DEFAULT NOW()"),
    ("last_modified", "TIMESTAMPTZ DEFAULT NOW()"),
    ("postgres_status", "VARCHAR(20) DEFAULT 'pending'"),
    # The seed calls this `status`; renamed because tables often have a business column `status`.
    ("record_status", "VARCHAR(20) DEFAULT 'active'"),
    ("is_active", "BOOLEAN DEFAULT TRUE"),
    ("data_quality", "JSONB"),
    ("source_file_metadata", "JSONB"),
    ("processing_metadata", "JSONB"),
]
AUDIT_COLUMN_NAMES = tuple(name for name, _ in AUDIT_COLUMNS)
RESERVED_COLUMNS = frozenset(
    {"org_id", "composite_key", "table", "_id", "file_id", "batch_id", "run_id", "previous_data_hash"}
    | set(AUDIT_COLUMN_NAMES)
)

RUNS_COLUMNS = """
    run_id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    table_name TEXT NOT NULL,
    command TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    finished_at TIMESTAMPTZ,
    user_id TEXT,
    files JSONB NOT NULL DEFAULT '[]',
    rows_read BIGINT NOT NULL DEFAULT 0,
    inserted BIGINT NOT NULL DEFAULT 0,
    updated BIGINT NOT NULL DEFAULT 0,
    deleted BIGINT NOT NULL DEFAULT 0,
    unchanged BIGINT NOT NULL DEFAULT 0,
    rejected BIGINT NOT NULL DEFAULT 0,
    loaded BIGINT NOT NULL DEFAULT 0,
    quality_score DOUBLE PRECISION,
    completeness_score DOUBLE PRECISION,
    validity_score DOUBLE PRECISION,
    consistency_score DOUBLE PRECISION,
    error_rate_percent DOUBLE PRECISION,
    quality_report JSONB,
    breaches JSONB NOT NULL DEFAULT '[]',
    business_keys JSONB,
    error TEXT
"""

FILES_COLUMNS = """
    table_name TEXT NOT NULL,
    file_id TEXT NOT NULL,
    bucket TEXT,
    object_key TEXT NOT NULL,
    etag TEXT NOT NULL,
    size BIGINT NOT NULL,
    status TEXT NOT NULL,
    run_id TEXT,
    started_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    finished_at TIMESTAMPTZ,
    counts JSONB,
    quality_report JSONB,
    error TEXT,
    PRIMARY KEY (table_name, file_id)
"""


def _q(*parts: str) -> sql.Composable:
    return sql.SQL(".").join(sql.Identifier(p) for p in parts)


def ensure_schema(conn: psycopg.Connection[object], org_id: str, table: Table) -> bool:
    """Creates (or completes) the org's schema and the table's objects; commits. Returns whether it
    created the table's raw_T (a new table: nothing of an older release in it).

    `conn` is the org's own session (`tenant.session`): what it makes is the org's role's, so that
    the org's jobs can use it, and no administrator's session ever runs in the org's schema."""
    schema = store_names.pg_schema(org_id)
    raw = store_names.pg_table(table.name)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock.key("ddl", org_id),))
        row: Any = conn.execute(
            "SELECT n.oid, to_regclass(%s) FROM pg_namespace n WHERE n.nspname = %s",
            (_q(schema, raw).as_string(conn), schema),
        ).fetchone()
        # Only when missing: CREATE SCHEMA checks the database privilege even with IF NOT EXISTS, and
        # a tenant's role may own its schema (made by the operator) without that privilege.
        if row is None:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        _table_objects(conn, schema, raw, org_id, table)
    return row is None or row[1] is None


STAMP_PREFIX = "orgpipeline schema "


@functools.cache
def _code_digest() -> bytes:
    """The DDL's own code (this module, column retyping, the record migrations): any change to it
    makes every table's stamp stale, so the next run of each table runs the statements again."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in ("ddl.py", "retype.py", "recordorg.py"):
        digest.update((here / name).read_bytes())
    return digest.digest()


def stamp(org_id: str, table: Table) -> str:
    """What `mark_current` writes on raw_T: a digest of the DDL's code and of the table's columns."""
    digest = hashlib.sha256(_code_digest())
    digest.update("\x00".join([org_id, table.name, *(f"{c.name} {c.type}" for c in table.columns)]).encode())
    return STAMP_PREFIX + digest.hexdigest()[:32]


def _objects(table: str) -> list[str]:
    """The relations `ensure_schema` and the record migrations make for the table (and the org)."""
    return [
        *store_names.pg_table_relations(table),
        store_names.PG_RUNS_TABLE,
        FILES_TABLE,
        TABLES_TABLE,
        STORAGE_TABLE,
        MIGRATIONS_TABLE,
    ]


_SHAPE = (
    "SELECT obj_description(to_regclass(%(raw)s), 'pg_class'),"
    " md5(coalesce(string_agg(x, ',' ORDER BY x), ''))"
    " FROM (SELECT c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) AS x"
    "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    "  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
    "  WHERE n.nspname = %(schema)s AND c.relname = ANY(%(names)s)"
    " UNION ALL SELECT t.relname || ' ' || i.relname FROM pg_index x"
    "  JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
    "  JOIN pg_namespace n ON n.oid = t.relnamespace"
    "  WHERE n.nspname = %(schema)s AND t.relname = ANY(%(names)s)) AS shape"
)
"""The stamp on raw_T and a digest of what is there now: the table's relations, their columns with
their types, and their indexes (names only)."""


def _shape(conn: psycopg.Connection[Any], org_id: str, table: Table) -> tuple[str | None, str]:
    schema = store_names.pg_schema(org_id)
    raw = _q(schema, store_names.pg_table(table.name)).as_string(conn)
    row = conn.execute(_SHAPE, {"raw": raw, "schema": schema, "names": _objects(table.name)}).fetchone()
    assert row is not None  # an aggregate: always one row
    return row[0], row[1]


def is_current(conn: psycopg.Connection[Any], org_id: str, table: Table) -> bool:
    """Whether the table's objects are as this code and these columns make them, in one catalog
    query: raw_T's stamp names this code, these columns and the objects' shape at the time, and the
    shape is still that (a column, table or index dropped by hand makes the next run redo them)."""
    comment, shape = _shape(conn, org_id, table)
    return comment == f"{stamp(org_id, table)} {shape}"


def mark_current(conn: psycopg.Connection[Any], org_id: str, table: Table) -> None:
    """Stamps raw_T (its table comment) once `ensure_schema` and the record migrations are done.
    A stamp that no longer matches (new code, changed columns, objects changed by hand, a comment
    written by hand) only means one more full pass."""
    _, shape = _shape(conn, org_id, table)
    raw = _q(store_names.pg_schema(org_id), store_names.pg_table(table.name))
    conn.execute(
        sql.SQL("COMMENT ON TABLE {} IS {}").format(raw, sql.Literal(f"{stamp(org_id, table)} {shape}"))
    )


def _table_objects(
    conn: psycopg.Connection[object], schema: str, raw: str, org_id: str, table: Table
) -> None:
    """The statements of `ensure_schema`, in its transaction."""
    business = [sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in table.columns]
    audit = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(d)) for n, d in AUDIT_COLUMNS]
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (org_id TEXT NOT NULL, composite_key TEXT NOT NULL, {}, {},"
            " PRIMARY KEY (org_id, composite_key, version))"
        ).format(_q(schema, raw), sql.SQL(", ").join(business), sql.SQL(", ").join(audit))
    )
    have = retype.current_types(conn, schema, raw)
    for column in table.columns:  # columns added to the manifest later
        # Only the missing ones: ALTER TABLE locks readers out even when the column is there.
        if column.name not in have:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                    _q(schema, raw), sql.Identifier(column.name), sql.SQL(column.type)
                )
            )
    retype.apply(conn, org_id, table)  # column types changed in the manifest (or refused)
    # The seed's indexes, and only those: each costs every version's write (an index on the rows'
    # file id, which no query read, was dropped from new tables; tables that have it keep it).
    indexes = [
        ("org_active", "(org_id, is_active)"),
        ("composite_latest", "(composite_key, version DESC)"),
        ("ingested_at", "(ingested_at)"),
        ("changed_by", "(changed_by_user_id)"),
        ("data_quality", "USING gin (data_quality)"),
    ]
    for suffix, body in indexes:
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} " + body).format(
                sql.Identifier(f"idx_{raw}_{suffix}"[:63]), _q(schema, raw)
            )
        )
    statements = [
        """CREATE TABLE IF NOT EXISTS {} (
            id BIGSERIAL PRIMARY KEY, org_id TEXT NOT NULL, composite_key TEXT NOT NULL,
            old_version INTEGER, new_version INTEGER NOT NULL, change_type VARCHAR(10) NOT NULL,
            changed_fields JSONB, changed_by_user_id TEXT, change_timestamp TIMESTAMPTZ DEFAULT NOW(),
            old_data_hash TEXT, new_data_hash TEXT, change_metadata JSONB, source_info JSONB,
            UNIQUE (org_id, composite_key, new_version))""",
        """CREATE TABLE IF NOT EXISTS {} (
            id BIGSERIAL PRIMARY KEY, org_id TEXT NOT NULL, table_name TEXT NOT NULL,
            measurement_timestamp TIMESTAMPTZ DEFAULT NOW(), total_records INTEGER,
            records_with_errors INTEGER, records_with_warnings INTEGER,
            average_quality_score DECIMAL(5,4), quality_metrics JSONB,
            period_start TIMESTAMPTZ, period_end TIMESTAMPTZ, run_id TEXT, file_id TEXT,
            UNIQUE (run_id, file_id))""",
        """CREATE TABLE IF NOT EXISTS {} (
            composite_key TEXT PRIMARY KEY, version INTEGER NOT NULL, data_hash TEXT NOT NULL,
            change_type VARCHAR(10) NOT NULL, data JSONB NOT NULL, file_id TEXT NOT NULL,
            line BIGINT NOT NULL, seen_file TEXT)""",
        """CREATE TABLE IF NOT EXISTS {} (
            file_id TEXT NOT NULL, line BIGINT NOT NULL, run_id TEXT NOT NULL, source TEXT NOT NULL,
            issue_type TEXT NOT NULL, field TEXT, reason TEXT NOT NULL, text TEXT,
            rejected_at TIMESTAMPTZ NOT NULL DEFAULT NOW(), PRIMARY KEY (file_id, line))""",
        """CREATE TABLE IF NOT EXISTS {} (
            batch_id TEXT PRIMARY KEY, documents BYTEA NOT NULL, committed BOOLEAN NOT NULL DEFAULT TRUE)""",
    ]
    names = [
        store_names.pg_change_log(table.name),
        store_names.pg_quality_metrics(table.name),
        store_names.pg_heads(table.name),
        store_names.pg_rejected_rows(table.name),
        store_names.pg_outbox(table.name),
    ]
    for statement, name in zip(statements, names, strict=True):
        conn.execute(sql.SQL(statement).format(_q(schema, name)))
    # Change detection probes the heads one key at a time, ~10,000 keys a batch: a hash index finds
    # a key in about half the time the primary key's btree takes (bench/README.md, "heads probe").
    heads = store_names.pg_heads(table.name)
    conn.execute(
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING hash (composite_key)").format(
            sql.Identifier(f"idx_{heads}_key_hash"[:63]), _q(schema, heads)
        )
    )
    pending_loads = _q(schema, store_names.pg_pending_loads(table.name))
    if not conn.execute("SELECT to_regclass(%s)", (pending_loads.as_string(conn),)).fetchone()[0]:  # type: ignore[index]
        conn.execute(sql.SQL("CREATE TABLE {} (batch_id TEXT PRIMARY KEY)").format(pending_loads))
        # Made now for a table that may already hold pending documents: look at all of them once.
        conn.execute(sql.SQL("INSERT INTO {} VALUES ('*')").format(pending_loads))
    # The outbox holds a batch's BSON for seconds: PostgreSQL's compression would cost more than
    # storing it (the BSON comes compressed). Set once: ALTER TABLE locks the table.
    outbox = _q(schema, store_names.pg_outbox(table.name))
    storage: Any = conn.execute(
        "SELECT bool_or(attname = 'documents' AND attstorage = 'e'), bool_or(attname = 'committed')"
        " FROM pg_attribute WHERE attrelid = to_regclass(%s) AND NOT attisdropped",
        (outbox.as_string(conn),),
    ).fetchone()
    if storage is None or not storage[0]:
        conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN documents SET STORAGE EXTERNAL").format(outbox))
    if storage is None or not storage[1]:
        # An outbox of an older release: its rows were all written with their batch's PostgreSQL part.
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS committed BOOLEAN NOT NULL DEFAULT TRUE").format(
                outbox
            )
        )
    conn.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} (" + RUNS_COLUMNS + ")").format(
            _q(schema, store_names.PG_RUNS_TABLE)
        )
    )
    conn.execute(
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (table_name, started_at DESC)").format(
            sql.Identifier("idx_pipeline_runs_table_started"), _q(schema, store_names.PG_RUNS_TABLE)
        )
    )
    conn.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} (" + FILES_COLUMNS + ")").format(_q(schema, FILES_TABLE))
    )
    for name, added, definition in added_columns(table.name):  # columns added after the first release
        # Looked up first: ALTER TABLE locks the table out even when the column is there.
        present = conn.execute(
            "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s",
            (_q(schema, name).as_string(conn), added),
        ).fetchone()
        if not present:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} " + definition).format(
                    _q(schema, name), sql.Identifier(added)
                )
            )
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (table_name TEXT PRIMARY KEY, business_keys JSONB NOT NULL,"
            " detected BOOLEAN NOT NULL, decided_at TIMESTAMPTZ NOT NULL DEFAULT NOW())"
        ).format(_q(schema, TABLES_TABLE))
    )
    # Made here, with the rest, so that a run's storage lookup needs no existence check first.
    conn.execute(sql.SQL(STORAGE_DDL).format(_q(schema, STORAGE_TABLE)))


FILES_TABLE = "pipeline_files"
TABLES_TABLE = "pipeline_tables"
MIGRATIONS_TABLE = "pipeline_migrations"
"""Per org: the record migrations done per table (`recordorg`)."""
STORAGE_TABLE = "pipeline_storage"
"""Per org: each table's measured sizes per UTC day (`orgpipeline_jobs.storage`)."""
STORAGE_DDL = (
    "CREATE TABLE IF NOT EXISTS {} (table_name TEXT NOT NULL, day DATE NOT NULL,"
    " postgres_bytes BIGINT NOT NULL, mongo_bytes BIGINT, mongo_documents BIGINT,"
    " measured_at TIMESTAMPTZ NOT NULL DEFAULT NOW(), PRIMARY KEY (table_name, day))"
)


def added_columns(table: str) -> list[tuple[str, str, str]]:
    """(table, column, definition) of the columns added to existing schemas since they were made:
    `ensure_schema` adds the missing ones, so a schema of any age reaches the current shape."""
    return [
        (store_names.pg_rejected_rows(table), "text_truncated", "BOOLEAN NOT NULL DEFAULT FALSE"),
        (FILES_TABLE, "header", "JSONB"),
        (store_names.PG_RUNS_TABLE, "trigger", "TEXT"),  # schedule | run-now | file-arrival | manual
        (store_names.PG_RUNS_TABLE, "trigger_reason", "TEXT"),  # the user is user_id
    ]


def qualified(org_id: str, name: str) -> sql.Composable:
    """`"orgdata_<org>"."<name>"`, quoted."""
    return _q(store_names.pg_schema(org_id), name)
