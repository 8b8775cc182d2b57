"""The text kept with a rejected row: bounded, and as one CSV record (shared by the CSV stream that
stores it and the `rejected` command that writes it back out)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

MAX_RAW_TEXT = 64 * 1024
"""Characters of a rejected row's text that are kept (a row with a field over max_field_bytes is
rejected for its size: its text is cut here, and marked so)."""


def raw_text(text: str) -> tuple[str, bool]:
    """The text as stored with a rejected row: at most MAX_RAW_TEXT characters, and whether it was cut.
    A NUL becomes U+FFFD (PostgreSQL text cannot hold one; the user still sees where it was)."""
    text = text.replace("\x00", "\ufffd")
    if len(text) <= MAX_RAW_TEXT:
        return text, False
    return text[:MAX_RAW_TEXT], True


def csv_record(values: Sequence[str]) -> str:
    """One CSV record of `values` (quoted where needed), without the line end."""
    out = io.StringIO()
    # The writer quotes a value holding \r or \n only when they are in its line end: write it, drop it.
    csv.writer(out, lineterminator="\r\n").writerow(values)
    return out.getvalue()[:-2]
