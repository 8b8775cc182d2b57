"""The org's data: PostgreSQL isolation between orgs, and deletion per deletionPolicy."""

from __future__ import annotations

import base64
from typing import Any

import psycopg
import pytest
from operator_helpers import Kubectl, Operator, pipeline, wait_for, wait_ready
from orgpipeline_api import store_names
from orgpipeline_operator import database, kube, naming


def _org_dsn(kubectl: Kubectl, org: str, stack: Any) -> str:
    """The DSN the org's jobs get, pointed at the stack's PostgreSQL (same host as the admin DSN)."""
    secret = kubectl.json("get", "secret", naming.SECRET, "-n", f"org-{org}")
    user = base64.b64decode(secret["data"]["ORGPIPELINE_POSTGRES_USER"]).decode()
    password = base64.b64decode(secret["data"]["ORGPIPELINE_POSTGRES_PASSWORD"]).decode()
    info = psycopg.conninfo.conninfo_to_dict(stack.postgres_dsn)
    return psycopg.conninfo.make_conninfo(
        stack.postgres_dsn, user=user, password=password, dbname=info["dbname"]
    )


def _exists(pg: Any, query: str, value: str) -> bool:
    return pg.execute(query, (value,)).fetchone() is not None


SCHEMA_Q = "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s"
ROLE_Q = "SELECT 1 FROM pg_roles WHERE rolname = %s"


def test_org_role_owns_its_schema_and_cannot_read_another_org(
    operator: Operator,
    kubectl: Kubectl,
    api: kube.Kube,
    stack: Any,
    unique_id: str,
    cleanup_pipelines: list[str],
) -> None:
    a, b = f"isoa{unique_id}", f"isob{unique_id}"
    for org in (a, b):
        cleanup_pipelines.append(f"org-{org}")
        kubectl.apply(pipeline(org, ["orders"], deletionPolicy="Delete"))
    for org in (a, b):
        wait_ready(api, f"org-{org}")

    schema_a, schema_b = store_names.pg_schema(a), store_names.pg_schema(b)
    with psycopg.connect(_org_dsn(kubectl, b, stack), autocommit=True) as conn_b:
        conn_b.execute(f'CREATE TABLE "{schema_b}".secrets (v text)')
        conn_b.execute(f"INSERT INTO \"{schema_b}\".secrets VALUES ('b-only')")
    with psycopg.connect(_org_dsn(kubectl, a, stack), autocommit=True) as conn_a:
        # Its own schema: full use (the jobs create their tables there).
        conn_a.execute(f'CREATE TABLE "{schema_a}".t (id int)')
        conn_a.execute(f'INSERT INTO "{schema_a}".t VALUES (1)')
        assert conn_a.execute("SELECT current_schema()").fetchone() == (schema_a,)
        # Another org's schema: no access at all.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn_a.execute(f'SELECT * FROM "{schema_b}".secrets')
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn_a.execute(f'CREATE TABLE "{schema_b}".intruder (id int)')
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn_a.execute("CREATE TABLE public.intruder (id int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn_a.execute(f'GRANT USAGE ON SCHEMA "{schema_b}" TO CURRENT_USER')


def test_delete_policy_drops_data_and_retain_keeps_it(
    operator: Operator, kubectl: Kubectl, api: kube.Kube, pg: Any, mongo: Any, stack: Any, unique_id: str
) -> None:
    keep, drop = f"keep{unique_id}", f"drop{unique_id}"
    kubectl.apply(pipeline(keep, ["orders"], deletionPolicy="Retain"))
    kubectl.apply(pipeline(drop, ["orders"], deletionPolicy="Delete"))
    for org in (keep, drop):
        wait_ready(api, f"org-{org}")
        mongo[store_names.mongo_database(org)][store_names.mongo_collection(org, "orders")].insert_one(
            {"k": 1}
        )
        with psycopg.connect(_org_dsn(kubectl, org, stack), autocommit=True) as conn:
            conn.execute(f'CREATE TABLE "{store_names.pg_schema(org)}".extra (id int)')
    # A collection of an org whose id starts like ours must survive.
    other = mongo[store_names.mongo_database(f"{drop}x")][store_names.mongo_collection(f"{drop}x", "orders")]
    other.insert_one({"k": 1})

    for org in (keep, drop):
        kubectl("delete", "orgpipeline", f"org-{org}", "--wait=true", "--timeout=60s")

    def namespace_gone(org: str) -> bool:
        found = api.get("v1", "Namespace", f"org-{org}")
        return found is None or bool(found["metadata"].get("deletionTimestamp"))

    for org in (keep, drop):
        wait_for(lambda org=org: namespace_gone(org), what=f"namespace org-{org} deleted")

    assert _exists(pg, SCHEMA_Q, store_names.pg_schema(keep)) and _exists(
        pg, ROLE_Q, store_names.pg_role(keep)
    )
    kept = mongo[store_names.mongo_database(keep)]
    assert store_names.mongo_collection(keep, "orders") in kept.list_collection_names()

    assert not _exists(pg, SCHEMA_Q, store_names.pg_schema(drop))
    assert not _exists(pg, ROLE_Q, store_names.pg_role(drop))
    assert store_names.mongo_database(drop) not in mongo.list_database_names()
    assert store_names.mongo_collection(f"{drop}x", "orders") in other.database.list_collection_names()

    # Clean up what Retain kept, as the operator would: the MongoDB database first (it holds the
    # role's grants in FerretDB's), then the role (the operator granted the role its database
    # privileges: a plain DROP OWNED BY as the superuser leaves those, and DROP ROLE refuses it).
    mongo.drop_database(other.database.name)
    db = database.Databases(stack.postgres_dsn, stack.mongo_uri, "orgpipeline")
    try:
        db.drop_collections(keep)
        db.drop_postgres(keep)
    finally:
        db.close()
    assert not _exists(pg, ROLE_Q, store_names.pg_role(keep))
