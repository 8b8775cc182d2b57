"""Ingesting one source file of a table: the stages composed, batch by batch.

source (pyarrow CSV blocks) -> records (checks, keys, hashes on whole columns) -> warehouse.heads
(set-based change detection) -> versions (the new versions) -> warehouse (raw rows, change log,
heads, outbox: one transaction) -> landing (MongoDB, concurrent streams, overlapped with the next
batch). Snapshot tables then get a DELETE version for every live key the file did not contain.

The order of writes across the two stores lives here, not in a stage. Two orders, both replay-safe
(version `_id`s are deterministic and MongoDB refuses duplicates):
- fused (`run`): the batch's documents go to the outbox first (committed alone, marked not yet
  committed), then to MongoDB (postgres_status "loaded") while PostgreSQL's transaction writes the
  raw rows, change log and heads and marks the outbox row committed; the row goes once MongoDB has
  the batch. A rerun first replays the committed rows left and withdraws from MongoDB the
  documents of the others (`warehouse.outbox`), so MongoDB never keeps a version PostgreSQL lacks.
- landing only (`ingest`): MongoDB first (postgres_status "pending"), then the heads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import bson
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from bson.raw_bson import RawBSONDocument
from orgpipeline_api import memory, store_names, triggers
from orgpipeline_api.run_report import Counts, without_values
from orgpipeline_api.v1alpha1 import Table, TableMode
from pymongo.collection import Collection

from orgpipeline_jobs import hashing, keydetect, quality, records, versions
from orgpipeline_jobs.landing import documents
from orgpipeline_jobs.landing.configuration import LandingConfig
from orgpipeline_jobs.landing.exceptions import LandingError
from orgpipeline_jobs.landing.writer import MongoWriter, insert_documents
from orgpipeline_jobs.settings import Settings
from orgpipeline_jobs.source import files
from orgpipeline_jobs.source.csvstream import Batch, CsvStream, RejectedRow, read_ahead
from orgpipeline_jobs.source.exceptions import BlockTooSmall, FileQuarantined, FileRejected
from orgpipeline_jobs.warehouse import bookkeeping, heads, load, outbox, pending

ENCODE_CHUNK = 1000
"""Documents built as dicts before they are encoded to BSON and the dicts dropped."""

WITHDRAW_CHUNK = 1000
"""`_id`s per delete when a batch's documents are withdrawn from MongoDB."""

PART_SLICES = 4
"""An open part is written after this many slices even when it holds fewer than `write_rows`
versions: a re-run whose few changes are spread over the file then lands them in MongoDB while
the rest of the file is classified, instead of all after the file's end."""


@dataclass
class FileOutcome:
    source: files.SourceFile
    status: str
    """ingested | rejected | quarantined | skipped (already ingested, rejected or quarantined)"""
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
            **self.counts.model_dump(),
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
    trigger: triggers.RunTrigger = triggers.MANUAL
    """Who started the run and why, recorded with every version."""
    while_landing: Callable[[], None] | None = None
    """Called once, when the file is all written to PostgreSQL and MongoDB is still writing its last
    parts: work of the caller's that does not need them there (the run's end) fills that wait."""


def use_system_allocator() -> None:
    """Arrow allocates from glibc malloc, not its bundled mimalloc: mimalloc keeps freed pages of
    the previous blocks mapped (measured: 50 MB more peak RSS on a 20,000-row file, for no speed
    gain here), while glibc's are returned between parts by `memory.return_freed_memory`."""
    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())


CONTENT_SQLSTATE_CLASSES = ("22", "54")
"""PostgreSQL's data exceptions (22: a value it refuses) and program limits (54: an index row
over its size limit, from a long key): what the content causes, the same at every retry. Others
(connection lost, lock timeout, permissions) are transient or the operator's to fix: the run fails."""


def content_refusal(exc: BaseException) -> str | None:
    """Why a store refused the content, without the value, or None when `exc` is not that."""
    if isinstance(exc, LandingError):
        return f"MongoDB refused it: {without_values(str(exc))}"
    if isinstance(exc, psycopg.Error) and (exc.sqlstate or "")[:2] in CONTENT_SQLSTATE_CLASSES:
        lines = str(exc).strip().splitlines()
        detail = without_values(lines[0]) if lines else type(exc).__name__
        return f"PostgreSQL refused it ({exc.sqlstate} {type(exc).__name__}): {detail}"
    return None


def replay_outbox(ctx: TableContext) -> int:
    """Writes to MongoDB the documents a crashed fused run committed to PostgreSQL only.

    A document MongoDB refuses (one over 16 MiB left by an older release) would stop every run at
    this point: it becomes a rejected row of its file, the file is quarantined, and the batch's
    entry goes like the others."""
    replayed = 0
    for batch_id, blob, committed in outbox.pending(ctx.conn, ctx.org_id, ctx.table.name):
        docs = bson.decode_all(blob)
        if not committed:  # the run died before the batch's PostgreSQL part was committed
            withdraw(ctx.collection, batch_id, [d["_id"] for d in docs])
            outbox.remove(ctx.conn, ctx.org_id, ctx.table.name, [batch_id])
            continue
        for doc in docs:  # left by an older release (bare id): as `recordorg.migrate` made the rest
            doc["org_id"] = store_names.record_org_id(ctx.org_id)
        try:
            insert_documents(ctx.collection, docs)
        except LandingError:
            _land_one_by_one(ctx, docs)
        outbox.remove(ctx.conn, ctx.org_id, ctx.table.name, [batch_id])
        replayed += 1
    return replayed


def withdraw(collection: Collection[Any], batch_id: str, ids: list[Any]) -> None:
    """Deletes from MongoDB the documents a batch landed before its PostgreSQL part was committed
    (and never was): only this batch's (its `batch_id`), a chunk of `_id`s at a time."""
    for start in range(0, len(ids), WITHDRAW_CHUNK):
        collection.delete_many({"_id": {"$in": ids[start : start + WITHDRAW_CHUNK]}, "batch_id": batch_id})


def _land_one_by_one(ctx: TableContext, docs: list[dict[str, Any]]) -> None:
    """Lands a replayed batch a document at a time; each refused one is a rejected row and
    quarantines its file."""
    for doc in docs:
        try:
            insert_documents(ctx.collection, [doc])
        except LandingError as exc:
            reject_version(ctx, doc, f"its version could not be landed: {content_refusal(exc)}")


def reject_version(ctx: TableContext, doc: dict[str, Any], reason: str, issue_type: str = "landing") -> None:
    """A version document a store refused: a rejected row of its file (at its line; `landing`
    for MongoDB, `warehouse` for PostgreSQL), and the file quarantined."""
    origin = doc.get("audit_trail", {}).get("source_file", {})
    source = files.SourceFile(
        origin.get("bucket"),
        str(origin.get("key", "")),
        str(origin.get("etag", "")),
        int(origin.get("size", 0)),
    )
    line = origin.get("line")
    row = RejectedRow(int(line or 0), issue_type, reason)
    with ctx.conn.transaction():
        bookkeeping.write_rejected(ctx.conn, ctx.org_id, ctx.table.name, source, ctx.run_id, [row])
        bookkeeping.quarantine_file(ctx.conn, ctx.org_id, ctx.table.name, source, f"line {line}: {reason}")


def detect_business_keys(table: Table, header: list[str], batch: Batch) -> list[str]:
    """The smallest set of manifest columns (up to 4; ids and dates preferred) whose values in the
    first batch are never empty and together distinct (`keydetect`); every column when none is."""
    found = keydetect.detect(table, header, batch.columns)
    return found if found is not None else [c.name for c in table.columns if c.name in header]


@dataclass
class _Checked:
    """A slice of a parsed block after the checks, with what checking it found out."""

    batch: Batch
    checked: records.CheckedBatch
    staged: heads.StagedBatch
    """The slice's keys and hashes as the classification sends them."""
    quality: quality.QualityAccumulator
    """The slice's own quality counts (merged into the file's by the consumer, in order)."""
    detected_keys: list[str] | None
    """Business keys detected on this slice (the file's first rows), to be saved."""
    block_end: bool
    """The last slice of its block: the block's memory can be returned after it."""


@dataclass
class _OpenPart:
    """New versions gathered from consecutive slices until `write_rows` of them (or PART_SLICES
    slices, or the file's end) make a part: one PostgreSQL transaction and one MongoDB submission
    however few versions each slice has (a 1%-changed re-run writes a few parts, not one per
    slice). A slice whose keys meet the open part's closes it first, so every classification sees
    the heads before it."""

    shared: documents.Part
    """What the part's documents and rows share (batch id, timestamp, run metadata), built once."""
    encoded: list[RawBSONDocument] = field(default_factory=list)
    raw: list[dict[str, pa.Array]] = field(default_factory=list)
    change_log: list[dict[str, pa.Array]] = field(default_factory=list)
    heads: list[heads.HeadRow] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    versions: int = 0
    slices: int = 0
    """Slices classified while the part was open (see PART_SLICES)."""

    def meets(self, batch_keys: pa.Array) -> bool:
        """Whether any of a slice's keys has a head in this part."""
        if not self.keys:
            return False
        return bool(pc.any(pc.is_in(batch_keys, value_set=pa.array(list(self.keys), pa.string()))).as_py())


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
        # The counts when no part was last open: every row they count is written. A quarantined
        # file reports these, so its rows stay accounted without the rolled-back part.
        self._committed = Counts()
        self.checker = records.BatchChecker(ctx.table, ctx.business_keys)
        self.quality = quality.QualityAccumulator(len(self.checker.scalar.completeness_columns))
        self.notes: list[str] = []
        self.snapshot = ctx.table.mode == TableMode.snapshot
        self.batch_no = 0
        self._part: _OpenPart | None = None
        self.doc_ctx = documents.VersionContext(
            ctx.org_id,
            ctx.table.name,
            ctx.run_id,
            ctx.user_id,
            source.metadata(),
            datetime.now(UTC),
            ctx.trigger,
        )

    def run(self) -> FileOutcome:
        use_system_allocator()
        block = self.ctx.config.source.block_size
        self._writer = MongoWriter(
            self.ctx.collection, self.ctx.config.mongo_streams, self.ctx.config.mongo_chunk
        )
        try:
            return self._run(block)
        except (psycopg.Error, LandingError) as exc:
            reason = content_refusal(exc)
            if reason is None:
                raise
            # The failing part was rolled back with its transaction; what MongoDB could not take
            # stays in the outbox, which the caller replays next.
            self._part = None
            self._drain()
            self.counts = self._committed.model_copy(update={"loaded": self.counts.loaded})
            raise FileQuarantined(f"after data row {self.counts.rows_read}: {reason}") from None
        finally:
            self._writer.close()

    def _drain(self) -> None:
        """Waits for the parts in flight; drops the outbox rows of those MongoDB has."""
        landed = self._writer.drain()
        if landed:
            outbox.remove(self.ctx.conn, self.ctx.org_id, self.ctx.table.name, [b for b, _ in landed])
            self.counts.loaded += sum(n for _, n in landed)

    def _run(self, block: int) -> FileOutcome:
        while True:
            try:
                with files.open_file(self.source, self.ctx.settings) as stream:
                    self._stream(CsvStream(stream, self.ctx.config.source, block))
                self._settle(last=not self.snapshot)
                break
            except FileRejected:
                self._settle()  # what was counted is written, as it would have been part by part
                raise
            except BlockTooSmall:
                self._settle()
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
            self._while_landing()
            self._landed(wait=True)
        return FileOutcome(self.source, "ingested", self.counts, self.quality, notes=self.notes)

    def _stream(self, stream: CsvStream) -> None:
        header = stream.open()
        table = self.ctx.table
        bookkeeping.save_header(self.ctx.conn, self.ctx.org_id, table.name, self.source, stream.raw_header)
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
        for checked in read_ahead(self._checked(header, stream.batches())):
            if checked.detected_keys is not None:
                bookkeeping.save_business_keys(
                    self.ctx.conn, self.ctx.org_id, table.name, checked.detected_keys, True
                )
                self.notes.append(f"business keys detected: {', '.join(checked.detected_keys)}")
            self._batch(checked)
            if checked.block_end:
                memory.return_freed_memory()

    def _checked(self, header: list[str], batches: Iterator[Batch]) -> Iterator[_Checked]:
        """Each block's slices checked, keyed and hashed: run by the read-ahead thread, so that the
        next block is checked while PostgreSQL classifies this one (pyarrow's kernels and the
        database socket release the GIL). Touches no connection and no shared counter: what it
        found travels with the slice, and the consumer books it in file order."""
        table, step = self.ctx.table, self.ctx.config.batch_rows
        for batch in batches:
            detected = None
            if not self.ctx.business_keys and batch.num_rows:
                detected = detect_business_keys(table, header, batch)
                self.ctx.business_keys = detected
                self.checker = records.BatchChecker(table, detected)
            starts = range(0, max(batch.num_rows, 1), step)
            for start in starts:
                part = batch.slice(start, step)
                acc = quality.QualityAccumulator(self.quality.completeness_columns)
                checked = self.checker.check(header, part, self.ctx.org_id, acc)
                staged = heads.StagedBatch.of(
                    checked.key_array, checked.hash_array, versions.repeated_keys(checked.key_array)
                )
                yield _Checked(part, checked, staged, acc, detected, start == starts[-1])
                detected = None
            del batch

    def _batch(self, item: _Checked) -> None:
        """Classifies a checked slice at once and adds its new versions to the open part (written
        when it holds `write_rows` versions, see `_OpenPart`)."""
        ctx, counts, batch, checked = self.ctx, self.counts, item.batch, item.checked
        self.quality.merge(item.quality)
        counts.blank_lines += batch.blank_lines
        rejected: list[RejectedRow] = [*batch.rejected, *checked.rejected]
        counts.rows_read += batch.num_rows + len(batch.rejected)
        counts.rejected += len(rejected)

        if self._part is not None and self._part.meets(checked.key_array):
            self._flush()  # the classification must see the heads the open part will write
        candidates = heads.classify_batch(
            ctx.conn, ctx.org_id, ctx.table.name, self.file_id, item.staged, mark_seen=self.snapshot
        )
        plan = versions.plan(checked, candidates, self.file_id, self.snapshot)
        counts.inserted += plan.inserted
        counts.updated += plan.updated
        counts.unchanged += plan.unchanged
        counts.duplicates += plan.duplicates
        for _ in range(plan.duplicates):
            self.quality.add_duplicate()
        size = ctx.config.write_rows
        for part in versions.split(plan, size):
            if self._part is not None and self._part.versions + len(part.versions) > size:
                self._flush()
            self._add(checked, part)
        if rejected:
            self._open_part().rejected += rejected
        if self._part is not None:
            self._part.slices += 1
            full = self._part.versions >= size or len(self._part.rejected) >= size
            if full or self._part.slices >= PART_SLICES:
                self._flush()
        if self._part is None:
            self._committed = self.counts.model_copy()

    def _shared(self, batch_id: str) -> documents.Part:
        status = "loaded" if self.ctx.config.fused_load else "pending"
        return documents.Part.of(replace(self.doc_ctx, now=datetime.now(UTC)), batch_id, status)

    def _open_part(self) -> _OpenPart:
        if self._part is None:
            self.batch_no += 1
            self._part = _OpenPart(self._shared(f"{self.file_id}:{self.batch_no:06d}"))
        return self._part

    def _add(self, checked: records.CheckedBatch, plan: versions.Plan) -> None:
        """Builds a slice's share of the open part: its documents (BSON), raw and change-log rows
        (column-wise) and heads."""
        if not plan.versions and not plan.heads:
            return
        part = self._open_part()
        values = checked.python_values([v.index for v in plan.versions])
        changed = [
            hashing.changed_fields(new.previous_data or {}, data) if new.change_type == "UPDATE" else []
            for new, data in zip(plan.versions, values, strict=True)
        ]
        part.encoded += self._documents(part.shared, checked, plan, values, changed)
        del values
        if self.ctx.config.fused_load and plan.versions:
            rows = versions.version_rows(checked, plan, part.shared, changed)
            part.raw.append(rows.raw)
            part.change_log.append(rows.change_log)
        part.heads += plan.heads
        part.keys.update(row[0] for row in plan.heads)
        part.versions += len(plan.versions)

    def _flush(self) -> None:
        """Writes the open part (one transaction, one MongoDB submission) and closes it."""
        part, self._part = self._part, None
        if part is None:
            return
        self._write(part.shared.batch_id, part.encoded, part.heads, part.rejected, part.raw, part.change_log)
        del part
        memory.return_freed_memory()

    def _documents(
        self,
        part: documents.Part,
        checked: records.CheckedBatch,
        plan: versions.Plan,
        values: list[dict[str, Any]],
        changed: list[list[str]],
    ) -> list[RawBSONDocument]:
        """The slice's documents as BSON, built and encoded a chunk at a time (bounded memory)."""
        encoded: list[RawBSONDocument] = []
        docs: list[dict[str, Any]] = []
        for new, data, fields in zip(plan.versions, values, changed, strict=True):
            head = new.previous
            docs.append(
                documents.build(
                    part,
                    composite_key=new.composite_key,
                    values=data,
                    version=new.version,
                    data_hash=checked.data_hashes[new.index],
                    change_type=new.change_type,
                    changed_fields=fields,
                    previous_version=head.version if head else None,
                    previous_data_hash=head.data_hash if head else None,
                    line=new.line,
                    check=checked.checks.get(new.index),
                    for_bson=True,
                )
            )
            if len(docs) >= ENCODE_CHUNK:
                encoded += documents.encode(docs)
                docs.clear()
        return encoded + documents.encode(docs)

    def _write(
        self,
        batch_id: str,
        encoded: list[RawBSONDocument],
        head_rows: list[heads.HeadRow],
        rejected: list[RejectedRow],
        raw: list[dict[str, pa.Array]] | None = None,
        change_log: list[dict[str, pa.Array]] | None = None,
        docs: list[dict[str, Any]] | None = None,
    ) -> None:
        """Writes a part: `raw`/`change_log` (column-built) or `docs` (the DELETE versions) to
        PostgreSQL, then the documents to MongoDB (or the other way round without the fused load)."""
        ctx = self.ctx
        conn, org, name = ctx.conn, ctx.org_id, ctx.table.name
        fused = ctx.config.fused_load
        if not fused:
            insert_documents(ctx.collection, encoded)
        elif encoded:
            self._writer.make_room()
            # The documents first, alone, as not yet committed: MongoDB then writes them while
            # PostgreSQL's transaction below runs (they were one after the other), and a run that
            # dies before that commit leaves what the next run needs to withdraw them.
            with conn.transaction():
                outbox.put(conn, org, name, batch_id, b"".join(d.raw for d in encoded), committed=False)
            self._writer.submit(batch_id, encoded)
        try:
            with conn.transaction():
                if fused and raw:
                    load.copy_batch(conn, org, ctx.table, raw, change_log or [])
                elif fused and docs:
                    load.copy_versions(conn, org, ctx.table, docs)
                heads.upsert(conn, org, name, head_rows)
                bookkeeping.write_rejected(conn, org, name, self.source, ctx.run_id, rejected)
                if not fused and encoded:
                    pending.add(conn, org, name, batch_id)
                if fused and encoded:
                    outbox.commit(conn, org, name, batch_id)
        except BaseException:
            if fused and encoded:
                self._withdraw(batch_id, encoded)
            raise
        if fused and encoded:
            self._landed(wait=False)

    def _withdraw(self, batch_id: str, encoded: list[RawBSONDocument]) -> None:
        """PostgreSQL did not commit the batch: its documents leave MongoDB again, and its outbox
        row goes. Whatever fails here leaves the row (not committed) for the next run to finish."""
        self._writer.forget(batch_id)
        with suppress(Exception):
            withdraw(self.ctx.collection, batch_id, [d["_id"] for d in encoded])
            outbox.remove(self.ctx.conn, self.ctx.org_id, self.ctx.table.name, [batch_id])

    def _settle(self, last: bool = False) -> None:
        """Writes the open part and waits until MongoDB has every part (their outbox rows dropped).
        `last`: the file's last write, so the caller's `while_landing` may fill the wait."""
        self._flush()
        self._committed = self.counts.model_copy()
        if last:
            self._while_landing()
        self._landed(wait=True)

    def _while_landing(self) -> None:
        """The caller's `while_landing`, once, while MongoDB is still writing parts (the file's
        rows are all committed in PostgreSQL by now)."""
        self._landed(wait=False)
        if self.ctx.while_landing is not None and self._writer.in_flight():
            while_landing, self.ctx.while_landing = self.ctx.while_landing, None
            while_landing()

    def _landed(self, wait: bool) -> None:
        """Drops the outbox rows of the batches MongoDB has (all of them when `wait`)."""
        if not hasattr(self, "_writer"):
            return
        done = self._writer.completed(wait=wait)
        if done:
            outbox.remove(self.ctx.conn, self.ctx.org_id, self.ctx.table.name, [b for b, _ in done])
            self.counts.loaded += sum(n for _, n in done)

    def _delete_missing(self) -> None:
        """Snapshot mode: a DELETE version for every live key this file did not contain."""
        ctx = self.ctx
        after = ""
        while True:
            missing = heads.unseen(
                ctx.conn,
                ctx.org_id,
                ctx.table.name,
                self.file_id,
                after,
                min(ctx.config.batch_rows, ctx.config.write_rows),
            )
            if not missing:
                return
            after = missing[-1][0]
            self.batch_no += 1
            batch_id = f"{self.file_id}:{self.batch_no:06d}"
            part = self._shared(batch_id)
            docs: list[dict[str, Any]] = []
            head_rows: list[heads.HeadRow] = []
            for ck, head in missing:
                data = head.data or {}
                docs.append(
                    documents.build(
                        part,
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
                    )
                )
                head_rows.append(
                    (
                        ck,
                        head.version + 1,
                        head.data_hash,
                        "DELETE",
                        hashing.canonical_json(data),
                        self.file_id,
                        0,
                        self.file_id,
                    )
                )
            self.counts.deleted += len(docs)
            self._write(batch_id, documents.encode(docs), head_rows, [], docs=docs)
