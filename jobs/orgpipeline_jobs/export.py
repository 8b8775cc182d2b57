"""Export of one table as the pipeline knew it at a point in time, audited, in bounded memory.

The versions of raw_T carry when they became current (`ingested_at`); a version is live from its
`ingested_at` until the next version of its key (`valid_to`). The export as of time T is one row per
key whose live version at T is not a DELETE; `with_history` gives every version ingested by T.
`valid_to` is given only when the next version was known at T as well, so an export as of T made
today equals the one that would have been made at T. Without an as-of time the export is as of the
moment it starts, and that moment is recorded, so it can be repeated exactly.

Rows stream from a server-side cursor in batches into the writer (CSV, JSON lines or Parquet with
the columns' own types), through a temporary file beside the target (or in the temp dir for S3),
private to its owner (0600), which becomes the target only when complete (renamed over it): a
failed export leaves no half file, and nobody else reads the data on the way. CSV text cells that a
spreadsheet would run as a formula (leading `=`, `+`, `-`, `@`, tab or CR) get a leading `'`
unless `formulas_raw`.

Every export, failed ones included, is a row of `orgaudit_<org>.pipeline_exports`, which the org's
role may add to but never change or delete (`orgpipeline_api.orgschema.exportaudit`): who (the
cluster identity of the caller, a note they gave, the OS user and, from PostgreSQL itself, the
database role), when, which table, as of when, with or without history, format, masked or not,
the columns with their recorded classification, the target, rows, bytes and the SHA-256 of what
was written. The row is written before any data is read: an export that cannot be recorded does
not happen. Masking takes the classification the operator recorded, never one the exporter brings.
"""

from __future__ import annotations

import contextlib
import csv
import getpass
import hashlib
import io
import json
import os
import re
import socket
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from orgpipeline_api import store_names
from orgpipeline_api.errors import PipelineError, ServerUnavailable
from orgpipeline_api.orgschema import exportaudit, privacy
from orgpipeline_api.orgschema.ddl import AUDIT_COLUMN_NAMES, qualified
from psycopg import sql

from orgpipeline_jobs.settings import Settings

EXPORTS_TABLE = exportaudit.TABLE
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a cell as a formula (OWASP's CSV injection list)."""
BATCH_ROWS = 10_000
META = ("composite_key", "version", "change_type", "valid_from", "valid_to", "source_file")
NOT_DATA = frozenset({"org_id", "composite_key", *AUDIT_COLUMN_NAMES})


class Format(StrEnum):
    csv = "csv"
    parquet = "parquet"
    jsonl = "jsonl"


class ExportError(PipelineError):
    """The request cannot be served as asked (bad time, unknown table, unwritable target)."""

    stage = "export"


@dataclass(frozen=True)
class Request:
    org_id: str
    table: str
    target: str
    format: Format = Format.csv
    as_of: datetime | None = None
    with_history: bool = False
    mask: bool = False
    classes: dict[str, str] | None = None
    """The table's column classification (None: not known); needed with `mask`."""
    business_keys: list[str] | None = None
    requested_by: str | None = None
    """The caller as the cluster authenticated it (None: unknown)."""
    user_note: str | None = None
    """Free text the caller gave (--user): recorded beside the identity, never as it."""
    formulas_raw: bool = False


@dataclass
class Result:
    export_id: str
    org_id: str
    table: str
    as_of: datetime
    with_history: bool
    format: str
    masked: bool
    target: str
    rows: int = 0
    bytes: int = 0
    sha256: str = ""
    columns: list[dict[str, Any]] = field(default_factory=list)


def parse_as_of(text: str, now: datetime | None = None) -> datetime:
    """An ISO-8601 time (a date means its midnight; no zone means UTC), not in the future."""
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ExportError(
            f"--as-of {text!r} is not an ISO-8601 time (for example 2026-11-28T09:00:00Z or 2026-11-28)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment > (now or datetime.now(UTC)):
        raise ExportError(f"--as-of {text!r} is in the future: the pipeline cannot know that time yet")
    return moment


# --- targets -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    text: str
    bucket: str | None = None
    key: str | None = None
    path: Path | None = None

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None


def parse_target(text: str) -> Target:
    if text.startswith("s3://"):
        bucket, _, key = text[len("s3://") :].partition("/")
        if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", bucket) or not key or key.endswith("/"):
            raise ExportError(f"--output {text!r}: expected s3://<bucket>/<key> naming an object")
        return Target(text, bucket=bucket, key=key)
    if not text:
        raise ExportError("--output is empty")
    path = Path(text).expanduser()
    return Target(text, path=path)


def check_target(target: Target, settings: Settings) -> Any:
    """Fails early, before anything is read, when the target cannot be written; returns the S3
    client for an S3 target."""
    if target.path is not None:
        path = target.path
        if path.is_dir():
            raise ExportError(f"cannot write {target.text}: it is a directory")
        parent = path.parent
        if not parent.is_dir():
            raise ExportError(f"cannot write {target.text}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise ExportError(f"cannot write {target.text}: permission denied")
        return None
    from minio.error import S3Error
    from urllib3.exceptions import HTTPError

    from orgpipeline_jobs.source.files import minio_client

    client = minio_client(settings)
    try:
        exists = client.bucket_exists(target.bucket)
    except S3Error as exc:
        raise ExportError(f"cannot write {target.text}: S3 refused: {exc.code}") from None
    except (HTTPError, OSError) as exc:
        raise ServerUnavailable(f"S3 unreachable: {exc}", stage="export") from None
    if not exists:
        raise ExportError(f"cannot write {target.text}: bucket {target.bucket} does not exist")
    return client


# --- columns -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Col:
    name: str
    pg_type: str
    classification: str | None
    masked: bool

    def arrow(self) -> pa.DataType:
        if self.masked:
            return pa.string()
        return arrow_type(self.pg_type)


def arrow_type(pg_type: str) -> pa.DataType:
    simple = {
        "text": pa.string(),
        "integer": pa.int32(),
        "bigint": pa.int64(),
        "smallint": pa.int16(),
        "double precision": pa.float64(),
        "real": pa.float32(),
        "boolean": pa.bool_(),
        "date": pa.date32(),
        "timestamp without time zone": pa.timestamp("us"),
        "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    }
    if pg_type in simple:
        return simple[pg_type]
    if m := re.match(r"^numeric\((\d+),(\d+)\)$", pg_type):
        return pa.decimal128(int(m.group(1)), int(m.group(2)))
    return pa.string()


def table_columns(conn: psycopg.Connection[Any], org_id: str, table: str) -> list[tuple[str, str]]:
    """(name, type) of raw_T's data columns in table order; ExportError for an unknown table."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0"
        " AND NOT a.attisdropped ORDER BY a.attnum",
        (store_names.pg_schema(org_id), store_names.pg_table(table)),
    ).fetchall()
    if not rows:
        raise ExportError(
            f"unknown table {table!r} of org {org_id}: no {store_names.pg_table(table)} in PostgreSQL"
        )
    return [(str(n), str(t)) for n, t in rows if n not in NOT_DATA]


def plan_columns(columns: list[tuple[str, str]], classes: dict[str, str] | None, mask: bool) -> list[Col]:
    out = []
    for name, pg_type in columns:
        classification = (classes or {}).get(name)
        out.append(Col(name, pg_type, classification, mask and privacy.masks(classification)))
    return out


def output_names(cols: list[Col]) -> list[str]:
    """The file's column names: the metadata's, then the data's (a data column named like a
    metadata column pushes the metadata name to `export_<name>`)."""
    data = {c.name for c in cols}
    return [f"export_{m}" if m in data else m for m in META] + [c.name for c in cols]


def query(req: Request, cols: list[Col], as_of: datetime) -> tuple[sql.Composed, dict[str, Any]]:
    raw = qualified(req.org_id, store_names.pg_table(req.table))
    vf, nf, sf = sql.Identifier("#valid_from"), sql.Identifier("#next_from"), sql.Identifier("#source_file")
    key_masked = req.mask and privacy.key_is_masked(req.classes or {}, req.business_keys)
    v = sql.Identifier("v")
    ck = sql.SQL("{}.composite_key").format(v)
    select = [
        privacy.pseudonym(ck, req.org_id) if key_masked else ck,
        sql.SQL("{}.version").format(v),
        sql.SQL("{}.change_type").format(v),
        sql.SQL("{}.{}").format(v, vf),
        sql.SQL("CASE WHEN {v}.{nf} <= %(as_of)s THEN {v}.{nf} END").format(v=v, nf=nf),
        sql.SQL("{}.{}").format(v, sf),
    ]
    for c in cols:
        value = sql.SQL("{}.{}").format(v, sql.Identifier(c.name))
        select.append(privacy.masked(value, c.classification, req.org_id) if c.masked else value)
    live: sql.Composable = sql.SQL("")
    if not req.with_history:
        live = sql.SQL(
            " AND ({v}.{nf} IS NULL OR {v}.{nf} > %(as_of)s) AND {v}.change_type <> 'DELETE'"
        ).format(v=v, nf=nf)
    statement = sql.SQL(
        "SELECT {select} FROM (SELECT r.composite_key, r.version, r.change_type, r.ingested_at AS {vf},"
        " lead(r.ingested_at) OVER (PARTITION BY r.composite_key ORDER BY r.version) AS {nf},"
        " {source} AS {sf},"
        " {data} FROM {raw} r WHERE r.org_id = ANY(%(org)s)) v"
        ' WHERE v.{vf} <= %(as_of)s{live} ORDER BY v.composite_key COLLATE "C", v.version'
    ).format(
        select=sql.SQL(", ").join(select),
        vf=vf,
        nf=nf,
        sf=sf,
        source=privacy.source_file(sql.Identifier("r")),
        data=sql.SQL(", ").join([sql.SQL("r.{}").format(sql.Identifier(c.name)) for c in cols])
        if cols
        else sql.SQL("NULL AS {}").format(sql.Identifier("#none")),
        raw=raw,
        live=live,
    )
    return statement, {"org": store_names.record_org_ids(req.org_id), "as_of": as_of}


# --- writers -------------------------------------------------------------------------------------


_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def neutralise_formula(text: str) -> str:
    """`text` as a spreadsheet shows it rather than runs it: a leading `'` when it starts like a
    formula (`=1+1`, `+cmd`, `-2+3`, `@SUM`, a tab or CR); a plain signed number (`-5`, `+1.5`)
    runs nothing and stays as it is."""
    if not text.startswith(FORMULA_LEADS) or _PLAIN_NUMBER.fullmatch(text):
        return text
    return "'" + text


def _text(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _json(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)  # exact: a float would round
    return str(value)


class Writer:
    def __init__(
        self,
        out: IO[bytes],
        names: list[str],
        types: list[pa.DataType],
        fmt: Format,
        formulas_raw: bool = False,
    ) -> None:
        self.fmt = fmt
        self.formulas_raw = formulas_raw
        self.names = names
        self.out = out
        self.schema = pa.schema([pa.field(n, t) for n, t in zip(names, types, strict=True)])
        self._parquet: pq.ParquetWriter | None = None
        self._text: io.TextIOWrapper | None = None
        if fmt == Format.parquet:
            self._parquet = pq.ParquetWriter(out, self.schema, compression="zstd")
        else:
            self._text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=False)
            if fmt == Format.csv:
                self._csv = csv.writer(self._text)
                self._csv.writerow(names if formulas_raw else [neutralise_formula(n) for n in names])

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        if self._parquet is not None:
            columns = []
            for i, f in enumerate(self.schema):
                values = [r[i] for r in rows]
                if pa.types.is_string(f.type):
                    values = [None if x is None else x if isinstance(x, str) else _json(x) for x in values]
                columns.append(pa.array(values, type=f.type))
            self._parquet.write_table(pa.Table.from_arrays(columns, schema=self.schema))
        elif self.fmt == Format.csv:
            if self.formulas_raw:
                self._csv.writerows([_text(x) for x in r] for r in rows)
            else:  # only text: a number's minus sign is not a formula
                self._csv.writerows(
                    [neutralise_formula(x) if isinstance(x, str) else _text(x) for x in r] for r in rows
                )
        else:
            assert self._text is not None
            for r in rows:
                self._text.write(
                    json.dumps(dict(zip(self.names, r, strict=True)), default=_json, ensure_ascii=False)
                    + "\n"
                )

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        elif self._text is not None:
            self._text.flush()
            self._text.detach()


# --- the audit trail -----------------------------------------------------------------------------


def _begin(conn: psycopg.Connection[Any], req: Request, result: Result) -> None:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = None
    # Who inserted (db_role), when, the org and the state are the table's defaults: not ours to say.
    exportaudit.start(
        conn,
        req.org_id,
        {
            "export_id": result.export_id,
            "table_name": req.table,
            "requested_by": req.requested_by,
            "user_note": req.user_note,
            "os_user": user,
            "client_host": socket.gethostname(),
            "as_of": result.as_of,
            "with_history": req.with_history,
            "format": str(req.format),
            "masked": req.mask,
            "columns": json.dumps(result.columns),
            "target": result.target,
            "formulas_raw": req.formulas_raw and req.format == Format.csv,
        },
    )


def _finish(conn: psycopg.Connection[Any], org_id: str, result: Result, error: str | None) -> None:
    exportaudit.finish(
        conn,
        org_id,
        result.export_id,
        error,
        result.rows,
        result.bytes if not error else None,
        result.sha256 or None,
    )


# --- the export ----------------------------------------------------------------------------------


def run(conn: psycopg.Connection[Any], settings: Settings, req: Request) -> Result:
    """Exports as asked; `conn` is autocommit. ExportError when the request cannot be served."""
    target = parse_target(req.target)
    as_of = req.as_of or datetime.now(UTC)
    columns = table_columns(conn, req.org_id, req.table)
    if req.mask and req.classes is None:
        raise ExportError(
            f"--mask: no classification is recorded for org {req.org_id}: the operator records it"
            " from the manifest when it reconciles the org"
        )
    cols = plan_columns(columns, req.classes, req.mask)
    client = check_target(target, settings)
    result = Result(
        export_id=str(uuid.uuid4()),
        org_id=req.org_id,
        table=req.table,
        as_of=as_of,
        with_history=req.with_history,
        format=str(req.format),
        masked=req.mask,
        target=target.text,
        columns=[
            {"name": c.name, "type": c.pg_type, "classification": c.classification, "masked": c.masked}
            for c in cols
        ],
    )
    try:
        if req.mask:
            privacy.ensure_tables(conn, req.org_id)  # the org's masking key
        if not exportaudit.ensure(conn, req.org_id):
            raise ExportError(
                f"the export audit of org {req.org_id} ({exportaudit.schema(req.org_id)}) is not there yet:"
                " the operator makes it when it provisions the org; no export before it"
            )
        _begin(conn, req, result)
    except psycopg.errors.InsufficientPrivilege as exc:
        message = str(exc).strip().splitlines()[0]
        raise ExportError(
            f"cannot record the export in the audit trail, so it is not made: {message}"
        ) from None
    try:
        _write(conn, req, cols, as_of, target, client, result)
    except BaseException as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        with contextlib.suppress(psycopg.Error):
            _finish(conn, req.org_id, result, message)
        raise
    _finish(conn, req.org_id, result, None)
    return result


def _write(
    conn: psycopg.Connection[Any],
    req: Request,
    cols: list[Col],
    as_of: datetime,
    target: Target,
    client: Any,
    result: Result,
) -> None:
    names = output_names(cols)
    meta_types = [
        pa.string(),
        pa.int32(),
        pa.string(),
        pa.timestamp("us", tz="UTC"),
        pa.timestamp("us", tz="UTC"),
    ]
    key_masked = req.mask and privacy.key_is_masked(req.classes or {}, req.business_keys)
    types = [
        pa.string() if key_masked else meta_types[0],
        *meta_types[1:],
        pa.string(),
        *[c.arrow() for c in cols],
    ]
    statement, params = query(req, cols, as_of)
    directory = target.path.parent if target.path is not None else None
    fd, tmp_name = tempfile.mkstemp(prefix=".orgpipeline-export-", suffix=".part", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            writer = Writer(out, names, types, req.format, req.formulas_raw)
            for batch in _stream(conn, statement, params):
                writer.write(batch)
                result.rows += len(batch)
            writer.close()
        # mkstemp made it 0600, whatever the umask; os.replace keeps that for the target.
        result.bytes = tmp.stat().st_size
        result.sha256 = _sha256(tmp)
        if target.path is not None:
            os.replace(tmp, target.path)
        else:
            _upload(client, target, tmp, req.format)
    finally:
        tmp.unlink(missing_ok=True)


def _stream(
    conn: psycopg.Connection[Any], statement: sql.Composed, params: dict[str, Any]
) -> Iterator[list[tuple[Any, ...]]]:
    with conn.transaction(), conn.cursor(name=f"export_{uuid.uuid4().hex[:8]}") as cur:
        cur.execute(statement, params)
        while rows := cur.fetchmany(BATCH_ROWS):
            yield rows


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _upload(client: Any, target: Target, path: Path, fmt: Format) -> None:
    from minio.error import S3Error
    from urllib3.exceptions import HTTPError

    content_type = {"csv": "text/csv", "jsonl": "application/x-ndjson"}.get(
        str(fmt), "application/octet-stream"
    )
    try:
        client.fput_object(target.bucket, target.key, str(path), content_type=content_type)
    except S3Error as exc:
        raise ExportError(f"cannot write {target.text}: S3 refused: {exc.code}") from None
    except (HTTPError, OSError) as exc:
        raise ServerUnavailable(
            f"S3 unreachable while writing {target.text}: {exc}", stage="export"
        ) from None
