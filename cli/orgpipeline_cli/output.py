"""Printing a command's result: a rich table for people (default) or one JSON object (`-o json`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from orgpipeline_api.run_report import ROW_COUNT_FIELDS, RunReport
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable


class Format(StrEnum):
    table = "table"
    json = "json"


FILE_FIELDS = ["name", "status", *ROW_COUNT_FIELDS, "error"]


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


def emit(document: dict[str, Any], reports: Sequence[RunReport], fmt: Format) -> None:
    """Prints `document` whole as JSON, or each run report as tables for people."""
    if fmt == Format.json:
        print(json.dumps(document, default=str, ensure_ascii=False))
        return
    console = Console()
    for report in reports:
        one = report.as_json()
        summary = Table(show_header=False, box=None, pad_edge=False)
        summary.add_column(style="bold")
        summary.add_column()
        for name in RunReport.summary_fields():
            value = one.get(name)
            if value in (None, [], "") and name in ("error", "business_keys"):
                continue
            summary.add_row(name, ", ".join(map(str, value)) if isinstance(value, list) else str(value))
        console.print(summary)
        if one["files"]:
            files = Table(title="files")
            for name in FILE_FIELDS:
                files.add_column(name)
            for item in one["files"]:
                files.add_row(*(str(item.get(n) if item.get(n) is not None else "") for n in FILE_FIELDS))
            console.print(files)
        for breach in report.breaches:
            console.print(f"[yellow]breach[/yellow] {escape(f'{breach.type}: {breach.message}')}")
        issues = (report.quality_report or {}).get("quality_issues", [])
        for issue in issues[:10]:
            console.print(
                f"issue {issue['issue_type']} {issue['field'] or ''}: {issue['count']} "
                f"({issue['percentage']}%)",
                markup=False,
            )
