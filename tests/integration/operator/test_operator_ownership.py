"""Ownership across an upgrade (issue 22): an org the operator made before owners were recorded in
PostgreSQL (its namespace labelled and controlled by the OrgPipeline, no claim row) is still its
own, and its uid is recorded at the first reconcile; the finalizer of such an org drops its data,
and the finalizer of an OrgPipeline whose namespace someone else made drops nothing. The
functions are called here against the real API server and PostgreSQL (no operator runs them)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from operator_helpers import TEST_LABEL, Kubectl, condition, get_pipeline, pipeline
from orgpipeline_api import store_names
from orgpipeline_operator import claims, cleanup, kube, naming, reconcile, runtime


@pytest.fixture
def org(kubectl: Kubectl, direct_rt: runtime.Runtime, unique_id: str) -> Iterator[dict[str, Any]]:
    """An OrgPipeline no operator handles (this test does), and, afterwards, nothing of it left."""
    org_id = f"own{unique_id}"
    manifest = pipeline(org_id)
    manifest["metadata"]["labels"] = {TEST_LABEL: "none"}
    kubectl.apply(manifest)
    body = kubectl.json("get", "orgpipeline", manifest["metadata"]["name"])
    yield body
    kubectl(
        "delete", "orgpipeline", body["metadata"]["name"], "--ignore-not-found", "--wait=false", check=False
    )
    kubectl(
        "delete", "namespace", naming.namespace(org_id), "--ignore-not-found", "--wait=false", check=False
    )
    claims.release(direct_rt.db, org_id, body["metadata"]["uid"])
    direct_rt.db.drop_postgres(org_id)


def _old_namespace(api: kube.Kube, body: dict[str, Any], *, controlled: bool) -> dict[str, Any]:
    """The namespace as the operator made it before the owner annotation (label and controller
    reference), or, `controlled=False`, as someone made it with the label alone."""
    name, uid, org_id = body["metadata"]["name"], body["metadata"]["uid"], body["spec"]["orgId"]
    meta: dict[str, Any] = {"name": naming.namespace(org_id), "labels": naming.labels(name, org_id)}
    if controlled:
        meta["ownerReferences"] = [naming.owner_reference(name, uid)]
    return api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})


def _schema_exists(direct_rt: runtime.Runtime, org_id: str) -> bool:
    with direct_rt.db.admin_connection() as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (store_names.pg_schema(org_id),)
        ).fetchone()
    return found is not None


def test_an_org_made_before_owners_were_recorded_stays_its_owners(
    direct_rt: runtime.Runtime, api: kube.Kube, org: dict[str, Any], events: asyncio.Queue[Any]
) -> None:
    name, uid, org_id = org["metadata"]["name"], org["metadata"]["uid"], org["spec"]["orgId"]
    made = _old_namespace(api, org, controlled=True)
    assert claims.owner(direct_rt.db, org_id) is None

    reconcile.reconcile(direct_rt, reconcile.request("resume", name, org), org)
    ready = condition(get_pipeline(api, name), "Ready")
    assert ready["status"] == "True", ready
    assert claims.owner(direct_rt.db, org_id) == claims.Owner(uid, name, made["metadata"]["uid"])
    now = api.get("v1", "Namespace", naming.namespace(org_id))
    assert now is not None and now["metadata"]["annotations"][naming.ANNOTATION_OWNER_UID] == uid

    # Its deletion (Delete) drops its data and namespace, and frees the org id.
    assert _schema_exists(direct_rt, org_id)
    body = get_pipeline(api, name)
    cleanup.finalize(direct_rt, name, body["spec"], body)
    assert not _schema_exists(direct_rt, org_id)
    assert claims.owner(direct_rt.db, org_id) is None
    gone = api.get("v1", "Namespace", naming.namespace(org_id))
    assert gone is None or gone["metadata"].get("deletionTimestamp")


def test_an_orgpipeline_that_never_owned_its_org_drops_nothing(
    direct_rt: runtime.Runtime, api: kube.Kube, org: dict[str, Any], events: asyncio.Queue[Any]
) -> None:
    """No claim, a namespace with the pipeline label but not made for this OrgPipeline's uid: the
    finalizer (deletionPolicy Delete) leaves the schema and the namespace as they are."""
    name, org_id = org["metadata"]["name"], org["spec"]["orgId"]
    direct_rt.db.provision(org_id, None)  # data of whoever owns the org
    _old_namespace(api, org, controlled=False)
    cleanup.finalize(direct_rt, name, org["spec"], org)
    assert _schema_exists(direct_rt, org_id)
    still = api.get("v1", "Namespace", naming.namespace(org_id))
    assert still is not None and not still["metadata"].get("deletionTimestamp")
