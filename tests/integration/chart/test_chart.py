"""The Helm chart: lint, schema, rendering, and the rendered objects applied to the real API server.

The operator's own contract is checked against the rendered chart: its settings (env names), its
probe endpoints and ports, and the metric names the PrometheusRule uses.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_release import CHART, CI_VALUES, REPO, apply_release


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["helm", *args], capture_output=True, text=True, check=check, timeout=120)


def render(*sets: str, release: str = "op", namespace: str = "orgpipeline-system") -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "-n", namespace, "-f", str(CI_VALUES)]
    for s in sets:
        args += ["--set-json" if s.startswith("json:") else "--set", s.removeprefix("json:")]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    return doc


def test_helm_lint_is_clean(stack: Any) -> None:
    out = helm("lint", "--strict", str(CHART), "-f", str(CI_VALUES))
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout
    out = helm(
        "lint",
        "--strict",
        str(CHART),
        "-f",
        str(CI_VALUES),
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.prometheusRule.enabled=true",
    )
    assert "0 chart(s) failed" in out.stdout


def test_the_charts_crd_is_the_repositorys(stack: Any, tmp_path: Path) -> None:
    """The chart's crds/ links to the generated CRD; `helm package` puts its content in the chart."""
    repo_crds = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    chart_crds = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert chart_crds == repo_crds
    helm("package", str(CHART), "-d", str(tmp_path))
    (archive,) = tmp_path.glob("orgpipeline-operator-*.tgz")
    with tarfile.open(archive) as tar:
        for name in repo_crds:
            member = tar.extractfile(f"orgpipeline-operator/crds/{name}")
            assert member is not None
            assert member.read() == (REPO / "crds" / name).read_bytes()


@pytest.mark.parametrize(
    ("sets", "error"),
    [
        (["operator.workers=0"], "/operator/workers"),
        (["operator.logLevel=LOUD"], "/operator/logLevel"),
        (["image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (["metrics.prometheusRule.noSuccessSeconds=5"], "/metrics/prometheusRule/noSuccessSeconds"),
        (["connections.mongoUri=http://mongo"], "/connections/mongoUri"),
        (["fileEvents.token.value=short"], "/fileEvents/token/value"),
        (["fileEvents.maxBytes=10"], "/fileEvents/maxBytes"),
        (["unknownKey=1"], "unknownKey"),
    ],
)
def test_the_values_schema_refuses_bad_values(stack: Any, sets: list[str], error: str) -> None:
    args = ["template", "op", str(CHART), "-f", str(CI_VALUES)]
    for s in sets:
        args += ["--set", s]
    out = helm(*args, check=False)
    assert out.returncode != 0
    assert error in out.stderr


def test_connections_are_required_unless_an_existing_secret_is_named(stack: Any) -> None:
    out = helm("template", "op", str(CHART), check=False)
    assert out.returncode != 0
    assert "connections.postgresDsn (or connections.existingSecret) is required" in out.stderr
    docs = [
        d
        for d in yaml.safe_load_all(
            helm("template", "op", str(CHART), "--set", "connections.existingSecret=conn").stdout
        )
        if d
    ]
    assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-connections")]
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "conn"}}]


def test_the_deployment_matches_the_operators_contract(stack: Any) -> None:
    from orgpipeline_operator import operator_settings

    docs = render()
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    # Two replicas, one active (the Lease holder); a rollout never leaves none ready.
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    single = one(render("operator.replicas=1"), "Deployment")
    assert single["spec"]["replicas"] == 1 and single["spec"]["strategy"]["type"] == "Recreate"
    assert not [d for d in render("operator.replicas=1") if d["kind"] == "PodDisruptionBudget"]
    assert c["command"] == ["orgpipeline-operator"]
    assert c["image"] == "orgpipeline:0.1.0"
    # every variable the chart sets is one the operator reads; the required ones come from the Secret
    known = {f"ORGPIPELINE_{f.upper()}" for f in operator_settings.Settings.__dataclass_fields__}
    names = {e["name"] for e in c["env"]}
    assert names <= known, names - known
    secret = one(docs, "Secret", "-connections")
    required = {
        f"ORGPIPELINE_{n.upper()}"
        for n, f in operator_settings.Settings.__dataclass_fields__.items()
        if f.default is f.default_factory
    }  # dataclasses.MISSING for both
    assert required <= set(secret["stringData"]), required - set(secret["stringData"])
    env = {e["name"]: e for e in c["env"]}
    assert env["ORGPIPELINE_JOB_IMAGE"]["value"] == "orgpipeline:0.1.0"
    assert "ORGPIPELINE_JOB_NODE_SELECTOR" not in env
    docs = render("jobs.nodeSelector.pool=data", "jobs.nodeSelector.arch=amd64")
    c2 = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env2 = {e["name"]: e.get("value") for e in c2["env"]}
    assert env2["ORGPIPELINE_JOB_NODE_SELECTOR"] == "arch=amd64,pool=data"
    token = {"ORGPIPELINE_WEBHOOK_TOKEN": "t" * 16}  # from the webhook Secret (secretKeyRef)
    token["ORGPIPELINE_SERVICE_ACCOUNT"] = "sa"  # the pod's own (fieldRef)
    assert operator_settings.from_env(
        {**secret["stringData"], **{k: v for k, v in env2.items() if v}, **token}
    ).job_node_selector
    assert env["ORGPIPELINE_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    # the operator binds the chart's tenant ClusterRole to its own ServiceAccount (see rbac.yaml)
    assert (
        env["ORGPIPELINE_SERVICE_ACCOUNT"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.serviceAccountName"
    )
    tenant = env["ORGPIPELINE_TENANT_ROLE"]["value"]
    assert [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == tenant]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == int(env["ORGPIPELINE_METRICS_PORT"]["value"])
    assert ports["health"] == int(env["ORGPIPELINE_HEALTH_PORT"]["value"])
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    # restricted Pod Security
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert c["resources"]["limits"] and c["resources"]["requests"]
    # the metrics Service selects the Deployment's pods on the metrics port
    svc = one(docs, "Service", "-metrics")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"


def test_file_events_service_token_and_settings(stack: Any) -> None:
    from orgpipeline_operator import operator_settings

    docs = render()
    dep = one(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["webhook"] == int(env["ORGPIPELINE_WEBHOOK_PORT"]["value"]) == 8082
    ref = env["ORGPIPELINE_WEBHOOK_TOKEN"]["valueFrom"]["secretKeyRef"]
    secret = one(docs, "Secret", "-webhook")
    assert ref == {"name": secret["metadata"]["name"], "key": "token"}
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert len(token) == 48
    svc = one(docs, "Service", "-webhook")
    assert svc["spec"]["ports"][0]["targetPort"] == "webhook"
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    values = {k: e["value"] for k, e in env.items() if "value" in e}
    settings = operator_settings.from_env(
        {
            **one(docs, "Secret", "-connections")["stringData"],
            **values,
            "ORGPIPELINE_WEBHOOK_TOKEN": token,
            "ORGPIPELINE_SERVICE_ACCOUNT": "sa",  # the pod's own (fieldRef)
        }
    )
    assert (settings.webhook_port, settings.webhook_max_bytes, settings.webhook_debounce_seconds) == (
        8082,
        262144,
        1,
    )
    # Finished file-arrival Jobs go after the chart's TTL (an hour), not after the 3 days of the others.
    assert settings.webhook_job_ttl_seconds == 3600
    ttl = render("fileEvents.jobTtlSeconds=600")
    c = one(ttl, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in c["env"]}["ORGPIPELINE_WEBHOOK_JOB_TTL_SECONDS"] == "600"

    # A token of the user's own Secret: the chart makes none.
    docs = render("fileEvents.token.existingSecret=s3-notify")
    assert [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-webhook")] == []
    c = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    assert env["ORGPIPELINE_WEBHOOK_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "s3-notify"

    # Off: no port, no Service, no Secret, no setting.
    docs = render("fileEvents.enabled=false")
    c = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert not any(e["name"].startswith("ORGPIPELINE_WEBHOOK_") for e in c["env"])
    assert [d["metadata"]["name"] for d in docs if d["kind"] in ("Service", "Secret")] == [
        "op-orgpipeline-operator-connections",
        "op-orgpipeline-operator-metrics",
    ]


def test_service_monitor_and_prometheus_rule_use_the_operators_metrics(stack: Any) -> None:
    import prometheus_client
    from orgpipeline_operator import metrics  # noqa: F401 - registers the operator's metrics

    docs = render(
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
        "json:metrics.prometheusRule.qualityThreshold=0.9",
    )
    svc, monitor = one(docs, "Service", "-metrics"), one(docs, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]

    exported = set()
    for family in prometheus_client.REGISTRY.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        exported |= {family.name + suffix for suffix in suffixes}
    rules = [r for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in rules}
    assert {
        "OrgPipelineQualityBelowThreshold",
        "OrgPipelineRunsFailing",
        "OrgPipelineNoRecentSuccess",
        "OrgPipelineFileEventsUnauthorized",
        "OrgPipelineFileArrivalRunsFailing",
    } <= set(alerts)
    for rule in rules:
        for metric in re.findall(r"\borgpipeline_[a-z_]+", rule["expr"]):
            assert metric in exported, f"{rule['alert']}: {metric} is not a metric the operator exports"
    assert alerts["OrgPipelineQualityBelowThreshold"]["expr"] == "orgpipeline_org_quality_score < 0.9"
    assert 'result="Failed"' in alerts["OrgPipelineRunsFailing"]["expr"]


def kubectl_json(*args: str) -> dict[str, Any]:
    out = subprocess.run(["kubectl", *args, "-o", "json"], check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout))


def test_the_rendered_chart_applies_server_side(release: dict[str, str]) -> None:
    ns, name = release["namespace"], release["release"]
    docs = apply_release(ns, name)
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"] == [
        "orgpipelines.orgpipeline.io"
    ]
    full = f"{name}-orgpipeline-operator"
    assert kubectl_json("-n", ns, "get", "serviceaccount", full)["metadata"]["name"] == full
    role = kubectl_json("get", "clusterrole", full)
    binding = kubectl_json("get", "clusterrolebinding", full)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": full, "namespace": ns}]
    assert role["rules"]
    dep = kubectl_json("-n", ns, "get", "deployment", full)
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == full
    assert kubectl_json("-n", ns, "get", "service", f"{full}-metrics")["spec"]["ports"][0]["port"] == 8080
    assert kubectl_json("-n", ns, "get", "secret", f"{full}-connections")["type"] == "Opaque"
