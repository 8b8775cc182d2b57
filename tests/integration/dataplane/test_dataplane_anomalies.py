"""Anomaly alerts against the table's own history: six runs of about 1,000 rows, then a file of 50
rows: `orgpipeline run -o json` reports a VolumeAnomaly (warning) with the expected range, though no
static threshold is broken, and `orgpipeline alerts` lists it."""

from __future__ import annotations

import json

from conftest import Org, order, orders_csv


def upload_orders(org: Org, name: str, first: int, count: int) -> None:
    org.upload(name, orders_csv([order(i) for i in range(first, first + count)]))


def test_a_tenth_of_the_usual_rows_is_a_volume_anomaly(org: Org) -> None:
    first = 0
    for n, count in enumerate((1000, 990, 1012, 1003, 985, 1008)):
        upload_orders(org, f"orders_{n:02}.csv", first, count)
        first += count
        result = org.run()
        assert result["result"] == "Succeeded" and result["rows_read"] == count
        assert not [b for b in result["breaches"] if b["type"].endswith("Anomaly")], result["breaches"]

    upload_orders(org, "orders_99.csv", first, 50)
    done, report = org.cli_json("run", "--table", "orders")
    assert done == 0, report  # a breach is reported, not fatal
    assert report["rows_read"] == 50 and report["quality_score"] == 1.0
    (volume,) = [b for b in report["breaches"] if b["type"] == "VolumeAnomaly"]
    assert volume["message"].startswith("rows read 50 is outside the expected range ")
    assert "(from the last 6 successful runs)" in volume["message"]
    assert volume["value"] == 50 and 50 < volume["threshold"] < 1000
    assert not [b for b in report["breaches"] if b["type"] != "VolumeAnomaly"]

    # `orgpipeline alerts` (from pipeline_runs here: no OrgPipeline on the cluster) lists it.
    listed = org.cli("alerts", "--org-id", org.org_id, "-o", "json")
    assert listed.returncode == 1, listed.stderr  # exit 1: alerts are active
    alerts = json.loads(listed.stdout)["alerts"]
    assert [(a["type"], a["severity"], a["table"]) for a in alerts] == [
        ("VolumeAnomaly", "warning", "orders")
    ]
    assert alerts[0]["message"] == volume["message"]


def test_no_anomaly_until_enough_history_or_when_turned_off(org: Org) -> None:
    upload_orders(org, "orders_00.csv", 0, 1000)
    org.run()
    upload_orders(org, "orders_01.csv", 1000, 10)
    assert org.run()["breaches"] == []  # one run of history says nothing
    org.rewrite(orders={"anomalyDetection": {"enabled": False}})
    for n in range(2, 8):
        upload_orders(org, f"orders_{n:02}.csv", n * 1000, 1000)
        org.run()
    upload_orders(org, "orders_99.csv", 99_000, 5)
    assert org.run()["breaches"] == []
