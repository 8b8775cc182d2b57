"""Printing a command's result: a rich table for people (default) or one JSON object (`-o json`)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table as RichTable

from orgpipeline_cli.results import FILE_FIELDS, Format, emit

__all__ = ["FILE_FIELDS", "Format", "Table", "emit"]


class Table(RichTable):
    """The CLI's only kind of table: every text cell, title and caption is printed as it is.

    Rich reads `[...]` in a str as markup, so a stored value, file name or reason such as `[/]`
    would crash the command (or restyle its output); here str is escaped, and `rich.text.Text`
    cells (already literal) pass through. Every command makes its tables with this class."""

    def __init__(self, *headers: Any, **kwargs: Any) -> None:
        for name in ("title", "caption"):
            if isinstance(kwargs.get(name), str):
                kwargs[name] = escape(kwargs[name])
        super().__init__(*(escape(h) if isinstance(h, str) else h for h in headers), **kwargs)

    def add_column(self, header: Any = "", *args: Any, **kwargs: Any) -> None:
        super().add_column(escape(header) if isinstance(header, str) else header, *args, **kwargs)

    def add_row(self, *cells: Any, **kwargs: Any) -> None:
        super().add_row(*(escape(c) if isinstance(c, str) else c for c in cells), **kwargs)
