"""Tenant escape through MongoDB (issue 22): with org A's own Secret (the MongoDB URI and database
the operator hands its jobs), every way at org B's raw-landing documents is refused, and B's
documents are as they were. Real FerretDB (on the stack's PostgreSQL); no mocks.

The orgs are provisioned by the operator's own code (`Databases.provision` and `provision_mongo`,
what a reconcile runs) and their Secret's MongoDB URI comes from `Runtime.credentials`, the
function that writes the Secret. On the code before per-org credentials every org got the same
unauthenticated URI and a shared database, and each attack below got through.
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import pymongo
import pymongo.errors
import pytest
from orgpipeline_api import store_names
from orgpipeline_api.v1alpha1 import OrgPipelineSpec, parse_manifest
from orgpipeline_operator import database, operator_settings, runtime

Doc = dict[str, Any]
TIMEOUT_MS = 5000


@dataclass(frozen=True)
class Org:
    org_id: str
    password: str
    uri: str  # ORGPIPELINE_MONGO_URI of the org's Secret
    db_name: str  # ORGPIPELINE_MONGO_DB of the org's Secret

    @property
    def collection(self) -> str:
        return store_names.mongo_collection(self.org_id, "orders")


@dataclass(frozen=True)
class World:
    a: Org
    b: Org
    admin: pymongo.MongoClient[Doc]
    shared_db: str
    host: str  # host:port of the MongoDB-protocol server

    def b_documents(self) -> dict[str, list[Doc]]:
        """Everything of B's, read with the admin's URI: its database and its old shared collection."""
        own = self.admin[self.b.db_name]
        out = {name: list(own[name].find().sort("_id", 1)) for name in sorted(own.list_collection_names())}
        out["shared"] = list(self.admin[self.shared_db][self.b.collection].find().sort("_id", 1))
        return out

    def client(self, uri: str) -> pymongo.MongoClient[Doc]:
        return pymongo.MongoClient(uri, serverSelectionTimeoutMS=TIMEOUT_MS, connectTimeoutMS=TIMEOUT_MS)


def _spec(org_id: str) -> OrgPipelineSpec:
    manifest = {
        "apiVersion": "orgpipeline.io/v1alpha1",
        "kind": "OrgPipeline",
        "metadata": {"name": f"org-{org_id}"},
        "spec": {
            "orgId": org_id,
            "source": {"bucket": "uploads", "prefix": f"org-{org_id}/"},
            "tables": [
                {
                    "name": "orders",
                    "schedule": "*/15 * * * *",
                    "businessKeys": ["order_id"],
                    "columns": [{"name": "order_id", "type": "text", "required": True}],
                }
            ],
        },
    }
    return parse_manifest(manifest)[1]


@pytest.fixture(scope="module")
def world(stack: Any) -> Iterator[World]:
    unique_id = uuid.uuid4().hex[:8]
    settings = operator_settings.from_env({**stack.as_environ(), "ORGPIPELINE_NAMESPACE": "default"})
    db = database.Databases(settings.postgres_dsn, settings.mongo_uri, settings.mongo_db)
    rt = runtime.Runtime(settings, cast(Any, None), db)  # credentials() needs no API server
    orgs = []
    for name in ("a", "b"):
        org_id = f"esc{name}{unique_id}"
        password = database.generate_password()
        db.provision(org_id, password)
        db.provision_mongo(org_id, ["orders"], password)
        env = rt.credentials(_spec(org_id), password, ("unused", "unused")).env()
        orgs.append(Org(org_id, password, env["ORGPIPELINE_MONGO_URI"], env["ORGPIPELINE_MONGO_DB"]))
    a, b = orgs
    admin: pymongo.MongoClient[Doc] = pymongo.MongoClient(settings.mongo_uri)
    host = settings.mongo_uri.split("://", 1)[1].rpartition("@")[2].split("/", 1)[0]
    w = World(a, b, admin, settings.mongo_db, host)
    # B's jobs land its documents, with B's own Secret; and a collection of B's is still in the
    # shared database (data of an earlier release the operator has not moved yet).
    with w.client(b.uri) as client_b:
        client_b[b.db_name][b.collection].insert_many(
            [{"_id": f"k{i}", "order_id": f"o{i}", "email": f"user{i}@b.example"} for i in range(5)]
        )
    admin[settings.mongo_db][b.collection].insert_one({"_id": "old", "email": "old@b.example"})
    try:
        yield w
    finally:
        admin[settings.mongo_db].drop_collection(b.collection)
        for org in (a, b):
            db.drop_collections(org.org_id)
            db.drop_postgres(org.org_id)
        admin.close()
        db.close()
        rt.pool.shutdown()


@pytest.fixture
def client_a(world: World) -> Iterator[pymongo.MongoClient[Doc]]:
    with world.client(world.a.uri) as client:
        yield client


def refused(world: World, attempts: dict[str, Callable[[], object]]) -> None:
    """Every attempt raises a server error (or cannot log in) and B's documents are unchanged."""
    before = world.b_documents()
    assert before[world.b.collection] and before["shared"]
    got_through = []
    for what, attempt in attempts.items():
        try:
            result = attempt()
        except (pymongo.errors.OperationFailure, pymongo.errors.InvalidName):
            continue
        got_through.append(f"{what}: {result!r}"[:200])
    assert not got_through, "got through:\n" + "\n".join(got_through)
    assert world.b_documents() == before


def test_the_secret_logs_in_as_the_org_on_its_own_database(world: World, client_a: Any) -> None:
    """The premise: A's Secret is A's identity and database, and A's jobs can do their work."""
    parsed = urllib.parse.urlparse(world.a.uri)
    assert parsed.username == store_names.pg_role(world.a.org_id)
    assert world.a.db_name == store_names.mongo_database(world.a.org_id) != world.b.db_name
    own = client_a[world.a.db_name][world.a.collection]
    own.insert_one({"_id": "mine"})
    own.update_one({"_id": "mine"}, {"$set": {"loaded": True}})
    assert own.find_one({"_id": "mine"}) == {"_id": "mine", "loaded": True}
    own.delete_many({})


def test_reading_b_is_refused(world: World, client_a: Any) -> None:
    theirs = client_a[world.b.db_name][world.b.collection]
    refused(
        world,
        {
            "find": lambda: list(theirs.find()),
            "find_one": lambda: theirs.find_one(),
            "count_documents": lambda: theirs.count_documents({}),
            "estimated_document_count": lambda: theirs.estimated_document_count(),
            "distinct": lambda: theirs.distinct("email"),
            "aggregate": lambda: list(theirs.aggregate([{"$match": {}}])),
            # (collStats and dbStats answer, with sizes from PostgreSQL's catalogue, which any
            # login may read: see operator/README.md, Isolation.)
            # the same collection in the shared database of earlier releases
            "find in the shared database": lambda: list(client_a[world.shared_db][world.b.collection].find()),
        },
    )


def test_writing_b_is_refused(world: World, client_a: Any) -> None:
    theirs = client_a[world.b.db_name][world.b.collection]
    shared = client_a[world.shared_db][world.b.collection]
    refused(
        world,
        {
            "insert_one": lambda: theirs.insert_one({"_id": "planted"}),
            "insert_many": lambda: theirs.insert_many([{"_id": "p1"}, {"_id": "p2"}]),
            "update_many": lambda: theirs.update_many({}, {"$set": {"email": "x@a.example"}}),
            "replace_one": lambda: theirs.replace_one({"_id": "k0"}, {"email": "x"}),
            "upsert": lambda: theirs.update_one({"_id": "new"}, {"$set": {"a": 1}}, upsert=True),
            "delete_many": lambda: theirs.delete_many({}),
            "find_one_and_delete": lambda: theirs.find_one_and_delete({}),
            "bulk_write": lambda: theirs.bulk_write([pymongo.DeleteOne({"_id": "k1"})]),
            "create_index": lambda: theirs.create_index("email"),
            "new collection in B's database": lambda: client_a[world.b.db_name]["raw_x"].insert_one({}),
            "create_collection in B's database": lambda: client_a[world.b.db_name].create_collection("raw_y"),
            "insert in the shared database": lambda: shared.insert_one({"_id": "planted"}),
            "delete in the shared database": lambda: shared.delete_many({}),
        },
    )


def test_dropping_or_renaming_b_is_refused(world: World, client_a: Any) -> None:
    db_b = client_a[world.b.db_name]
    refused(
        world,
        {
            "drop_collection": lambda: db_b.drop_collection(world.b.collection),
            "drop_database": lambda: client_a.drop_database(world.b.db_name),
            "rename": lambda: db_b[world.b.collection].rename("raw_taken"),
            "drop_indexes": lambda: db_b[world.b.collection].drop_indexes(),
            "drop in the shared database": lambda: client_a[world.shared_db].drop_collection(
                world.b.collection
            ),
            "drop the shared database": lambda: client_a.drop_database(world.shared_db),
            "rename A's collection over B's (dropTarget)": lambda: client_a.admin.command(
                "renameCollection",
                f"{world.a.db_name}.{world.a.collection}",
                to=f"{world.b.db_name}.{world.b.collection}",
                dropTarget=True,
            ),
            "$out from A's collection into B's": lambda: list(
                client_a[world.a.db_name][world.a.collection].aggregate(
                    [{"$out": {"db": world.b.db_name, "coll": world.b.collection}}]
                )
            ),
        },
    )


def test_look_alike_names_reach_nothing(world: World, client_a: Any) -> None:
    """Other spellings of B's database and collection: none is B's, and A cannot make them either
    (an org may make no database and no collection; the operator makes its collections)."""
    b, coll = world.b.db_name, world.b.collection
    cyrillic_i = b.replace("i", "\u0456", 1)  # orgraw_esc... with a Cyrillic i after 'orgraw_'
    databases = [b.upper(), b.capitalize(), cyrillic_i, f"{b}\u200b", f"{b}_", "admin", "config", "local"]
    collections = [coll.upper(), f"{coll}\u200b", f"{coll}..x", f"..{coll}", f"{coll}.x", f"{coll} "]
    attempts: dict[str, Callable[[], object]] = {}
    for name in databases:
        attempts[f"insert {name!r}.{coll}"] = lambda name=name: client_a[name][coll].insert_one({"_id": "x"})
        attempts[f"update {name!r}.{coll}"] = lambda name=name: client_a[name][coll].update_many(
            {}, {"$set": {"x": 1}}, upsert=True
        )
    for name in collections:
        attempts[f"insert {b}.{name!r}"] = lambda name=name: client_a[b][name].insert_one({"_id": "x"})
        attempts[f"insert own db.{name!r}"] = lambda name=name: client_a[world.a.db_name][name].insert_one(
            {"_id": "x"}
        )
    # B's collection name inside A's own database is not B's data, and A cannot make it either.
    attempts["B's name in A's database"] = lambda: client_a[world.a.db_name][coll].insert_one({"_id": "x"})
    refused(world, attempts)
    for name in [*databases, world.a.db_name]:
        try:
            found = client_a[name].list_collection_names()
        except (pymongo.errors.OperationFailure, pymongo.errors.InvalidName):
            continue
        for listed in found:  # whatever A can name, it cannot read B's documents through it
            if name != world.a.db_name:
                with pytest.raises(pymongo.errors.OperationFailure):
                    list(client_a[name][listed].find({"email": {"$regex": "@b.example$"}}))


def test_other_logins_are_refused(world: World) -> None:
    """Without credentials, with A's user on B's database, with a wrong or borrowed password, with
    B's user spelled URL-encoded and A's password: nothing reads or writes B's documents."""
    host, a, b = world.host, world.a, world.b
    user_a = urllib.parse.quote(store_names.pg_role(a.org_id), safe="")
    user_b = urllib.parse.quote(store_names.pg_role(b.org_id), safe="")
    encoded_b = "".join(f"%{ord(c):02X}" if c.isalpha() else c for c in store_names.pg_role(b.org_id))
    pw_a = urllib.parse.quote(a.password, safe="")
    uris = {
        "no credentials": f"mongodb://{host}/{b.db_name}",
        "A's user on B's database": f"mongodb://{user_a}:{pw_a}@{host}/{b.db_name}?authMechanism=PLAIN",
        "A's user, wrong password": f"mongodb://{user_a}:wrong@{host}/{b.db_name}?authMechanism=PLAIN",
        "B's user, A's password": f"mongodb://{user_b}:{pw_a}@{host}/{b.db_name}?authMechanism=PLAIN",
        "B's user URL-encoded, A's password": f"mongodb://{encoded_b}:{pw_a}@{host}/{b.db_name}?authMechanism=PLAIN",
        "postgres, A's password": f"mongodb://postgres:{pw_a}@{host}/{b.db_name}?authMechanism=PLAIN",
    }
    attempts: dict[str, Callable[[], object]] = {}
    clients = []
    for what, uri in uris.items():
        client = world.client(uri)
        clients.append(client)
        theirs = client[b.db_name][b.collection]
        attempts[f"{what}: find"] = lambda theirs=theirs: list(theirs.find())
        attempts[f"{what}: insert"] = lambda theirs=theirs: theirs.insert_one({"_id": "planted"})
        attempts[f"{what}: delete"] = lambda theirs=theirs: theirs.delete_many({})
        attempts[f"{what}: drop"] = lambda client=client: client.drop_database(b.db_name)
        attempts[f"{what}: shared"] = lambda client=client: list(client[world.shared_db][b.collection].find())
    try:
        refused(world, attempts)
    finally:
        for client in clients:
            client.close()


def test_user_management_is_refused(world: World, client_a: Any) -> None:
    """A cannot make itself a user on B's database, nor change or drop B's."""
    user_b = store_names.pg_role(world.b.org_id)
    roles = [{"role": "readWrite", "db": world.b.db_name}]
    refused(
        world,
        {
            "createUser on B's database": lambda: client_a[world.b.db_name].command(
                "createUser", "intruder", pwd="intruder-pw", roles=roles
            ),
            "createUser in admin": lambda: client_a.admin.command(
                "createUser", "intruder", pwd="intruder-pw", roles=roles
            ),
            "updateUser B": lambda: client_a[world.b.db_name].command("updateUser", user_b, pwd="taken"),
            "grantRolesToUser A": lambda: client_a.admin.command(
                "grantRolesToUser", store_names.pg_role(world.a.org_id), roles=roles
            ),
            "dropUser B": lambda: client_a[world.b.db_name].command("dropUser", user_b),
        },
    )
    # B still logs in with its own password and reads its documents.
    with world.client(world.b.uri) as client_b:
        assert client_b[world.b.db_name][world.b.collection].count_documents({}) == 5
