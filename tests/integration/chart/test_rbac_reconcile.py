"""The chart's RBAC is enough, and no wider than needed: the operator, run with nothing but the
chart's ServiceAccount token, completes a full reconcile of an OrgPipeline on the real API server:
create -> children -> Ready; run-now -> Job -> its pod run -> last run in the status; delete ->
clean-up and finalizer removed. Its own metrics prove it was this operator that did the work.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_release import REPO, apply_release

_spec = importlib.util.spec_from_file_location("shipit_harness", REPO / "tests" / "e2e" / "harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
sys.modules["shipit_harness"] = harness
_spec.loader.exec_module(harness)

BUCKET = "orgpipeline-chart-test"


@pytest.fixture(scope="module")
def sa_kubeconfig(release: dict[str, str], stack: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The chart applied; a kubeconfig holding only a token of the chart's ServiceAccount."""
    ns, name = release["namespace"], release["release"]
    apply_release(ns, name)
    sa = f"{name}-orgpipeline-operator"
    token = harness.kubectl("-n", ns, "create", "token", sa, "--duration=1h").strip()
    admin = yaml.safe_load(Path(stack.kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": sa, "context": {"cluster": "local", "user": sa}}],
        "current-context": sa,
    }
    path = tmp_path_factory.mktemp("sa") / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("patch", "orgpipelines.orgpipeline.io", True),
        ("patch", "orgpipelines.orgpipeline.io/status", True),
        ("create", "cronjobs.batch", True),
        ("create", "jobs.batch", True),
        ("list", "pods", True),
        ("list", "namespaces", True),  # the start-up listing (operator/orgpipeline_operator/snapshot.py)
        ("list", "configmaps", True),
        ("create", "events", True),
        # nothing wider than needed
        ("create", "orgpipelines.orgpipeline.io", False),
        ("delete", "orgpipelines.orgpipeline.io", False),
        ("create", "pods", False),
        ("watch", "pods", False),
        ("create", "pods/exec", False),
        ("delete", "secrets", False),
        ("delete", "jobs.batch", False),
        ("patch", "customresourcedefinitions.apiextensions.k8s.io", False),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", False),
        ("create", "rolebindings.rbac.authorization.k8s.io", False),
        ("patch", "deployments.apps", False),
        ("get", "nodes", False),
        ("watch", "configmaps", False),
        ("watch", "namespaces", False),
        ("delete", "configmaps", False),
        ("update", "events", False),
    ],
)
def test_the_service_account_can_do_what_the_operator_needs_and_no_more(
    sa_kubeconfig: str, verb: str, resource: str, allowed: bool
) -> None:
    answer = harness.kubectl(
        "auth", "can-i", verb, resource, "-A", kubeconfig=sa_kubeconfig, check=False
    ).strip()
    assert answer == ("yes" if allowed else "no"), f"can-i {verb} {resource}: {answer}"


@pytest.fixture()
def org(stack: Any, s3: Any) -> Iterator[dict[str, str]]:
    org_id = f"rbac{uuid.uuid4().hex[:8]}"
    if not s3.bucket_exists(BUCKET):
        s3.make_bucket(BUCKET)
    sample = harness.SAMPLES / "orders_2026-11-01.csv"
    s3.fput_object(BUCKET, f"org-{org_id}/{sample.name}", str(sample))
    yield {"id": org_id, "name": f"org-{org_id}", "namespace": f"org-{org_id}"}
    harness.kubectl(
        "delete", "orgpipeline", f"org-{org_id}", "--ignore-not-found", "--wait=false", check=False
    )
    s3.remove_object(BUCKET, f"org-{org_id}/{sample.name}")
    harness.drop_org_data(stack.postgres_dsn, stack.mongo_uri, org_id)


def test_the_operator_with_the_charts_rbac_completes_a_full_reconcile(
    sa_kubeconfig: str, release: dict[str, str], org: dict[str, str], stack: Any, tmp_path: Path
) -> None:
    env = {**stack.as_environ(), "PATH": os.environ["PATH"]}
    operator = harness.Operator(
        env,
        tmp_path / "operator.log",
        sa_kubeconfig,
        namespace=release["namespace"],
        label_selector=f"{harness.TEST_LABEL}={org['id']}",
    )
    runner = harness.PodRunner(env, tmp_path / "podrunner.log", [org["namespace"]], tmp_path / "pods")
    try:
        operator.wait_ready()
        manifest = harness.pipeline_manifest(org["name"], org["id"], BUCKET, deletion_policy="Delete")
        harness.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

        def ready() -> dict[str, Any] | None:
            obj = harness.get_json("orgpipeline", org["name"])
            return obj if harness.is_ready(obj) else None

        try:
            obj = harness.wait_for("the OrgPipeline to be Ready", ready, timeout=180)
        except AssertionError as exc:
            now = harness.get_json("orgpipeline", org["name"]) or {}
            raise AssertionError(
                f"{exc}; status: {now.get('status')}; operator log:\n{operator.output()}"
            ) from None
        assert obj["status"]["tableCount"] == 2
        cronjobs = harness.get_json("-n", org["namespace"], "cronjobs")
        assert sorted(c["metadata"]["name"] for c in cronjobs["items"]) == [
            "ingest-customers",
            "ingest-orders",
            "retention",
        ]
        assert operator.metric("orgpipeline_reconcile_total", result="ok") >= 1

        harness.kubectl("annotate", "orgpipeline", org["name"], "orgpipeline.io/run-now=orders")

        def ran() -> dict[str, Any] | None:
            run = harness.last_run(harness.get_json("orgpipeline", org["name"]), "orders")
            return run if run and run.get("result") in ("Succeeded", "Failed") else None

        # The Job the operator created from the CronJob's template ran (the pod runner), and the operator
        # read its pods' termination message back into the status. Whether the data plane succeeds is
        # the end-to-end test's business; this one proves the operator was allowed every step.
        run = harness.wait_for("the run-now Job's result in the status", ran, timeout=180)
        assert run["job"].startswith("ingest-orders-now-"), run
        assert run.get("runId") or run.get("error"), run
        assert operator.metric("orgpipeline_job_results_total") >= 1

        # a table removed from the spec: its CronJob goes (update path, cronjobs delete). After the run,
        # not right after creation: the operator finds stale CronJobs in its watch cache, which a
        # removal within a second or two of the create can beat (reported; not an RBAC matter).
        manifest["spec"]["tables"] = [t for t in manifest["spec"]["tables"] if t["name"] == "orders"]
        harness.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

        def customers_gone() -> bool:
            items = (harness.get_json("-n", org["namespace"], "cronjobs") or {}).get("items", [])
            return sorted(c["metadata"]["name"] for c in items) == ["ingest-orders", "retention"]

        harness.wait_for("the removed table's CronJob to go", customers_gone, timeout=120)
        harness.wait_for("Ready for the new generation", ready, timeout=120)

        harness.kubectl("delete", "orgpipeline", org["name"], "--wait=false")
        harness.wait_for(
            "the finalizer to let the OrgPipeline go",
            lambda: harness.get_json("orgpipeline", org["name"]) is None,
            timeout=180,
        )
        ns = harness.get_json("namespace", org["namespace"])
        assert ns is None or ns["metadata"].get("deletionTimestamp")
    finally:
        operator.stop()
        runner.stop()
    log = operator.output()
    for denied in ("Forbidden", "forbidden", " 403"):
        assert denied not in log, f"the operator was refused something:\n{log}"
