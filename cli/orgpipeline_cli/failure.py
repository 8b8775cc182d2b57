"""The error a command raises to print its one line and exit non-zero (no typer: the `run` fast
path, `orgpipeline_cli.quickrun`, raises it without importing the command-line framework)."""

from __future__ import annotations


class CommandFailed(Exception):
    """A command that printed its result and must still exit non-zero (e.g. result Failed)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
