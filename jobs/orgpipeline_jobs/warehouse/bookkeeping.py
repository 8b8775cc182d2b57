"""The org's bookkeeping tables: pipeline_runs, pipeline_files, rejected rows, quality metrics.

pipeline_runs is the contract with the status/metrics commands: one row per command run (`ingest`,
`load`, `run`), inserted with status Running when the run holds its lock and updated once when it
ends (the columns of `RunReport.run_row`, read back as `RunRow`; see orgpipeline_api.run_report);
a run that died is marked Interrupted by the next run of its table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from orgpipeline_api import store_names
from orgpipeline_api.orgschema.ddl import FILES_TABLE, TABLES_TABLE, qualified
from orgpipeline_api.run_report import RunReport
from orgpipeline_api.triggers import RunTrigger
from psycopg import sql

from orgpipeline_jobs.source.files import SourceFile

if TYPE_CHECKING:
    from orgpipeline_jobs.source.csvstream import RejectedRow  # pyarrow: not for a run's bookkeeping


def start_run(
    conn: psycopg.Connection[Any], org_id: str, table: str, run_id: str, command: str, trigger: RunTrigger
) -> None:
    """Marks a run of the table that died Interrupted, and records this one as Running, with its
    trigger (user_id is the trigger's user)."""
    runs = qualified(org_id, store_names.PG_RUNS_TABLE)
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "UPDATE {} SET status = 'Interrupted', finished_at = now(), "
                "error = 'the run ended without recording a result (killed?)' "
                "WHERE table_name = %s AND status = 'Running'"
            ).format(runs),
            (table,),
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (run_id, org_id, table_name, command, status, user_id, trigger,"
                " trigger_reason) VALUES (%s, %s, %s, %s, 'Running', %s, %s, %s)"
            ).format(runs),
            (run_id, org_id, table, command, trigger.user, trigger.trigger.value, trigger.reason),
        )


def finish_run(conn: psycopg.Connection[Any], org_id: str, run_id: str, result: RunReport) -> None:
    row = result.run_row()
    assignments = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in row)
    conn.execute(
        sql.SQL("UPDATE {} SET {} WHERE run_id = %s").format(
            qualified(org_id, store_names.PG_RUNS_TABLE), assignments
        ),
        (*row.values(), run_id),
    )


def file_status(conn: psycopg.Connection[Any], org_id: str, table: str, source: SourceFile) -> str | None:
    row = conn.execute(
        sql.SQL("SELECT status FROM {} WHERE table_name = %s AND file_id = %s").format(
            qualified(org_id, FILES_TABLE)
        ),
        (table, source.file_id),
    ).fetchone()
    return str(row[0]) if row else None


def files_by_status(conn: psycopg.Connection[Any], org_id: str, table: str) -> dict[str, str]:
    rows = conn.execute(
        sql.SQL("SELECT file_id, status FROM {} WHERE table_name = %s").format(
            qualified(org_id, FILES_TABLE)
        ),
        (table,),
    ).fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def start_file(
    conn: psycopg.Connection[Any], org_id: str, table: str, source: SourceFile, run_id: str
) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (table_name, file_id, bucket, object_key, etag, size, status, run_id) "
            "VALUES (%s, %s, %s, %s, %s, %s, 'ingesting', %s) ON CONFLICT (table_name, file_id) "
            "DO UPDATE SET status = 'ingesting', run_id = EXCLUDED.run_id, started_at = now()"
        ).format(qualified(org_id, FILES_TABLE)),
        (table, source.file_id, source.bucket, source.key, source.etag, source.size, run_id),
    )


def finish_file(
    conn: psycopg.Connection[Any],
    org_id: str,
    table: str,
    source: SourceFile,
    status: str,
    counts: dict[str, Any],
    report: dict[str, Any] | None,
    error: str | None,
) -> None:
    conn.execute(
        sql.SQL(
            "UPDATE {} SET status = %s, finished_at = now(), counts = %s, quality_report = %s, error = %s "
            "WHERE table_name = %s AND file_id = %s"
        ).format(qualified(org_id, FILES_TABLE)),
        (status, json.dumps(counts), json.dumps(report) if report else None, error, table, source.file_id),
    )


def quarantine_file(
    conn: psycopg.Connection[Any], org_id: str, table: str, source: SourceFile, reason: str
) -> None:
    """Marks a file the stores refused the content of `quarantined` (known or not: a replayed
    document may name a file of an older release), keeping the first reason."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {} AS f (table_name, file_id, bucket, object_key, etag, size, status, finished_at,"
            " error) VALUES (%s, %s, %s, %s, %s, %s, 'quarantined', now(), %s) ON CONFLICT (table_name,"
            " file_id) DO UPDATE SET status = 'quarantined', finished_at = now(),"
            " error = CASE WHEN f.status = 'quarantined' THEN f.error ELSE EXCLUDED.error END"
        ).format(qualified(org_id, FILES_TABLE)),
        (table, source.file_id, source.bucket, source.key, source.etag, source.size, reason),
    )


def quarantined_files(conn: psycopg.Connection[Any], org_id: str, table: str) -> list[str]:
    """The object keys of the table's quarantined files, oldest first."""
    rows = conn.execute(
        sql.SQL(
            "SELECT object_key FROM {} WHERE table_name = %s AND status = 'quarantined'"
            " ORDER BY finished_at NULLS LAST, object_key"
        ).format(qualified(org_id, FILES_TABLE)),
        (table,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def save_header(
    conn: psycopg.Connection[Any], org_id: str, table: str, source: SourceFile, header: Sequence[str]
) -> None:
    """The file's header as the file spells it: what `orgpipeline rejected -o csv` writes first."""
    conn.execute(
        sql.SQL("UPDATE {} SET header = %s WHERE table_name = %s AND file_id = %s").format(
            qualified(org_id, FILES_TABLE)
        ),
        (json.dumps(list(header)), table, source.file_id),
    )


def write_rejected(
    conn: psycopg.Connection[Any],
    org_id: str,
    table: str,
    source: SourceFile,
    run_id: str,
    rows: Sequence[RejectedRow],
) -> None:
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {} (file_id, line, run_id, source, issue_type, field, reason, text,"
                " text_truncated) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
            ).format(qualified(org_id, store_names.pg_rejected_rows(table))),
            [
                (
                    source.file_id,
                    r.line,
                    run_id,
                    source.uri,
                    r.issue_type,
                    r.field,
                    r.reason,
                    r.text,
                    r.text_truncated,
                )
                for r in rows
            ],
        )


def write_quality_metrics(
    conn: psycopg.Connection[Any],
    org_id: str,
    table: str,
    run_id: str,
    file_id: str,
    report: dict[str, Any],
    period: tuple[datetime, datetime],
) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (org_id, table_name, total_records, records_with_errors, records_with_warnings,"
            " average_quality_score, quality_metrics, period_start, period_end, run_id, file_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, file_id) DO NOTHING"
        ).format(qualified(org_id, store_names.pg_quality_metrics(table))),
        (
            store_names.record_org_id(org_id),
            table,
            report["total_records"],
            report["records_with_errors"],
            report["records_with_warnings"],
            report["overall_quality_score"],
            json.dumps(report),
            period[0],
            period[1],
            run_id,
            file_id,
        ),
    )


def business_keys(conn: psycopg.Connection[Any], org_id: str, table: str) -> tuple[list[str], bool] | None:
    row = conn.execute(
        sql.SQL("SELECT business_keys, detected FROM {} WHERE table_name = %s").format(
            qualified(org_id, TABLES_TABLE)
        ),
        (table,),
    ).fetchone()
    return (list(row[0]), bool(row[1])) if row else None


def save_business_keys(
    conn: psycopg.Connection[Any], org_id: str, table: str, keys: Iterable[str], detected: bool
) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (table_name, business_keys, detected) VALUES (%s, %s, %s) "
            "ON CONFLICT (table_name) DO UPDATE SET business_keys = EXCLUDED.business_keys, "
            "detected = EXCLUDED.detected, decided_at = now()"
        ).format(qualified(org_id, TABLES_TABLE)),
        (table, json.dumps(list(keys)), detected),
    )
