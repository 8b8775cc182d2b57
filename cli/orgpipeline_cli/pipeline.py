"""`orgpipeline ingest | load | run`: the data-plane commands the scheduled Jobs also run.

Each records its trigger: the Job's ORGPIPELINE_TRIGGER / _TRIGGERED_BY / _TRIGGER_REASON (see
`orgpipeline_api.triggers`), or `manual` by `--user-id` when started by hand.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from orgpipeline_api.run_report import RunReport, RunResult

from orgpipeline_cli.main import CommandFailed
from orgpipeline_cli.results import Format, emit

ManifestOpt = typer.Option(
    ..., "-f", "--filename", help="OrgPipeline manifest (the file kubectl apply takes)."
)
OutputOpt = typer.Option(Format.table, "-o", "--output", help="table (default) or json (one JSON object).")
MongoOpt = typer.Option(None, "--mongo-uri", help="Overrides ORGPIPELINE_MONGO_URI.")
MongoDbOpt = typer.Option(None, "--mongo-db", help="Overrides ORGPIPELINE_MONGO_DB.")
PostgresOpt = typer.Option(None, "--postgres-dsn", help="Overrides ORGPIPELINE_POSTGRES_DSN.")
S3Opt = typer.Option(None, "--s3-endpoint", help="Overrides ORGPIPELINE_S3_ENDPOINT.")


def _setup(
    manifest: Path,
    mongo_uri: str | None,
    mongo_db: str | None,
    postgres_dsn: str | None,
    s3_endpoint: str | None,
) -> tuple[Any, Any]:
    from orgpipeline_api.v1alpha1 import load_manifest
    from orgpipeline_jobs.settings import Settings

    _, spec = load_manifest(manifest)
    settings = Settings.from_env(
        mongo_uri=mongo_uri, mongo_db=mongo_db, postgres_dsn=postgres_dsn, s3_endpoint=s3_endpoint
    )
    return spec, settings


def _trigger(user_id: str | None) -> Any:
    """Who started this command and why; a bad ORGPIPELINE_TRIGGER is a usage error (exit 2)."""
    from orgpipeline_api import triggers

    try:
        return triggers.from_env(os.environ, user_id)
    except triggers.TriggerError as exc:
        raise CommandFailed(str(exc), 2) from None


def _finish(result: RunReport, output: Format) -> None:
    emit(result.as_json(), [result], output)
    if result.result == RunResult.Failed:
        raise CommandFailed(f"{result.command} failed: {result.error or 'see the result'}")


def ingest(
    filename: Path = ManifestOpt,
    table: str = typer.Option(..., "--table", help="Table of the manifest."),
    file: str = typer.Option(..., "--file", help="s3://bucket/key or a local path."),
    user_id: str | None = typer.Option(
        None,
        "--user-id",
        help="Recorded as changed_by_user_id (default: ORGPIPELINE_TRIGGERED_BY, else you: user@host).",
    ),
    output: Format = OutputOpt,
    mongo_uri: str | None = MongoOpt,
    mongo_db: str | None = MongoDbOpt,
    postgres_dsn: str | None = PostgresOpt,
    s3_endpoint: str | None = S3Opt,
) -> None:
    """Land one CSV file in MongoDB: new versions, quality, audit trail (postgres_status pending)."""
    from orgpipeline_jobs import pipeline

    trigger = _trigger(user_id)
    spec, settings = _setup(filename, mongo_uri, mongo_db, postgres_dsn, s3_endpoint)
    _check_in_source(spec, file)
    _finish(pipeline.run_ingest(settings, spec, table, file, trigger=trigger), output)


def _check_in_source(spec: Any, file: str) -> None:
    """An S3 object outside the manifest's source is another org's area: refused before any read
    (exit 2). A local path is the caller's own file system, reached with no S3 keys."""
    from orgpipeline_api import source_paths

    if file.lower().startswith("s3:"):
        problem = source_paths.outside_source(file, spec.source.bucket, spec.source.prefix)
        if problem is None and not file.startswith("s3://"):
            problem = f"{file}: expected s3://bucket/key"
        if problem:
            raise CommandFailed(problem, 2)


def load(
    filename: Path = ManifestOpt,
    table: str = typer.Option(..., "--table", help="Table of the manifest."),
    output: Format = OutputOpt,
    mongo_uri: str | None = MongoOpt,
    mongo_db: str | None = MongoDbOpt,
    postgres_dsn: str | None = PostgresOpt,
) -> None:
    """Load pending versions from MongoDB into PostgreSQL with COPY."""
    from orgpipeline_jobs import pipeline

    trigger = _trigger(None)
    spec, settings = _setup(filename, mongo_uri, mongo_db, postgres_dsn, None)
    _finish(pipeline.run_load(settings, spec, table, trigger), output)


def run(
    filename: Path = ManifestOpt,
    table: str | None = typer.Option(None, "--table", help="One table; default: every table in turn."),
    user_id: str | None = typer.Option(
        None,
        "--user-id",
        help="Recorded as changed_by_user_id (default: ORGPIPELINE_TRIGGERED_BY, else you: user@host).",
    ),
    source_dir: str | None = typer.Option(
        None,
        "--source-dir",
        help="Read the table's files from a local directory instead of the manifest's bucket.",
    ),
    output: Format = OutputOpt,
    mongo_uri: str | None = MongoOpt,
    mongo_db: str | None = MongoDbOpt,
    postgres_dsn: str | None = PostgresOpt,
    s3_endpoint: str | None = S3Opt,
) -> None:
    """Ingest every new file of the table(s) under the manifest's source, loading as it goes."""
    from orgpipeline_jobs import pipeline

    trigger = _trigger(user_id)
    spec, settings = _setup(filename, mongo_uri, mongo_db, postgres_dsn, s3_endpoint)
    if table is not None:
        _finish(pipeline.run_table(settings, spec, table, None, source_dir, trigger), output)
        return
    results = [pipeline.run_table(settings, spec, t.name, None, source_dir, trigger) for t in spec.tables]
    order = {RunResult.Failed: 0, RunResult.Succeeded: 1, RunResult.NoNewFiles: 2}
    worst = min((r.result for r in results), key=lambda r: order[r])
    errors = "; ".join(f"{r.table}: {r.error}" for r in results if r.error)
    runs = [r.as_json() for r in results]
    emit({"command": "run", "result": worst.value, "error": errors or None, "runs": runs}, results, output)
    if worst == RunResult.Failed:
        raise CommandFailed(f"run failed: {errors or 'see the result'}")


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("load")(load)
    app.command("run")(run)
