#!/usr/bin/env python3
"""Business-key detection on a wide first batch: time and memory (figures, no goal asserted).

`bench/keydetect.py --rows 50000 --columns 200`: the worst case tries every combination the caps
allow (no set unique), then the seed's case (a three-column key among many columns). Prints one
JSON line per case: the key found, seconds, how much the Arrow pool's peak grew during detection
(beyond the data's own peak) and the data's size.
"""

from __future__ import annotations

import argparse
import json
import time

import pyarrow as pa
from orgpipeline_api.v1alpha1 import Table
from orgpipeline_jobs import keydetect


def _case(name: str, columns: int, rows: int, keyed: bool, crowd: int = 0) -> dict[str, object]:
    fillers = [f"c{i}_id" if i < crowd else f"c{i}" for i in range(columns - 3)]
    names = [*fillers, "order_id", "customer_id", "order_date"]
    table = Table.model_validate({"name": "t", "columns": [{"name": n} for n in names]})
    data = [pa.array([str((r * 7 + i) % 50) for r in range(rows)]) for i in range(columns - 3)]
    third = int(rows ** (1 / 3)) + 1
    if keyed:
        data += [pa.array([str(r // (third * third)) for r in range(rows)]),
                 pa.array([str((r // third) % third) for r in range(rows)]),
                 pa.array([f"2024-01-{r % third:02}" for r in range(rows)])]  # fmt: skip
    else:
        data += [pa.array([str(r % 3) for r in range(rows)]) for _ in range(3)]
    pool = pa.default_memory_pool()
    base = pool.max_memory()
    started = time.perf_counter()
    found = keydetect.detect(table, names, data)
    seconds = time.perf_counter() - started
    return {"case": name, "rows": rows, "columns": columns, "found": found, "seconds": round(seconds, 3),
            "arrow_peak_growth_mb": round((pool.max_memory() - base) / 2**20, 1),
            "data_mb": round(sum(a.nbytes for a in data) / 2**20, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--columns", type=int, default=200)
    args = parser.parse_args()
    cases = (
        ("no key (every allowed combination tried)", False, 0),
        ("3-column key among other columns", True, 0),
        # A known limit: more never-empty id columns than MAX_CANDIDATES, each with more distinct
        # values than the key's: the key is not among the candidates (set businessKeys then).
        ("3-column key behind 20 other id columns", True, 20),
    )
    for name, keyed, crowd in cases:
        print(json.dumps(_case(name, args.columns, args.rows, keyed, crowd)))


if __name__ == "__main__":
    main()
