"""The seed's retention policy, as one function the CLI and the operator call.

- Versions: the last `keep_versions` versions of every key stay active; older ones get
  is_active = false, in PostgreSQL and in MongoDB. (The seed's SQL deactivates every version of
  such a key; here only the versions beyond the limit are.)
- Audit rows: change-log, rejected-row, quality-metric and finished run rows older than
  `audit_log_days` are deleted.

It takes the table's run lock, so it never interleaves with a run of the same table.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from orgpipeline_api import store_names
from orgpipeline_api.orgschema.ddl import qualified
from orgpipeline_api.v1alpha1 import OrgPipelineSpec, Retention
from psycopg import sql
from pymongo import UpdateOne
from pymongo.collection import Collection

from orgpipeline_jobs import pipeline, storage
from orgpipeline_jobs.landing import documents

MONGO_BATCH = 1000


def apply_to_table(
    conn: psycopg.Connection[Any],
    collection: Collection[dict[str, Any]] | None,
    org_id: str,
    table: str,
    retention: Retention,
    now: datetime | None = None,
    dry_run: bool = False,
) -> dict[str, int]:
    """Applies retention to one table; `conn` must be autocommit and hold the table's run lock.

    With `dry_run` the very same statements run and are rolled back, so the counts reported are
    exactly what a real run would change; MongoDB is not touched (`collection` may be None).
    """
    now = now or datetime.now(UTC)
    raw = qualified(org_id, store_names.pg_table(table))
    with conn.transaction() as versions_tx:
        rows = conn.execute(
            sql.SQL(
                "UPDATE {raw} r SET is_active = FALSE, last_modified = now() FROM ("
                " SELECT org_id, composite_key, version, ROW_NUMBER() OVER ("
                "  PARTITION BY org_id, composite_key ORDER BY version DESC) AS version_rank"
                " FROM {raw} WHERE org_id = ANY(%s)) ranked"
                " WHERE ranked.version_rank > %s AND r.is_active AND r.org_id = ranked.org_id"
                " AND r.composite_key = ranked.composite_key AND r.version = ranked.version"
                " RETURNING r.composite_key, r.version"
            ).format(raw=raw),
            (store_names.record_org_ids(org_id), retention.keep_versions),
        ).fetchall()
        if dry_run:
            raise psycopg.Rollback(versions_tx)
    # MongoDB after the commit: a crash in between leaves PostgreSQL ahead, and the next run of
    # retention finds nothing left to deactivate there, so MongoDB is also updated by _id from the
    # versions not yet inactive (FerretDB pushes `_id` equality down; `$in` it would scan).
    if collection is not None and not dry_run:
        inactive = {"$set": {"is_active": False, "last_modified": now}}
        ops = [UpdateOne({"_id": documents.version_id(ck, v)}, inactive) for ck, v in rows]
        for start in range(0, len(ops), MONGO_BATCH):
            collection.bulk_write(ops[start : start + MONGO_BATCH], ordered=False)
    cutoff = now - timedelta(days=retention.audit_log_days)
    deleted: dict[str, int] = {}
    targets = [
        ("change_log", store_names.pg_change_log(table), "change_timestamp", None),
        ("rejected_rows", store_names.pg_rejected_rows(table), "rejected_at", None),
        ("quality_metrics", store_names.pg_quality_metrics(table), "measurement_timestamp", None),
        ("runs", store_names.PG_RUNS_TABLE, "finished_at", table),
    ]
    with conn.transaction() as audit_tx:
        for label, name, column, only_table in targets:
            statement = sql.SQL("DELETE FROM {} WHERE {} < %s").format(
                qualified(org_id, name), sql.Identifier(column)
            )
            params: tuple[Any, ...] = (cutoff,)
            if only_table:
                statement = sql.SQL("{} AND table_name = %s").format(statement)
                params = (cutoff, only_table)
            deleted[label] = conn.execute(statement, params).rowcount
        if dry_run:
            raise psycopg.Rollback(audit_tx)
    return {"versions_deactivated": len(rows), **{f"{k}_deleted": v for k, v in deleted.items()}}


def apply(
    settings: Any, spec: OrgPipelineSpec, table_name: str, now: datetime | None = None
) -> dict[str, Any]:
    """Retention of one table with the manifest's policy: connects, locks, applies."""
    with pipeline.locked_table(settings, spec, table_name) as (table, conn, collection):
        result = apply_to_table(conn, collection, spec.org_id, table.name, spec.retention, now)
        # The daily retention CronJob also records the day's sizes: one row per table and day even
        # when no run wrote (what `metrics` computes growth from).
        storage.after_run(conn, collection, spec.org_id, table.name)
    return {
        "org_id": spec.org_id,
        "table": table.name,
        "keep_versions": spec.retention.keep_versions,
        "audit_log_days": spec.retention.audit_log_days,
        **result,
    }


AUDIT_COUNTS = ("change_log_deleted", "rejected_rows_deleted", "quality_metrics_deleted", "runs_deleted")
"""The counts of `apply_to_table` that are audit rows removed (the rest is versions deactivated)."""


def termination_report(
    tables: list[dict[str, Any]], started_at: datetime, error: str | None = None
) -> dict[str, Any]:
    """What the retention CronJob's pod tells the operator (its termination message): one compact
    JSON object with the org's totals over the tables done; Failed with the error when it stopped."""
    return {
        "kind": "retention",
        "result": "Failed" if error else "Succeeded",
        "tables": len(tables),
        "versionsDeactivated": sum(int(t.get("versions_deactivated", 0)) for t in tables),
        "auditRowsRemoved": sum(int(t.get(k, 0)) for t in tables for k in AUDIT_COUNTS),
        "startedAt": started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finishedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "error": error[:1000] if error else None,
    }


def write_termination_log(report: dict[str, Any]) -> None:
    """Writes the report where ORGPIPELINE_TERMINATION_LOG says (in a pod: /dev/termination-log)."""
    path = os.environ.get(pipeline.TERMINATION_LOG_ENV)
    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(report, separators=(",", ":")))
    except OSError:
        pass  # the counts are also printed; a missing log must not fail retention
