"""The move of an org's collections out of the shared MongoDB database of earlier releases into the
org's own (issue 22): what was landed the old way is in the org's database afterwards, readable with
the org's own credentials, each version once; a move cut short carries on; other orgs' collections
stay where they were."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pymongo
import pytest
from operator_helpers import Kubectl, Operator, pipeline, wait_for, wait_ready
from orgpipeline_api import store_names
from orgpipeline_operator import database, kube
from psycopg import sql

Doc = dict[str, Any]


@pytest.fixture
def org(stack: Any) -> Iterator[tuple[database.Databases, str, str]]:
    org_id = f"mv{uuid.uuid4().hex[:8]}"
    db = database.Databases(stack.postgres_dsn, stack.mongo_uri, "orgpipeline")
    password = database.generate_password()
    db.provision(org_id, password)
    try:
        yield db, org_id, password
    finally:
        db.drop_collections(org_id)
        db.drop_collections(f"{org_id}x")
        db.drop_postgres(org_id)
        db.close()


def _versions(n: int, table: str) -> list[Doc]:
    return [
        {"_id": f"{table}-{i:05d}-v1", "composite_key": f"k{i}", "version": 1, "data": {"n": i}}
        for i in range(n)
    ]


def test_old_collections_move_whole_once_and_a_cut_short_move_carries_on(
    org: tuple[database.Databases, str, str], mongo: Any, stack: Any
) -> None:
    db, org_id, password = org
    shared = mongo["orgpipeline"]
    orders, items = (
        store_names.mongo_collection(org_id, "orders"),
        store_names.mongo_collection(org_id, "items"),
    )
    other = store_names.mongo_collection(f"{org_id}x", "orders")  # an org whose id starts like ours
    landed = {orders: _versions(2345, "orders"), items: _versions(10, "items")}  # the old way
    for name, docs in landed.items():
        shared[name].insert_many([dict(d) for d in docs])
    shared[other].insert_one({"_id": "theirs"})
    # A move that stopped after part of a batch had been copied (the old collection still whole).
    own = mongo[store_names.mongo_database(org_id)]
    own[orders].insert_many([dict(d) for d in landed[orders][:700]])

    moved = db.provision_mongo(org_id, ["orders"], password)

    assert moved == sorted([orders, items])
    for name, docs in landed.items():
        assert list(own[name].find().sort("_id", 1)) == docs  # each version once, as landed
        assert name not in shared.list_collection_names()
    assert list(shared[other].find()) == [{"_id": "theirs"}]

    # Again: nothing left to move, nothing changes.
    assert db.provision_mongo(org_id, ["orders"], password) == []
    assert own[orders].count_documents({}) == 2345

    # The org's jobs, with the org's own credentials, read what was landed before.
    uri = database.org_mongo_uri(stack.mongo_uri, org_id, password)
    with pymongo.MongoClient[Doc](uri, serverSelectionTimeoutMS=5000) as client:
        theirs = client[store_names.mongo_database(org_id)]
        assert theirs[orders].count_documents({}) == 2345
        assert theirs[items].count_documents({}) == 10


def hand_shared_database_to_operator(stack: Any, shared: str) -> None:
    """The upgrade step operator/README.md gives the DBA: the operator's role (not a superuser)
    takes over the shared database of earlier releases in FerretDB's PostgreSQL database, whose
    tables the login FerretDB used then (here the superuser) made."""
    role = psycopg.conninfo.conninfo_to_dict(stack.operator_postgres_dsn)["user"]
    dsn = psycopg.conninfo.make_conninfo(stack.postgres_dsn, dbname="ferretdb")
    with psycopg.connect(dsn, autocommit=True) as conn:
        owner = sql.Identifier(role)
        conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(sql.Identifier(shared), owner))
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (shared,)).fetchall()
        for (table,) in tables:
            conn.execute(
                sql.SQL("ALTER TABLE {}.{} OWNER TO {}").format(
                    sql.Identifier(shared), sql.Identifier(table), owner
                )
            )


def test_the_operator_moves_an_orgs_old_collections_when_it_reconciles(
    operator: Operator, kubectl: Kubectl, api: kube.Kube, mongo: Any, stack: Any, unique_id: str
) -> None:
    """An org whose jobs landed in the shared database (an earlier release) finds its versions in
    its own database once the operator has reconciled it, and its Secret reads them."""
    org_id = f"mvop{unique_id}"
    shared = mongo[operator.env.get("ORGPIPELINE_MONGO_DB", "orgpipeline")]
    name = store_names.mongo_collection(org_id, "orders")
    landed = _versions(1500, "orders")
    shared[name].insert_many([dict(d) for d in landed])
    hand_shared_database_to_operator(stack, shared.name)
    kubectl.apply(pipeline(org_id, ["orders"]))
    try:
        wait_ready(api, f"org-{org_id}")
        wait_for(lambda: name not in shared.list_collection_names(), what="the old collection moved")
        assert list(mongo[store_names.mongo_database(org_id)][name].find().sort("_id", 1)) == landed
        secret = kubectl.json("get", "secret", "orgpipeline-credentials", "-n", f"org-{org_id}")["data"]
        uri, db_name = (
            base64.b64decode(secret[k]).decode() for k in ("ORGPIPELINE_MONGO_URI", "ORGPIPELINE_MONGO_DB")
        )
        with pymongo.MongoClient[Doc](uri, serverSelectionTimeoutMS=5000) as client:
            assert client[db_name][name].count_documents({}) == len(landed)
    finally:
        kubectl("delete", "orgpipeline", f"org-{org_id}", "--wait=true", "--timeout=60s")
        shared.drop_collection(name)


def test_a_table_added_later_gets_its_collection_for_the_org(
    operator: Operator, kubectl: Kubectl, api: kube.Kube, mongo: Any, unique_id: str
) -> None:
    """The org may make no collection itself: the operator makes the new table's when the spec
    changes, and the org's Secret writes it."""
    org_id = f"add{unique_id}"
    db_name = store_names.mongo_database(org_id)
    kubectl.apply(pipeline(org_id, ["orders"]))
    try:
        wait_ready(api, f"org-{org_id}")
        assert mongo[db_name].list_collection_names() == [store_names.mongo_collection(org_id, "orders")]
        kubectl.apply(pipeline(org_id, ["orders", "refunds"]))
        refunds = store_names.mongo_collection(org_id, "refunds")
        wait_for(lambda: refunds in mongo[db_name].list_collection_names(), what="the new collection")
        secret = kubectl.json("get", "secret", "orgpipeline-credentials", "-n", f"org-{org_id}")["data"]
        uri = base64.b64decode(secret["ORGPIPELINE_MONGO_URI"]).decode()
        with pymongo.MongoClient[Doc](uri, serverSelectionTimeoutMS=5000) as client:
            client[db_name][refunds].insert_one({"_id": "r1"})
            assert client[db_name][refunds].count_documents({}) == 1
    finally:
        kubectl("delete", "orgpipeline", f"org-{org_id}", "--wait=true", "--timeout=60s")
