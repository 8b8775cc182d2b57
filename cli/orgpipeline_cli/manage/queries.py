"""Read-side queries of the management commands: runs, quality, change log, versions, storage.

Everything here reads what the data plane wrote (see `orgpipeline_api.orgschema.ddl` for the
tables) and changes nothing. Identifiers are quoted with psycopg.sql; org and table names come from
the catalog or are checked against it before they reach a query. Large reads stream: PostgreSQL
through a server-side cursor, MongoDB through its cursor, so memory stays bounded.

FerretDB implements few aggregation operators (no $avg, $max, $subtract in $group), so sums that
need arithmetic on documents are done here over a projected stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from orgpipeline_api import store_names
from orgpipeline_api.orgschema.ddl import AUDIT_COLUMNS, FILES_TABLE, qualified
from orgpipeline_api.v1alpha1 import Retention
from orgpipeline_jobs import hashing
from psycopg import sql
from psycopg.rows import dict_row
from pymongo.collection import Collection
from pymongo.database import Database

from orgpipeline_cli.manage.compare import VersionRef

Conn = psycopg.Connection[Any]
Doc = dict[str, Any]

NON_BUSINESS_COLUMNS = frozenset({"org_id", "composite_key"} | {name for name, _ in AUDIT_COLUMNS})
STREAM_BATCH = 2000


def since(days: int, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(days=days)


# --- catalog -----------------------------------------------------------------------------------


def list_orgs(conn: Conn) -> list[str]:
    """Org ids that have a schema `orgdata_<org>`, sorted."""
    prefix = store_names.pg_schema("")
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s) ORDER BY nspname", (prefix,)
    ).fetchall()
    return [str(r[0])[len(prefix) :] for r in rows]


def org_exists(conn: Conn, org_id: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (store_names.pg_schema(org_id),))
    return row.fetchone() is not None


def list_tables(conn: Conn, org_id: str) -> list[str]:
    """The org's pipeline tables: every T with both raw_T and raw_T_change_log, sorted."""
    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s", (store_names.pg_schema(org_id),)
    ).fetchall()
    names = {str(r[0]) for r in rows}
    tables = []
    for name in names:
        if name.startswith("raw_") and store_names.pg_change_log(name[4:]) in names:
            tables.append(name[4:])
    return sorted(tables)


def has_runs_table(conn: Conn, org_id: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s",
        (store_names.pg_schema(org_id), store_names.PG_RUNS_TABLE),
    ).fetchone()
    return row is not None


# --- runs --------------------------------------------------------------------------------------

RUN_FIELDS = (
    "run_id, org_id, table_name, command, status, started_at, finished_at, rows_read, inserted, updated,"
    " deleted, unchanged, rejected, loaded, quality_score, completeness_score, error_rate_percent,"
    " breaches, error, user_id,"
    # Through to_jsonb: a runs table no run has brought up to date yet lacks these columns.
    f" to_jsonb({store_names.PG_RUNS_TABLE})->>'trigger' AS trigger,"
    f" to_jsonb({store_names.PG_RUNS_TABLE})->>'trigger_reason' AS trigger_reason"
)


def runs(
    conn: Conn, org_id: str, start: datetime | None, table: str | None = None, limit: int | None = None
) -> list[Doc]:
    """The org's runs that started since `start` (all when None), newest first, at most `limit`."""
    if not has_runs_table(conn, org_id):
        return []
    conditions: list[sql.Composable] = [sql.SQL("TRUE")]
    params: list[Any] = []
    if start is not None:
        conditions.append(sql.SQL("started_at >= %s"))
        params.append(start)
    if table:
        conditions.append(sql.SQL("table_name = %s"))
        params.append(table)
    statement = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY started_at DESC").format(
        sql.SQL(RUN_FIELDS), qualified(org_id, store_names.PG_RUNS_TABLE), sql.SQL(" AND ").join(conditions)
    )
    if limit is not None:
        statement = sql.SQL("{} LIMIT %s").format(statement)
        params.append(limit)
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(statement, params).fetchall())


# --- quality -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QualitySample:
    """One quality-metrics row: the seed's report of one file of one run."""

    table: str
    measured_at: datetime
    report: dict[str, Any]


def quality_samples(conn: Conn, org_id: str, table: str, start: datetime) -> list[QualitySample]:
    statement = sql.SQL(
        "SELECT measurement_timestamp, quality_metrics FROM {} WHERE measurement_timestamp >= %s"
        " AND quality_metrics IS NOT NULL ORDER BY measurement_timestamp"
    ).format(qualified(org_id, store_names.pg_quality_metrics(table)))
    rows = conn.execute(statement, (start,)).fetchall()
    return [QualitySample(table, r[0], dict(r[1])) for r in rows]


# --- audit -------------------------------------------------------------------------------------

CHANGE_FIELDS = (
    "composite_key, old_version, new_version, change_type, changed_fields, changed_by_user_id,"
    " change_timestamp, source_info,"
    # Who and why ({"type", "user", "reason"}); null for versions written before runs recorded it.
    " change_metadata->'trigger' AS trigger"
)


def change_log(conn: Conn, org_id: str, table: str, start: datetime | None, limit: int) -> list[Doc]:
    """The table's newest change-log rows since `start` (None: all of them; at most `limit`),
    newest first."""
    statement = sql.SQL(
        "SELECT %s AS table_name, {} FROM {} WHERE change_timestamp >= %s"
        " ORDER BY change_timestamp DESC, id DESC LIMIT %s"
    ).format(sql.SQL(CHANGE_FIELDS), qualified(org_id, store_names.pg_change_log(table)))
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(statement, (table, start or _BEGINNING, limit)).fetchall())


def change_counts(conn: Conn, org_id: str, table: str, start: datetime | None) -> dict[str, int]:
    """The table's changes by type since `start` (None: ever)."""
    statement = sql.SQL(
        "SELECT change_type, count(*) FROM {} WHERE change_timestamp >= %s GROUP BY change_type"
    ).format(qualified(org_id, store_names.pg_change_log(table)))
    return {str(r[0]): int(r[1]) for r in conn.execute(statement, (start or _BEGINNING,)).fetchall()}


_BEGINNING = datetime(1, 1, 1, tzinfo=UTC)
"""`since` for "all history": before any change timestamp (PostgreSQL's range starts at 4713 BC)."""


def version_history(collection: Collection[Doc], composite_key: str) -> list[Doc]:
    """Every version document of one key (the raw landing keeps them all), oldest first."""
    return list(collection.find({"composite_key": composite_key}).sort("version", 1))


def key_belongs(org_id: str, table: str, composite_key: str) -> bool:
    from orgpipeline_jobs import keys

    return composite_key.startswith(keys.prefix(org_id, table))


# --- metrics -----------------------------------------------------------------------------------


@dataclass
class Latency:
    """Ingestion -> available in PostgreSQL, over the versions loaded in the period."""

    versions: int = 0
    total_seconds: float = 0.0
    max_seconds: float = 0.0

    @property
    def mean_seconds(self) -> float | None:
        return self.total_seconds / self.versions if self.versions else None


def latency(
    collections: Iterable[Collection[Doc]], start: datetime, run_files: Iterable[tuple[float, int]] = ()
) -> Latency:
    """From a file's pickup to its versions being available in PostgreSQL, over the versions
    landed since `start`. `ingest` then `load`: `loaded_at - ingested_at` of each version in
    `collections`. `run` (what the CronJobs do) commits each batch to PostgreSQL before it lands in
    MongoDB, so its documents carry no `loaded_at`: its versions count with the time their file took,
    from `run_files` (seconds, versions) as `run_file_latencies` reads them."""
    result = Latency()
    for seconds, versions in run_files:
        result.versions += versions
        result.total_seconds += seconds * versions
        result.max_seconds = max(result.max_seconds, seconds)
    for collection in collections:
        cursor = collection.find(
            {"ingested_at": {"$gte": start}, "postgres_status": "loaded", "loaded_at": {"$exists": True}},
            {"_id": 0, "ingested_at": 1, "loaded_at": 1},
            batch_size=STREAM_BATCH,
        )
        for doc in cursor:
            result.versions += 1
            loaded, ingested = doc.get("loaded_at"), doc.get("ingested_at")
            if isinstance(loaded, datetime) and isinstance(ingested, datetime):
                seconds = max(0.0, (_utc(loaded) - _utc(ingested)).total_seconds())
                result.total_seconds += seconds
                result.max_seconds = max(result.max_seconds, seconds)
    return result


def run_file_latencies(conn: Conn, org_id: str, start: datetime) -> list[tuple[float, int]]:
    """(seconds from pickup to done, versions written) of each file `run` ingested since `start`."""
    if not has_runs_table(conn, org_id):
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT EXTRACT(EPOCH FROM f.finished_at - f.started_at)::float8,"
            " coalesce((f.counts->>'inserted')::bigint, 0) + coalesce((f.counts->>'updated')::bigint, 0)"
            " + coalesce((f.counts->>'deleted')::bigint, 0)"
            " FROM {files} f JOIN {runs} r ON r.run_id = f.run_id"
            " WHERE r.command = 'run' AND f.status = 'ingested' AND f.finished_at >= %s"
        ).format(files=qualified(org_id, FILES_TABLE), runs=qualified(org_id, store_names.PG_RUNS_TABLE)),
        (start,),
    ).fetchall()
    return [(max(0.0, float(seconds)), int(versions)) for seconds, versions in rows if versions]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@dataclass(frozen=True)
class Storage:
    postgres_bytes: int
    mongo_bytes: int | None
    versions: int
    versions_in_period: int

    @property
    def total_bytes(self) -> int:
        return self.postgres_bytes + (self.mongo_bytes or 0)


def storage(conn: Conn, db: Database[Doc], org_id: str, tables: list[str], start: datetime) -> Storage:
    """Bytes of the org's PostgreSQL schema (tables, indexes, TOAST) and MongoDB collections, and
    the number of versions, all and landed since `start` (for the growth estimate)."""
    row = conn.execute(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'm')",
        (store_names.pg_schema(org_id),),
    ).fetchone()
    pg_bytes = int(row[0]) if row else 0
    mongo_bytes: int | None = 0
    versions = in_period = 0
    existing = set(db.list_collection_names())
    for table in tables:
        name = store_names.mongo_collection(org_id, table)
        if name in existing and mongo_bytes is not None:
            try:
                from orgpipeline_jobs import storage as sizes  # the cheap $collStats stage first

                stats = sizes.collection_stats(db, name)
                mongo_bytes += int(stats.get("totalSize") or stats.get("storageSize") or 0)
            except Exception:  # a server without collStats: report PostgreSQL only
                mongo_bytes = None
        statement = sql.SQL("SELECT count(*), count(*) FILTER (WHERE ingested_at >= %s) FROM {}").format(
            qualified(org_id, store_names.pg_table(table))
        )
        counted = conn.execute(statement, (start,)).fetchone()
        if counted:
            versions += int(counted[0])
            in_period += int(counted[1])
    return Storage(pg_bytes, mongo_bytes, versions, in_period)


# --- validate ----------------------------------------------------------------------------------

MONGO_LOADED = {"is_active": True, "postgres_status": "loaded"}

SORT_CHUNK = 100_000
"""Versions gathered into one Arrow chunk before the sort (the Python lists of one chunk at most)."""


def mongo_versions(collection: Collection[Doc]) -> Iterator[VersionRef]:
    """Active versions marked loaded, sorted by (composite_key, version) in code point order, as
    the comparison (and PostgreSQL's COLLATE "C") orders them.

    Sorted here, not by the server: FerretDB 1.x sorts in its own memory, every document whole
    (at 1M versions it grew past 12 GB before the command was stopped); streamed unsorted, three
    Arrow columns take ~110 bytes a version here and pyarrow sorts them by their UTF-8 bytes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cursor = collection.find(
        MONGO_LOADED, {"_id": 0, "composite_key": 1, "version": 1, "data_hash": 1}, batch_size=STREAM_BATCH
    )
    chunks: list[pa.Table] = []
    keys: list[str] = []
    versions: list[int] = []
    hashes: list[str | None] = []

    def flush() -> None:
        if keys:
            arrays = [
                pa.array(keys, pa.string()),
                pa.array(versions, pa.int64()),
                pa.array(hashes, pa.string()),
            ]
            chunks.append(pa.Table.from_arrays(arrays, ["composite_key", "version", "data_hash"]))
            for column in (keys, versions, hashes):
                column.clear()

    for doc in cursor:
        keys.append(str(doc["composite_key"]))
        versions.append(int(doc["version"]))
        hashes.append(doc.get("data_hash"))
        if len(keys) >= SORT_CHUNK:
            flush()
    flush()
    if not chunks:
        return
    table = pa.concat_tables(chunks)
    chunks.clear()
    table = table.take(pc.sort_indices(table, [("composite_key", "ascending"), ("version", "ascending")]))
    for batch in table.to_batches(max_chunksize=SORT_CHUNK):
        yield from (
            VersionRef(k, v, h)
            for k, v, h in zip(
                batch.column(0).to_pylist(),
                batch.column(1).to_pylist(),
                batch.column(2).to_pylist(),
                strict=True,
            )
        )


def business_columns(conn: Conn, org_id: str, table: str) -> list[tuple[str, str, int | None]]:
    """(name, data_type, numeric_precision) of raw_T's business columns, in table order."""
    rows = conn.execute(
        "SELECT column_name, data_type, numeric_precision FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (store_names.pg_schema(org_id), store_names.pg_table(table)),
    ).fetchall()
    return [(str(n), str(t), p) for n, t, p in rows if n not in NON_BUSINESS_COLUMNS]


def canonical(value: Any, numeric_precision: int | None) -> Any:
    """A PostgreSQL value back in the data plane's canonical form (see `orgpipeline_jobs.values`),
    so that hashing it gives the data_hash the version was landed with."""
    if isinstance(value, Decimal):
        return float(value) if (numeric_precision or 0) <= 15 else str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def pg_versions(conn: Conn, org_id: str, table: str) -> Iterator[VersionRef]:
    """Active rows of raw_T sorted by (composite_key in byte order, version), each with the hash of
    its business columns as they are now (a row edited behind the pipeline's back no longer
    matches the data_hash it was loaded with)."""
    columns = business_columns(conn, org_id, table)
    statement = sql.SQL(
        "SELECT composite_key, version, {} FROM {} WHERE is_active AND org_id = ANY(%s)"
        ' ORDER BY composite_key COLLATE "C", version'
    ).format(
        sql.SQL(", ").join(sql.Identifier(c[0]) for c in columns),
        qualified(org_id, store_names.pg_table(table)),
    )
    with conn.transaction(), conn.cursor(name=f"validate_{table}") as cur:
        cur.itersize = STREAM_BATCH
        cur.execute(statement, (store_names.record_org_ids(org_id),))
        for row in cur:
            data = {
                name: canonical(value, prec) for (name, _, prec), value in zip(columns, row[2:], strict=True)
            }
            yield VersionRef(str(row[0]), int(row[1]), hashing.data_hash(data))


# --- retention ---------------------------------------------------------------------------------


def retention_preview(
    conn: Conn, org_id: str, table: str, policy: Retention, now: datetime
) -> dict[str, int]:
    """What `orgpipeline_jobs.retention.apply_to_table` would change now: the same statements,
    rolled back. Same keys as its result."""
    from orgpipeline_jobs import retention

    return retention.apply_to_table(conn, None, org_id, table, policy, now, dry_run=True)
