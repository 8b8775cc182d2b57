"""`org_id` in the org's records is the seed's `org_<id>`; records of older releases (the bare id)
are rewritten by the table's next run, with no version lost or doubled."""

from __future__ import annotations

import json

import bson
from conftest import Org, order, orders_csv
from orgpipeline_api import store_names
from orgpipeline_api.orgschema import privacy
from orgpipeline_jobs import pipeline
from orgpipeline_jobs.warehouse import outbox

TABLES = ("raw_orders", "raw_orders_change_log", "raw_orders_quality_metrics")


def everywhere(value: str) -> dict[str, set[str]]:
    return {place: {value} for place in (*TABLES, "mongo")}


def org_ids(org: Org) -> dict[str, set[str]]:
    """Every org_id value in the table's PostgreSQL tables and MongoDB documents."""
    found = {t: {r[0] for r in org.sql(f"SELECT DISTINCT org_id FROM {{schema}}.{t}")} for t in TABLES}
    return {**found, "mongo": set(org.collection().distinct("org_id"))}


def test_new_records_hold_the_seeds_org_id(org: Org) -> None:
    org.upload("orders_1.csv", orders_csv([order(1), order(2)]))
    org.run()
    assert org_ids(org) == everywhere(f"org_{org.org_id}")
    assert store_names.record_org_id(org.org_id) == f"org_{org.org_id}"


def test_old_records_are_migrated_by_the_next_run_without_a_lost_or_doubled_version(org: Org) -> None:
    # An older release's data: a fused run (PostgreSQL and MongoDB), an `ingest` whose versions wait
    # in MongoDB for `load`, and a batch left in the outbox by a run that died before MongoDB had it.
    org.upload("orders_1.csv", orders_csv([order(1), order(2), order(3)]))
    org.run()
    uri = org.upload("orders_2.csv", orders_csv([order(2, amount="12.50"), order(4)]))
    pipeline.run_ingest(org.settings(), org.spec, "orders", uri)
    assert org.collection().count_documents({"postgres_status": "pending"}) == 2
    left = org.collection().find_one({"order_id": "O3"})
    assert left is not None
    org.collection().delete_one({"_id": left["_id"]})
    old = org.org_id
    outbox.put(org.pg, old, "orders", "0-left-by-a-crash", bson.encode({**left, "org_id": old}))
    for table in TABLES:
        org.sql(f"UPDATE {{schema}}.{table} SET org_id = %s RETURNING 1", old)
    org.collection().update_many({}, {"$set": {"org_id": old}})
    org.pg.execute(f'DROP TABLE IF EXISTS "{org.schema}".pipeline_migrations')  # a schema of before it
    assert org_ids(org) == everywhere(old)

    org.upload("orders_3.csv", orders_csv([order(1, amount="11.00"), order(5)]))
    result = org.run()
    assert (result["inserted"], result["updated"], result["result"]) == (1, 1, "Succeeded")

    new = f"org_{old}"
    assert org_ids(org) == everywhere(new)
    versions = [("O1", 1), ("O1", 2), ("O2", 1), ("O2", 2), ("O3", 1), ("O4", 1), ("O5", 1)]
    raw = org.sql("SELECT order_id, version FROM {schema}.raw_orders ORDER BY 1, 2")
    assert raw == versions
    log = org.sql(
        "SELECT split_part(composite_key, '_', 4), new_version FROM {schema}.raw_orders_change_log"
        " ORDER BY 1, 2"
    )
    assert log == versions
    docs = sorted((d["order_id"], d["version"]) for d in org.collection().find({}))
    assert docs == versions  # the outbox's O3 is back, in the new form; nothing twice
    assert org.sql("SELECT count(*) FROM {schema}.raw_orders_outbox") == [(0,)]
    (counts,) = org.sql("SELECT counts FROM {schema}.pipeline_migrations WHERE table_name = 'orders'")
    assert counts[0] == {"versions": 3, "change_log": 3, "quality_metrics": 2, "documents": 4}
    # The seed's own version-conflict query finds what it should, and validate agrees.
    conflicts = org.sql(
        "SELECT composite_key, array_agg(version ORDER BY version) FROM {schema}.raw_orders"
        " WHERE org_id = %s GROUP BY composite_key HAVING COUNT(*) > 1 ORDER BY 1",
        new,
    )
    assert [(k.removeprefix(f"{new}_orders_"), v) for k, v in conflicts] == [
        ("O1_C1_2024-01-15", [1, 2]),
        ("O2_C2_2024-01-15", [1, 2]),
    ]
    done = org.cli("validate", "--org-id", org.org_id, "-o", "json")
    assert done.returncode == 0 and json.loads(done.stdout)["ok"], done.stdout + done.stderr
    # Migrated once: a later run leaves the record as it is.
    org.run()
    assert org.sql("SELECT counts FROM {schema}.pipeline_migrations") == [counts]


def test_a_reader_view_of_an_older_release_is_made_again_with_the_migration(org: Org) -> None:
    """The reader's view filtered on the bare id: after the migration it would show nothing, so the
    migrating run makes it again (with its grant), and it shows every version."""
    views, reader = store_names.pg_view_schema(org.org_id), store_names.pg_reader_role(org.org_id)
    org.pg.execute(f'CREATE ROLE "{reader}" NOLOGIN')
    try:
        org.pg.execute(f'CREATE SCHEMA "{views}"')
        org.upload("orders_1.csv", orders_csv([order(1), order(2)]))
        org.run()
        table = org.spec.table("orders")
        assert table is not None
        statement = privacy.view_statement(org.org_id, table).as_string(org.pg)
        old = statement.replace(f"IN ('org_{org.org_id}', '{org.org_id}')", f"= '{org.org_id}'")
        assert old != statement
        org.pg.execute(f'DROP VIEW "{views}".orders')
        org.pg.execute(old)  # the older release's view, and its records
        org.pg.execute(f'GRANT SELECT ON "{views}".orders TO "{reader}"')
        for name in TABLES:
            org.sql(f"UPDATE {{schema}}.{name} SET org_id = %s RETURNING 1", org.org_id)
        org.pg.execute(f'DROP TABLE "{org.schema}".pipeline_migrations')

        org.upload("orders_2.csv", orders_csv([order(3)]))
        org.run()
        assert org.sql(f'SELECT count(*) FROM "{views}".orders') == [(3,)]
        definition = org.sql("SELECT pg_get_viewdef(%s::regclass)", f'"{views}".orders')[0][0]
        assert f"'org_{org.org_id}'" in definition
        assert org.sql(f"SELECT has_table_privilege('{reader}', '\"{views}\".orders', 'SELECT')") == [(True,)]
    finally:
        org.pg.execute(f'DROP SCHEMA IF EXISTS "{views}" CASCADE')
        org.pg.execute(f'DROP OWNED BY "{reader}"')
        org.pg.execute(f'DROP ROLE "{reader}"')


def test_a_new_tables_migration_is_recorded_when_it_is_made_and_its_schema_stamped(org: Org) -> None:
    """A table made by this release has nothing of the bare id: its first run records the migration
    as done without rewriting (nor connecting to MongoDB for it) and stamps the table, so that later
    runs skip both the migration and the schema's statements (`ddl.is_current`). Objects changed by
    hand, or columns added to the manifest, make the stamp stale: the next run redoes them."""
    org.upload("orders_1.csv", orders_csv([order(1)]))
    org.run()
    assert org.sql("SELECT table_name, migration, counts FROM {schema}.pipeline_migrations") == [
        ("orders", "record_org_id", {})
    ]
    raw = f'"{org.schema}".raw_orders'
    (stamp,) = org.sql("SELECT obj_description(%s::regclass, 'pg_class')", raw)[0]
    assert stamp.startswith("orgpipeline schema ")
    assert org.run()["result"] == "NoNewFiles"
    assert org.sql("SELECT obj_description(%s::regclass, 'pg_class')", raw) == [(stamp,)]

    index = f'"{org.schema}".idx_raw_orders_changed_by'
    org.pg.execute(f"DROP INDEX {index}")
    org.run()
    assert org.sql("SELECT to_regclass(%s)::text", index) != [(None,)]
    assert org.sql("SELECT obj_description(%s::regclass, 'pg_class')", raw) == [(stamp,)]

    columns = [
        c.model_dump(by_alias=True, exclude_none=True, mode="json") for c in org.spec.tables[0].columns
    ]
    org.rewrite(orders={"columns": [*columns, {"name": "extra", "type": "text"}]})
    org.run()
    added = org.sql(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'extra'", raw
    )
    assert added == [("extra",)]
    assert org.sql("SELECT obj_description(%s::regclass, 'pg_class')", raw) != [(stamp,)]
    assert org.sql("SELECT count(*) FROM {schema}.pipeline_migrations") == [(1,)]
