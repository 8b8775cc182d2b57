"""Self-healing (issue 24): what someone deletes under the operator comes back within seconds of the
watch event, not at the next idle resync (this module's operator resyncs every 10 minutes, so only
the watch can be what repaired it), and `Ready` says False while the org cannot run.

The org's namespace is the operator's own when its uid is the one recorded with the org's claim:
deleted, it is made again (and the new uid recorded); one someone else made meanwhile is never
adopted, even with the operator's labels and owner annotation."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from operator_helpers import (
    TEST_LABEL,
    WEBHOOK_TOKEN,
    Kubectl,
    Operator,
    condition,
    free_port,
    get_pipeline,
    operator_env,
    pipeline,
    running_operator,
    wait_for,
    wait_made_again,
    wait_ready,
)
from orgpipeline_operator import cache, claims, kube, naming, reconcile, runtime
from test_operator_file_events import arrival_jobs, created, post

SELECTOR_VALUE = "self-heal"
RESYNC = 600.0
HOLD = "orgpipeline.io/test-hold"
BOUND = 5.0
"""Seconds from the watch event to the repair (issue 24); a little more is allowed for the API
server's own latency (namespace deletion, the test's polling)."""


@pytest.fixture(scope="module")
def heal_operator(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    env = operator_env(
        stack,
        f"{TEST_LABEL}={SELECTOR_VALUE}",
        resync=RESYNC,
        ORGPIPELINE_WEBHOOK_PORT=str(free_port()),
        ORGPIPELINE_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        ORGPIPELINE_WEBHOOK_DEBOUNCE_SECONDS="0.5",
    )
    with running_operator(env, tmp_path_factory.mktemp("heal") / "operator.log") as op:
        yield op


@pytest.fixture
def healed(
    heal_operator: Operator, kubectl: Kubectl, api: kube.Kube, unique_id: str
) -> Iterator[dict[str, Any]]:
    """A Ready OrgPipeline of the self-healing operator; deleted (and waited for) afterwards."""
    manifest = pipeline(f"heal{unique_id}")
    manifest["metadata"]["labels"] = {TEST_LABEL: SELECTOR_VALUE}
    kubectl.apply(manifest)
    yield wait_ready(api, manifest["metadata"]["name"], timeout=60)
    kubectl("delete", "orgpipeline", manifest["metadata"]["name"], "--ignore-not-found", "--timeout=60s")


def _namespace(api: kube.Kube, org_id: str) -> dict[str, Any] | None:
    return api.get("v1", "Namespace", naming.namespace(org_id))


def test_a_deleted_cronjob_comes_back_within_seconds(
    kubectl: Kubectl, api: kube.Kube, healed: dict[str, Any]
) -> None:
    ns = naming.namespace(healed["spec"]["orgId"])
    before = api.get("batch/v1", "CronJob", "ingest-orders", ns)
    assert before is not None
    kubectl("delete", "cronjob", "ingest-orders", "-n", ns)
    took = wait_made_again(
        api, "batch/v1", "CronJob", "ingest-orders", ns, before["metadata"]["uid"], BOUND + 2
    )
    assert took < BOUND + 2
    assert condition(get_pipeline(api, healed["metadata"]["name"]), "Ready")["status"] == "True"


def test_a_changed_cronjob_is_put_back_within_seconds(
    kubectl: Kubectl, api: kube.Kube, healed: dict[str, Any]
) -> None:
    """An edit of the spec keeps the operator's applied-hash annotation: the watch tells it by the
    managedFields of another manager owning spec fields."""
    ns = naming.namespace(healed["spec"]["orgId"])
    before = api.get("batch/v1", "CronJob", "ingest-orders", ns)
    assert before is not None
    schedule = before["spec"]["schedule"]
    policy = before["spec"]["concurrencyPolicy"]
    other = {
        "schedule": "7 7 7 7 *" if schedule != "7 7 7 7 *" else "8 8 8 8 *",
        "concurrencyPolicy": "Allow" if policy != "Allow" else "Replace",
    }
    patch = json.dumps({"spec": other})
    kubectl("patch", "cronjob", "ingest-orders", "-n", ns, "--type=merge", "-p", patch)

    def back() -> bool:
        found = api.get("batch/v1", "CronJob", "ingest-orders", ns)
        assert found is not None
        spec = found["spec"]
        return bool(
            spec["schedule"] == schedule and spec["concurrencyPolicy"] == before["spec"]["concurrencyPolicy"]
        )

    wait_for(back, BOUND + 2, "the CronJob's spec to be put back", interval=0.2)
    assert condition(get_pipeline(api, healed["metadata"]["name"]), "Ready")["status"] == "True"


def test_a_deleted_namespace_is_made_again_with_its_children(
    kubectl: Kubectl, api: kube.Kube, direct_rt: runtime.Runtime, healed: dict[str, Any]
) -> None:
    name, uid, org_id = healed["metadata"]["name"], healed["metadata"]["uid"], healed["spec"]["orgId"]
    ns = naming.namespace(org_id)
    old = _namespace(api, org_id)
    assert old is not None
    assert claims.owner(direct_rt.db, org_id) == claims.Owner(uid, name, old["metadata"]["uid"])
    # An object with a finalizer holds the namespace in Terminating until the test lets it go (the
    # stack's namespace controller is otherwise too quick to see the state).
    held = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hold", "finalizers": [HOLD]}}
    api.create({**held, "metadata": {**held["metadata"], "namespace": ns}})
    kubectl("delete", "namespace", ns, "--wait=false")

    # Ready is False while the namespace is going (the org cannot run), within the bound.
    def not_ready() -> dict[str, Any] | None:
        ready = condition(get_pipeline(api, name), "Ready")
        return ready if ready.get("status") == "False" else None

    said = wait_for(not_ready, BOUND + 2, "Ready False while the namespace is deleted", interval=0.2)
    assert said["reason"] == "NamespaceTerminating", said
    kubectl("patch", "configmap", "hold", "-n", ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')

    def remade() -> dict[str, Any] | None:
        found = _namespace(api, org_id)
        ok = found is not None and found["metadata"]["uid"] != old["metadata"]["uid"]
        return found if ok and not found["metadata"].get("deletionTimestamp") else None

    new = wait_for(remade, 30, "the namespace to be made again")
    wait_ready(api, name, timeout=30)
    # Its new uid is recorded: the operator's own from now on (and the old one's no more).
    assert claims.owner(direct_rt.db, org_id) == claims.Owner(uid, name, new["metadata"]["uid"])
    for api_version, kind, child in (
        ("batch/v1", "CronJob", "ingest-orders"),
        ("v1", "Secret", naming.SECRET),
        ("v1", "ServiceAccount", naming.SERVICE_ACCOUNT),
    ):
        assert api.get(api_version, kind, child, ns) is not None, f"no {kind} {child} in {ns}"


@pytest.fixture
def direct_org(kubectl: Kubectl, direct_rt: runtime.Runtime, unique_id: str) -> Iterator[dict[str, Any]]:
    """An OrgPipeline no operator handles (the test reconciles it itself); nothing left after."""
    org_id = f"heal{unique_id}"
    manifest = pipeline(org_id)
    manifest["metadata"]["labels"] = {TEST_LABEL: "none"}
    kubectl.apply(manifest)
    body = kubectl.json("get", "orgpipeline", manifest["metadata"]["name"])
    yield body
    kubectl("delete", "orgpipeline", body["metadata"]["name"], "--ignore-not-found", "--wait=false")
    kubectl("delete", "namespace", naming.namespace(org_id), "--ignore-not-found", "--wait=false")
    claims.release(direct_rt.db, org_id, body["metadata"]["uid"])
    direct_rt.db.drop_collections(org_id)
    direct_rt.db.drop_postgres(org_id)


def _reconcile(rt: runtime.Runtime, api: kube.Kube, trigger: str, name: str) -> dict[str, Any]:
    body = get_pipeline(api, name)
    cache.CACHE.pipeline("MODIFIED", body)
    reconcile.reconcile(rt, reconcile.request(trigger, name, body), body)
    return get_pipeline(api, name)


def test_a_namespace_someone_else_made_after_the_deletion_is_not_adopted(
    kubectl: Kubectl,
    api: kube.Kube,
    direct_rt: runtime.Runtime,
    direct_org: dict[str, Any],
    events: asyncio.Queue[Any],
) -> None:
    meta, org_id = direct_org["metadata"], direct_org["spec"]["orgId"]
    name, uid = meta["name"], meta["uid"]
    ns = naming.namespace(org_id)
    ready = condition(_reconcile(direct_rt, api, "create", name), "Ready")
    assert ready["status"] == "True", ready
    recorded = claims.owner(direct_rt.db, org_id)
    assert recorded is not None and recorded.namespace_uid
    kubectl("delete", "namespace", ns, "--timeout=90s")
    # Someone makes the namespace again, forging everything the operator writes on its own.
    forged = api.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "labels": naming.labels(name, org_id),
                "annotations": {naming.ANNOTATION_OWNER_UID: uid},
            },
        }
    )
    obj = _reconcile(direct_rt, api, "heal", name)
    ready = condition(obj, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NamespaceNotOwned"), ready
    # Nothing written in it, and the recorded uid is still the operator's own namespace's.
    assert api.list("batch/v1", "CronJob", ns, naming.MANAGED_SELECTOR) == []
    assert api.get("v1", "Secret", naming.SECRET, ns) is None
    assert claims.owner(direct_rt.db, org_id) == recorded
    assert forged["metadata"]["uid"] != recorded.namespace_uid
    # The idle resync does not adopt it either.
    ready = condition(_reconcile(direct_rt, api, "resync", name), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NamespaceNotOwned"), ready


def test_the_idle_resync_makes_a_missing_namespace_again(
    kubectl: Kubectl,
    api: kube.Kube,
    direct_rt: runtime.Runtime,
    direct_org: dict[str, Any],
    events: asyncio.Queue[Any],
) -> None:
    """Without the watch event (the operator was down when the namespace went): the resync, which
    trusts the namespace it verified, finds it missing at its first write and makes it again at the
    retry, instead of failing with 404 forever."""
    meta, org_id = direct_org["metadata"], direct_org["spec"]["orgId"]
    name, uid = meta["name"], meta["uid"]
    ns = naming.namespace(org_id)
    assert condition(_reconcile(direct_rt, api, "create", name), "Ready")["status"] == "True"
    kubectl("delete", "namespace", ns, "--timeout=90s")
    cache.CACHE.keep_only("CronJob", set())  # as the watch's next listing would find it
    obj: dict[str, Any] | None = None
    for _ in range(3):
        try:
            obj = _reconcile(direct_rt, api, "resync", name)
            break
        except Exception as exc:  # kopf.TemporaryError: the operator retries (1 s in the tests)
            assert type(exc).__name__ == "TemporaryError", exc
            ready = condition(get_pipeline(api, name), "Ready")
            assert ready["status"] == "False", ready
    assert obj is not None, "still failing after 3 retries"
    assert condition(obj, "Ready")["status"] == "True", obj["status"]
    made = _namespace(api, org_id)
    assert made is not None
    assert claims.owner(direct_rt.db, org_id) == claims.Owner(uid, name, made["metadata"]["uid"])
    assert api.get("batch/v1", "CronJob", "ingest-orders", ns) is not None
    assert api.get("v1", "Secret", naming.SECRET, ns) is not None


@pytest.mark.parametrize("how", ["namespace-gone", "namespace-and-data-gone", "namespace-terminating"])
def test_deleting_an_orgpipeline_whose_namespace_is_gone_finishes_within_seconds(
    kubectl: Kubectl, api: kube.Kube, direct_rt: runtime.Runtime, healed: dict[str, Any], how: str
) -> None:
    name, org_id = healed["metadata"]["name"], healed["spec"]["orgId"]
    ns = naming.namespace(org_id)
    if how == "namespace-terminating":  # held there by an object's finalizer (pods without a kubelet)
        hold = {"name": "hold", "namespace": ns, "finalizers": [HOLD]}
        api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": hold})
        kubectl("delete", "namespace", ns, "--wait=false")
    else:
        kubectl("delete", "namespace", ns, "--timeout=60s")
    if how == "namespace-and-data-gone":
        direct_rt.db.drop_collections(org_id)
        direct_rt.db.drop_postgres(org_id)
    started = time.monotonic()
    try:
        kubectl("delete", "orgpipeline", name, "--timeout=30s")
        assert time.monotonic() - started < 10
        assert api.get("orgpipeline.io/v1alpha1", "OrgPipeline", name) is None
        assert claims.owner(direct_rt.db, org_id) is None  # the org id is free again
    finally:
        if how == "namespace-terminating":
            patch = '{"metadata":{"finalizers":null}}'
            kubectl("patch", "configmap", "hold", "-n", ns, "--type=merge", "-p", patch, check=False)


def _hold_terminating(kubectl: Kubectl, api: kube.Kube, ns: str) -> None:
    """Deletes the namespace and holds it in Terminating (an object's finalizer, as pods without a
    kubelet would) until `_release`."""
    api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "hold", "namespace": ns, "finalizers": [HOLD]},
        }
    )
    kubectl("delete", "namespace", ns, "--wait=false")


def _release(kubectl: Kubectl, ns: str) -> None:
    patch = '{"metadata":{"finalizers":null}}'
    kubectl("patch", "configmap", "hold", "-n", ns, "--type=merge", "-p", patch, check=False)


def test_a_file_arrival_waits_for_its_namespace_with_back_off_and_runs_once_it_is_back(
    heal_operator: Operator, kubectl: Kubectl, api: kube.Kube, healed: dict[str, Any]
) -> None:
    """While the org's Job cannot be made (its namespace is going), the batch is kept and retried
    with a capped, jittered back-off, logged once, not every quarter of a second (and no Event
    posting outside Kopf's context fails); once the namespace is made again, its one Job runs."""
    name, org_id = healed["metadata"]["name"], healed["spec"]["orgId"]
    ns = naming.namespace(org_id)
    _hold_terminating(kubectl, api, ns)
    try:
        wait_for(
            lambda: condition(get_pipeline(api, name), "Ready").get("reason") == "NamespaceTerminating",
            BOUND + 2,
            "Ready False (NamespaceTerminating)",
        )
        mark = heal_operator.log.stat().st_size
        assert post(heal_operator, created(f"org-{org_id}/orders_1.csv")) == 200
        time.sleep(5)
        logged = heal_operator.log.read_bytes()[mark:].decode()
        assert "LookupError" not in logged and "event_queue" not in logged, logged[-2000:]
        tries = logged.count("file-arrival Job not created")
        assert tries == 1, logged[-2000:]
    finally:
        _release(kubectl, ns)
    (job,) = wait_for(lambda: arrival_jobs(api, ns), 60, "the file-arrival Job in the new namespace")
    assert job["metadata"]["labels"][naming.LABEL_TABLE] == "orders"
    time.sleep(1)
    assert len(arrival_jobs(api, ns)) == 1
    assert "event_queue_loop_var" not in heal_operator.log.read_text()
