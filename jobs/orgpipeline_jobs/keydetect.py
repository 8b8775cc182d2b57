"""Business-key detection: the smallest set of columns that identifies every row of a table's first
batch, when the manifest names no business keys.

The seed's own example key has three columns (`ORD001_CUST456_2024-01-15`); a table without a
unique single column used to fall back to every column, so each changed row became an INSERT rather
than an UPDATE. Here the search goes by size (1, then 2, ... up to MAX_KEY_COLUMNS) and, within a
size, by preference: `*_id` / `id` columns first, then date columns, then the others, in manifest
order. A set qualifies when no row has an empty (or missing) value in it and no two rows share its
values.

Bounded on wide files: only the MAX_CANDIDATES most promising never-empty columns are combined,
each column is dictionary-encoded once (int codes), a combination is first tried on the first
PROBE_ROWS rows (most fail there), combinations whose distinct counts multiply to fewer than the
rows are skipped unseen, and at most MAX_COMBINATIONS combinations are tried in all.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from orgpipeline_api.v1alpha1 import Table

INT64_MAX = 2**63 - 1
MAX_KEY_COLUMNS = 4
MAX_CANDIDATES = 12
"""Never-empty columns combined at most (C(12, 4) = 495 sets of four)."""
MAX_COMBINATIONS = 1000
PROBE_ROWS = 2048
DATE_TYPES = ("date", "timestamp", "timestamptz")


@dataclass(frozen=True)
class _Column:
    name: str
    order: int
    rank: int
    """0: an id, 1: a date, 2: any other column."""
    distinct: int
    codes: pa.Array
    """The column's dictionary codes (int64), one per row."""


def preference(name: str, type_: str) -> int:
    """0 for `id` / `*_id` (`*Id`), 1 for a date column (by type, or `date` in its name), 2 else."""
    lowered = name.lower()
    if lowered == "id" or lowered.endswith("_id") or name.endswith("Id"):
        return 0
    if type_.lower().split("(")[0].strip() in DATE_TYPES or "date" in lowered:
        return 1
    return 2


def _complete(column: pa.Array) -> bool:
    """No row without a value (null, or the empty string the CSV reader gives an empty cell)."""
    if column.null_count:
        return False
    return not pc.any(pc.equal(column.cast(pa.string()), "")).as_py()


def _unique(columns: Sequence[_Column], rows: int) -> bool:
    """Whether the columns' values, as tuples, are distinct over the first `rows` rows."""
    if math.prod(max(c.distinct, 1) for c in columns) > INT64_MAX:
        # Too many combinations for one int64 code: group the code columns instead (rare).
        grouped = pa.table({str(i): c.codes.slice(0, rows) for i, c in enumerate(columns)})
        return grouped.group_by(list(grouped.column_names)).aggregate([]).num_rows == rows
    # Mixed-radix: code = ((c1 * d2) + c2) * d3 + c3 ..., exact in int64 (checked above).
    key = columns[0].codes.slice(0, rows)
    for c in columns[1:]:
        key = pc.add(pc.multiply(key, c.distinct), c.codes.slice(0, rows))
    return int(pc.count_distinct(key).as_py()) == rows


def detect(table: Table, header: Sequence[str], columns: Sequence[pa.Array]) -> list[str] | None:
    """The business keys of a first batch (`columns` in `header` order), or None when no set of up
    to MAX_KEY_COLUMNS manifest columns is unique and never empty."""
    rows = len(columns[0]) if columns else 0
    if rows == 0:
        return None
    found: list[tuple[int, int, int, str, pa.Array]] = []
    for order, col in enumerate(table.columns):
        if col.name not in header:
            continue
        values = columns[header.index(col.name)]
        if _complete(values):
            rank = preference(col.name, col.type)
            found.append((rank, -int(pc.count_distinct(values).as_py()), order, col.name, values))
    # Ids and dates first; among equals, the more distinct (closer to unique), then manifest order.
    # Only the candidates are encoded: memory is MAX_CANDIDATES code columns, whatever the width.
    found.sort(key=lambda f: f[:3])
    candidates = []
    for rank, _, order, name, values in found[:MAX_CANDIDATES]:
        encoded = pc.dictionary_encode(values.cast(pa.string()))
        codes = encoded.indices.cast(pa.int64())
        candidates.append(_Column(name, order, rank, len(encoded.dictionary), codes))
    probe = min(rows, PROBE_ROWS)
    tried = 0
    for size in range(1, MAX_KEY_COLUMNS + 1):
        combos = sorted(
            itertools.combinations(candidates, size),
            key=lambda cs: (sum(c.rank for c in cs), [c.order for c in sorted(cs, key=lambda c: c.order)]),
        )
        for combo in combos:
            if math.prod(c.distinct for c in combo) < rows:
                continue  # cannot tell `rows` rows apart
            tried += 1
            if tried > MAX_COMBINATIONS:
                return None
            if _unique(combo, probe) and (probe == rows or _unique(combo, rows)):
                return [c.name for c in sorted(combo, key=lambda c: c.order)]
    return None
