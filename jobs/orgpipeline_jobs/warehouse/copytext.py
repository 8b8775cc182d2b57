"""PostgreSQL COPY text format built from whole pyarrow columns: no per-row Python on the way in."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

_COPY_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


_NEEDS_ESCAPE = r"[\\\t\n\r]"


def _escaped(column: pa.Array) -> pa.Array:
    if not pa.types.is_string(column.type):
        return pc.fill_null(pc.cast(column, pa.string()), "\\N")
    if pc.any(pc.match_substring_regex(column, _NEEDS_ESCAPE)).as_py():
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
