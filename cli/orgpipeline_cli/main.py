"""The `orgpipeline` command line: the typer app and the entry point that owns error handling.

Command modules register themselves: each module named in COMMAND_MODULES (the one registry) has a
`register(app: typer.Typer) -> None`. Adding a command group is one line here.

Errors a user can cause (bad manifest, unknown table, unreadable file, unreachable server) end as
one line on stderr and exit status 1; usage errors exit 2; nothing prints a traceback unless
ORGPIPELINE_DEBUG=1.
"""

from __future__ import annotations

import importlib
import os
import sys

import click
import typer

COMMAND_MODULES = [
    "orgpipeline_cli.pipeline",  # ingest, load, run
    "orgpipeline_cli.manage.reports",  # status, metrics, alerts
    "orgpipeline_cli.manage.history",  # quality, audit
    "orgpipeline_cli.manage.integrity",  # validate, retention
    "orgpipeline_cli.manage.seedschemas",  # import-schemas
    "orgpipeline_cli.manage.governance",  # export, compliance
    "orgpipeline_cli.manage.rejected",  # rejected
    "orgpipeline_cli.manage.files",  # files, files retry
    "orgpipeline_cli.manage.runnow",  # run-now
    "orgpipeline_cli.manage.health",  # health
    "orgpipeline_cli.manage.classify",  # classify
]
"""The one registry of commands, in the order `--help` lists them (imported when the app runs)."""

app = typer.Typer(
    name="orgpipeline",
    help="Per-tenant data pipeline: CSV files in S3 -> MongoDB raw landing -> PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class CommandFailed(Exception):
    """A command that printed its result and must still exit non-zero (e.g. result Failed)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


def _fail(message: str, code: int) -> None:
    text = " ".join(str(message).split()) or "failed"
    print(f"orgpipeline: error: {text}", file=sys.stderr)
    sys.exit(code)


def run() -> None:
    """Console-script entry point."""
    from orgpipeline_api.errors import PipelineError
    from orgpipeline_api.v1alpha1 import ManifestError

    _register()
    try:
        app(standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CommandFailed as exc:
        _fail(str(exc), exc.code)
    except (ManifestError, PipelineError) as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        if os.environ.get("ORGPIPELINE_DEBUG") == "1":
            raise
        # Recent typer raises usage errors from its own copy of click: recognise them by shape.
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            if type(exc).__name__ == "Abort":
                _fail("aborted", 130)
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        _fail(f"{type(exc).__name__}: {exc}", 1)


if __name__ == "__main__":
    run()
