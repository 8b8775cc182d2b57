"""`validate` reads MongoDB's versions unsorted and orders them itself: FerretDB 1.x sorts a find
in its own memory, every document whole (at 1M versions it grew past 12 GB), so asking the server to
sort would make `validate` a danger to the landing store. The order it gives is the comparison's:
code points of the key, then the version as a number."""

from __future__ import annotations

import uuid
from typing import Any

import pymongo
import pymongo.monitoring
from orgpipeline_cli.manage import queries


class Finds(pymongo.monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    def started(self, event: pymongo.monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.commands.append(dict(event.command))

    def succeeded(self, event: pymongo.monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: pymongo.monitoring.CommandFailedEvent) -> None:
        pass


def test_versions_come_sorted_without_asking_the_server_to_sort(stack: Any, monkeypatch: Any) -> None:
    finds = Finds()
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        stack.mongo_uri, event_listeners=[finds]
    )
    coll = client[f"validate{uuid.uuid4().hex[:8]}"]["versions"]
    monkeypatch.setattr(queries, "SORT_CHUNK", 3)  # several Arrow chunks, sorted as one
    keys = ["b", "a", "é", "Z", "a", "b", "a", "z"]
    versions = [1, 10, 1, 1, 9, 2, 1, 1]
    docs = [
        {"_id": f"{k}|v{v}", "composite_key": k, "version": v, "data_hash": f"h{k}{v}", "is_active": True}
        for k, v in zip(keys, versions, strict=True)
    ]
    for doc in docs:
        doc["postgres_status"] = "loaded"
    docs.append({**docs[0], "_id": "c|v1", "composite_key": "c", "is_active": False})  # not active
    docs.append({**docs[0], "_id": "d|v1", "composite_key": "d", "postgres_status": "pending"})
    try:
        coll.insert_many(docs)
        found = [(r.composite_key, r.version, r.data_hash) for r in queries.mongo_versions(coll)]
        assert found == [
            ("Z", 1, "hZ1"),
            ("a", 1, "ha1"),
            ("a", 9, "ha9"),
            ("a", 10, "ha10"),
            ("b", 1, "hb1"),
            ("b", 2, "hb2"),
            ("z", 1, "hz1"),
            ("é", 1, "hé1"),
        ]
        assert finds.commands and all("sort" not in c for c in finds.commands)
        assert list(queries.mongo_versions(client["nothing"]["here"])) == []
    finally:
        client.drop_database(coll.database.name)
        client.close()
