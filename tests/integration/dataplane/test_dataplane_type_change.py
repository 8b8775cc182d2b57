"""A column's type changed in the manifest (issue 13): applied at the next run when every stored value
converts; otherwise the run fails naming the column and a value, and nothing is changed."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from conftest import ORDERS_HEADER, Org
from orgpipeline_api.orgschema import retype

FILE = (
    ORDERS_HEADER + "\nO1,C1,P1,2024-01-15,10.50,pending,a@x.com,7\nO2,C2,P2,2024-01-16,20,shipped,b@x.com,\n"
)


def _columns(org: Org, **types: str) -> list[dict[str, Any]]:
    base = [c for t in org.spec.tables if t.name == "orders" for c in t.columns]
    out = []
    for c in base:
        col = c.model_dump(by_alias=True, exclude_none=True, mode="json")
        col["type"] = types.get(c.name, col["type"])
        if col["name"] == "amount":
            col.pop("min", None)
        out.append(col)
    return out


def _types(org: Org) -> dict[str, str]:
    rows = org.pg.execute(
        "SELECT column_name, data_type, numeric_precision, numeric_scale FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = 'raw_orders'",
        (f"orgdata_{org.org_id}",),
    ).fetchall()
    return {r[0]: r[1] if r[2] is None or r[1] != "numeric" else f"numeric({r[2]},{r[3]})" for r in rows}


def test_type_change_applied_when_every_value_converts(org: Org) -> None:
    org.upload("orders_1.csv", FILE)
    assert org.run()["result"] == "Succeeded"
    org.rewrite(orders={"columns": _columns(org, amount="decimal(12,3)", note="integer")})
    assert org.run()["result"] == "NoNewFiles"  # the schema follows the manifest at every run
    types = _types(org)
    assert types["amount"] == "numeric(12,3)" and types["note"] == "integer"
    rows = org.pg.execute(
        f'SELECT order_id, amount::text, note FROM "orgdata_{org.org_id}".raw_orders ORDER BY 1'
    )
    assert rows.fetchall() == [("O1", "10.500", 7), ("O2", "20.000", None)]


def test_type_change_refused_names_column_and_count_never_the_value_and_changes_nothing(org: Org) -> None:
    """The refusal reaches cluster-wide objects (conditions, lastRun, Events, the Job's logs): it
    names the table, the column, the types, how many values and why, never a stored value."""
    org.upload("orders_1.csv", FILE.replace(",7\n", ",seven\n"))
    assert org.run()["result"] == "Succeeded"
    before = _types(org)
    # Two changes, the first of which would convert: neither is applied.
    org.rewrite(orders={"columns": _columns(org, amount="decimal(12,3)", note="integer")})
    with pytest.raises(retype.TypeChangeRefused) as refused:
        org.run()
    message = str(refused.value)
    assert (
        "column note cannot change type from text to integer: 1 stored value does not convert"
        " (not valid as integer (SQLSTATE 22P02))" in message
    )
    assert "nothing was changed" in message and "raw_orders.note" in message
    assert "seven" not in message
    assert _types(org) == before
    # A number that would be rounded is refused the same way, by the command a Job runs.
    org.rewrite(orders={"columns": _columns(org, amount="decimal(10,0)", note="text")})
    done = org.cli("run", "-f", str(org.path), "--table", "orders")
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert (
        "column amount cannot change type from numeric(10,2) to numeric(10,0):"
        " 1 stored value does not convert (they would be rounded)"
    ) in done.stderr
    assert "10.5" not in done.stderr
    assert _types(org) == before


def test_a_run_does_not_lock_readers_out_of_an_unchanged_table(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader's open transaction on raw_orders does not hold up a run whose manifest changed
    nothing (no ALTER TABLE, which would wait for the reader and lock out every reader after it);
    a column added to the manifest is still added."""
    org.upload("orders_1.csv", FILE)
    assert org.run()["result"] == "Succeeded"
    reader = psycopg.connect(org.settings().postgres_dsn)
    try:
        reader.execute(f'SELECT count(*) FROM "orgdata_{org.org_id}".raw_orders').fetchone()
        monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=3s")  # the run's connection waits 3 s at most
        org.upload("orders_2.csv", FILE.replace("O1,", "O3,"))
        assert org.run()["result"] == "Succeeded"
    finally:
        reader.close()
    org.rewrite(orders={"columns": [*_columns(org), {"name": "region", "type": "text"}]})
    assert org.run()["result"] == "NoNewFiles"
    assert _types(org)["region"] == "text"
