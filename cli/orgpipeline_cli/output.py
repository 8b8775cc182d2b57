"""Printing a command's result: a rich table for people (default) or one JSON object (`-o json`)."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.table import Table


class Format(StrEnum):
    table = "table"
    json = "json"


COUNT_FIELDS = ["rows_read", "inserted", "updated", "deleted", "unchanged", "rejected"]
"""The row counts of a run and of each of its files."""
SUMMARY_FIELDS = [
    "run_id",
    "org_id",
    "table",
    "command",
    "result",
    *COUNT_FIELDS,
    "blank_lines",
    "duplicates",
    "loaded",
    "quality_score",
    "completeness_score",
    "validity_score",
    "consistency_score",
    "error_rate_percent",
    "business_keys",
    "duration_seconds",
    "error",
]
FILE_FIELDS = ["name", "status", *COUNT_FIELDS, "error"]


def emit(result: dict[str, Any], fmt: Format) -> None:
    if fmt == Format.json:
        print(json.dumps(result, default=str, ensure_ascii=False))
        return
    console = Console()
    results = result.get("runs") or [result]
    for one in results:
        summary = Table(show_header=False, box=None, pad_edge=False)
        summary.add_column(style="bold")
        summary.add_column()
        for name in SUMMARY_FIELDS:
            value = one.get(name)
            if value in (None, [], "") and name in ("error", "business_keys"):
                continue
            summary.add_row(name, ", ".join(map(str, value)) if isinstance(value, list) else str(value))
        console.print(summary)
        if one.get("files"):
            files = Table(title="files")
            for name in FILE_FIELDS:
                files.add_column(name)
            for item in one["files"]:
                files.add_row(*(str(item.get(n) if item.get(n) is not None else "") for n in FILE_FIELDS))
            console.print(files)
        for breach in one.get("breaches", []):
            console.print(f"[yellow]breach[/yellow] {breach['type']}: {breach['message']}")
        issues = (one.get("quality_report") or {}).get("quality_issues", [])
        for issue in issues[:10]:
            console.print(
                f"issue {issue['issue_type']} {issue['field'] or ''}: {issue['count']} "
                f"({issue['percentage']}%)"
            )
