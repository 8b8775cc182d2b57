"""What `orgpipeline ingest | load | run` do once their options are parsed, without typer: the
typer commands (`orgpipeline_cli.pipeline`) and the `run` fast path (`orgpipeline_cli.quickrun`)
both call these, so the two ways in do the same thing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from orgpipeline_api.run_report import RunReport, RunResult

from orgpipeline_cli.failure import CommandFailed
from orgpipeline_cli.results import Format, emit


def setup(
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


def trigger_of(user_id: str | None) -> Any:
    """Who started this command and why; a bad ORGPIPELINE_TRIGGER is a usage error (exit 2)."""
    from orgpipeline_api import triggers

    try:
        return triggers.from_env(os.environ, user_id)
    except triggers.TriggerError as exc:
        raise CommandFailed(str(exc), 2) from None


def finish(result: RunReport, output: Format) -> None:
    emit(result.as_json(), [result], output)
    if result.result == RunResult.Failed:
        raise CommandFailed(f"{result.command} failed: {result.error or 'see the result'}")


def run(
    filename: Path,
    table: str | None = None,
    user_id: str | None = None,
    source_dir: str | None = None,
    output: Format = Format.table,
    mongo_uri: str | None = None,
    mongo_db: str | None = None,
    postgres_dsn: str | None = None,
    s3_endpoint: str | None = None,
) -> None:
    """`orgpipeline run`: every new file of the table(s), one result (or one per table)."""
    from orgpipeline_jobs import pipeline

    trigger = trigger_of(user_id)
    spec, settings = setup(filename, mongo_uri, mongo_db, postgres_dsn, s3_endpoint)
    if table is not None:
        finish(pipeline.run_table(settings, spec, table, None, source_dir, trigger), output)
        return
    results = [pipeline.run_table(settings, spec, t.name, None, source_dir, trigger) for t in spec.tables]
    order = {RunResult.Failed: 0, RunResult.Succeeded: 1, RunResult.NoNewFiles: 2}
    worst = min((r.result for r in results), key=lambda r: order[r])
    errors = "; ".join(f"{r.table}: {r.error}" for r in results if r.error)
    runs = [r.as_json() for r in results]
    emit({"command": "run", "result": worst.value, "error": errors or None, "runs": runs}, results, output)
    if worst == RunResult.Failed:
        raise CommandFailed(f"run failed: {errors or 'see the result'}")
