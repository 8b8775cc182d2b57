"""`audit` without --days covers all history and says so; with --days its header names the window.

Issue 26: `audit` applied a silent 30-day window, so older changes were missing without a word.
"""

# ruff: noqa: F811  (the fixtures are imported from test_manage_commands and named by the tests)
from __future__ import annotations

from orgpipeline_api import store_names
from test_manage_commands import FILE_1, FILE_2, Org, loaded, org  # noqa: F401 (the fixtures)


def test_audit_without_days_lists_all_history(loaded: Org) -> None:
    org = loaded
    log = f'"{store_names.pg_schema(org.org_id)}".raw_orders_change_log'
    aged = org.pg.execute(
        f"UPDATE {log} SET change_timestamp = now() - interval '45 days'"
        f" WHERE id = (SELECT min(id) FROM {log})"
    )
    assert aged.rowcount == 1  # one change made 45 days ago
    everything = org.json("audit", "--org-id", org.org_id)
    assert everything["days"] is None and everything["since"] is None
    total = org.sql("SELECT count(*) FROM {schema}.raw_orders_change_log")[0][0]
    assert len(everything["changes"]) == total
    assert sum(everything["counts"][0].get(k, 0) for k in ("INSERT", "UPDATE", "DELETE")) == total
    recent = org.json("audit", "--org-id", org.org_id, "--days", "30")
    assert recent["days"] == 30 and len(recent["changes"]) == total - 1
    assert "Changes in all history" in org.cli("audit", "--org-id", org.org_id).stdout
    assert "Changes in the last 30 day(s)" in org.cli("audit", "--org-id", org.org_id, "--days", "30").stdout
