"""Ingesting one source file of a table into its MongoDB collection, batch by batch.

Per batch: check every row (quality), compute its composite key and data hash, find the keys'
current versions in one heads query, and decide: new key -> INSERT v1, changed hash -> UPDATE
v(n+1) with changed_fields, same hash -> nothing. Rows are applied in file order, so a key repeated
in one file gives the same result every time (each later row compares with the earlier one, the
last wins) and counts as a duplicate (a consistency issue). Snapshot tables then get a DELETE
version for every live key the file did not contain.

Crash safety: version `_id`s are deterministic and MongoDB refuses duplicates, and a row whose
key's head already points at this file and a line at or after the row's own was applied by an
interrupted attempt, so a rerun skips it. Two write orders, both replay-safe:
- fused (`run`): PostgreSQL first (raw rows, change log, heads, an outbox copy of the documents,
  one transaction), then MongoDB with postgres_status "loaded"; a rerun first replays the outbox.
- landing only (`ingest`): MongoDB first (postgres_status "pending"), then the heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import bson
import psycopg
import pymongo.errors
from orgpipeline_api import naming
from orgpipeline_api.v1alpha1 import Table, TableMode
from psycopg import sql
from pymongo.collection import Collection

from orgpipeline_jobs import hashing, keys, quality
from orgpipeline_jobs.errors import ServerUnavailable
from orgpipeline_jobs.landing import documents, heads
from orgpipeline_jobs.landing.configuration import LandingConfig
from orgpipeline_jobs.landing.exceptions import LandingError
from orgpipeline_jobs.settings import Settings
from orgpipeline_jobs.source import files
from orgpipeline_jobs.source.csvstream import Batch, CsvStream, RejectedRow
from orgpipeline_jobs.source.exceptions import BlockTooSmall, FileRejected
from orgpipeline_jobs.values import key_text
from orgpipeline_jobs.warehouse import load, runs
from orgpipeline_jobs.warehouse.ddl import qualified


@dataclass
class Counts:
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    rejected: int = 0
    blank_lines: int = 0
    duplicates: int = 0
    loaded: int = 0

    def add(self, other: Counts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class FileOutcome:
    source: files.SourceFile
    status: str
    """ingested | rejected | skipped (already ingested or rejected earlier)"""
    counts: Counts
    quality: quality.QualityAccumulator
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.source.name,
            "uri": self.source.uri,
            "file_id": self.source.file_id,
            "status": self.status,
            "error": self.error,
            "notes": self.notes,
            **vars(self.counts),
        }


@dataclass
class TableContext:
    """One table's run: where to write and how."""

    settings: Settings
    conn: psycopg.Connection[Any]
    collection: Collection[dict[str, Any]]
    org_id: str
    table: Table
    run_id: str
    user_id: str | None
    business_keys: list[str]
    config: LandingConfig


def insert_documents(collection: Collection[dict[str, Any]], docs: Sequence[dict[str, Any]]) -> None:
    """insert_many that accepts versions already present (a replay) and nothing else."""
    if not docs:
        return
    try:
        collection.insert_many(docs, ordered=False)
    except pymongo.errors.BulkWriteError as exc:
        other = [e for e in exc.details.get("writeErrors", []) if e.get("code") != 11000]
        if other:
            raise LandingError(f"MongoDB refused {len(other)} documents: {other[0].get('errmsg')}") from None
    except pymongo.errors.ConnectionFailure as exc:
        raise ServerUnavailable(f"MongoDB unreachable: {exc}", stage="landing") from None


def replay_outbox(ctx: TableContext) -> int:
    """Writes to MongoDB the documents a crashed fused run committed to PostgreSQL only."""
    outbox = qualified(ctx.org_id, naming.pg_outbox(ctx.table.name))
    rows = ctx.conn.execute(
        sql.SQL("SELECT batch_id, documents FROM {} ORDER BY batch_id").format(outbox)
    ).fetchall()
    for batch_id, blob in rows:
        docs = bson.decode_all(bytes(blob))
        insert_documents(ctx.collection, docs)
        ctx.conn.execute(sql.SQL("DELETE FROM {} WHERE batch_id = %s").format(outbox), (batch_id,))
    return len(rows)


def detect_business_keys(table: Table, header: list[str], batch: Batch) -> list[str]:
    """The first manifest column whose values in the first batch are all present and distinct."""
    present = [c.name for c in table.columns if c.name in header]
    for name in present:
        idx = header.index(name)
        values = [row[idx] for row in batch.rows]
        if values and all(values) and len(set(values)) == len(values):
            return [name]
    return present


class FileIngest:
    """Ingests one file; `run()` returns its outcome."""

    def __init__(self, ctx: TableContext, source: files.SourceFile) -> None:
        self.ctx = ctx
        self.source = source
        self.file_id = source.file_id
        self._reset()

    def _reset(self) -> None:
        ctx, source = self.ctx, self.source
        self.counts = Counts()
        self.checker = quality.RecordChecker(ctx.table, extra_required=ctx.business_keys)
        self.quality = quality.QualityAccumulator(len(self.checker.completeness_columns))
        self.notes: list[str] = []
        self.snapshot = ctx.table.mode == TableMode.snapshot
        self.batch_no = 0
        self._in_flight: tuple[Future[None], str, int] | None = None
        self.doc_ctx = documents.VersionContext(
            ctx.org_id, ctx.table.name, ctx.run_id, ctx.user_id, source.metadata(), datetime.now(UTC)
        )

    def run(self) -> FileOutcome:
        block = self.ctx.config.source.block_size
        # One MongoDB write in flight while the next batch is parsed, checked and committed.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mongo-writer")
        try:
            return self._run(block)
        finally:
            self._writer.shutdown(wait=True)

    def _run(self, block: int) -> FileOutcome:
        while True:
            try:
                with files.open_file(self.source, self.ctx.settings) as stream:
                    self._stream(CsvStream(stream, self.ctx.config.source, block))
                self._flush()
                break
            except BlockTooSmall:
                self._flush()
                block *= 4
                if block > self.ctx.config.source.max_block_size:
                    raise FileRejected(
                        f"a row is larger than {self.ctx.config.source.max_block_size >> 20} MiB"
                        f" after line {self.counts.rows_read}"
                    ) from None
                # Rows already applied are recognised by the rerun (heads point at this file).
                self._reset()
        if self.snapshot:
            self._delete_missing()
            self._flush()
        return FileOutcome(self.source, "ingested", self.counts, self.quality, notes=self.notes)

    def _stream(self, stream: CsvStream) -> None:
        header = stream.open()
        table = self.ctx.table
        missing_required = [
            c.name
            for c in table.columns
            if (c.required or c.name in self.ctx.business_keys) and c.name not in header
        ]
        if missing_required:
            raise FileRejected(f"header lacks required columns: {', '.join(missing_required)}")
        absent = [c.name for c in table.columns if c.name not in header]
        if absent:
            self.notes.append(f"columns missing from the header (null): {', '.join(absent)}")
        extra = [h for h in header if table.column(h) is None]
        if extra:
            self.notes.append(f"columns not in the manifest (ignored): {', '.join(extra)}")
        self.positions = [(c.name, header.index(c.name) if c.name in header else None) for c in table.columns]
        for batch in stream.batches():
            if not self.ctx.business_keys and batch.rows:
                self.ctx.business_keys = detect_business_keys(table, header, batch)
                self.checker = quality.RecordChecker(table, extra_required=self.ctx.business_keys)
                runs.save_business_keys(
                    self.ctx.conn, self.ctx.org_id, table.name, self.ctx.business_keys, True
                )
                self.notes.append(f"business keys detected: {', '.join(self.ctx.business_keys)}")
            step = self.ctx.config.batch_rows
            for start in range(0, max(len(batch.rows), 1), step):
                part = Batch(
                    batch.rows[start : start + step],
                    batch.lines[start : start + step],
                    batch.rejected if start == 0 else [],
                    batch.blank_lines if start == 0 else 0,
                )
                self._batch(part)

    def _batch(self, batch: Batch) -> None:
        ctx, counts = self.ctx, self.counts
        self.batch_no += 1
        batch_id = f"{self.file_id}:{self.batch_no:06d}"
        doc_ctx = replace(self.doc_ctx, now=datetime.now(UTC))
        counts.blank_lines += batch.blank_lines
        rejected: list[RejectedRow] = []
        for bad in batch.rejected:
            self.quality.add_rejected(bad.issue_type, bad.field)
            rejected.append(bad)
        candidates: list[tuple[int, quality.RecordCheck, str, str]] = []
        key_columns = ctx.business_keys
        for row, line in zip(batch.rows, batch.lines, strict=True):
            check = self.checker.check(
                {name: (row[i] if i is not None else None) for name, i in self.positions}
            )
            self.quality.add_record(check)
            if check.errors:
                first = check.errors[0]
                rejected.append(
                    RejectedRow(
                        line, first.issue_type, "; ".join(e.message for e in check.errors), first.field
                    )
                )
                continue
            ck = keys.composite_key(
                ctx.org_id, ctx.table.name, [key_text(check.values[k]) for k in key_columns]
            )
            candidates.append((line, check, ck, hashing.data_hash(check.values)))
        counts.rows_read += len(batch.rows) + len(batch.rejected)
        counts.rejected += len(rejected)

        known = heads.lookup(ctx.conn, ctx.org_id, ctx.table.name, [c[2] for c in candidates])
        overlay: dict[str, heads.Head] = {}
        plans: list[tuple[int, quality.RecordCheck, str, str, heads.Head | None, str]] = []
        seen_unchanged: list[str] = []
        for line, check, ck, data_hash in candidates:
            head = overlay.get(ck) or known.get(ck)
            if head is not None and head.file_id == self.file_id:
                if ck not in overlay and head.line >= line:  # applied by an interrupted attempt
                    if head.line == line and head.change_type == "INSERT":
                        counts.inserted += 1
                    elif head.line == line and head.change_type == "UPDATE":
                        counts.updated += 1
                    else:
                        counts.unchanged += 1
                    seen_unchanged.append(ck)
                    continue
                counts.duplicates += 1
                self.quality.add_duplicate()
            if head is not None and head.change_type != "DELETE" and head.data_hash == data_hash:
                counts.unchanged += 1
                seen_unchanged.append(ck)
                continue
            change = "INSERT" if head is None or head.change_type == "DELETE" else "UPDATE"
            plans.append((line, check, ck, data_hash, head, change))
            overlay[ck] = heads.Head(
                (head.version if head else 0) + 1, data_hash, change, self.file_id, line, check.values
            )
        need_data = [p[2] for p in plans if p[5] == "UPDATE" and p[4] is not None and p[4].data is None]
        old_data = heads.fetch_data(ctx.conn, ctx.org_id, ctx.table.name, need_data)
        docs = []
        for line, check, ck, data_hash, head, change in plans:
            previous = head.data if head and head.data is not None else old_data.get(ck, {})
            docs.append(
                documents.build(
                    doc_ctx,
                    composite_key=ck,
                    values=check.values,
                    version=(head.version if head else 0) + 1,
                    data_hash=data_hash,
                    change_type=change,
                    changed_fields=hashing.changed_fields(previous, check.values)
                    if change == "UPDATE"
                    else [],
                    previous_version=head.version if head else None,
                    previous_data_hash=head.data_hash if head else None,
                    line=line,
                    check=check,
                    batch_id=batch_id,
                    postgres_status="loaded" if ctx.config.fused_load else "pending",
                )
            )
            if change == "INSERT":
                counts.inserted += 1
            else:
                counts.updated += 1
        seen = self.file_id if self.snapshot else None
        head_rows = [
            (ck, h.version, h.data_hash, h.change_type, h.data or {}, h.file_id, h.line, seen)
            for ck, h in overlay.items()
        ]
        self._write(batch_id, docs, head_rows, seen_unchanged if self.snapshot else [], rejected)

    def _write(
        self,
        batch_id: str,
        docs: list[dict[str, Any]],
        head_rows: list[Any],
        seen: list[str],
        rejected: list[RejectedRow],
    ) -> None:
        ctx = self.ctx
        conn, org, name = ctx.conn, ctx.org_id, ctx.table.name
        if ctx.config.fused_load:
            outbox = qualified(org, naming.pg_outbox(name))
            with conn.transaction():
                load.copy_versions(conn, org, ctx.table, docs)
                heads.upsert(conn, org, name, head_rows)
                heads.mark_seen(conn, org, name, seen, self.file_id)
                runs.write_rejected(conn, org, name, self.source, ctx.run_id, rejected)
                if docs:
                    blob = b"".join(bson.encode(d) for d in docs)
                    conn.execute(
                        sql.SQL(
                            "INSERT INTO {} (batch_id, documents) VALUES (%s, %s) ON CONFLICT DO NOTHING"
                        ).format(outbox),
                        (batch_id, blob),
                    )
            self._flush()
            if docs:
                self._in_flight = (
                    self._writer.submit(insert_documents, ctx.collection, docs),
                    batch_id,
                    len(docs),
                )
        else:
            insert_documents(ctx.collection, docs)
            with conn.transaction():
                heads.upsert(conn, org, name, head_rows)
                heads.mark_seen(conn, org, name, seen, self.file_id)
                runs.write_rejected(conn, org, name, self.source, ctx.run_id, rejected)

    def _flush(self) -> None:
        """Waits for the MongoDB write in flight, then drops its outbox copy."""
        if self._in_flight is None:
            return
        future, batch_id, count = self._in_flight
        self._in_flight = None
        future.result()
        outbox = qualified(self.ctx.org_id, naming.pg_outbox(self.ctx.table.name))
        self.ctx.conn.execute(sql.SQL("DELETE FROM {} WHERE batch_id = %s").format(outbox), (batch_id,))
        self.counts.loaded += count

    def _delete_missing(self) -> None:
        """Snapshot mode: a DELETE version for every live key this file did not contain."""
        ctx = self.ctx
        after = ""
        while True:
            missing = heads.unseen(
                ctx.conn, ctx.org_id, ctx.table.name, self.file_id, after, ctx.config.batch_rows
            )
            if not missing:
                return
            after = missing[-1][0]
            self.batch_no += 1
            batch_id = f"{self.file_id}:{self.batch_no:06d}"
            doc_ctx = replace(self.doc_ctx, now=datetime.now(UTC))
            docs, head_rows = [], []
            for ck, head in missing:
                data = head.data or {}
                docs.append(
                    documents.build(
                        doc_ctx,
                        composite_key=ck,
                        values=data,
                        version=head.version + 1,
                        data_hash=head.data_hash,
                        change_type="DELETE",
                        changed_fields=[],
                        previous_version=head.version,
                        previous_data_hash=head.data_hash,
                        line=None,
                        check=None,
                        batch_id=batch_id,
                        postgres_status="loaded" if ctx.config.fused_load else "pending",
                    )
                )
                head_rows.append(
                    (ck, head.version + 1, head.data_hash, "DELETE", data, self.file_id, 0, self.file_id)
                )
            self.counts.deleted += len(docs)
            self._write(batch_id, docs, head_rows, [], [])
