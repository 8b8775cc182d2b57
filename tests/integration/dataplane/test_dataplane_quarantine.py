"""Quarantine: a file whose content a store refuses half way is set aside, and the table goes on.

Every run of a table used to fail on such a file (left `ingesting`, retried first), so no later file
loaded. Now the failing part is rolled back, the file is `quarantined` in pipeline_files, later
files load, the run reports FileQuarantined (without the refused value) while the file stays
quarantined, and `orgpipeline files` lists it, `orgpipeline files retry` re-queues it.
"""

from __future__ import annotations

import json
from typing import Any

import bson
import psycopg
import pytest
from conftest import Org, order, orders_csv
from orgpipeline_jobs import pipeline
from orgpipeline_jobs.warehouse import outbox

SECRET = "s3cr3t-value-9431"


def refuse_note(org: Org, value: str) -> None:
    """A trigger of the org's warehouse table that refuses one note value as PostgreSQL refuses a
    bad value: a data exception (22023) whose message quotes the value."""
    schema = f'"{org.schema}"'
    org.pg.execute(
        f"""CREATE FUNCTION {schema}.refuse_note() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.note = '{value}' THEN
            RAISE EXCEPTION 'invalid value for note: "%"', NEW.note USING ERRCODE = '22023';
          END IF;
          RETURN NEW;
        END $$"""
    )
    org.pg.execute(
        f"CREATE TRIGGER refuse_note BEFORE INSERT ON {schema}.raw_orders"
        f" FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_note()"
    )


def files_state(org: Org) -> dict[str, tuple[str, str | None]]:
    rows = org.sql(
        "SELECT object_key, status, error FROM {schema}.pipeline_files WHERE table_name = 'orders'"
    )
    return {str(k).rsplit("/", 1)[-1]: (str(s), e) for k, s, e in rows}


def loaded_ids(org: Org) -> set[str]:
    return {r[0] for r in org.sql("SELECT order_id FROM {schema}.raw_orders")}


def breach_types(result: dict[str, Any]) -> list[str]:
    return [b["type"] for b in result["breaches"]]


def test_a_refused_value_quarantines_its_file_and_later_files_load(org: Org) -> None:
    org.upload("orders_1.csv", orders_csv([order(i) for i in range(5)]))
    assert org.run()["result"] == "Succeeded"
    refuse_note(org, SECRET)
    org.upload("orders_2.csv", orders_csv([order(10), order(11, note=SECRET), order(12)]))
    org.upload("orders_3.csv", orders_csv([order(20), order(21)]))

    first = org.run()

    assert first["result"] == "Succeeded"
    assert "FileQuarantined" in breach_types(first)
    states = files_state(org)
    assert states["orders_2.csv"][0] == "quarantined"
    assert states["orders_3.csv"][0] == "ingested"
    assert {"O20", "O21"} <= loaded_ids(org)
    # The refused part was rolled back: nothing of it in either store, no outbox left behind.
    assert not {"O10", "O11", "O12"} & loaded_ids(org)
    assert org.collection().count_documents({"order_id": {"$in": ["O10", "O11", "O12"]}}) == 0
    assert org.sql("SELECT count(*) FROM {schema}.raw_orders_outbox")[0][0] == 0
    # The reason names the kind of refusal, never the value (the report reaches cluster objects).
    reason = states["orders_2.csv"][1] or ""
    assert "22023" in reason and SECRET not in reason
    assert SECRET not in json.dumps(first)
    # Its rows stay accounted: those of the parts written (none here), not the rolled-back ones.
    [quarantined] = [f for f in first["files"] if f["name"] == "orders_2.csv"]
    assert quarantined["status"] == "quarantined"
    assert quarantined["inserted"] == quarantined["rows_read"] == 0

    # The next run neither fails nor takes the file again, and still reports it.
    org.upload("orders_4.csv", orders_csv([order(30)]))
    second = org.run()
    assert second["result"] == "Succeeded"
    assert "FileQuarantined" in breach_types(second)
    assert "O30" in loaded_ids(org)
    assert [f["name"] for f in second["files"]] == ["orders_4.csv"]


def test_files_lists_states_and_retry_requeues_a_quarantined_file(org: Org) -> None:
    org.upload("orders_1.csv", orders_csv([order(1)]))
    org.run()
    refuse_note(org, SECRET)
    org.upload("orders_2.csv", orders_csv([order(2, note=SECRET)]))
    org.upload("orders_3.csv", "\x00\x01binary")
    org.run()

    done = org.cli("files", "--org-id", org.org_id, "--table", "orders", "-o", "json")
    assert done.returncode == 0, done.stderr
    listed = {f["name"]: f for f in json.loads(done.stdout)["files"]}
    assert listed["orders_1.csv"]["status"] == "ingested" and listed["orders_1.csv"]["rows_read"] == 1
    assert listed["orders_2.csv"]["status"] == "quarantined"
    assert listed["orders_3.csv"]["status"] == "rejected"
    table = org.cli("files", "--org-id", org.org_id, "--table", "orders")
    assert table.returncode == 0 and "quarantined" in table.stdout and SECRET not in table.stdout

    # Only a quarantined or rejected file can be retried; an unknown one is a user error.
    assert (
        org.cli(
            "files", "retry", "--org-id", org.org_id, "--table", "orders", "--file", "orders_1.csv"
        ).returncode
        == 2
    )
    assert (
        org.cli(
            "files", "retry", "--org-id", org.org_id, "--table", "orders", "--file", "nope.csv"
        ).returncode
        == 2
    )
    assert org.cli("files", "--org-id", org.org_id, "--table", "nope").returncode == 2

    org.pg.execute(f'DROP TRIGGER refuse_note ON "{org.schema}".raw_orders')
    retried = org.cli("files", "retry", "--org-id", org.org_id, "--table", "orders", "--file", "orders_2.csv")
    assert retried.returncode == 0, retried.stderr
    assert files_state(org)["orders_2.csv"][0] == "queued"

    after = org.run()
    assert after["result"] == "Succeeded"
    assert files_state(org)["orders_2.csv"][0] == "ingested"
    assert "O2" in loaded_ids(org)
    assert "FileQuarantined" not in breach_types(after)


@pytest.mark.parametrize(
    "refused",
    [{"note": "before\x00after"}, {"$where": "1"}],
    ids=["nul-in-a-string", "dollar-key"],
)
def test_a_document_mongodb_refuses_in_the_outbox_no_longer_stops_the_table(
    org: Org, refused: dict[str, Any]
) -> None:
    """An outbox entry an older release left with a document the landing store refuses (a NUL
    that FerretDB's backend refuses, a `$` key; FerretDB takes documents over 16 MiB): every run
    used to die replaying it. Now its version is a rejected row, its file quarantined, the entry
    gone, and later files load."""
    org.upload("orders_1.csv", orders_csv([order(1)]))
    org.run()
    doc = org.collection().find_one({"order_id": "O1"})
    assert doc is not None
    source = doc["audit_trail"]["source_file"]
    big = {**doc, "_id": doc["_id"] + "x", "version": 99, **refused}
    with psycopg.connect(org.settings().postgres_dsn or "", autocommit=True) as conn:
        outbox.put(conn, org.org_id, "orders", "old-release:000001", bson.encode(big))

    org.upload("orders_2.csv", orders_csv([order(2)]))
    result = org.run()

    assert result["result"] == "Succeeded"
    assert "FileQuarantined" in breach_types(result)
    assert org.sql("SELECT count(*) FROM {schema}.raw_orders_outbox")[0][0] == 0
    assert files_state(org)["orders_1.csv"][0] == "quarantined"
    rejected = org.sql("SELECT file_id, line, issue_type FROM {schema}.raw_orders_rejected_rows")
    assert rejected == [(source["file_id"], source["line"], "landing")]
    assert "O2" in loaded_ids(org)
    assert org.run()["result"] in ("Succeeded", "NoNewFiles")

    # Retried, the file is read again; the refusal is judged again, not left behind.
    retried = org.cli("files", "retry", "--org-id", org.org_id, "--table", "orders", "--file", "orders_1.csv")
    assert retried.returncode == 0, retried.stderr
    assert org.sql("SELECT count(*) FROM {schema}.raw_orders_rejected_rows")[0][0] == 0
    after = org.run()
    assert files_state(org)["orders_1.csv"][0] == "ingested"
    assert "FileQuarantined" not in breach_types(after)


def test_parts_written_before_the_refusal_stay_and_a_retry_completes_the_file(org: Org) -> None:
    """Small parts: the file's first parts are written before the refused one. They stay (in both
    stores, accounted in the file's counts); the retry, once the cause is gone, adds the rest."""
    small = {"ORGPIPELINE_BATCH_ROWS": "10", "ORGPIPELINE_WRITE_ROWS": "10"}
    org.upload("orders_1.csv", orders_csv([order(1)]))
    org.run(**small)
    refuse_note(org, SECRET)
    rows = [order(i) for i in range(100, 160)]
    rows[45] = order(145, note=SECRET)
    org.upload("orders_2.csv", orders_csv(rows))

    result = org.run(**small)

    [part] = [f for f in result["files"] if f["name"] == "orders_2.csv"]
    assert part["status"] == "quarantined"
    written = {i for i in loaded_ids(org) if i.startswith("O1") and len(i) == 4}
    assert 0 < len(written) < 60
    assert part["rows_read"] == part["inserted"] + part["rejected"] == len(written)
    assert org.collection().count_documents({"order_id": {"$in": sorted(written)}}) == len(written)

    org.pg.execute(f'DROP TRIGGER refuse_note ON "{org.schema}".raw_orders')
    assert (
        org.cli(
            "files", "retry", "--org-id", org.org_id, "--table", "orders", "--file", "orders_2.csv"
        ).returncode
        == 0
    )
    again = org.run(**small)
    [done] = [f for f in again["files"] if f["name"] == "orders_2.csv"]
    assert done["status"] == "ingested"
    # As an uninterrupted run would have: the versions already written are recognised, not doubled.
    assert (done["rows_read"], done["inserted"]) == (60, 60)
    assert {f"O{i}" for i in range(100, 160)} <= loaded_ids(org)
    ours = "SELECT count(*) FROM {schema}.raw_orders WHERE order_id ~ '^O1[0-5][0-9]$'"
    assert org.sql(ours)[0][0] == 60
    assert org.collection().count_documents({"order_id": {"$regex": "^O1[0-5][0-9]$"}}) == 60


def test_load_of_landed_versions_sets_aside_a_refused_one(org: Org) -> None:
    """`ingest` lands versions pending; `load` used to fail at every run on one PostgreSQL refuses.
    Now that version is a rejected row (`warehouse`) of its file, which is quarantined, and the
    others load."""
    org.upload("orders_1.csv", orders_csv([order(1)]))
    org.run()
    refuse_note(org, SECRET)
    uri = org.upload("orders_2.csv", orders_csv([order(2), order(3, note=SECRET), order(4)]))
    pipeline.run_ingest(org.settings(), org.spec, "orders", uri)

    loaded = pipeline.run_load(org.settings(), org.spec, "orders").as_json()

    assert loaded["result"] == "Succeeded"
    assert "FileQuarantined" in breach_types(loaded)
    assert {"O2", "O4"} <= loaded_ids(org) and "O3" not in loaded_ids(org)
    assert files_state(org)["orders_2.csv"][0] == "quarantined"
    rejected = org.sql("SELECT line, issue_type, reason FROM {schema}.raw_orders_rejected_rows")
    assert [(line, kind) for line, kind, _ in rejected] == [(3, "warehouse")]
    assert SECRET not in rejected[0][2]
    assert org.collection().count_documents({"postgres_status": "pending"}) == 0
    again = pipeline.run_load(org.settings(), org.spec, "orders").as_json()
    assert again["result"] == "Succeeded"


def test_files_prints_names_and_reasons_as_text_not_markup(org: Org) -> None:
    org.upload("orders_[bold]1.csv", orders_csv([order(1)]))
    org.upload("orders_[red]2.csv", "\x00\x01[/]binary")
    org.run()
    done = org.cli("files", "--org-id", org.org_id, "--table", "orders")
    assert done.returncode == 0, done.stderr
    assert "orders_[bold]1.csv" in done.stdout and "orders_[red]2.csv" in done.stdout


def test_files_exit_codes_when_the_store_is_unreachable(org: Org) -> None:
    down = {"ORGPIPELINE_POSTGRES_DSN": "postgresql://nobody@127.0.0.1:9/none?connect_timeout=2"}
    for args in (("files",), ("files", "retry", "--file", "orders_1.csv")):
        done = org.cli(*args, "--org-id", org.org_id, "--table", "orders", env=down)
        assert done.returncode == 3, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
