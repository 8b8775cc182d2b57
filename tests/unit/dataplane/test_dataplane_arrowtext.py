"""Byte scans of whole columns: the fast paths that decide whether a column needs escaping."""

from __future__ import annotations

import pyarrow as pa
from orgpipeline_jobs import arrowtext, versions


def test_holds_any_finds_a_character_anywhere_in_the_column() -> None:
    column = pa.array(["plain", None, "tab\there", ""])
    assert arrowtext.holds_any(column, b"\t")
    assert arrowtext.holds_any(column, b"\\\t\n\r")
    assert not arrowtext.holds_any(column, b"\n\r")
    # the translate path (many characters) agrees with the find path
    assert arrowtext.holds_any(column, bytes(range(32)))
    assert not arrowtext.holds_any(pa.array(["plain", "text"]), bytes(range(32)) + b'"\\')


def test_holds_any_never_misses_in_a_slice_and_handles_empty_columns() -> None:
    column = pa.array(["a", "b\n", "c"])
    assert arrowtext.holds_any(column.slice(1, 1), b"\n")
    assert not arrowtext.holds_any(pa.array([], pa.string()), b"\n")
    assert not arrowtext.holds_any(pa.array([None, None], pa.string()), b"\n")
    assert arrowtext.holds_any(pa.array([b"x\ny"], pa.binary()), b"\n")


def test_repeated_keys_marks_every_row_of_a_key_seen_twice() -> None:
    assert versions.repeated_keys(pa.array(["a", "b", "c"])).to_pylist() == [False, False, False]
    assert versions.repeated_keys(pa.array(["a", "b", "a", "c", "b"])).to_pylist() == [
        True,
        True,
        True,
        False,
        True,
    ]
    assert versions.repeated_keys(pa.array([], pa.string())).to_pylist() == []
