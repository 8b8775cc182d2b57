"""What the console reads from PostgreSQL: the command line's own queries (runs, quality, rejected
rows, files), run in the org's own session (`Stores.org`: the org's role, never a more privileged
one), and record versions masked as the org's reader views mask them (`orgschema.privacy`).
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import IO, Any

from orgpipeline_api import anomaly, store_names
from orgpipeline_api.orgschema import privacy
from orgpipeline_api.orgschema.ddl import qualified
from orgpipeline_api.v1alpha1 import AnomalyDetection
from orgpipeline_cli.manage import aggregate, common, files, queries, rejected
from orgpipeline_jobs import anomalies
from orgpipeline_jobs.rowtext import csv_record
from psycopg import sql
from psycopg.rows import dict_row

DAYS = 30
RUNS_SHOWN = 20
RECORDS_SHOWN = 20


class DataUnavailable(Exception):
    """A store cannot be reached or refuses the console's session: one line for the page."""


@contextmanager
def org_session(org_id: str) -> Iterator[Any]:
    """The org's own PostgreSQL session (a delegate of its role, as the command line makes)."""
    try:
        with common.stores(need_mongo=False) as s:
            yield s.org(org_id)
    except common.CommandFailed as exc:
        raise DataUnavailable(str(exc)) from None


def has_table(conn: Any, org_id: str, table: str) -> bool:
    return table in queries.list_tables(conn, org_id)


# --- the org ---------------------------------------------------------------------------------


def org_runs(org_id: str, limit: int = RUNS_SHOWN) -> list[dict[str, Any]]:
    with org_session(org_id) as own:
        return queries.runs(own, org_id, None, None, limit)


# --- one table -------------------------------------------------------------------------------


@dataclass
class Band:
    """The expected range of a metric for the table's next run (anomaly detection's)."""

    low: float
    high: float
    runs: int


@dataclass
class TableData:
    exists: bool
    trend: list[dict[str, Any]]
    volume: dict[str, int]
    runs: list[dict[str, Any]]
    rejected: list[rejected.RejectedRow]
    rejected_total: int
    files: list[files.SourceFileState]
    records: list[dict[str, Any]]
    volume_band: Band | None
    quality_band: Band | None
    rejected_text: list[str] = field(default_factory=list)
    """Each shown rejected row's text with its pii and sensitive fields masked."""


def expected_bands(
    history: list[anomaly.RunPoint], settings: AnomalyDetection, now: datetime
) -> tuple[Band | None, Band | None]:
    """The range a run now would have to stay within, for rows read and quality score: the
    detector's own expectation (`anomaly.expectation` over `anomaly.reference`) and bounds."""
    recent = sorted(history, key=lambda p: p.at)[-settings.window :]
    if not settings.enabled or len(recent) < settings.min_history:
        return None, None
    ref = anomaly.reference(recent, now)
    origin = ref[0].at

    def days(t: datetime) -> float:
        return (t - origin).total_seconds() / 86400

    out: dict[str, Band] = {}
    for m in anomaly.METRICS:
        exp = anomaly.expectation([(days(p.at), m.value(p)) for p in ref], days(now), m.floor)
        low = max(exp.center - settings.sensitivity * exp.spread, m.bounds[0])
        high = exp.center + settings.sensitivity * exp.spread
        if m.bounds[1] is not None:
            high = min(high, m.bounds[1])
        out[m.name] = Band(low, high, len(ref))
    return out.get("rowsRead"), out.get("qualityScore")


def table_data(
    org_id: str,
    table: str,
    tspec: Mapping[str, Any],
    settings: AnomalyDetection,
    rejected_page: int,
    rejected_size: int,
    rejected_file: str | None,
) -> TableData:
    now = datetime.now(UTC)
    start = queries.since(DAYS, now)
    with org_session(org_id) as own:
        if not has_table(own, org_id, table):
            return TableData(
                False, aggregate.daily_trend([], DAYS, now.date()), {}, [], [], 0, [], [], None, None
            )
        samples = queries.quality_samples(own, org_id, table, start)
        period = queries.runs(own, org_id, start, table)
        volume: dict[str, int] = {}
        for run in period:
            day = run["started_at"].astimezone(UTC).date().isoformat()
            volume[day] = volume.get(day, 0) + int(run["rows_read"] or 0)
        f = rejected.Filters(org_id, table, rejected_file, None)
        total = rejected.count(own, f)
        skip = (rejected_page - 1) * rejected_size
        shown = list(itertools.islice(rejected.rows(own, f, skip + rejected_size), skip, None))
        volume_band, quality_band = expected_bands(
            anomalies.history(own, org_id, table, settings.window), settings, now
        )
        classes = classifications(privacy.recorded(own, org_id), tspec, table)
        return TableData(
            True,
            aggregate.daily_trend(samples, DAYS, now.date()),
            volume,
            period[:RUNS_SHOWN],
            shown,
            total,
            files.list_files(own, org_id, table),
            recent_records(own, org_id, table, tspec),
            volume_band,
            quality_band,
            [masked_text(r.raw, r.header, classes) for r in shown],
        )


def masked_text(text: str, header: tuple[str, ...] | None, classes: dict[str, str]) -> str:
    """Pure: a rejected row's text for the page, each field under a pii or sensitive column
    replaced by `[REDACTED]`, as the reader's view hides them (the page and the CSV download
    alike: whoever may get the OrgPipeline may see the console, not necessarily the org's pii).
    A row whose header is unknown is hidden whole when the table has any masked column."""
    import csv
    import io

    masked_names = {name.strip().lower() for name, cls in classes.items() if privacy.masks(cls)}
    if not masked_names:
        return text
    if header is None:
        return privacy.REDACTED
    hide = [h.strip().lower() in masked_names for h in header]
    fields = next(csv.reader(io.StringIO(text)), [])
    shown = [privacy.REDACTED if i < len(hide) and hide[i] and f else f for i, f in enumerate(fields)]
    return csv_record(shown)


def rejected_csv(org_id: str, table: str, tspec: Mapping[str, Any], file: str | None) -> IO[str]:
    """The rejected rows as `orgpipeline rejected -o csv` writes them (the file's header, then
    each row's text, formulas neutralised), pii and sensitive fields masked as on the page, in a
    spooled file: a refusal (files with different headers) is known before the first byte is
    sent. Raises common.UserError with its message."""
    # Handed to the caller, who closes it once sent: no `with` here.
    out = tempfile.SpooledTemporaryFile(max_size=4 << 20, mode="w+", encoding="utf-8", newline="")  # noqa: SIM115
    try:
        with org_session(org_id) as own:
            f = rejected.Filters(org_id, table, file, None)
            classes = classifications(privacy.recorded(own, org_id), tspec, table)
            shown = (
                replace(r, raw=masked_text(r.raw, r.header, classes)) for r in rejected.rows(own, f, None)
            )
            for text in rejected.csv_lines(shown):
                out.write(text)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


# --- records, masked -------------------------------------------------------------------------


def classifications(
    recorded: Mapping[str, Mapping[str, str]] | None, tspec: Mapping[str, Any], table: str
) -> dict[str, str]:
    """Pure: each column's classification for masking: what the operator recorded for the reader
    views, and where the manifest now says pii or sensitive (a change the views may not have yet),
    that: when in doubt, mask."""
    out = dict((recorded or {}).get(table, {}))
    for column in tspec.get("columns") or []:
        name, cls = str(column.get("name")), str(column.get("classification") or "internal")
        if privacy.masks(cls) or name not in out:
            out[name] = cls
    return out


def _masking(
    conn: Any, org_id: str, table: str, tspec: Mapping[str, Any]
) -> tuple[list[tuple[str, str]], bool]:
    """(column, classification) of the table's business columns in table order, and whether
    the composite key is masked (as the reader's view masks it): `classifications`, and the
    business keys the view is made with (the manifest's, else those the pipeline detected)."""
    classes = classifications(privacy.recorded(conn, org_id), tspec, table)
    columns = [
        (name, classes.get(name, "internal")) for name, _, _ in queries.business_columns(conn, org_id, table)
    ]
    keys = list(tspec.get("businessKeys") or []) or privacy.business_keys(conn, org_id, table)
    return columns, privacy.key_is_masked(classes, keys)


def _key_expr(org_id: str, key_masked: bool) -> sql.Composable:
    ck = sql.SQL("r.composite_key")
    return privacy.pseudonym(ck, org_id) if key_masked else ck


def recent_records(
    conn: Any, org_id: str, table: str, tspec: Mapping[str, Any], limit: int = RECORDS_SHOWN
) -> list[dict[str, Any]]:
    """The newest versions: key (masked as the reader sees it), version, change, when."""
    _, key_masked = _masking(conn, org_id, table, tspec)
    statement = sql.SQL(
        "SELECT {key} AS composite_key, r.version, r.change_type, r.ingested_at, r.changed_by_user_id"
        " FROM {raw} r WHERE r.org_id = ANY(%s) ORDER BY r.ingested_at DESC, r.version DESC LIMIT %s"
    ).format(key=_key_expr(org_id, key_masked), raw=qualified(org_id, store_names.pg_table(table)))
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(statement, (store_names.record_org_ids(org_id), limit)).fetchall())


def record_history(org_id: str, table: str, tspec: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """Every version of one record, oldest first, its values masked as in the reader's view, with
    who, when, file and line, the trigger, and the field-level difference from the version before.
    `key` is the composite key as the console shows it (the pseudonym where the key is masked)."""
    with org_session(org_id) as own:
        if not has_table(own, org_id, table):
            return []
        columns, key_masked = _masking(own, org_id, table, tspec)
        data = [
            sql.SQL("{} AS {}").format(
                privacy.masked(sql.SQL("r.{}").format(sql.Identifier(name)), cls, org_id),
                sql.Identifier("v_" + name),
            )
            for name, cls in columns
        ]
        statement = sql.SQL(
            "SELECT r.version, r.change_type, r.changed_fields, r.changed_by_user_id, r.ingested_at,"
            " r.is_active, r.source_file_metadata,"
            " r.audit_trail->'processing_metadata'->'trigger' AS trigger,"
            " {src} AS source_file{data} FROM {raw} r WHERE r.org_id = ANY(%s) AND {key} = %s"
            " ORDER BY r.version"
        ).format(
            src=privacy.source_file(sql.Identifier("r")),
            data=sql.SQL("").join(sql.SQL(", ") + d for d in data),
            raw=qualified(org_id, store_names.pg_table(table)),
            key=_key_expr(org_id, key_masked),
        )
        with own.cursor(row_factory=dict_row) as cur:
            found = cur.execute(statement, (store_names.record_org_ids(org_id), key)).fetchall()
    return diff_versions(found, [name for name, _ in columns])


def diff_versions(found: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """Pure: each version with its values and, per field, old and new where it changed (the
    version's own changed_fields, else the fields whose shown value differs)."""
    out = []
    previous: dict[str, Any] | None = None
    for row in found:
        values = {n: row.get("v_" + n) for n in names}
        changed = list(row.get("changed_fields") or [])
        if previous is not None and not changed:
            changed = [n for n in names if values[n] != previous.get(n)]
        meta = row.get("source_file_metadata") or {}
        out.append(
            {
                "version": row["version"],
                "change_type": row.get("change_type") or "",
                "values": values,
                "changes": [
                    {"field": n, "old": (previous or {}).get(n), "new": values.get(n)}
                    for n in (changed if previous is not None else [])
                ],
                "user": row.get("changed_by_user_id") or "",
                "when": row.get("ingested_at"),
                "file": row.get("source_file") or "",
                "line": meta.get("line"),
                "active": row.get("is_active"),
                "trigger": row.get("trigger") or {},
            }
        )
        previous = values
    return out
