"""Storage measured per table per day by the runs, and `metrics` growth from those measurements.

Issue 26: growth was an estimate (versions in the period x average size).
"""

# ruff: noqa: F811  (the fixtures are imported from test_manage_commands and named by the tests)
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orgpipeline_api import store_names
from orgpipeline_api.v1alpha1 import load_manifest
from orgpipeline_jobs import pipeline
from orgpipeline_jobs.settings import Settings
from test_manage_commands import FILE_1, FILE_2, Org, org  # noqa: F401 (the fixtures)


def _run(org: Org, name: str, text: str) -> dict[str, object]:
    (org.source / name).write_text(text)
    _, spec = load_manifest(org.path)
    return pipeline.run_table(Settings.from_env(), spec, "orders", None, str(org.source)).as_json()


def test_runs_record_the_days_sizes_and_metrics_reports_growth_from_them(org: Org) -> None:
    first = _run(org, "orders_1.csv", FILE_1)
    schema = store_names.pg_schema(org.org_id)
    relations = [
        store_names.pg_table("orders"),
        store_names.pg_change_log("orders"),
        store_names.pg_quality_metrics("orders"),
        store_names.pg_heads("orders"),
        store_names.pg_rejected_rows("orders"),
        store_names.pg_pending_loads("orders"),
        store_names.pg_outbox("orders"),
    ]
    (actual,) = org.sql(
        "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = ANY(%s)",
        schema,
        relations,
    )
    (stats,) = org.collection.aggregate([{"$collStats": {"storageStats": {}}}])
    mongo = stats["storageStats"]
    today = datetime.now(UTC).date()
    rows = org.sql(
        "SELECT table_name, day, postgres_bytes, mongo_bytes, mongo_documents FROM {schema}.pipeline_storage"
    )
    documents = mongo["count"] if mongo["count"] >= 0 else None  # an estimate on FerretDB
    assert rows == [("orders", today, actual[0], mongo["totalSize"], documents)]
    assert (first["postgres_bytes"], first["mongo_bytes"]) == (actual[0], mongo["totalSize"])
    (alone,) = org.json("metrics", "--org-id", org.org_id)["orgs"]
    assert alone["storage"]["growth_source"] == "estimate"  # one day recorded: no measured growth yet
    # A run that wrote nothing measures nothing: the day's row stands, and its report carries it.
    (measured_at,) = org.sql("SELECT measured_at FROM {schema}.pipeline_storage")
    again = _run(org, "orders_1.csv", FILE_1)
    assert again["result"] == "NoNewFiles" and again["postgres_bytes"] == actual[0]
    assert org.sql("SELECT measured_at FROM {schema}.pipeline_storage") == [measured_at]

    # Ten days ago the table held 1,000 bytes less in PostgreSQL and 500 in MongoDB.
    (recorded,) = org.sql("SELECT postgres_bytes, mongo_bytes FROM {schema}.pipeline_storage")
    org.sql(
        "INSERT INTO {schema}.pipeline_storage"
        " (table_name, day, postgres_bytes, mongo_bytes, mongo_documents)"
        " VALUES ('orders', %s, %s, %s, 1) RETURNING 1",
        today - timedelta(days=10),
        recorded[0] - 1000,
        recorded[1] - 500,
    )
    second = _run(org, "orders_2.csv", FILE_2)  # wrote versions: measured again, the day's row replaced
    assert org.sql("SELECT count(*) FROM {schema}.pipeline_storage WHERE day = %s", today) == [(1,)]
    assert second["postgres_bytes"] >= actual[0]
    (m,) = org.json("metrics", "--org-id", org.org_id, "--days", "30")["orgs"]
    st = m["storage"]
    (table,) = st["tables"]
    assert table["table"] == "orders" and table["day"] == today.isoformat() and table["days_recorded"] == 2
    expected = second["postgres_bytes"] + second["mongo_bytes"] - (recorded[0] - 1000 + recorded[1] - 500)
    assert (
        table["growth_bytes"] == expected
        and table["growth_since"] == (today - timedelta(days=10)).isoformat()
    )
    assert st["growth_source"] == "measured" and st["growth_bytes"] == expected
    assert st["growth_bytes_per_day"] == round(expected / 10)
    # The last day recorded before a period is its baseline, however short the period.
    (recent,) = org.json("metrics", "--org-id", org.org_id, "--days", "1")["orgs"]
    assert recent["storage"]["growth_bytes"] == expected


def test_the_daily_retention_records_the_days_sizes_without_a_run(org: Org) -> None:
    from orgpipeline_jobs import retention

    _run(org, "orders_1.csv", FILE_1)
    org.sql("UPDATE {schema}.pipeline_storage SET day = day - 1 RETURNING 1")  # as if run yesterday
    _, spec = load_manifest(org.path)
    retention.apply(Settings.from_env(), spec, "orders")
    days = org.sql("SELECT day FROM {schema}.pipeline_storage ORDER BY day")
    today = datetime.now(UTC).date()
    assert days == [(today - timedelta(days=1),), (today,)]


def test_a_days_first_run_records_the_day_once_even_when_it_wrote_nothing(org: Org) -> None:
    """The day's row is looked up in one query (`storage.today`): a run that changed nothing writes
    it when the day has none, once, and a schema whose storage table is gone gets it back."""
    _run(org, "orders_1.csv", FILE_1)
    org.sql("UPDATE {schema}.pipeline_storage SET day = day - 1 RETURNING 1")  # as if run yesterday
    today = datetime.now(UTC).date()
    assert _run(org, "orders_1.csv", FILE_1)["result"] == "NoNewFiles"
    days = org.sql("SELECT day, measured_at FROM {schema}.pipeline_storage ORDER BY day")
    assert [d for d, _ in days] == [today - timedelta(days=1), today]
    again = _run(org, "orders_1.csv", FILE_1)
    assert again["result"] == "NoNewFiles" and again["postgres_bytes"] is not None
    assert org.sql("SELECT day, measured_at FROM {schema}.pipeline_storage ORDER BY day") == days
    org.pg.execute(f'DROP TABLE "{store_names.pg_schema(org.org_id)}".pipeline_storage')
    _run(org, "orders_1.csv", FILE_1)
    assert org.sql("SELECT day FROM {schema}.pipeline_storage") == [(today,)]
