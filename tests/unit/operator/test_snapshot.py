"""The start-up inventory: children as listed, by key, with their applied hashes; namespace owners;
CronJobs per pipeline; the operator's own writes and deletes recorded on top."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from orgpipeline_api import v1alpha1
from orgpipeline_operator import naming
from orgpipeline_operator.database import ReaderState
from orgpipeline_operator.snapshot import Inventory

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "org-123.yaml"


def obj(
    kind: str, name: str, namespace: str = "", pipeline: str = "org-1", digest: str = "h"
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": {naming.LABEL_PIPELINE: pipeline},
        "annotations": {naming.ANNOTATION_HASH: digest},
    }
    if namespace:
        meta["namespace"] = namespace
    return {"kind": kind, "metadata": meta}


def test_listed_children_give_hashes_owners_and_cronjobs() -> None:
    inv = Inventory()
    inv.add(
        "Namespace", [obj("Namespace", "org-1", digest="n1"), obj("Namespace", "org-2", pipeline="org-2")]
    )
    inv.add("ConfigMap", [obj("ConfigMap", "orgpipeline-manifest", "org-1", digest="c1")])
    inv.add("CronJob", [obj("CronJob", "ingest-a", "org-1"), obj("CronJob", "ingest-b", "org-1")])
    assert inv.hashes[("Namespace", "", "org-1")] == "n1"
    assert inv.hashes[("ConfigMap", "org-1", "orgpipeline-manifest")] == "c1"
    # What ownership.namespace_owned reads of each namespace (its uid, labels and owner marks).
    assert {n: m["labels"][naming.LABEL_PIPELINE] for n, m in inv.namespaces.items()} == {
        "org-1": "org-1",
        "org-2": "org-2",
    }
    assert set(inv.namespaces["org-1"]) == {"name", "uid", "labels", "annotations", "ownerReferences"}
    assert inv.cronjobs["org-1"] == {("CronJob", "org-1", "ingest-a"), ("CronJob", "org-1", "ingest-b")}


def test_a_child_without_the_hash_annotation_is_listed_as_unknown() -> None:
    inv = Inventory()
    bare = obj("LimitRange", "orgpipeline-limits", "org-1")
    del bare["metadata"]["annotations"]
    inv.add("LimitRange", [bare])
    assert ("LimitRange", "org-1", "orgpipeline-limits") in inv.hashes
    assert inv.hashes[("LimitRange", "org-1", "orgpipeline-limits")] is None


def test_own_writes_and_deletes_update_the_inventory() -> None:
    inv = Inventory()
    inv.add("CronJob", [obj("CronJob", "ingest-a", "org-1", digest="old")])
    inv.applied({**obj("CronJob", "ingest-a", "org-1", digest="new")})
    inv.applied({**obj("CronJob", "ingest-c", "org-1", digest="c")})
    assert inv.hashes[("CronJob", "org-1", "ingest-a")] == "new"
    assert ("CronJob", "org-1", "ingest-c") in inv.cronjobs["org-1"]
    inv.deleted("org-1", ("CronJob", "org-1", "ingest-a"))
    assert ("CronJob", "org-1", "ingest-a") not in inv.hashes
    assert inv.cronjobs["org-1"] == {("CronJob", "org-1", "ingest-c")}


def test_an_org_is_provisioned_when_its_role_owns_its_schema() -> None:
    inv = Inventory()
    assert not inv.provisioned("1")  # the schemas were not read: provision as before
    inv.schemas = {("orgdata_1", "orgpipeline_org_1"), ("orgdata_2", "postgres")}
    assert inv.provisioned("1")
    assert not inv.provisioned("2")  # the schema has another owner: provision() repairs it
    assert not inv.provisioned("3")


def test_the_reader_is_ready_when_every_table_a_run_made_has_its_view() -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    _, spec = v1alpha1.parse_manifest(doc)
    tables = [t.name for t in spec.tables]
    inv = Inventory()
    assert inv.reader_ready(spec) is None  # not read: the reconcile asks PostgreSQL
    inv.readers = {}
    assert inv.reader_ready(spec) is False  # no reader role
    inv.readers = {spec.org_id: ReaderState(role=True)}
    assert inv.reader_ready(spec) is True  # no table made yet, so no view is due
    inv.readers = {spec.org_id: ReaderState(True, frozenset(), frozenset(tables[:1]))}
    assert inv.reader_ready(spec) is False  # a table made by a run, its view missing
    inv.readers = {spec.org_id: ReaderState(True, frozenset(tables[:1]), frozenset(tables[:1]))}
    assert inv.reader_ready(spec) is True
