"""A table removed right after a create or an update (before the operator's watch cache has seen the
CronJobs it just wrote) loses its CronJob all the same: the CronJobs always converge on the tables of
the latest spec, without waiting for an idle resync."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from operator_helpers import TEST_LABEL, Kubectl, Operator, free_port, pipeline, wait_for, wait_ready
from orgpipeline_operator import cache, kube, naming, reconcile, runtime, s3access

RACE_LABEL = "race"
TABLES = [f"t{i:02d}" for i in range(40)]


@pytest.fixture(scope="module")
def slow_resync_operator(
    stack: Any, operator: Operator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    """An operator of its own whose idle resync never comes during the test: only the update
    handler can remove the CronJob (the session's operator resyncs every few seconds, which hid it)."""
    env = {
        **operator.env,
        "ORGPIPELINE_RESYNC_SECONDS": "3600",
        "ORGPIPELINE_METRICS_PORT": str(free_port()),
        "ORGPIPELINE_HEALTH_PORT": str(free_port()),
        "ORGPIPELINE_WEBHOOK_PORT": str(free_port()),
        "ORGPIPELINE_LABEL_SELECTOR": f"{TEST_LABEL}={RACE_LABEL}",
    }
    op = Operator(env, tmp_path_factory.mktemp("race-operator") / "operator.log")
    op.start()
    yield op
    op.stop()


def _crons(kubectl: Kubectl, ns: str, name: str) -> list[str]:
    selector = f"{naming.LABEL_PIPELINE}={name}"
    items = kubectl.json("get", "cronjobs", "-n", ns, "-l", selector)["items"]
    return sorted(c["metadata"]["name"] for c in items)


def _converged(kubectl: Kubectl, ns: str, name: str, tables: list[str]) -> bool:
    return _crons(kubectl, ns, name) == sorted(
        [*(naming.cronjob(t) for t in tables), naming.RETENTION_CRONJOB]
    )


def _keep(kubectl: Kubectl, name: str, tables: list[str]) -> None:
    """Patches the spec down to `tables` (a JSON patch: no read, no pause)."""
    spec = kubectl.json("get", "orgpipeline", name)["spec"]
    kept = [t for t in spec["tables"] if t["name"] in tables]
    patch = [{"op": "replace", "path": "/spec/tables", "value": kept}]
    kubectl("patch", "orgpipeline", name, "--type=json", "-p", json.dumps(patch))


def _waited(op: Operator, fn: Any, what: str, timeout: float = 90, interval: float = 0.3) -> Any:
    """`wait_for` whose failure shows the operator's log. Generous timeouts: under a full test run
    the operator's first event can take longer than 30 s; the test is about what converges."""
    try:
        return wait_for(fn, timeout=timeout, what=what, interval=interval)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{op.log.read_text()[-3000:]}") from None


def test_table_removed_right_after_create_or_update_loses_its_cronjob(
    slow_resync_operator: Operator,
    kubectl: Kubectl,
    api: kube.Kube,
    unique_id: str,
    cleanup_pipelines: list[str],
) -> None:
    org = f"race{unique_id}"
    ns = name = f"org-{org}"
    manifest = pipeline(org, TABLES)
    manifest["metadata"]["labels"] = {TEST_LABEL: RACE_LABEL}
    cleanup_pipelines.append(name)

    # Create, then at once (no sleep) remove half of the tables.
    op = slow_resync_operator
    kubectl.apply(manifest)

    def namespace_made() -> bool:
        return kubectl("get", "namespace", ns, check=False).returncode == 0

    _waited(op, namespace_made, "namespace", interval=0.05)
    kept = TABLES[:20]
    _keep(kubectl, name, kept)
    _waited(op, lambda: _converged(kubectl, ns, name, kept), "CronJobs of removed tables gone")
    wait_ready(api, name, timeout=60)

    # Update (add the tables back), then at once remove them again.
    manifest["spec"]["tables"] = pipeline(org, TABLES)["spec"]["tables"]
    kubectl.apply(manifest)
    _waited(op, lambda: len(_crons(kubectl, ns, name)) > len(kept), "tables added", interval=0.05)
    kept = TABLES[:3]
    _keep(kubectl, name, kept)
    _waited(op, lambda: _converged(kubectl, ns, name, kept), "CronJobs of removed tables gone")
    obj = wait_ready(api, name, timeout=60)
    assert [t["name"] for t in obj["status"]["tables"]] == kept


def _request(api: kube.Kube, name: str, trigger: str, seen: cache.Cache) -> reconcile.Request:
    body = api.get("orgpipeline.io/v1alpha1", "OrgPipeline", name)
    assert body is not None
    meta = body["metadata"]
    return reconcile.Request(
        name=name,
        uid=meta["uid"],
        generation=meta.get("generation"),
        resource_version=meta.get("resourceVersion"),
        spec=body["spec"],
        status=body.get("status"),
        trigger=trigger,
        existing=seen.children_of(name),
        org_owner=None,
    )


def test_update_deletes_cronjobs_its_cache_has_not_seen(
    direct_rt: runtime.Runtime, kubectl: Kubectl, api: kube.Kube, kube_api: Any, unique_id: str
) -> None:
    """The race without the timing: the update's reconcile runs with a watch cache that has not yet
    received the CronJobs the create just wrote (a Cache fed no event), against the real API server.
    Before the fix the cache alone said what to delete, so the removed table's CronJob stayed."""
    org = f"racd{unique_id}"
    ns = name = f"org-{org}"
    manifest = pipeline(org, ["orders", "customers", "refunds"])
    manifest["metadata"]["labels"] = {TEST_LABEL: "none"}  # no operator reconciles it: this test does
    kubectl.apply(manifest)
    try:
        reconcile.reconcile(direct_rt, _request(api, name, "create", cache.Cache()), manifest)
        assert _crons(kubectl, ns, name) == [
            "ingest-customers",
            "ingest-orders",
            "ingest-refunds",
            "retention",
        ]

        _keep(kubectl, name, ["orders", "refunds"])
        reconcile.reconcile(direct_rt, _request(api, name, "update", cache.Cache()), manifest)
        assert _crons(kubectl, ns, name) == ["ingest-orders", "ingest-refunds", "retention"]
        status = api.get("orgpipeline.io/v1alpha1", "OrgPipeline", name)["status"]  # type: ignore[index]
        assert [t["name"] for t in status["tables"]] == ["orders", "refunds"]
    finally:
        kubectl("delete", "orgpipeline", name, "--ignore-not-found", "--wait=false", check=False)
        kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)
        direct_rt.db.drop_collections(org)  # first: it takes the role's grants in FerretDB's database
        direct_rt.db.drop_postgres(org)
        s3access.remove_account(direct_rt.settings, org)  # no finalizer ran: its S3 account too
