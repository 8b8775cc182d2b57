"""`orgpipeline run` as a scheduled Job writes it, parsed without typer.

Building the typer app (typer, click and their imports) was a sixth of a run with nothing new.
`parse` takes the plain forms of `run`'s options only; anything else (help, an unknown or
incomplete option, a bad `-o`, an argument) returns None and the command line goes through typer
as before, so usage errors and help read the same. `runcommand.run` does the work either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orgpipeline_cli.results import Format

OPTIONS = {
    "-f": "filename",
    "--filename": "filename",
    "--table": "table",
    "--user-id": "user_id",
    "--source-dir": "source_dir",
    "-o": "output",
    "--output": "output",
    "--mongo-uri": "mongo_uri",
    "--mongo-db": "mongo_db",
    "--postgres-dsn": "postgres_dsn",
    "--s3-endpoint": "s3_endpoint",
}
"""`run`'s options (typer's names for them) and the parameter each sets."""


def parse(argv: list[str]) -> dict[str, Any] | None:
    """The keyword arguments of `runcommand.run` for `run OPTIONS...`, or None for typer to parse."""
    if argv[:1] != ["run"]:
        return None
    values: dict[str, Any] = {}
    rest = argv[1:]
    while rest:
        word = rest.pop(0)
        name, equals, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if name not in OPTIONS:
            return None
        if not equals:
            if not rest or rest[0].startswith("-"):
                return None  # no value, or an option where the value should be: typer says which
            value = rest.pop(0)
        values[OPTIONS[name]] = value  # the last one counts, as with click
    if "filename" not in values:
        return None
    if "output" in values:
        if values["output"] not in Format.__members__:
            return None
        values["output"] = Format(values["output"])
    values["filename"] = Path(values["filename"])
    return values


def run(values: dict[str, Any]) -> None:
    from orgpipeline_cli import runcommand

    runcommand.run(**values)
