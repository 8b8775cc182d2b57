"""Versions: INSERT, UPDATE with changed_fields, unchanged rows, snapshot DELETE, duplicates, reruns."""

from __future__ import annotations

from conftest import Org, order, orders_csv
from orgpipeline_jobs import pipeline
from orgpipeline_jobs.warehouse import heads

SEED_FIELDS = {
    "_id",
    "org_id",
    "composite_key",
    "table",
    "version",
    "data_hash",
    "change_type",
    "changed_fields",
    "changed_by_user_id",
    "previous_version",
    "audit_trail",
    "data_quality",
    "ingested_at",
    "last_modified",
    "postgres_status",
    "is_active",
}


def test_insert_update_unchanged(org: Org) -> None:
    org.upload("orders_1.csv", orders_csv([order(1), order(2), order(3)]))
    first = org.run()
    assert (first["inserted"], first["updated"], first["unchanged"]) == (3, 0, 0)
    org.upload(
        "orders_2.csv", orders_csv([order(1), order(2, amount="12.50"), order(3, status="shipped"), order(4)])
    )
    second = org.run()
    assert (second["inserted"], second["updated"], second["unchanged"]) == (1, 2, 1)
    doc = org.collection().find_one({"order_id": "O2", "version": 2})
    assert set(doc) >= SEED_FIELDS
    assert (
        doc["change_type"] == "UPDATE"
        and doc["changed_fields"] == ["amount"]
        and doc["previous_version"] == 1
    )
    assert doc["composite_key"] == f"org_{org.org_id}_orders_O2_C2_2024-01-15" and doc["amount"] == 12.5
    assert doc["audit_trail"]["source_file"]["filename"] == "orders_2.csv"
    rows = org.sql(
        "SELECT order_id, version, change_type, amount::text FROM {schema}.raw_orders ORDER BY 1, 2"
    )
    assert rows == [
        ("O1", 1, "INSERT", "10.00"),
        ("O2", 1, "INSERT", "10.00"),
        ("O2", 2, "UPDATE", "12.50"),
        ("O3", 1, "INSERT", "10.00"),
        ("O3", 2, "UPDATE", "10.00"),
        ("O4", 1, "INSERT", "10.00"),
    ]
    log = org.sql(
        "SELECT composite_key, old_version, new_version, changed_fields::text, old_data_hash IS NOT NULL "
        "FROM {schema}.raw_orders_change_log WHERE new_version = 2 ORDER BY 1"
    )
    assert [r[1:] for r in log] == [(1, 2, '["amount"]', True), (1, 2, '["status"]', True)]
    # The same file again writes nothing; the same content under a new name only counts unchanged rows.
    assert org.run()["result"] == "NoNewFiles"
    before = org.state()
    org.upload(
        "orders_3.csv", orders_csv([order(1), order(2, amount="12.50"), order(3, status="shipped"), order(4)])
    )
    third = org.run()
    assert (third["inserted"], third["updated"], third["unchanged"]) == (0, 0, 4)
    assert org.state() == before
    runs = org.sql(
        "SELECT command, status, inserted, updated FROM {schema}.pipeline_runs ORDER BY started_at"
    )
    assert [r[1] for r in runs] == ["Succeeded", "Succeeded", "NoNewFiles", "Succeeded"]


def test_snapshot_deletes_missing_keys_and_reinserts(org: Org) -> None:
    header = "customer_id,name,email,country,created_at"
    org.upload(
        "customers_1.csv", f"{header}\nC1,Ann,a@b.co,FR,2024-01-01T10:00:00Z\nC2,Bob,b@b.co,DE,\nC3,Cy,,,\n"
    )
    assert org.run("customers")["inserted"] == 3
    org.upload("customers_2.csv", f"{header}\nC1,Ann,a@b.co,FR,2024-01-01T10:00:00Z\nC3,Cy,,,\n")
    second = org.run("customers")
    assert (second["deleted"], second["unchanged"]) == (1, 2)
    deleted = org.collection("customers").find_one({"customer_id": "C2", "version": 2})
    assert deleted["change_type"] == "DELETE" and deleted["record_status"] == "deleted"
    org.upload(
        "customers_3.csv", f"{header}\nC1,Ann,a@b.co,FR,2024-01-01T10:00:00Z\nC2,Bob,b@b.co,DE,\nC3,Cy,,,\n"
    )
    third = org.run("customers")
    assert (third["inserted"], third["deleted"], third["unchanged"]) == (1, 0, 2)
    rows = org.sql(
        "SELECT customer_id, version, change_type, record_status, created_at::text "
        "FROM {schema}.raw_customers ORDER BY 1, 2"
    )
    assert rows[:4] == [
        ("C1", 1, "INSERT", "active", "2024-01-01 10:00:00+00"),
        ("C2", 1, "INSERT", "active", None),
        ("C2", 2, "DELETE", "deleted", None),
        ("C2", 3, "INSERT", "active", None),
    ]


def test_duplicate_keys_in_one_file_are_deterministic(org: Org, twin: Org) -> None:
    data = orders_csv([order(1), order(2), order(1, amount="11.00"), order(1, amount="11.00"), order(2)])
    for target in (org, twin):
        target.upload("orders_dup.csv", data)
        result = target.run(ORGPIPELINE_BATCH_ROWS="2")  # duplicates across batches too
        assert result["duplicates"] == 3
        assert (result["inserted"], result["updated"], result["unchanged"]) == (2, 1, 2)
        assert any(i["issue_type"] == "duplicate_key" for i in result["quality_report"]["quality_issues"])
    assert org.state() == twin.state()
    assert org.sql("SELECT order_id, version, amount::text FROM {schema}.raw_orders ORDER BY 1, 2") == [
        ("O1", 1, "10.00"),
        ("O1", 2, "11.00"),
        ("O2", 1, "10.00"),
    ]


def test_ingest_then_load(org: Org) -> None:
    uri = org.upload("orders_1.csv", orders_csv([order(1), order(2)]))
    code, ingested = org.cli_json("ingest", "--table", "orders", "--file", uri, "--user-id", "user_456")
    assert code == 0 and ingested["inserted"] == 2
    docs = list(org.collection().find({}))
    assert {d["postgres_status"] for d in docs} == {"pending"} and docs[0]["changed_by_user_id"] == "user_456"
    assert org.sql("SELECT count(*) FROM {schema}.raw_orders") == [(0,)]
    code, loaded = org.cli_json("load", "--table", "orders")
    assert code == 0 and loaded["loaded"] == 2
    assert {d["postgres_status"] for d in org.collection().find({})} == {"loaded"}
    assert org.sql("SELECT changed_by_user_id, postgres_status FROM {schema}.raw_orders") == [
        ("user_456", "loaded"),
        ("user_456", "loaded"),
    ]
    code, again = org.cli_json("load", "--table", "orders")
    assert code == 0 and again["loaded"] == 0


def test_business_keys_detected_when_not_given(org: Org) -> None:
    org.rewrite(orders={"businessKeys": []})
    org.upload("orders_1.csv", orders_csv([order(1), order(2), order(3)]))
    result = org.run()
    assert result["business_keys"] == ["order_id"] and result["business_keys_detected"]
    assert any("business keys detected" in n for n in result["files"][0]["notes"])
    assert org.run()["business_keys"] == ["order_id"]


def _line(o: int, c: int, amount: str = "10.00", day: str = "2024-01-15") -> tuple[str, ...]:
    """An order line whose order, customer and product repeat: no column is unique alone."""
    return (f"O{o}", f"C{c}", "P1", day, amount, "pending", "same@example.com", "n")


def test_a_multi_column_key_is_detected_and_changes_are_updates(org: Org) -> None:
    """Issue 26: with no unique column the key was every column, so a changed amount was an INSERT."""
    org.rewrite(orders={"businessKeys": []})
    org.upload("orders_1.csv", orders_csv([_line(o, c) for o in (1, 2) for c in (1, 2)]))
    first = org.run()
    assert first["business_keys"] == ["order_id", "customer_id"] and first["business_keys_detected"]
    assert first["inserted"] == 4 and first["breaches"] == []
    org.upload("orders_2.csv", orders_csv([_line(1, 2, amount="99.00"), _line(3, 1)]))
    second = org.run()
    assert (second["inserted"], second["updated"]) == (1, 1)
    assert second["business_keys"] == ["order_id", "customer_id"]
    keys = org.sql("SELECT DISTINCT composite_key FROM {schema}.raw_orders WHERE order_id = 'O1' ORDER BY 1")
    assert keys == [(f"org_{org.org_id}_orders_O1_C1",), (f"org_{org.org_id}_orders_O1_C2",)]


def test_a_later_file_repeating_a_detected_key_warns_once_and_keeps_it(org: Org) -> None:
    org.rewrite(orders={"businessKeys": []})
    org.upload("orders_1.csv", orders_csv([_line(o, c) for o in (1, 2) for c in (1, 2)]))
    assert org.run()["business_keys"] == ["order_id", "customer_id"]
    # The same order and customer on two days: the detected key is not unique after all.
    repeated = [_line(1, 1, day="2024-01-16"), _line(1, 1, day="2024-01-17"), _line(2, 2)]
    org.upload("orders_2.csv", orders_csv(repeated))
    second = org.run()
    (breach,) = second["breaches"]
    assert breach["type"] == "BusinessKeyNotUnique" and breach["value"] == 1
    assert "order_id, customer_id" in breach["message"] and "orders_2.csv (1)" in breach["message"]
    assert second["business_keys"] == ["order_id", "customer_id"]  # kept: no silent re-keying
    org.upload("orders_3.csv", orders_csv([_line(2, 1, day="2024-01-16"), _line(2, 1, day="2024-01-18")]))
    third = org.run()
    assert third["breaches"] == [] and third["business_keys"] == ["order_id", "customer_id"]


def _warehouse_rows(org: Org) -> dict[str, list[tuple[object, ...]]]:
    """Every raw and change-log column, minus what differs between runs (times, run and batch ids)."""
    volatile = "'{change_timestamp,processing_metadata,source_file}'::text[]"
    source = "- 'file_id' - 'etag' - 'key' - 'bucket'"
    raw = org.sql(
        "SELECT substr(composite_key, length(org_id) + 2), order_id, customer_id, product_id, order_date,"
        " amount, status, email, note, version, data_hash, change_type, changed_fields, changed_by_user_id,"
        f" previous_version, audit_trail - {volatile}, postgres_status, record_status, is_active,"
        f" data_quality, source_file_metadata {source}, (audit_trail->'source_file') {source},"
        " processing_metadata - 'run_id' - 'batch_id'"
        " FROM {schema}.raw_orders ORDER BY 1, version"
    )
    log = org.sql(
        "SELECT substr(composite_key, length(org_id) + 2), old_version, new_version, change_type,"
        " changed_fields, changed_by_user_id, old_data_hash, new_data_hash,"
        f" change_metadata - 'run_id' - 'batch_id', source_info {source}"
        " FROM {schema}.raw_orders_change_log ORDER BY 1, new_version"
    )
    return {"raw": raw, "log": log}


def test_run_writes_the_rows_the_documents_give(org: Org, twin: Org) -> None:
    """`run` builds its PostgreSQL rows column-wise; `ingest` + `load` derive them from the stored
    documents. Both give the same rows, hostile text and rule warnings included."""
    first = [
        order(1),
        order(2, amount="-5.00", note='tab\there "quoted" back\\slash'),
        order(3, status="weird", note="Zoë ✓ 東京"),
    ]
    second = [order(1, amount="11.50"), order(2, amount="-5.00", note="multi\nline"), order(4)]
    for target in (org, twin):
        target.upload("orders_1.csv", orders_csv(first))
    assert org.run()["result"] == "Succeeded"
    twin_first = twin.upload("orders_1.csv", orders_csv(first))
    pipeline.run_ingest(twin.settings(), twin.spec, "orders", twin_first)
    pipeline.run_load(twin.settings(), twin.spec, "orders")
    body = orders_csv(second).replace("multi\nline", '"multi\nline"')
    org.upload("orders_2.csv", body)
    assert org.run()["result"] == "Succeeded"
    twin_second = twin.upload("orders_2.csv", body)
    pipeline.run_ingest(twin.settings(), twin.spec, "orders", twin_second)
    pipeline.run_load(twin.settings(), twin.spec, "orders")
    ours, theirs = _warehouse_rows(org), _warehouse_rows(twin)
    assert len(ours["raw"]) == 6 and len(ours["log"]) == 6
    for part in ("raw", "log"):
        for mine, other in zip(ours[part], theirs[part], strict=True):
            assert mine == other, part


def test_versions_of_consecutive_slices_share_a_part(org: Org, twin: Org) -> None:
    """A part (one PostgreSQL transaction, one MongoDB submission, one batch_id) gathers the new
    versions of several slices up to ORGPIPELINE_WRITE_ROWS, and the result is the same as with a
    part per slice."""
    rows = [order(i) for i in range(40)]
    for target in (org, twin):
        target.upload("orders_1.csv", orders_csv(rows))
    gathered = org.run(ORGPIPELINE_BATCH_ROWS="7", ORGPIPELINE_WRITE_ROWS="15")
    assert gathered["inserted"] == 40
    sizes = sorted(
        (len(list(org.collection().find({"batch_id": b}))) for b in org.collection().distinct("batch_id")),
        reverse=True,
    )
    assert sizes == [14, 14, 12]  # whole slices of 7 gathered while they fit in 15
    assert twin.run(ORGPIPELINE_BATCH_ROWS="7", ORGPIPELINE_WRITE_ROWS="7")["inserted"] == 40
    assert len(twin.collection().distinct("batch_id")) == 6
    assert org.state() == twin.state()


def test_a_part_of_few_changes_is_written_after_four_slices(org: Org) -> None:
    """Changes spread thinly over a file are not all held until the file's end: an open part is
    written after PART_SLICES slices, so MongoDB takes them while the rest is classified."""
    org.upload("orders_1.csv", orders_csv([order(i) for i in range(70)]))
    assert org.run(ORGPIPELINE_BATCH_ROWS="7")["inserted"] == 70
    changed = [order(i, amount="1.00") if i % 7 == 0 else order(i) for i in range(70)]
    org.upload("orders_2.csv", orders_csv(changed))
    result = org.run(ORGPIPELINE_BATCH_ROWS="7", ORGPIPELINE_WRITE_ROWS="1000")
    assert (result["updated"], result["unchanged"]) == (10, 60)
    parts = org.collection().distinct("batch_id", {"change_type": "UPDATE"})
    sizes = [org.collection().count_documents({"batch_id": b}) for b in sorted(parts)]
    assert sizes == [4, 4, 2]  # one changed row per slice of 7, a part per 4 slices


def test_first_version_heads_that_exist_after_all_are_upserted(org: Org) -> None:
    """Heads of first versions are copied straight in; one already there (a replay) does not fail
    the part: the rows go through the upsert instead."""
    org.upload("orders_1.csv", orders_csv([order(1), order(2)]))
    assert org.run()["inserted"] == 2
    key = org.sql("SELECT composite_key FROM {schema}.raw_orders_heads ORDER BY 1")[0][0]
    row = (key, 1, "f" * 64, "INSERT", '{"x": 1}', "f_replay", 9, None)
    new = (key + "_new", 1, "e" * 64, "INSERT", '{"x": 2}', "f_replay", 10, None)
    with org.pg.transaction():
        heads.upsert(org.pg, org.org_id, "orders", [row, new])
    got = org.sql("SELECT composite_key, data_hash, file_id FROM {schema}.raw_orders_heads ORDER BY 1")
    assert (key, "f" * 64, "f_replay") in got and (key + "_new", "e" * 64, "f_replay") in got
    assert len(got) == 3
