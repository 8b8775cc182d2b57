"""Hostile rows through a real run (S3, PostgreSQL, FerretDB): one bad record costs one rejected
row, the rest of its file loads, and the table keeps loading the files after it."""

from __future__ import annotations

import time
from typing import Any

from conftest import Org, order, orders_csv

MIB = 1 << 20


def accounted(result: dict[str, Any]) -> bool:
    return bool(
        result["rows_read"]
        == result["inserted"] + result["updated"] + result["unchanged"] + result["rejected"]
    )


def test_a_nul_past_the_first_8_kib_rejects_one_row_and_later_files_load(org: Org) -> None:
    rows = [order(i, note=f"an ordinary note for order {i}") for i in range(400)]
    rows[300] = order(300, note="before\x00after")
    data = orders_csv(rows).encode()
    assert data.index(b"\x00") > 8192 and len(data) > 20_000
    org.upload("orders_1.csv", data)
    result = org.run()
    assert result["result"] == "Succeeded", result.get("error")
    assert (result["rows_read"], result["inserted"], result["rejected"]) == (400, 399, 1)
    assert accounted(result)
    rejected = org.sql("SELECT line, issue_type, reason FROM {schema}.raw_orders_rejected_rows")
    assert [(line, kind) for line, kind, _ in rejected] == [(302, "nul_byte")]
    assert "note" in rejected[0][2] and "NUL" in rejected[0][2]
    org.upload("orders_2.csv", orders_csv([order(1000)]))
    again = org.run()
    assert again["result"] == "Succeeded" and again["inserted"] == 1
    assert org.sql("SELECT count(*) FROM {schema}.raw_orders WHERE order_id = 'O1000'") == [(1,)]


def test_the_example_pattern_on_a_pattern_killer_value_takes_no_time(org: Org) -> None:
    killer = "a@" + "." * 200_000 + "@"
    org.upload("orders_1.csv", orders_csv([order(1), (*order(2)[:6], killer, "n")]))
    started = time.monotonic()
    result = org.run()
    assert time.monotonic() - started < 30
    assert result["result"] == "Succeeded" and (result["inserted"], result["rejected"]) == (2, 0)
    quality = org.sql("SELECT data_quality->>'status' FROM {schema}.raw_orders WHERE order_id = 'O2'")
    assert quality == [("WARNING",)]


def test_a_record_over_the_document_limit_is_rejected_before_any_store_takes_it(org: Org) -> None:
    """17 values of just under 1 MiB: each field is within its limit, the record is not (a
    document over MongoDB's 16 MiB would be committed to the outbox and refused for ever)."""
    wide = [f"c{i}" for i in range(17)]
    columns = [{"name": "order_id", "type": "text", "required": True}] + [
        {"name": c, "type": "text"} for c in wide
    ]
    org.rewrite(orders={"columns": columns, "businessKeys": ["order_id"]})
    header = ",".join(["order_id", *wide])
    small = ",".join(["O1", *("v" for _ in wide)])
    huge = ",".join(["O2", *("x" * 1_000_000 for _ in wide)])
    org.upload("orders_1.csv", f"{header}\n{small}\n{huge}\n{small.replace('O1', 'O3')}\n")
    result = org.run()
    assert result["result"] == "Succeeded", result.get("error")
    assert (result["rows_read"], result["inserted"], result["rejected"]) == (3, 2, 1)
    assert accounted(result)
    rejected = org.sql("SELECT line, issue_type, reason FROM {schema}.raw_orders_rejected_rows")
    assert [(line, kind) for line, kind, _ in rejected] == [(3, "record_too_large")]
    assert "MiB" in rejected[0][2] or "bytes" in rejected[0][2]
    assert org.sql("SELECT count(*) FROM {schema}.raw_orders_outbox") == [(0,)]
    assert org.collection().count_documents({}) == 2
    org.upload("orders_2.csv", f"{header}\n{small.replace('O1', 'O4')}\n")
    again = org.run()
    assert again["result"] == "Succeeded" and again["inserted"] == 1
