"""`orgpipeline ingest | load | run`: the data-plane commands the scheduled Jobs also run.

Each records its trigger: the Job's ORGPIPELINE_TRIGGER / _TRIGGERED_BY / _TRIGGER_REASON (see
`orgpipeline_api.triggers`), or `manual` by `--user-id` when started by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from orgpipeline_cli import runcommand
from orgpipeline_cli.failure import CommandFailed
from orgpipeline_cli.results import Format

ManifestOpt = typer.Option(
    ..., "-f", "--filename", help="OrgPipeline manifest (the file kubectl apply takes)."
)
OutputOpt = typer.Option(Format.table, "-o", "--output", help="table (default) or json (one JSON object).")
MongoOpt = typer.Option(None, "--mongo-uri", help="Overrides ORGPIPELINE_MONGO_URI.")
MongoDbOpt = typer.Option(None, "--mongo-db", help="Overrides ORGPIPELINE_MONGO_DB.")
PostgresOpt = typer.Option(None, "--postgres-dsn", help="Overrides ORGPIPELINE_POSTGRES_DSN.")
S3Opt = typer.Option(None, "--s3-endpoint", help="Overrides ORGPIPELINE_S3_ENDPOINT.")


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

    trigger = runcommand.trigger_of(user_id)
    spec, settings = runcommand.setup(filename, mongo_uri, mongo_db, postgres_dsn, s3_endpoint)
    _check_in_source(spec, file)
    runcommand.finish(pipeline.run_ingest(settings, spec, table, file, trigger=trigger), output)


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

    trigger = runcommand.trigger_of(None)
    spec, settings = runcommand.setup(filename, mongo_uri, mongo_db, postgres_dsn, None)
    runcommand.finish(pipeline.run_load(settings, spec, table, trigger), output)


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
    runcommand.run(
        filename, table, user_id, source_dir, output, mongo_uri, mongo_db, postgres_dsn, s3_endpoint
    )


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("load")(load)
    app.command("run")(run)
