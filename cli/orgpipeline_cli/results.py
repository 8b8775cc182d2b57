"""A command's result printed: one JSON object (`-o json`), or rich tables for people (default).

Apart from `output` (the tables) so that a `-o json` run, what the scheduled Jobs print, imports no
rich: its ~60 ms of imports are a sixth of a run with nothing new.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from orgpipeline_api.run_report import ROW_COUNT_FIELDS, RunReport


class Format(StrEnum):
    table = "table"
    json = "json"


FILE_FIELDS = ["name", "status", *ROW_COUNT_FIELDS, "error"]


def emit(document: dict[str, Any], reports: Sequence[RunReport], fmt: Format) -> None:
    """Prints `document` whole as JSON, or each run report as tables for people."""
    if fmt == Format.json:
        print(json.dumps(document, default=str, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.markup import escape

    from orgpipeline_cli.output import Table

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
