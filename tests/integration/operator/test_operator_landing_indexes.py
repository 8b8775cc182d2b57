"""The landing store's indexes (issue 25): every org collection the operator makes gets them, an
existing one gets them at its next provisioning (built while it holds documents), and FerretDB's
PostgreSQL answers the readers' filters through them (checked with explain, not with a clock).
The org's own login still only has row privileges: it cannot make or drop an index."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pymongo
import pymongo.errors
import pytest
from orgpipeline_api import store_names, stores
from orgpipeline_operator import database
from psycopg import sql

Doc = dict[str, Any]


@pytest.fixture
def org(stack: Any) -> Iterator[tuple[database.Databases, str, str]]:
    org_id = f"ix{uuid.uuid4().hex[:8]}"
    db = database.Databases(stack.operator_postgres_dsn, stack.operator_mongo_uri, "orgpipeline")
    password = database.generate_password()
    db.provision(org_id, password)
    try:
        yield db, org_id, password
    finally:
        db.drop_collections(org_id)
        db.drop_postgres(org_id)
        db.close()


def ferret_dsn(stack: Any) -> str:
    return psycopg.conninfo.make_conninfo(stack.postgres_dsn, dbname="ferretdb")


def our_indexes(stack: Any, org_id: str, table: str) -> dict[str, bool]:
    """{index name: valid} of the org's collection's PostgreSQL table, FerretDB's own excluded."""
    schema = store_names.mongo_database(org_id)
    coll = store_names.mongo_collection(org_id, table)
    with psycopg.connect(ferret_dsn(stack), autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT i.relname, x.indisvalid FROM {} m"
                " JOIN pg_class c ON c.relname = m._jsonb ->> 'table'"
                " AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = %s)"
                " JOIN pg_index x ON x.indrelid = c.oid JOIN pg_class i ON i.oid = x.indexrelid"
                " WHERE m._jsonb ->> '_id' = %s AND i.relname LIKE 'orgpipeline\\_%%'"
            ).format(sql.Identifier(schema, database.FERRETDB_METADATA)),
            (schema, coll),
        ).fetchall()
    return {str(name): bool(valid) for name, valid in rows}


def plan_indexes(explained: Doc) -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "Index Name" in node:
                found.add(str(node["Index Name"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(explained.get("queryPlanner"))
    return found


def versions(n: int, pending_every: int = 0) -> list[Doc]:
    return [
        {
            "_id": f"k{i:06d}:1",
            "composite_key": f"org_x_orders_k{i:06d}",
            "version": 1,
            "batch_id": f"b{i // 500:04d}",
            "postgres_status": "pending" if pending_every and i % pending_every == 0 else "loaded",
            "is_active": True,
        }
        for i in range(n)
    ]


def test_new_collections_are_indexed_for_their_readers(
    org: tuple[database.Databases, str, str], stack: Any
) -> None:
    db, org_id, password = org
    db.provision_mongo(org_id, ["orders", "items"], password)
    for name in ("orders", "items"):
        (table,) = _tables(stack, org_id, name)
        expected = {stores.ferretdb_index_name(table, i): True for i in stores.LANDING_INDEXES}
        assert our_indexes(stack, org_id, name) == expected

    # The org's own login writes and reads; PostgreSQL answers through the indexes.
    uri = database.org_mongo_uri(stack.mongo_uri, org_id, password)
    with pymongo.MongoClient(uri) as client:
        coll = client[store_names.mongo_database(org_id)][store_names.mongo_collection(org_id, "orders")]
        coll.insert_many(versions(3000, pending_every=100))
        _analyze(stack, org_id, "orders")
        history = coll.find({"composite_key": "org_x_orders_k001234"}).sort("version", 1)
        assert [d["_id"] for d in history] == ["k001234:1"]
        (table,) = _tables(stack, org_id, "orders")
        by_key = stores.ferretdb_index_name(table, stores.LANDING_INDEXES[0])
        pending = stores.ferretdb_index_name(table, stores.LANDING_INDEXES[1])
        assert by_key in plan_indexes(coll.find({"composite_key": "org_x_orders_k001234"}).explain())
        waiting = {"postgres_status": "pending", "batch_id": {"$in": ["b0001", "b0002"]}}
        assert pending in plan_indexes(coll.find(waiting).explain())
        assert len(list(coll.find(waiting))) == 10

        # Row privileges only: making or dropping an index is the operator's.
        with pytest.raises(pymongo.errors.OperationFailure):
            coll.create_index([("data_hash", 1)])
        with pytest.raises(pymongo.errors.OperationFailure):
            coll.drop_indexes()


def test_an_existing_collection_gets_them_at_its_next_provisioning(
    org: tuple[database.Databases, str, str], stack: Any, mongo: Any
) -> None:
    db, org_id, password = org
    db.provision_mongo(org_id, ["orders"], password)
    (table,) = _tables(stack, org_id, "orders")
    # A collection of an earlier release: documents, none of the indexes (and one left invalid by
    # a build that was interrupted).
    mongo[store_names.mongo_database(org_id)][store_names.mongo_collection(org_id, "orders")].insert_many(
        versions(2000)
    )
    schema = store_names.mongo_database(org_id)
    with psycopg.connect(ferret_dsn(stack), autocommit=True) as conn:
        for index in stores.LANDING_INDEXES:
            name = stores.ferretdb_index_name(table, index)
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, name)))
        # A unique build over duplicate values fails half way and leaves an invalid index.
        broken = stores.ferretdb_index_name(table, stores.LANDING_INDEXES[0])
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY {} ON {} ((_jsonb -> 'version'))").format(
                    sql.Identifier(broken), sql.Identifier(schema, table)
                )
            )
    assert our_indexes(stack, org_id, "orders") == {broken: False}

    db.provision_mongo(org_id, ["orders"], None)  # the next reconcile
    assert our_indexes(stack, org_id, "orders") == {
        stores.ferretdb_index_name(table, i): True for i in stores.LANDING_INDEXES
    }
    with psycopg.connect(ferret_dsn(stack), autocommit=True) as conn:
        (definition,) = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND indexname = %s", (schema, broken)
        ).fetchone() or ("",)
    assert "USING gin" in definition and "UNIQUE" not in definition  # made again, as it should be
    db.provision_mongo(org_id, ["orders"], None)  # and again: nothing to do, nothing doubled
    assert len(our_indexes(stack, org_id, "orders")) == len(stores.LANDING_INDEXES)


def _tables(stack: Any, org_id: str, table: str) -> list[str]:
    schema = store_names.mongo_database(org_id)
    with psycopg.connect(ferret_dsn(stack), autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL("SELECT _jsonb ->> 'table' FROM {} WHERE _jsonb ->> '_id' = %s").format(
                sql.Identifier(schema, database.FERRETDB_METADATA)
            ),
            (store_names.mongo_collection(org_id, table),),
        ).fetchall()
    return [str(r[0]) for r in rows]


def _analyze(stack: Any, org_id: str, table: str) -> None:
    schema = store_names.mongo_database(org_id)
    with psycopg.connect(ferret_dsn(stack), autocommit=True) as conn:
        for name in _tables(stack, org_id, table):
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, name)))
