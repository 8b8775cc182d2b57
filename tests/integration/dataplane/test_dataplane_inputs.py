"""Every kind of input file gets a clear result, through S3 and the real servers."""

from __future__ import annotations

import io
from pathlib import Path

import yaml
from conftest import CASES, ORDERS_HEADER, Org, order, orders_csv


def test_mixed_file_every_row_accounted_for(org: Org) -> None:
    org.upload("orders_mixed.csv", (CASES / "orders_mixed.csv").read_bytes())
    result = org.run()
    assert result["result"] == "Succeeded"
    assert result["rows_read"] == 8 and result["blank_lines"] == 1
    assert (result["inserted"], result["updated"], result["unchanged"], result["rejected"]) == (4, 0, 0, 4)
    assert (
        result["rows_read"]
        == result["inserted"] + result["updated"] + result["unchanged"] + result["rejected"]
    )
    rejected = org.sql("SELECT line, issue_type FROM {schema}.raw_orders_rejected_rows ORDER BY line")
    assert rejected == [
        (7, "malformed_row"),
        (8, "malformed_row"),
        (9, "invalid_type"),
        (11, "missing_required_field"),
    ]
    rows = dict(org.sql("SELECT order_id, note FROM {schema}.raw_orders"))
    assert rows == {"O1": "quoted, comma", "O2": "two\r\nlines", "O3": "Zoë ✓ 東京", "O7": "warnings"}
    quality = org.sql("SELECT data_quality->>'status' FROM {schema}.raw_orders WHERE order_id = 'O7'")
    assert quality == [("WARNING",)]
    report = result["quality_report"]
    assert {i["issue_type"] for i in report["quality_issues"]} >= {
        "malformed_row",
        "invalid_type",
        "missing_required_field",
        "below_min",
        "not_allowed",
        "pattern_mismatch",
    }
    assert {b["type"] for b in result["breaches"]} >= {"ErrorRateAboveThreshold"}
    doc = org.collection().find_one({"order_id": "O2"})
    assert doc["audit_trail"]["source_file"]["line"] == 3 and doc["postgres_status"] == "loaded"


def test_missing_required_header_column_rejects_the_file(org: Org) -> None:
    org.upload("orders_nohdr.csv", "order_id,product_id,order_date,amount\nO1,P1,2024-01-15,1\n")
    result = org.run()
    assert result["result"] == "Failed"
    assert "header lacks required columns: customer_id" in result["error"]
    assert org.collection().count_documents({}) == 0
    again = org.run()  # a rejected file is not retried until its content changes
    assert again["result"] == "NoNewFiles"


def test_empty_binary_and_header_only_files(org: Org) -> None:
    org.upload("orders_empty.csv", b"")
    org.upload("orders_binary.csv", (CASES / "binary.bin").read_bytes())
    org.upload("orders_header.csv", ORDERS_HEADER + "\n")
    result = org.run()
    by_name = {f["name"]: f for f in result["files"]}
    assert by_name["orders_empty.csv"]["status"] == "rejected"
    assert "empty file" in by_name["orders_empty.csv"]["error"]
    assert by_name["orders_binary.csv"]["status"] == "rejected"
    assert "binary" in by_name["orders_binary.csv"]["error"]
    assert (
        by_name["orders_header.csv"]["status"] == "ingested"
        and by_name["orders_header.csv"]["rows_read"] == 0
    )
    assert result["result"] == "Failed"
    files = dict(org.sql("SELECT object_key, status FROM {schema}.pipeline_files"))
    assert sorted(files.values()) == ["ingested", "rejected", "rejected"]


def test_very_large_field(org: Org, tmp_path: Path) -> None:
    big = "x" * (1_200_000)
    org.upload(
        "orders_big.csv",
        f"{ORDERS_HEADER}\nO1,C1,P1,2024-01-15,1,pending,a@b.co,{big}\n"
        f"O2,C2,P2,2024-01-15,2,pending,b@b.co,{'y' * 500_000}\n",
    )
    result = org.run()
    assert (result["inserted"], result["rejected"]) == (1, 1)
    assert org.sql("SELECT issue_type, line FROM {schema}.raw_orders_rejected_rows") == [
        ("field_too_large", 2)
    ]
    assert org.sql("SELECT length(note) FROM {schema}.raw_orders") == [(500_000,)]


def test_a_run_takes_only_its_own_folders_files(org: Org) -> None:
    """`prefix: org-7` must not take `org-70/...` (a neighbour) or `org-7/archive/...`."""
    doc = yaml.safe_load(org.path.read_text())
    doc["spec"]["source"]["prefix"] = f"org-{org.org_id}"  # no trailing slash
    next(t for t in doc["spec"]["tables"] if t["name"] == "orders")["filePattern"] = "*.csv"
    org.path.write_text(yaml.safe_dump(doc))
    org.upload("orders_1.csv", orders_csv([order(1)]))
    org.upload("archive/orders_2.csv", orders_csv([order(2)]))
    neighbour = f"org-{org.org_id}0/orders_3.csv"
    org.s3.put_object(org.bucket, neighbour, io.BytesIO(b"x"), 1)
    result = org.run()
    assert [f["uri"] for f in result["files"]] == [f"s3://{org.bucket}/org-{org.org_id}/orders_1.csv"]
    assert result["inserted"] == 1
