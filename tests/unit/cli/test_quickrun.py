"""`orgpipeline run` parsed without typer (`quickrun`): the plain forms of its options, each to the
parameter typer gives it; anything else is left to typer (None)."""

from __future__ import annotations

from pathlib import Path

import typer
import typer.main
from orgpipeline_cli import pipeline, quickrun
from orgpipeline_cli.results import Format


def test_plain_options_are_read_as_typer_reads_them() -> None:
    argv = ["run", "-f", "m.yaml", "--table", "orders", "-o", "json", "--user-id=ops@x", "--table", "t2"]
    assert quickrun.parse(argv) == {
        "filename": Path("m.yaml"),
        "table": "t2",  # the last one counts, as with click
        "output": Format.json,
        "user_id": "ops@x",
    }
    assert quickrun.parse(["run", "--filename=m.yaml"]) == {"filename": Path("m.yaml")}


def test_anything_else_is_left_to_typer() -> None:
    for argv in (
        ["run"],  # no manifest: typer says it is missing
        ["run", "--help"],
        ["run", "-f", "m.yaml", "--no-such"],
        ["run", "-f"],
        ["run", "-f", "--table", "orders"],
        ["run", "-f", "m.yaml", "-o", "yaml"],
        ["run", "-f", "m.yaml", "extra"],
        ["run", "-fm.yaml"],
        ["ingest", "-f", "m.yaml"],
        [],
    ):
        assert quickrun.parse(argv) is None, argv


def test_every_option_it_reads_is_typers_for_the_same_parameter() -> None:
    app = typer.Typer()
    pipeline.register(app)
    command = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    typer_options = {opt: p.name for p in command.params for opt in p.opts}
    assert {o: typer_options.get(o) for o in quickrun.OPTIONS} == quickrun.OPTIONS
    assert set(typer_options) - {"--help"} == set(quickrun.OPTIONS)
