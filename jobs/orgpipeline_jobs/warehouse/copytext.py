"""PostgreSQL COPY text format built from whole pyarrow columns: no per-row Python on the way in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from orgpipeline_jobs import arrowtext

_COPY_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
"""Backslash first, so no escape is escaped again."""

_SPECIAL = "".join(char for char, _ in _COPY_ESCAPES).encode()


def _escaped(column: pa.Array) -> pa.Array:
    if not pa.types.is_string(column.type):
        return pc.fill_null(pc.cast(column, pa.string()), "\\N")
    if arrowtext.holds_any(column, _SPECIAL):
        for char, code in _COPY_ESCAPES:
            column = pc.replace_substring(column, char, code)
    return pc.fill_null(column, "\\N")


def copy_text(columns: Sequence[pa.Array]) -> list[memoryview]:
    """Rows given column-wise, in COPY's text format (escaped, nulls as \\N, a newline after each
    row), as buffers to write in order; joined by pyarrow, no per-row Python."""
    lines = pc.binary_join_element_wise(*[_escaped(c) for c in columns], "\t")
    if not len(lines):
        return []
    whole = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines), "\n")
    return [memoryview(whole[0].as_buffer()), memoryview(b"\n")]


def send(
    conn: psycopg.Connection[Any], target: sql.Composable, columns: Sequence[str], text: Sequence[memoryview]
) -> None:
    """COPY of ready COPY text (`copy_text`) into the target's columns."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        target, sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for part in text:
            copy.write(part)
