"""The fused run writes a batch to MongoDB while PostgreSQL's transaction of the same batch runs,
and each store still ends with exactly what the other has.

The outbox row goes first (alone, not yet committed); a run that dies after MongoDB took the
documents but before PostgreSQL committed leaves that row, and the next run withdraws the documents
from MongoDB before anything else, so a changed file's rerun writes its own versions, not the dead
run's.
"""

from __future__ import annotations

import time
from typing import Any

import bson
import pytest
from conftest import Org, order, orders_csv
from orgpipeline_jobs import ingest
from orgpipeline_jobs.warehouse import load
from test_dataplane_crash import SMALL, Killed

ROWS = [order(i, amount=f"{i}.00") for i in range(20)]
CHANGED = [order(i, amount=f"{i + 100}.00", note="changed") for i in range(20)]


def in_mongodb(org: Org, n: int, wait: float = 10.0) -> bool:
    """Whether MongoDB holds `n` documents of the table, waiting up to `wait` seconds for them."""
    until = time.monotonic() + wait
    while org.collection().count_documents({}) < n:
        if time.monotonic() > until:
            return False
        time.sleep(0.02)
    return True


def test_mongodb_writes_the_batch_while_postgresql_writes_it(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    original = load.copy_batch

    def copy_batch(*args: Any, **kwargs: Any) -> Any:
        seen.append(in_mongodb(org, len(ROWS)))  # before PostgreSQL has a row of the batch
        return original(*args, **kwargs)

    monkeypatch.setattr(load, "copy_batch", copy_batch)
    org.upload("orders_1.csv", orders_csv(ROWS))
    result = org.run()
    assert result["result"] == "Succeeded" and result["loaded"] == len(ROWS)
    assert seen == [True]
    assert org.sql("SELECT count(*) FROM {schema}.raw_orders") == [(len(ROWS),)]
    assert org.sql("SELECT count(*) FROM {schema}.raw_orders_outbox") == [(0,)]


def test_killed_after_mongodb_took_the_batch_before_postgresql_committed_it(
    org: Org, twin: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file changes before the rerun: MongoDB ends with the changed versions, as PostgreSQL
    does, not the dead run's (same `_id`s, which a replay would have kept)."""
    twin.upload("orders_1.csv", orders_csv(CHANGED))
    assert twin.run()["result"] == "Succeeded"

    def copy_batch(*args: Any, **kwargs: Any) -> Any:
        assert in_mongodb(org, len(ROWS))
        raise Killed()  # SIGKILL: PostgreSQL rolls the batch back, nothing of the run cleans up

    monkeypatch.setattr(load, "copy_batch", copy_batch)
    monkeypatch.setattr(ingest.FileIngest, "_withdraw", lambda *args: None)
    org.upload("orders_1.csv", orders_csv(ROWS))
    with pytest.raises(Killed):
        org.run()
    monkeypatch.undo()
    assert org.sql("SELECT count(*) FROM {schema}.raw_orders") == [(0,)]
    assert org.collection().count_documents({}) == len(ROWS)  # MongoDB ahead, the outbox says so

    org.upload("orders_1.csv", orders_csv(CHANGED))
    assert org.run()["result"] == "Succeeded"
    assert org.state() == twin.state()
    notes = {d["note"] for d in org.collection().find({}, {"note": 1})}
    assert notes == {"changed"}


def test_a_batch_postgresql_refused_leaves_mongodb_at_once(org: Org, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure of the batch's PostgreSQL transaction (here not the content's: the run fails)
    withdraws what MongoDB took of it before the error reaches the caller."""

    def copy_batch(*args: Any, **kwargs: Any) -> Any:
        assert in_mongodb(org, len(ROWS))
        raise RuntimeError("PostgreSQL went away")

    monkeypatch.setattr(load, "copy_batch", copy_batch)
    org.upload("orders_1.csv", orders_csv(ROWS))
    with pytest.raises(RuntimeError):
        org.run()
    assert org.collection().count_documents({}) == 0
    assert org.sql("SELECT count(*) FROM {schema}.raw_orders_outbox") == [(0,)]
    monkeypatch.undo()
    assert org.run()["result"] == "Succeeded"
    assert org.collection().count_documents({}) == len(ROWS)
    assert org.sql("SELECT count(*) FROM {schema}.raw_orders") == [(len(ROWS),)]


def test_an_outbox_of_an_older_release_gets_the_column_and_its_rows_are_replayed(org: Org) -> None:
    """An older release's outbox has no `committed`: each of its rows was written with its
    batch's PostgreSQL part, so the next run replays it (never withdraws it)."""
    org.upload("orders_1.csv", orders_csv(ROWS))
    assert org.run()["result"] == "Succeeded"
    doc = org.collection().find_one({"order_id": "O3"})
    assert doc is not None
    org.collection().delete_one({"_id": doc["_id"]})  # the crash left it in the outbox only
    schema = f'"{org.schema}"'
    org.pg.execute(f"ALTER TABLE {schema}.raw_orders_outbox DROP COLUMN committed")
    org.pg.execute(f"COMMENT ON TABLE {schema}.raw_orders IS NULL")  # as before the upgrade
    org.pg.execute(
        f"INSERT INTO {schema}.raw_orders_outbox (batch_id, documents) VALUES ('old:000001', %s)",
        (bson.encode(doc),),
    )

    assert org.run()["result"] == "NoNewFiles"
    assert org.collection().count_documents({"order_id": "O3"}) == 1
    assert org.collection().count_documents({}) == len(ROWS)
    assert org.sql("SELECT count(*) FROM {schema}.raw_orders_outbox") == [(0,)]
    columns = org.sql(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s"
        " AND table_name = 'raw_orders_outbox' AND column_name = 'committed'",
        org.schema,
    )
    assert columns == [("committed",)]


@pytest.mark.parametrize("call", [1, 3, 6])
def test_killed_in_postgresql_transaction_of_a_later_part(
    org: Org, twin: Org, monkeypatch: pytest.MonkeyPatch, call: int
) -> None:
    """Many parts (5 versions each): parts before the kill are committed (some still in flight to
    MongoDB), the killed one is not; the rerun replays the first, withdraws the second and ends
    with an uninterrupted twin's state."""
    rows = [order(i, amount=f"{i}.00") for i in range(40)]
    twin.upload("orders_1.csv", orders_csv(rows))
    assert twin.run(**SMALL)["result"] == "Succeeded"
    original, calls = load.copy_batch, {"n": 0}

    def copy_batch(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == call:
            raise Killed()
        return original(*args, **kwargs)

    monkeypatch.setattr(load, "copy_batch", copy_batch)
    monkeypatch.setattr(ingest.FileIngest, "_withdraw", lambda *args: None)
    org.upload("orders_1.csv", orders_csv(rows))
    with pytest.raises(Killed):
        org.run(**SMALL)
    monkeypatch.undo()
    assert org.sql("SELECT count(*) FROM {schema}.raw_orders_outbox WHERE NOT committed") == [(1,)]
    assert org.run(**SMALL)["result"] == "Succeeded"
    assert org.state() == twin.state()
