"""The three commands of the data plane, `ingest`, `load` and `run`, and their result.

Each command takes the run lock of its org and table, makes sure the org's schema exists, records
itself in `pipeline_runs` (Running, then its result) and returns the result, which the
command line prints (`-o json`) and, for the operator, writes to the termination log.

The result is an `orgpipeline_api.run_report.RunReport` (the run contract: its fields, the
compact termination-log form, the pipeline_runs row and the threshold rules are all there).

Termination log (the operator's contract): when ORGPIPELINE_TERMINATION_LOG names a path, `run`
also writes there the report's compact form, one JSON object under 4096 bytes.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

import psycopg
from orgpipeline_api import memory, store_names, stores, triggers
from orgpipeline_api.errors import ConfigurationError, PipelineError, ServerUnavailable
from orgpipeline_api.orgschema import ddl, lock, privacy, recordorg, tenant
from orgpipeline_api.run_report import (
    AlertType,
    Breach,
    Counts,
    FileSummary,
    RunReport,
    RunResult,
    assess,
    without_values,
)
from orgpipeline_api.v1alpha1 import OrgPipelineSpec, Table

from orgpipeline_jobs import keycheck, quality
from orgpipeline_jobs.landing.configuration import LandingConfig
from orgpipeline_jobs.settings import Settings
from orgpipeline_jobs.source import files
from orgpipeline_jobs.source.exceptions import FileQuarantined, FileRejected
from orgpipeline_jobs.warehouse import bookkeeping, outbox, pending

if TYPE_CHECKING:
    import pymongo
    from pymongo.collection import Collection

    from orgpipeline_jobs import classify, ingest

# pyarrow, pymongo and the ingest engine are imported where a run first needs them: a run with
# nothing new (most scheduled runs) needs none of them, and they were half its process wall time.

TERMINATION_LOG_ENV = "ORGPIPELINE_TERMINATION_LOG"
LOAD_CHUNK = 10_000
DONE_STATUSES = ("ingested", "rejected", "quarantined")
"""pipeline_files statuses a run does not take again (`orgpipeline files retry` re-queues one)."""


def check_table(spec: OrgPipelineSpec, table_name: str) -> Table:
    """The manifest's table, or a clear error; refuses column names the audit columns use."""
    table = spec.table(table_name)
    if table is None:
        known = ", ".join(t.name for t in spec.tables)
        raise ConfigurationError(f"unknown table {table_name!r}; the manifest has: {known}")
    reserved = [c.name for c in table.columns if c.name in ddl.RESERVED_COLUMNS]
    if reserved:
        raise ConfigurationError(
            f"table {table.name}: column names reserved for audit columns: {', '.join(reserved)}"
        )
    return table


def connect_postgres(settings: Settings) -> psycopg.Connection[Any]:
    settings.require("postgres_dsn")
    try:
        return stores.connect_postgres(settings.postgres_dsn or "")
    except stores.StoreUnavailable as exc:
        raise ServerUnavailable(str(exc), stage="warehouse") from None


@contextmanager
def org_connection(settings: Settings, org_id: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to work in the org's schema with (`tenant.session`): the org's own DSN as is;
    an administrator's DSN through a delegate of the org's role, never as the administrator."""
    conn = connect_postgres(settings)
    try:
        with tenant.session(settings.postgres_dsn or "", org_id, admin=conn) as own:
            yield own
    except tenant.TenantSessionRefused as exc:
        raise ConfigurationError(str(exc)) from None
    except stores.StoreUnavailable as exc:
        raise ServerUnavailable(str(exc), stage="warehouse") from None
    finally:
        conn.close()


def connect_mongo(settings: Settings) -> pymongo.MongoClient[dict[str, Any]]:
    settings.require("mongo_uri")
    try:
        return stores.mongo_client(settings.mongo_uri or "")
    except stores.StoreUnavailable as exc:
        raise ServerUnavailable(str(exc), stage="landing") from None


class LazyCollection:
    """The table's MongoDB collection, connected at its first use (by any thread), so that a run
    that lands and loads nothing opens no MongoDB connection; attributes are the collection's."""

    def __init__(self, settings: Settings, database: str, name: str) -> None:
        self._settings, self._database, self._name = settings, database, name
        self._client: pymongo.MongoClient[dict[str, Any]] | None = None
        self._collection: Collection[dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def _get(self) -> Collection[dict[str, Any]]:
        with self._lock:
            if self._collection is None:
                self._client = connect_mongo(self._settings)
                self._collection = self._client[self._database][self._name]
            return self._collection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = self._collection = None


def is_store_error(exc: BaseException) -> bool:
    """A PostgreSQL or MongoDB error (pymongo's only when it was imported: else none was raised)."""
    mongo = sys.modules.get("pymongo.errors")
    return isinstance(exc, psycopg.Error) or (mongo is not None and isinstance(exc, mongo.PyMongoError))


@dataclass
class TableRun:
    """A command's hold on one table: connections, lock, run record, and what it did so far."""

    settings: Settings
    spec: OrgPipelineSpec
    table: Table
    command: str
    user_id: str | None
    conn: psycopg.Connection[Any]
    collection: Any
    run_id: str = field(
        default_factory=lambda: datetime.now(UTC).strftime("%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:8]
    )
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    outcomes: list[ingest.FileOutcome] = field(default_factory=list)
    loaded: int = 0
    business_keys: list[str] = field(default_factory=list)
    keys_detected: bool = False
    trigger: triggers.RunTrigger = triggers.MANUAL
    last_file: str | None = None
    """The file_id of the last file this run ingests (`prepare_finish`)."""
    suggested: list[classify.ColumnSuggestion] | None = None
    """The classification's suggestions, read while the last file's documents landed."""

    def context(self, fused: bool) -> ingest.TableContext:
        from orgpipeline_jobs import ingest

        return ingest.TableContext(
            self.settings,
            self.conn,
            self.collection,
            self.spec.org_id,
            self.table,
            self.run_id,
            self.user_id,
            list(self.business_keys),
            LandingConfig(
                batch_rows=self.settings.batch_rows,
                fused_load=fused,
                mongo_streams=self.settings.mongo_streams,
                mongo_chunk=self.settings.mongo_chunk,
                write_rows=self.settings.write_rows,
            ),
            self.trigger,
        )

    def empty_quality(self) -> quality.QualityAccumulator:
        return quality.QualityAccumulator(len(quality.completeness_columns(self.table, self.business_keys)))

    def ingest_file(self, source: files.SourceFile, fused: bool, status: str | None) -> ingest.FileOutcome:
        """Ingests the file unless its recorded `status` (pipeline_files) says it is done."""
        from orgpipeline_jobs import ingest

        org, name = self.spec.org_id, self.table.name
        if status in DONE_STATUSES:
            outcome = ingest.FileOutcome(
                source, "skipped", Counts(), self.empty_quality(), notes=[f"already {status}"]
            )
            self.outcomes.append(outcome)
            return outcome
        bookkeeping.start_file(self.conn, org, name, source, self.run_id)
        ctx = self.context(fused)
        ctx.while_landing = lambda: self.prepare_finish(source.file_id == self.last_file)
        by = self.trigger.for_file(source.key)  # a file arrival: the file's own uploader
        ctx.trigger, ctx.user_id = by, by.user
        worker = ingest.FileIngest(ctx, source)
        started = datetime.now(UTC)
        try:
            outcome = worker.run()
        except FileRejected as exc:
            outcome = ingest.FileOutcome(
                source, "rejected", worker.counts, worker.quality, error=str(exc), notes=worker.notes
            )
        except FileQuarantined as exc:
            outcome = ingest.FileOutcome(
                source, "quarantined", worker.counts, worker.quality, error=str(exc), notes=worker.notes
            )
            # What MongoDB did not take of the file's committed parts, now, not at the next run.
            ingest.replay_outbox(ctx)
        if ctx.business_keys != self.business_keys:
            self.business_keys, self.keys_detected = ctx.business_keys, True
        report = outcome.quality.report()
        with self.conn.transaction():
            bookkeeping.finish_file(
                self.conn, org, name, source, outcome.status, vars(outcome.counts), report, outcome.error
            )
            bookkeeping.write_quality_metrics(
                self.conn, org, name, self.run_id, source.file_id, report, (started, datetime.now(UTC))
            )
        self.outcomes.append(outcome)
        return outcome

    def prepare_finish(self, last: bool) -> None:
        """The end of the run, as far as it does not need MongoDB to have the file's last
        documents: called while they are on their way, when this thread would only wait. Imports
        the run's end's checks (~25 ms); after the run's last file, also reads the classification's
        sample (its rows are all in PostgreSQL, committed)."""
        from orgpipeline_jobs import anomalies, classify, storage  # noqa: F401

        if last:
            with suppress(psycopg.Error):
                self.suggested = classify.run_suggestions(
                    self.conn, self.spec.org_id, self.table.name, self.columns()
                )

    def columns(self) -> dict[str, str]:
        return {c.name: str(c.classification) for c in self.table.columns}

    def load_pending(self) -> int:
        """Loads versions landed by `ingest` (postgres_status pending), then marks them loaded."""
        waiting = pending.batches(self.conn, self.spec.org_id, self.table.name)
        if not waiting:
            return 0
        from orgpipeline_jobs import ingest
        from orgpipeline_jobs.warehouse.load import copy_versions

        query: dict[str, Any] = {"postgres_status": "pending"}
        if pending.ALL not in waiting:
            query["batch_id"] = {"$in": waiting}
        docs = iter(self.collection.find(query, batch_size=LOAD_CHUNK))
        batch_ids: set[str] = set()
        loaded = 0
        while chunk := list(islice(docs, LOAD_CHUNK)):
            try:
                with self.conn.transaction():
                    copy_versions(self.conn, self.spec.org_id, self.table, chunk)
                loaded += len(chunk)
            except psycopg.Error as exc:
                if ingest.content_refusal(exc) is None:
                    raise
                loaded += self.load_one_by_one(chunk)
            batch_ids.update(d["batch_id"] for d in chunk)
        # Only after the commits: a crash before this line reloads the same versions, adding nothing.
        now = datetime.now(UTC)
        for batch_id in sorted(batch_ids):
            self.collection.update_many(
                {"batch_id": batch_id, "postgres_status": "pending"},
                {"$set": {"postgres_status": "loaded", "loaded_at": now}},
            )
        pending.remove(self.conn, self.spec.org_id, self.table.name, waiting)
        self.loaded += loaded
        return loaded

    def load_one_by_one(self, chunk: list[dict[str, Any]]) -> int:
        """Loads a chunk PostgreSQL refused a version of, a version at a time: each refused one is
        a rejected row of its file (which is quarantined) and is marked `refused` in MongoDB, so
        that no later load takes it again. Returns the versions loaded."""
        from orgpipeline_jobs import ingest
        from orgpipeline_jobs.warehouse.load import copy_versions

        loaded = 0
        for doc in chunk:
            try:
                with self.conn.transaction():
                    copy_versions(self.conn, self.spec.org_id, self.table, [doc])
                loaded += 1
            except psycopg.Error as exc:
                reason = ingest.content_refusal(exc)
                if reason is None:
                    raise
                why = f"its version could not be loaded: {reason}"
                ingest.reject_version(self.context(False), doc, why, "warehouse")
                self.collection.update_one({"_id": doc["_id"]}, {"$set": {"postgres_status": "refused"}})
        return loaded

    def result(self, error: str | None = None) -> RunReport:
        counts = Counts()
        acc = self.empty_quality()
        for outcome in self.outcomes:
            counts.add(outcome.counts)
            acc.merge(outcome.quality)
        counts.loaded += self.loaded
        report = acc.report()
        rejected_files = [o for o in self.outcomes if o.status == "rejected"]
        if error is None and rejected_files:
            error = "; ".join(f"{o.source.name} rejected: {o.error}" for o in rejected_files)[:1000]
        worked = any(o.status != "skipped" for o in self.outcomes) or self.loaded
        status = "Failed" if error else ("Succeeded" if worked or self.command != "run" else "NoNewFiles")
        finished = datetime.now(UTC)
        run = RunReport(
            run_id=self.run_id,
            org_id=self.spec.org_id,
            table=self.table.name,
            command=self.command,
            result=RunResult(status),
            files=[FileSummary.model_validate(o.summary()) for o in self.outcomes],
            **counts.model_dump(),
            quality_score=report["overall_quality_score"],
            completeness_score=report["completeness_score"],
            validity_score=report["validity_score"],
            consistency_score=report["consistency_score"],
            error_rate_percent=report["error_rate_percent"],
            quality_report=report,
            business_keys=self.business_keys,
            business_keys_detected=self.keys_detected,
            started_at=self.started_at.isoformat(),
            finished_at=finished.isoformat(),
            duration_seconds=round((finished - self.started_at).total_seconds(), 3),
            error=error,
            trigger=self.trigger.trigger,
            triggered_by=self.trigger.user,
            trigger_reason=self.trigger.reason,
        )
        if run.result == RunResult.Succeeded:
            run = run.model_copy(update={"breaches": self.anomalies(run)})
        found = [*self.quarantined(), *self.key_repeats(), *self.unclassified(run)]
        run = run.model_copy(update={"breaches": [*run.breaches, *found], **self.storage(run)})
        return run.model_copy(update={"breaches": assess(run, self.spec.quality_thresholds).breaches})

    def key_repeats(self) -> list[Breach]:
        """BusinessKeyNotUnique, once, when a file repeated a detected key (`keycheck`)."""
        repeats = [(o.source.name, o.counts.duplicates) for o in self.outcomes]
        return keycheck.not_unique(
            self.conn, self.spec.org_id, self.table.name, self.business_keys, self.keys_detected, repeats
        )

    def storage(self, run: RunReport) -> dict[str, int | None]:
        """The table's measured sizes (`storage`: after a run that wrote, or the day's first)."""
        from orgpipeline_jobs import storage

        wrote = bool(run.inserted or run.updated or run.deleted or run.loaded)
        sizes = storage.after_run(self.conn, self.collection, self.spec.org_id, self.table.name, wrote)
        return {"postgres_bytes": sizes.postgres_bytes, "mongo_bytes": sizes.mongo_bytes} if sizes else {}

    def unclassified(self, run: RunReport) -> list[Breach]:
        """UnclassifiedPersonalData, once per column, after a run that wrote versions (`classify`)."""
        if not (run.inserted or run.updated) or run.error:
            return []
        from orgpipeline_jobs import classify

        # Read before the last file's MongoDB write ended: still the stored rows unless a pending
        # load added some since.
        suggested = self.suggested if not self.loaded else None
        try:
            return classify.unclassified_breaches(
                self.conn, self.spec.org_id, self.table.name, self.columns(), suggested
            )
        except psycopg.Error:
            return []

    def quarantined(self) -> list[Breach]:
        """FileQuarantined while any file of the table is (this run's or an earlier one's): the
        alert lasts until `orgpipeline files retry` re-queues them and they load."""
        try:
            keys = bookkeeping.quarantined_files(self.conn, self.spec.org_id, self.table.name)
        except psycopg.Error:
            return []
        if not keys:
            return []
        names = ", ".join(k.rsplit("/", 1)[-1] for k in keys[:5]) + (", ..." if len(keys) > 5 else "")
        message = (
            f"{len(keys)} file(s) quarantined: {names} (see orgpipeline files --org-id"
            f" {self.spec.org_id} --table {self.table.name})"
        )
        return [Breach(type=AlertType.FileQuarantined, message=message[:1024], value=float(len(keys)))]

    def anomalies(self, run: RunReport) -> list[Breach]:
        """VolumeAnomaly / QualityAnomaly against the table's recent successful runs; none when
        the history cannot be read (the run's own result matters more than the comparison)."""
        from orgpipeline_jobs import anomalies

        try:
            return anomalies.for_run(
                self.conn,
                self.spec.org_id,
                self.table.name,
                self.table.anomaly_detection,
                self.started_at,
                run.rows_read,
                run.rejected,
                run.quality_score,
            )
        except psycopg.Error:
            return []


@contextmanager
def locked_table(
    settings: Settings, spec: OrgPipelineSpec, table_name: str
) -> Iterator[tuple[Table, psycopg.Connection[Any], Any]]:
    """Connects, creates the schema and takes the table's run lock; closing releases it on exit."""
    table = check_table(spec, table_name)
    with org_connection(settings, spec.org_id) as conn:
        collection = LazyCollection(
            settings,
            settings.mongo_database(spec.org_id),  # the org's own (issue 22)
            store_names.mongo_collection(spec.org_id, table.name),
        )
        try:
            # The table's objects and migrations, unless its stamp says they are current (the
            # usual case: one lookup instead of ~30 statements).
            current = ddl.is_current(conn, spec.org_id, table)
            created = False if current else ddl.ensure_schema(conn, spec.org_id, table)
            privacy.ensure_view(conn, spec.org_id, table)  # the reader's, at the table's first run
            lock.acquire(conn, spec.org_id, table.name, settings.lock_timeout_seconds)
            if created:
                recordorg.record_new(conn, spec.org_id, table.name)
            elif not current and recordorg.migrate(conn, spec.org_id, table.name, collection) is not None:
                privacy.ensure_view(conn, spec.org_id, table)  # again if the migration dropped it
            if not current:
                ddl.mark_current(conn, spec.org_id, table)
            yield table, conn, collection
        finally:
            collection.close()
    # Closing the connection released the session-level run lock.


@contextmanager
def table_run(
    settings: Settings,
    spec: OrgPipelineSpec,
    table_name: str,
    command: str,
    user_id: str | None = None,
    trigger: triggers.RunTrigger | None = None,
) -> Iterator[TableRun]:
    """The locked table (`locked_table`) with its run recorded in pipeline_runs.

    `trigger` says who started the run and why (its user is the run's user); without one the run is
    `manual`, by `user_id`.
    """
    trigger = trigger or triggers.RunTrigger.of(triggers.Trigger.manual, user_id or triggers.caller(), None)
    with locked_table(settings, spec, table_name) as (table, conn, collection):
        saved = bookkeeping.business_keys(conn, spec.org_id, table.name)
        keys = list(table.business_keys) or (saved[0] if saved else [])
        tr = TableRun(
            settings,
            spec,
            table,
            command,
            trigger.user,
            conn,
            collection,
            business_keys=keys,
            keys_detected=not table.business_keys and bool(saved),
            trigger=trigger,
        )
        bookkeeping.start_run(conn, spec.org_id, table.name, tr.run_id, command, trigger)
        yield tr


def _finish(tr: TableRun, error: str | None = None) -> RunReport:
    result = tr.result(error)
    bookkeeping.finish_run(tr.conn, tr.spec.org_id, tr.run_id, result)
    return result


def error_kind(exc: Exception) -> str:
    """A store's error for the job's log and the run's result: its kind (class, SQLSTATE) and its
    first line with any quoted stored value replaced (`without_values`), never the value."""
    lines = str(exc).strip().splitlines()
    first = without_values(lines[0]) if lines else ""
    state = getattr(exc, "sqlstate", None)
    kind = f"{type(exc).__name__} ({state})" if state else type(exc).__name__
    return f"{kind}: {first}" if first else kind


def _guarded(tr: TableRun, work: Any) -> RunReport:
    """Runs the work; an error is recorded in the run row before it propagates."""
    try:
        work()
    except PipelineError as exc:
        exc.result = _finish(tr, f"{exc.stage}: {exc}")  # type: ignore[attr-defined]
        raise
    except Exception as exc:
        if not is_store_error(exc):
            raise
        message = error_kind(exc)
        with suppress(psycopg.Error):
            _finish(tr, message)
        raise ServerUnavailable(f"database error: {message}") from None
    return _finish(tr)


def run_ingest(
    settings: Settings,
    spec: OrgPipelineSpec,
    table_name: str,
    source_uri: str,
    user_id: str | None = None,
    trigger: triggers.RunTrigger | None = None,
) -> RunReport:
    """`orgpipeline ingest`: lands one file in MongoDB (postgres_status pending)."""
    source = files.resolve(source_uri, settings)
    with table_run(settings, spec, table_name, "ingest", user_id, trigger) as tr:

        def work() -> None:
            from orgpipeline_jobs import ingest

            ingest.replay_outbox(tr.context(False))
            status = bookkeeping.file_status(tr.conn, spec.org_id, tr.table.name, source)
            tr.ingest_file(source, fused=False, status=status)

        return _guarded(tr, work)


def run_load(
    settings: Settings, spec: OrgPipelineSpec, table_name: str, trigger: triggers.RunTrigger | None = None
) -> RunReport:
    """`orgpipeline load`: loads pending versions into PostgreSQL."""
    from orgpipeline_jobs import ingest

    with table_run(settings, spec, table_name, "load", None, trigger) as tr:
        return _guarded(tr, lambda: (ingest.replay_outbox(tr.context(True)), tr.load_pending()))


def run_table(
    settings: Settings,
    spec: OrgPipelineSpec,
    table_name: str,
    user_id: str | None = None,
    local_dir: str | None = None,
    trigger: triggers.RunTrigger | None = None,
) -> RunReport:
    """`orgpipeline run`: ingests (and loads) every new file of the table, then loads leftovers."""
    memory.limit_malloc_arenas()
    table = check_table(spec, table_name)
    listing = None
    if not local_dir:
        # The bucket is listed (and its client imported, a quarter of a short run's imports) in a
        # thread while this one connects, checks the schema and records the run: most of that is
        # waiting on PostgreSQL, when the listing can have the interpreter.
        listing = Background(
            files.list_table_files, settings, spec.source.bucket, spec.source.prefix, table.glob
        )

    def work() -> None:
        if outbox.waiting(tr.conn, spec.org_id, table.name):
            from orgpipeline_jobs import ingest

            ingest.replay_outbox(tr.context(True))
        found = listing.result() if listing is not None else files.local_files(local_dir or "", table.glob)
        statuses = bookkeeping.files_by_status(tr.conn, spec.org_id, table.name)
        todo = [f for f in found if statuses.get(f.file_id) not in DONE_STATUSES]
        # An interrupted file first: its rerun must see the heads it left, not a later file's.
        todo.sort(key=lambda f: (statuses.get(f.file_id) != "ingesting", f.key))
        tr.last_file = todo[-1].file_id if todo else None
        for source in todo:  # each listed once, under the lock: the statuses read above still hold
            tr.ingest_file(source, fused=True, status=statuses.get(source.file_id))
        tr.load_pending()

    try:
        with table_run(settings, spec, table_name, "run", user_id, trigger) as tr:
            result = _guarded(tr, work)
    except PipelineError as exc:
        # The operator reads the termination log even when the run could not start.
        write_termination_log(getattr(exc, "result", None) or failed_result(spec, table_name, exc, trigger))
        raise
    write_termination_log(result)
    return result


class Background(threading.Thread):
    """A call run in a daemon thread; `result()` waits for it and returns or raises what it did."""

    def __init__(self, call: Any, *args: Any) -> None:
        super().__init__(name="orgpipeline-background", daemon=True)
        self._call, self._args = call, args
        self._value: Any = None
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._value = self._call(*self._args)
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc

    def result(self) -> Any:
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


def failed_result(
    spec: OrgPipelineSpec, table_name: str, exc: PipelineError, trigger: triggers.RunTrigger | None = None
) -> RunReport:
    """The result of a run that failed before it had a run id (bad settings, unreachable server)."""
    now = datetime.now(UTC).isoformat()
    trigger = trigger or triggers.MANUAL
    return RunReport(
        trigger=trigger.trigger,
        triggered_by=trigger.user,
        trigger_reason=trigger.reason,
        run_id=None,
        org_id=spec.org_id,
        table=table_name,
        result=RunResult.Failed,
        started_at=now,
        finished_at=now,
        error=f"{exc.stage}: {exc}",
    )


def write_termination_log(result: RunReport, path: str | None = None) -> None:
    """Writes the compact result for the operator when ORGPIPELINE_TERMINATION_LOG is set."""
    path = path or os.environ.get(TERMINATION_LOG_ENV)
    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(result.termination_message())
    except OSError:
        pass  # the result is also in pipeline_runs; a missing log must not fail the run
