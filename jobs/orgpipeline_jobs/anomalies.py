"""A run's anomaly breaches: its table's recent successful runs (pipeline_runs) as the history,
judged by `orgpipeline_api.anomaly`; one breach per type (VolumeAnomaly, QualityAnomaly), each
message naming the expected range. The run's own row is still Running here, so it is never part
of its own history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from orgpipeline_api import anomaly, store_names
from orgpipeline_api.orgschema.ddl import qualified
from orgpipeline_api.run_report import Breach
from orgpipeline_api.v1alpha1 import AnomalyDetection
from psycopg import sql


def history(conn: psycopg.Connection[Any], org_id: str, table: str, limit: int) -> list[anomaly.RunPoint]:
    """The table's last `limit` successful runs that read rows, newest first."""
    rows = conn.execute(
        sql.SQL(
            "SELECT started_at, rows_read, rejected, quality_score FROM {} "
            "WHERE table_name = %s AND status = 'Succeeded' AND rows_read > 0 AND quality_score IS NOT NULL "
            "ORDER BY started_at DESC LIMIT %s"
        ).format(qualified(org_id, store_names.PG_RUNS_TABLE)),
        (table, limit),
    ).fetchall()
    return [
        anomaly.RunPoint(at, int(read), int(rejected or 0) / int(read), float(q))
        for at, read, rejected, q in rows
    ]


def breaches(
    run: anomaly.RunPoint, past: Sequence[anomaly.RunPoint], settings: AnomalyDetection
) -> list[Breach]:
    """Pure: the run's anomalies as breaches, one per type (several metrics of a type: one message)."""
    if not settings.enabled or run.rows_read <= 0:
        return []
    found = anomaly.detect(
        run, past, anomaly.Settings(settings.window, settings.min_history, settings.sensitivity)
    )
    out: dict[str, Breach] = {}
    for a in found:
        bound = a.expected_low if a.value < a.expected_low else a.expected_high
        first = out.get(a.type.value)
        if first is not None:
            out[a.type.value] = first.model_copy(update={"message": f"{first.message}; {a.message}"[:1024]})
        else:
            out[a.type.value] = Breach(type=a.type.value, message=a.message, value=a.value, threshold=bound)
    return list(out.values())


def for_run(
    conn: psycopg.Connection[Any],
    org_id: str,
    table: str,
    settings: AnomalyDetection,
    at: datetime,
    rows_read: int,
    rejected: int,
    quality_score: float | None,
) -> list[Breach]:
    """The anomaly breaches of the run now ending (none when it read nothing or was not scored)."""
    if not settings.enabled or rows_read <= 0 or quality_score is None:
        return []
    run = anomaly.RunPoint(at, rows_read, rejected / rows_read, quality_score)
    return breaches(run, history(conn, org_id, table, settings.window), settings)
