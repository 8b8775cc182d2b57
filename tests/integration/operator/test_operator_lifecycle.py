"""An OrgPipeline's life as a platform team sees it: apply, Ready, change a table, remove one,
suspend, and an idle resync that writes nothing."""

from __future__ import annotations

import base64
import time
from typing import Any

import yaml
from operator_helpers import (
    RESYNC_SECONDS,
    Kubectl,
    Operator,
    apply_ready,
    get_pipeline,
    pipeline,
    wait_for,
    wait_ready,
)
from orgpipeline_api import v1alpha1
from orgpipeline_operator import kube, naming


def test_apply_creates_children_with_the_right_specs_and_becomes_ready(
    operator: Operator, kubectl: Kubectl, api: kube.Kube, unique_id: str, cleanup_pipelines: list[str]
) -> None:
    org = f"life{unique_id}"
    manifest = pipeline(org, ["orders", "customers"], tier="large")
    obj = apply_ready(kubectl, api, cleanup_pipelines, manifest)
    ns = f"org-{org}"
    uid = obj["metadata"]["uid"]

    namespace = kubectl.json("get", "namespace", ns)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert namespace["metadata"]["ownerReferences"][0]["uid"] == uid

    crons = kubectl.json("get", "cronjobs", "-n", ns)["items"]
    assert sorted(c["metadata"]["name"] for c in crons) == ["ingest-customers", "ingest-orders", "retention"]
    cron = next(c for c in crons if c["metadata"]["name"] == "ingest-orders")
    assert cron["metadata"]["labels"][naming.LABEL_TABLE] == "orders"
    assert cron["metadata"]["labels"][naming.LABEL_ORG] == org
    assert cron["metadata"]["ownerReferences"][0]["uid"] == uid
    assert cron["spec"]["schedule"] == "*/15 * * * *" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-4:] == ["--table", "orders", "-o", "json"]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}  # large tier
    # Its runs are by the CronJob's system identity (what changed_by_user_id records), never nobody.
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["ORGPIPELINE_TRIGGER"], env["ORGPIPELINE_TRIGGERED_BY"]) == (
        "schedule",
        "system:schedule:ingest-orders",
    )

    quota = kubectl.json("get", "resourcequota", naming.QUOTA, "-n", ns)
    assert quota["spec"]["hard"]["limits.cpu"] == "16"
    kubectl("get", "limitrange", naming.LIMIT_RANGE, "-n", ns)
    kubectl("get", "networkpolicy", naming.NETWORK_POLICY, "-n", ns)
    kubectl("get", "serviceaccount", naming.SERVICE_ACCOUNT, "-n", ns)
    cm = kubectl.json("get", "configmap", naming.CONFIGMAP, "-n", ns)
    doc = yaml.safe_load(cm["data"]["pipeline.yaml"])
    _, spec = v1alpha1.parse_manifest(doc)
    assert [t.name for t in spec.tables] == ["orders", "customers"]
    secret = kubectl.json("get", "secret", naming.SECRET, "-n", ns)
    dsn = base64.b64decode(secret["data"]["ORGPIPELINE_POSTGRES_DSN"]).decode()
    assert dsn.startswith(f"postgresql://orgpipeline_org_{org}:")

    printed = kubectl("get", "orgpipeline", f"org-{org}").stdout
    header, row = printed.splitlines()[:2]
    assert header.split()[:6] == ["NAME", "ORG", "TIER", "TABLES", "READY", "QUALITY"]
    assert row.split()[:5] == [f"org-{org}", org, "large", "2", "True"]


def _cron(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any] | None:
    proc = kubectl("get", "cronjob", name, "-n", ns, "-o", "yaml", check=False)
    return yaml.safe_load(proc.stdout) if proc.returncode == 0 else None


def test_table_changed_removed_and_suspend(
    operator: Operator, kubectl: Kubectl, api: kube.Kube, unique_id: str, cleanup_pipelines: list[str]
) -> None:
    org = f"chg{unique_id}"
    ns, name = f"org-{org}", f"org-{org}"
    manifest = pipeline(org, ["orders", "customers"])
    apply_ready(kubectl, api, cleanup_pipelines, manifest)
    before = _cron(kubectl, ns, "ingest-customers")
    assert before is not None

    manifest["spec"]["tables"][0]["schedule"] = "*/5 * * * *"
    kubectl.apply(manifest)
    wait_for(
        lambda: (_cron(kubectl, ns, "ingest-orders") or {})["spec"]["schedule"] == "*/5 * * * *",
        what="ingest-orders schedule updated",
    )
    wait_ready(api, name)
    after = _cron(kubectl, ns, "ingest-customers")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], (
        "untouched table rewritten"
    )

    manifest["spec"]["tables"] = manifest["spec"]["tables"][:1]
    kubectl.apply(manifest)
    wait_for(lambda: _cron(kubectl, ns, "ingest-customers") is None, what="ingest-customers removed")
    obj = wait_ready(api, name)
    assert [t["name"] for t in obj["status"]["tables"]] == ["orders"] and obj["status"]["tableCount"] == 1

    kubectl("patch", "orgpipeline", name, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    wait_for(lambda: (_cron(kubectl, ns, "ingest-orders") or {})["spec"]["suspend"] is True, what="suspended")
    obj = wait_ready(api, name)
    suspended = next(c for c in obj["status"]["conditions"] if c["type"] == "Suspended")
    assert suspended["status"] == "True" and suspended["reason"] == "SpecSuspended"


def _versions(kubectl: Kubectl, ns: str, name: str) -> dict[str, str]:
    out = {}
    for kind in (
        "cronjobs",
        "configmaps",
        "secrets",
        "serviceaccounts",
        "resourcequotas",
        "limitranges",
        "networkpolicies",
    ):
        for item in kubectl.json("get", kind, "-n", ns, "-l", naming.MANAGED_SELECTOR)["items"]:
            out[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    out["namespace"] = kubectl.json("get", "namespace", ns)["metadata"]["resourceVersion"]
    out["orgpipeline"] = kubectl.json("get", "orgpipeline", name)["metadata"]["resourceVersion"]
    return out


def test_idle_resync_writes_nothing_and_repairs_drift(
    operator: Operator, kubectl: Kubectl, api: kube.Kube, unique_id: str, cleanup_pipelines: list[str]
) -> None:
    org = f"idle{unique_id}"
    ns, name = f"org-{org}", f"org-{org}"
    apply_ready(kubectl, api, cleanup_pipelines, pipeline(org, ["orders"]))
    time.sleep(1)
    before = _versions(kubectl, ns, name)
    time.sleep(RESYNC_SECONDS * 2.5)  # at least two idle resyncs
    assert _versions(kubectl, ns, name) == before

    # Drift: a user deletes a CronJob; the next resync puts it back.
    kubectl("delete", "cronjob", "ingest-orders", "-n", ns)
    wait_for(
        lambda: _cron(kubectl, ns, "ingest-orders") is not None, timeout=RESYNC_SECONDS * 4, what="repair"
    )
    assert get_pipeline(api, name)["status"]["conditions"][0]["status"] == "True"

    # An unwatched child (the quota) is read back and repaired when the operator resumes.
    kubectl("delete", "resourcequota", naming.QUOTA, "-n", ns)
    operator.stop()
    operator.start()
    wait_for(
        lambda: kubectl("get", "resourcequota", naming.QUOTA, "-n", ns, check=False).returncode == 0,
        what="quota repaired on resume",
    )


def test_probes_and_metrics_endpoints(operator: Operator) -> None:
    import urllib.request

    port = operator.env["ORGPIPELINE_HEALTH_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        assert resp.status == 200
    text = operator.metrics()
    for name in (
        "orgpipeline_reconcile_total",
        "orgpipeline_reconcile_duration_seconds_bucket",
        "orgpipeline_api_requests_total",
    ):
        assert name in text
