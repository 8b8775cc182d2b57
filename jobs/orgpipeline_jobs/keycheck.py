"""After a run: a detected business key that a file repeats is said once, and kept.

Detection (`keydetect`) proves a key unique on the table's first batch only. A later file, or a
later batch of the first, may repeat a key: its rows then apply in file order (the last wins) and
count as duplicates. Changing the key would re-key every stored version, so it stays; the run
reports a `BusinessKeyNotUnique` warning the first time (`warehouse.notices`), naming the key and the
files, and how to choose a key (spec.tables[].businessKeys).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from orgpipeline_api.run_report import AlertType, Breach

from orgpipeline_jobs.warehouse import notices


def not_unique(
    conn: psycopg.Connection[Any],
    org_id: str,
    table: str,
    keys: Sequence[str],
    detected: bool,
    duplicates: Sequence[tuple[str, int]],
) -> list[Breach]:
    """The breach of a detected key repeated within a file (`duplicates`: file name, rows), the
    first time only; none for keys the manifest gives (repeats are then the data's, counted in
    quality) or when the notice cannot be recorded."""
    repeated = [(name, n) for name, n in duplicates if n > 0]
    if not detected or not keys or not repeated:
        return []
    total = sum(n for _, n in repeated)
    files = ", ".join(f"{name} ({n})" for name, n in repeated[:5]) + (", ..." if len(repeated) > 5 else "")
    message = (
        f"detected business keys ({', '.join(keys)}) are not unique: {total} repeated row(s) in {files};"
        " the key is kept (later rows of a key replace earlier ones); set spec.tables[].businessKeys"
        " to choose one"
    )[:1024]
    try:
        if not notices.first_time(
            conn, org_id, table, AlertType.BusinessKeyNotUnique, ",".join(keys), message
        ):
            return []
    except psycopg.Error:
        return []
    return [Breach(type=AlertType.BusinessKeyNotUnique, message=message, value=float(total))]
