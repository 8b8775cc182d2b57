"""The `orgpipeline` command line: the typer app and the entry point that owns error handling.

A plain `orgpipeline run -f M ...` (what the scheduled Jobs run) is parsed without typer
(`quickrun`); every other command line, help and usage errors included, goes through typer.

Command modules register themselves: each module named in COMMANDS (the one registry) has a
`register(app: typer.Typer) -> None`. Adding a command group is one line here.

Errors a user can cause (bad manifest, unknown table, unreadable file, unreachable server) end as
one line on stderr and exit status 1; usage errors exit 2; nothing prints a traceback unless
ORGPIPELINE_DEBUG=1.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from orgpipeline_cli.failure import CommandFailed

if TYPE_CHECKING:
    import typer

COMMANDS = {
    "orgpipeline_cli.pipeline": ("ingest", "load", "run"),
    "orgpipeline_cli.manage.reports": ("status", "metrics", "alerts"),
    "orgpipeline_cli.manage.history": ("quality", "audit"),
    "orgpipeline_cli.manage.integrity": ("validate", "retention"),
    "orgpipeline_cli.manage.seedschemas": ("import-schemas",),
    "orgpipeline_cli.manage.governance": ("export", "compliance"),
    "orgpipeline_cli.manage.rejected": ("rejected",),
    "orgpipeline_cli.manage.files": ("files",),
    "orgpipeline_cli.manage.runnow": ("run-now",),
    "orgpipeline_cli.manage.health": ("health",),
    "orgpipeline_cli.manage.classify": ("classify",),
    "orgpipeline_console.cli": ("console",),
}
"""The one registry of commands: each module and the command names its `register` adds, in the
order `--help` lists them. A command line naming one of them imports that module alone (a
scheduled `orgpipeline run` pays for none of the reporting commands' imports)."""
COMMAND_MODULES = list(COMMANDS)

__all__ = ["COMMANDS", "COMMAND_MODULES", "CommandFailed", "make_app", "modules_for", "run"]


def make_app(argv: list[str]) -> typer.Typer:
    """The typer app with the commands `argv` needs (`modules_for`). Built only when the command
    line is not a plain `run` (`quickrun`): typer and click are a sixth of a short run."""
    import typer

    app = typer.Typer(
        name="orgpipeline",
        help="Per-tenant data pipeline: CSV files in S3 -> MongoDB raw landing -> PostgreSQL.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _group() -> None:
        # A callback keeps the app a group of commands even when one module registers one command.
        pass

    for name in modules_for(argv):
        importlib.import_module(name).register(app)
    return app


def modules_for(argv: list[str]) -> list[str]:
    """The command modules a command line needs: the one whose command it names, else all (help,
    a typo, an option first) so that click lists or suggests every command."""
    first = argv[0] if argv else ""
    for module, names in COMMANDS.items():
        if first in names:
            return [module]
    return COMMAND_MODULES


def _exit(code: int) -> None:
    """Ends the process once the command is done: stdout, stderr and logging flushed, then
    os._exit, skipping the interpreter's teardown. That teardown is a third of a short run's
    wall time (pymongo's atexit joins its monitor threads, each asleep for up to 0.5 s, and
    freeing every module's objects takes ~0.15 s more); nothing in it is the run's: results are
    committed and printed, connections closed, files closed by their `with` blocks."""
    import logging

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1  # stdout closed or full: the result did not reach the reader
    logging.shutdown()
    os._exit(code)


def _fail(message: str, code: int) -> None:
    text = " ".join(str(message).split()) or "failed"
    print(f"orgpipeline: error: {text}", file=sys.stderr)
    sys.exit(code)


def _code(exc: SystemExit) -> int:
    """The exit status `sys.exit(code)` asks for (None: 0; a message: printed, 1), as Python does."""
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1


def run() -> None:
    """Console-script entry point: runs the command and ends the process (`_exit`)."""
    # pydantic looks for plugins in every installed distribution's entry points when it builds its
    # first model; the command line uses none, and the search cost a short run tens of ms.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    if os.environ.get("ORGPIPELINE_DEBUG") == "1":
        _main()  # the interpreter's own exit, tracebacks and all
        return
    try:
        _main()
    except SystemExit as exc:
        _exit(_code(exc))
    _exit(0)


def _main() -> None:
    from orgpipeline_cli import quickrun

    argv = sys.argv[1:]
    quick = quickrun.parse(argv)
    if quick is not None:
        _guarded(lambda: quickrun.run(quick))
    else:
        _guarded(lambda: make_app(argv)(args=argv, standalone_mode=False))


def _guarded(command: Callable[[], object]) -> None:
    """Runs the command; what a user can cause ends as one line (`_fail`) or click's usage text."""
    from orgpipeline_api.errors import PipelineError
    from orgpipeline_api.v1alpha1 import ManifestError

    try:
        command()
    except CommandFailed as exc:
        _fail(str(exc), exc.code)
    except (ManifestError, PipelineError) as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        if os.environ.get("ORGPIPELINE_DEBUG") == "1":
            raise
        # click's errors, and recent typer's from its own copy of click, known by name and shape:
        # a typer-free `run` (`quickrun`) has not imported click to compare classes with.
        if type(exc).__name__ == "Abort":
            _fail("aborted", 130)
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        _fail(f"{type(exc).__name__}: {exc}", 1)


if __name__ == "__main__":
    run()
