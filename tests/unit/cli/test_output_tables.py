"""The CLI's tables print user text as it is: Rich markup in a value is data, not style."""

from __future__ import annotations

import io
import re
from pathlib import Path

from orgpipeline_cli.output import Table
from rich.console import Console
from rich.text import Text

CLI = Path(__file__).resolve().parents[3] / "cli" / "orgpipeline_cli"


def test_markup_in_cells_titles_and_headers_is_printed_as_it_is() -> None:
    table = Table(title="rows of [/]x", caption="[bold]c")
    table.add_column("[red]head")
    table.add_column("two")
    table.add_row("[/]", Text("[link=http://x]t[/link]"))
    table.add_row("a[b]c[/b]", "[/bold]")
    out = Console(file=io.StringIO(), width=200, color_system=None)
    out.print(table)
    text = out.file.getvalue()  # type: ignore[attr-defined]
    for shown in (
        "rows of [/]x",
        "[bold]c",
        "[red]head",
        "[/]",
        "[link=http://x]t[/link]",
        "a[b]c[/b]",
        "[/bold]",
    ):
        assert shown in text


def test_every_table_of_the_cli_is_made_by_output_table() -> None:
    """One place escapes: a module that made its own rich Table would print values as markup."""
    direct = [
        str(path.relative_to(CLI))
        for path in CLI.rglob("*.py")
        if re.search(r"from rich\.table import|rich\.table\.Table", path.read_text())
        and path.name != "output.py"
    ]
    assert direct == []


def test_no_cell_of_the_cli_is_written_as_markup() -> None:
    """Table cells are escaped, so a cell written as markup (`"[red]DIFFERS[/red]"`) would show its
    tags (as `alerts`, `status`, `validate` and `health` did): styled cells are `Text(..., style=)`."""
    markup = re.compile(r"""f?["']\[(?:/?(?:red|green|yellow|bold|dim)|\{)[^"']*\]""")
    found = [
        f"{path.relative_to(CLI)}:{n}"
        for path in sorted(CLI.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if markup.search(line) and "add_row" not in line and "console" not in line and "print(" not in line
    ]
    assert found == []
