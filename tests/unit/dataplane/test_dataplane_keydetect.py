"""Business-key detection: the smallest never-empty unique set of columns, ids and dates first."""

from __future__ import annotations

import pyarrow as pa
from orgpipeline_api.v1alpha1 import Table
from orgpipeline_jobs import keydetect
from orgpipeline_jobs.ingest import detect_business_keys
from orgpipeline_jobs.source.csvstream import Batch


def _table(*columns: str | tuple[str, str]) -> Table:
    cols = [
        {"name": c, "type": "text"} if isinstance(c, str) else {"name": c[0], "type": c[1]} for c in columns
    ]
    return Table.model_validate({"name": "orders", "columns": cols})


def _detect(table: Table, rows: list[dict[str, str]]) -> list[str] | None:
    header = [c.name for c in table.columns]
    return keydetect.detect(table, header, [pa.array([r[h] for r in rows], pa.string()) for h in header])


def test_the_seeds_three_column_key_is_found() -> None:
    """No column is unique alone (orders repeat per customer and day): the seed's own example key."""
    table = _table("order_id", "customer_id", ("order_date", "date"), "amount", "status")
    rows = [
        {"order_id": f"ORD00{o}", "customer_id": f"CUST{c}", "order_date": f"2024-01-1{d}", "amount": "9",
         "status": "new"}
        for o in range(3) for c in range(3) for d in range(3)
    ]  # fmt: skip
    assert _detect(table, rows) == ["order_id", "customer_id", "order_date"]


def test_the_smallest_set_wins_and_ids_and_dates_come_first() -> None:
    table = _table("note", "email", "shop_id", ("day", "date"), "sku")
    rows = [
        {"note": str(i), "email": f"{i}@x", "shop_id": str(i % 4), "day": str(i // 4), "sku": str(i % 5)}
        for i in range(20)
    ]
    # `note` and `email` are unique alone: a single column beats any pair, the manifest order decides.
    assert _detect(table, rows) == ["note"]
    without_unique = _table("shop_id", ("day", "date"), "sku")
    # shop_id+day and shop_id+sku are both unique pairs: the id and the date are preferred.
    assert _detect(without_unique, rows) == ["shop_id", "day"]
    ids = _table("email", "customer_id")
    assert _detect(ids, [{"email": f"{i}@x", "customer_id": f"c{i}"} for i in range(5)]) == ["customer_id"]


def test_a_column_with_an_empty_value_is_never_part_of_the_key() -> None:
    table = _table("order_id", "line_no", "ref")
    rows = [
        {"order_id": str(i // 2), "line_no": str(i % 2), "ref": "" if i == 3 else f"r{i}"} for i in range(6)
    ]
    assert _detect(table, rows) == ["order_id", "line_no"]


def test_no_unique_set_is_none_and_ingest_falls_back_to_every_column() -> None:
    table = _table("a", "b")
    rows = [{"a": "1", "b": "1"}, {"a": "1", "b": "1"}]
    assert _detect(table, rows) is None
    header = ["a", "b"]
    batch = Batch(columns=[pa.array(["1", "1"]), pa.array(["1", "1"])], lines=pa.array([2, 3], pa.int64()))
    assert detect_business_keys(table, header, batch) == ["a", "b"]


def test_wide_files_are_bounded_by_the_candidates_and_combinations() -> None:
    """198 columns, none unique alone nor in any set: the search stops at its caps."""
    names = [f"c{i}" for i in range(198)]
    table = _table(*names)
    rows = [{n: str(r % 2) for n in names} for r in range(50)]
    assert _detect(table, rows) is None
    # The ids are tried first: a unique pair of ids is found past 198 other columns (200: the most).
    wide = _table(*names, "shop_id", "order_id")
    keyed = [{**r, "shop_id": str(i % 5), "order_id": str(i // 5)} for i, r in enumerate(rows)]
    assert _detect(wide, keyed) == ["shop_id", "order_id"]
