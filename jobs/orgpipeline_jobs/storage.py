"""Measured storage per table per day: the org's `pipeline_storage`, and growth from it.

The seed's monitoring lists storage usage and growth. Growth used to be an estimate (versions in the
period x average size); here the sizes are measured with the org's own access and kept one row per
table and UTC day: PostgreSQL's relation sizes (tables, indexes and TOAST of the table's raw table,
change log, quality metrics, heads, rejected rows, pending loads and outbox) and MongoDB's
collection stats (`$collStats` storageStats: `totalSize`, data and indexes; `count`; the
`collStats` command only where the stage is missing: FerretDB answers that one by counting the
collection, 0.3-0.5 s at 50,000 documents against 1-5 ms for the stage). A run measures at its end
when it wrote versions or when the day has no row yet (a run that changed nothing costs one lookup
of the day's row; `ddl.ensure_schema` makes the table, so that lookup is the only query), and so
does the daily retention job; the day's latest measurement replaces the
earlier. `orgpipeline metrics` reports growth from these rows, and each run report carries its
table's sizes for the operator's `orgpipeline_table_storage_bytes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg
from orgpipeline_api import store_names
from orgpipeline_api.orgschema import lock
from orgpipeline_api.orgschema.ddl import STORAGE_DDL, STORAGE_TABLE, qualified
from psycopg import sql


@dataclass(frozen=True)
class Sizes:
    day: date
    postgres_bytes: int
    mongo_bytes: int | None
    """None when the MongoDB server gives no collection stats."""
    mongo_documents: int | None

    @property
    def total_bytes(self) -> int:
        return self.postgres_bytes + (self.mongo_bytes or 0)

    def as_json(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "postgres_bytes": self.postgres_bytes,
            "mongo_bytes": self.mongo_bytes,
            "mongo_documents": self.mongo_documents,
            "total_bytes": self.total_bytes,
        }


def ensure(conn: psycopg.Connection[Any], org_id: str) -> None:
    """Creates the org's storage table when missing (under the org's DDL lock)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock.key("ddl", org_id),))
        conn.execute(sql.SQL(STORAGE_DDL).format(qualified(org_id, STORAGE_TABLE)))


def _exists(conn: psycopg.Connection[Any], org_id: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s",
        (store_names.pg_schema(org_id), STORAGE_TABLE),
    ).fetchone()
    return row is not None


def measure(conn: psycopg.Connection[Any], database: Any, org_id: str, table: str) -> Sizes:
    """The table's sizes now: PostgreSQL from the catalog, MongoDB from collStats."""
    import pymongo.errors  # here: a run that measures nothing imports no pymongo (its fixed cost)

    row = conn.execute(
        "SELECT (now() AT TIME ZONE 'UTC')::date, coalesce(sum(pg_total_relation_size(c.oid)), 0)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')",
        (store_names.pg_schema(org_id), store_names.pg_table_relations(table)),
    ).fetchone()
    day = row[0] if row else date.today()
    postgres = int(row[1]) if row else 0
    mongo_bytes: int | None = None
    documents: int | None = None
    name = store_names.mongo_collection(org_id, table)
    try:
        if name in database.list_collection_names():
            stats = collection_stats(database, name)
            total = stats.get("totalSize") or (stats.get("storageSize") or 0) + (
                stats.get("totalIndexSize") or 0
            )
            mongo_bytes = int(total or stats.get("size") or 0)
            count = int(stats.get("count") or 0)
            documents = count if count >= 0 else None  # FerretDB's stage estimates: -1 before ANALYZE
        else:
            mongo_bytes, documents = 0, 0
    except pymongo.errors.PyMongoError:
        pass  # a server without collection stats: PostgreSQL's sizes only
    return Sizes(day, postgres, mongo_bytes, documents)


def collection_stats(database: Any, name: str) -> dict[str, Any]:
    """The `$collStats` stage's storageStats (cheap everywhere), else the `collStats` command."""
    import pymongo.errors

    try:
        found = list(database[name].aggregate([{"$collStats": {"storageStats": {}}}]))
        if found and isinstance(found[0].get("storageStats"), dict):
            return dict(found[0]["storageStats"])
    except pymongo.errors.OperationFailure:
        pass
    return dict(database.command("collStats", name))


def record(conn: psycopg.Connection[Any], org_id: str, table: str, sizes: Sizes) -> None:
    """The day's row of the table, replacing an earlier measurement of the same day (the table is
    made first only when missing: `ddl.ensure_schema` makes it with the org's other tables)."""
    statement = sql.SQL(
        "INSERT INTO {} (table_name, day, postgres_bytes, mongo_bytes, mongo_documents)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (table_name, day) DO UPDATE SET"
        " postgres_bytes = EXCLUDED.postgres_bytes, mongo_bytes = EXCLUDED.mongo_bytes,"
        " mongo_documents = EXCLUDED.mongo_documents, measured_at = now()"
    ).format(qualified(org_id, STORAGE_TABLE))
    values = (table, sizes.day, sizes.postgres_bytes, sizes.mongo_bytes, sizes.mongo_documents)
    try:
        with conn.transaction():
            conn.execute(statement, values)
    except psycopg.errors.UndefinedTable:
        ensure(conn, org_id)
        with conn.transaction():
            conn.execute(statement, values)


def latest(conn: psycopg.Connection[Any], org_id: str, table: str) -> Sizes | None:
    """The table's newest recorded sizes (None: never measured)."""
    if not _exists(conn, org_id):
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT day, postgres_bytes, mongo_bytes, mongo_documents FROM {} WHERE table_name = %s"
            " ORDER BY day DESC LIMIT 1"
        ).format(qualified(org_id, STORAGE_TABLE)),
        (table,),
    ).fetchone()
    return Sizes(row[0], int(row[1]), row[2], row[3]) if row else None


def today(conn: psycopg.Connection[Any], org_id: str, table: str) -> Sizes | None:
    """The table's row of the current UTC day, in one query (None: none yet, or no table yet in a
    schema of an older release, which `record` makes)."""
    try:
        row = conn.execute(
            sql.SQL(
                "SELECT day, postgres_bytes, mongo_bytes, mongo_documents FROM {} WHERE table_name = %s"
                " AND day = (now() AT TIME ZONE 'UTC')::date"
            ).format(qualified(org_id, STORAGE_TABLE)),
            (table,),
        ).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return Sizes(row[0], int(row[1]), row[2], row[3]) if row else None


def after_run(
    conn: psycopg.Connection[Any], collection: Any, org_id: str, table: str, wrote: bool = True
) -> Sizes | None:
    """Measures and records the table's sizes when the run `wrote` versions or today has no row
    yet; else the day's recorded row. None when they cannot be had (the run's result matters more).
    `collection` is the table's; its database is reached (a lazy one connected) only to measure."""
    try:
        if not wrote:
            known = today(conn, org_id, table)
            if known is not None:
                return known
        sizes = measure(conn, collection.database, org_id, table)
        record(conn, org_id, table, sizes)
        return sizes
    except psycopg.Error:
        return None


def history(conn: psycopg.Connection[Any], org_id: str, table: str, since: date) -> list[Sizes]:
    """The table's recorded days from the last one before `since` (the period's baseline) on,
    oldest first."""
    if not _exists(conn, org_id):
        return []
    target = qualified(org_id, STORAGE_TABLE)
    rows = conn.execute(
        sql.SQL(
            "SELECT day, postgres_bytes, mongo_bytes, mongo_documents FROM {t} WHERE table_name = %s"
            " AND day >= coalesce((SELECT max(day) FROM {t} WHERE table_name = %s AND day <= %s), %s)"
            " ORDER BY day"
        ).format(t=target),
        (table, table, since, since),
    ).fetchall()
    return [Sizes(r[0], int(r[1]), r[2], r[3]) for r in rows]


@dataclass(frozen=True)
class Growth:
    first: Sizes
    last: Sizes

    @property
    def days(self) -> int:
        return (self.last.day - self.first.day).days

    @property
    def bytes(self) -> int:
        return self.last.total_bytes - self.first.total_bytes

    @property
    def bytes_per_day(self) -> float | None:
        return self.bytes / self.days if self.days else None


def growth(days: list[Sizes]) -> Growth | None:
    """From the first to the last recorded day (None with fewer than two days)."""
    return Growth(days[0], days[-1]) if len(days) >= 2 else None
