"""Retention: the last N versions stay active, old audit rows go."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conftest import Org, order, orders_csv
from orgpipeline_jobs import retention


def test_keep_versions_and_audit_days(org: Org) -> None:
    doc = (
        org.path.read_text()
        .replace("keepVersions: 10", "keepVersions: 2")
        .replace("auditLogDays: 365", "auditLogDays: 30")
    )
    org.path.write_text(doc)
    for n in range(4):
        org.upload(f"orders_{n}.csv", orders_csv([order(1, amount=f"{n}.00"), order(2)]))
        org.run()
    result = retention.apply(org.settings(), org.spec, "orders")
    assert result["versions_deactivated"] == 2 and result["change_log_deleted"] == 0
    rows = org.sql("SELECT order_id, version, is_active FROM {schema}.raw_orders ORDER BY 1, 2")
    assert rows == [("O1", 1, False), ("O1", 2, False), ("O1", 3, True), ("O1", 4, True), ("O2", 1, True)]
    inactive = sorted(d["version"] for d in org.collection().find({"order_id": "O1", "is_active": False}))
    assert inactive == [1, 2]
    again = retention.apply(org.settings(), org.spec, "orders")
    assert again["versions_deactivated"] == 0
    later = retention.apply(org.settings(), org.spec, "orders", now=datetime.now(UTC) + timedelta(days=31))
    assert (
        later["change_log_deleted"] == 5
        and later["runs_deleted"] == 4
        and later["quality_metrics_deleted"] == 4
    )
    assert org.sql("SELECT count(*) FROM {schema}.raw_orders") == [(5,)]  # versions themselves are kept
