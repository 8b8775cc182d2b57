"""Pure builders: a spec in, the children out. No cluster."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml
from orgpipeline_api import triggers, v1alpha1
from orgpipeline_operator import builders, naming

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "org-123.yaml"


def target(**changes: Any) -> builders.Target:
    _, spec = v1alpha1.load_manifest(EXAMPLE)
    if changes:
        spec = spec.model_copy(update=changes)
    return builders.Target("org-123", "uid-1", spec, builders.JobSettings(image="img:1"))


def creds(password: str = "pw") -> builders.Credentials:
    return builders.Credentials(
        "orgpipeline_org_123",
        password,
        "pg",
        "5432",
        "db",
        "mongodb://m:27017/",
        "orgpipeline",
        "http://s3:9000",
        "ak",
        "sk",
    )


def test_every_child_has_owner_reference_labels_and_hash() -> None:
    children = builders.desired_children(target(), creds())
    kinds = [c["kind"] for c in children]
    assert kinds == [
        "Namespace",
        "ServiceAccount",
        "ResourceQuota",
        "LimitRange",
        "NetworkPolicy",
        "ConfigMap",
        "Secret",
        "CronJob",
        "CronJob",
        "CronJob",
    ]
    assert children[-1]["metadata"]["name"] == naming.RETENTION_CRONJOB
    for child in children:
        meta = child["metadata"]
        assert meta["ownerReferences"] == [naming.owner_reference("org-123", "uid-1")]
        assert meta["labels"][naming.LABEL_MANAGED_BY] == naming.MANAGER
        assert meta["labels"][naming.LABEL_ORG] == "123"
        assert meta["annotations"][naming.ANNOTATION_HASH]
        if child["kind"] != "Namespace":
            assert meta["namespace"] == "org-123"


def test_namespace_enforces_restricted_pod_security() -> None:
    labels = builders.build_namespace(target())["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_cronjob_runs_the_data_plane_for_its_table_with_restricted_security() -> None:
    t = target()
    cron = builders.build_cronjob(t, t.spec.tables[0])
    assert cron["metadata"]["name"] == "ingest-orders"
    assert cron["metadata"]["labels"][naming.LABEL_TABLE] == "orders"
    spec = cron["spec"]
    assert spec["schedule"] == "*/15 * * * *" and spec["concurrencyPolicy"] == "Forbid"
    assert spec["suspend"] is False
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"] == [
        "orgpipeline",
        "run",
        "-f",
        "/etc/orgpipeline/pipeline.yaml",
        "--table",
        "orders",
        "-o",
        "json",
    ]
    assert c["image"] == "img:1"
    assert c["envFrom"] == [{"secretRef": {"name": naming.SECRET}}]
    assert {"name": "ORGPIPELINE_TERMINATION_LOG", "value": "/dev/termination-log"} in c["env"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # The image's own user (Dockerfile: USER 10001:10001), not another uid.
    ids = {k: pod["securityContext"][k] for k in ("runAsUser", "runAsGroup", "fsGroup")}
    assert ids == {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and c["securityContext"]["runAsNonRoot"]
    assert c["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}  # medium tier


def test_tier_changes_quota_and_job_resources() -> None:
    small = target(tier=v1alpha1.Tier.small)
    large = target(tier=v1alpha1.Tier.large)
    assert builders.build_resource_quota(small)["spec"]["hard"]["limits.cpu"] == "2"
    assert builders.build_resource_quota(large)["spec"]["hard"]["limits.cpu"] == "16"
    cron = builders.build_cronjob(large, large.spec.tables[0])
    assert (
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][
            "memory"
        ]
        == "4Gi"
    )


def test_suspend_suspends_every_cronjob() -> None:
    t = target(suspend=True)
    assert all(builders.build_cronjob(t, table)["spec"]["suspend"] for table in t.spec.tables)
    assert builders.build_retention_cronjob(t)["spec"]["suspend"] is True
    assert builders.build_retention_cronjob(target())["spec"]["suspend"] is False


def test_retention_cronjob_runs_retention_daily_with_the_org_credentials() -> None:
    cron = builders.build_retention_cronjob(target())
    assert cron["metadata"]["name"] == "retention"
    assert cron["metadata"]["labels"]["orgpipeline.io/component"] == "retention"
    assert cron["spec"]["schedule"] == "@daily"
    job = cron["spec"]["jobTemplate"]
    assert job["metadata"]["labels"]["orgpipeline.io/component"] == "retention"
    pod = job["spec"]["template"]
    assert pod["metadata"]["labels"]["orgpipeline.io/component"] == "retention"
    assert naming.LABEL_TABLE not in pod["metadata"]["labels"]
    container = pod["spec"]["containers"][0]
    assert container["command"] == [
        "orgpipeline",
        "retention",
        "--org-id",
        "123",
        "-f",
        "/etc/orgpipeline/pipeline.yaml",
        "-o",
        "json",
    ]
    assert container["envFrom"] == [{"secretRef": {"name": naming.SECRET}}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_retention_schedule_comes_from_the_spec() -> None:
    t = target()
    spec = t.spec.model_copy(update={"retention": v1alpha1.Retention(schedule="30 2 * * 0")})
    cron = builders.build_retention_cronjob(builders.Target("org-123", "uid-1", spec))
    assert cron["spec"]["schedule"] == "30 2 * * 0"


def test_configmap_holds_a_manifest_the_jobs_can_load(tmp_path: Path) -> None:
    cm = builders.build_config_map(target())
    path = tmp_path / "pipeline.yaml"
    path.write_text(cm["data"][naming.MANIFEST_KEY])
    name, spec = v1alpha1.load_manifest(path)
    assert name == "org-123" and spec == target().spec


def test_secret_holds_the_org_role_dsn_and_its_hash_ignores_the_password() -> None:
    a = builders.build_secret(target(), creds("one"))
    b = builders.build_secret(target(), creds("two"))
    assert builders.applied_hash(a) == builders.applied_hash(b)
    dsn = base64.b64decode(a["data"]["ORGPIPELINE_POSTGRES_DSN"]).decode()
    assert dsn == "postgresql://orgpipeline_org_123:one@pg:5432/db"
    assert set(a["data"]) >= {
        "ORGPIPELINE_MONGO_URI",
        "ORGPIPELINE_MONGO_DB",
        "ORGPIPELINE_S3_ENDPOINT",
        "ORGPIPELINE_S3_ACCESS_KEY",
        "ORGPIPELINE_S3_SECRET_KEY",
    }


def test_changing_one_table_changes_only_its_cronjob_hash() -> None:
    t1 = target()
    tables = list(t1.spec.tables)
    tables[0] = tables[0].model_copy(update={"schedule": "*/5 * * * *"})
    t2 = target(tables=tables)
    h1 = {builders.child_key(c): builders.applied_hash(c) for c in builders.desired_children(t1, creds())}
    h2 = {builders.child_key(c): builders.applied_hash(c) for c in builders.desired_children(t2, creds())}
    changed = {k for k in h1 if h1[k] != h2[k]}
    assert changed == {("CronJob", "org-123", "ingest-orders"), ("ConfigMap", "org-123", naming.CONFIGMAP)}


def test_network_policy_denies_ingress_and_limits_egress() -> None:
    np = builders.build_network_policy(target())
    assert np["spec"]["ingress"] == []
    ports = [p["port"] for rule in np["spec"]["egress"] for p in rule["ports"]]
    assert 53 in ports and 5432 in ports


def _env(job_spec: dict[str, Any]) -> dict[str, str]:
    (container,) = job_spec["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def test_manual_job_is_the_cronjob_template_with_its_requester() -> None:
    t = target()
    request = triggers.run_now_request(
        {triggers.ANNOTATION_RUN_NOW_REQUESTER: "alice", triggers.ANNOTATION_RUN_NOW_REASON: "late file"}
    )
    job = builders.build_manual_job(t, t.spec.tables[1], "2024-05-01T10:00:00Z", request)
    assert job["metadata"]["name"] == naming.manual_job_name("uid-1", "customers", "2024-05-01T10:00:00Z")
    assert job["metadata"]["name"].startswith("ingest-customers-now-")
    assert "generateName" not in job["metadata"]
    assert job["metadata"]["labels"][naming.LABEL_TABLE] == "customers"
    assert job["metadata"]["labels"][naming.LABEL_RUN_KIND] == "manual"
    scheduled = builders.build_cronjob(t, t.spec.tables[1])["spec"]["jobTemplate"]["spec"]
    assert _env(scheduled)[triggers.ENV_TRIGGER] == "schedule"
    assert _env(job["spec"])[triggers.ENV_TRIGGER] == "run-now"
    assert _env(job["spec"])[triggers.ENV_TRIGGERED_BY] == "alice"
    assert _env(job["spec"])[triggers.ENV_TRIGGER_REASON] == "late file"
    for spec in (scheduled, job["spec"]):
        for name in (triggers.ENV_TRIGGER, triggers.ENV_TRIGGERED_BY, triggers.ENV_TRIGGER_REASON):
            spec["template"]["spec"]["containers"][0]["env"] = [
                e for e in spec["template"]["spec"]["containers"][0]["env"] if e["name"] != name
            ]
    assert job["spec"] == scheduled  # the rest is the CronJob's template


def test_a_plain_run_now_annotation_has_an_unknown_requester() -> None:
    t = target()
    job = builders.build_manual_job(t, t.spec.tables[0], "rv:1", triggers.run_now_request({}))
    env = _env(job["spec"])
    assert (env[triggers.ENV_TRIGGER], env[triggers.ENV_TRIGGERED_BY], env[triggers.ENV_TRIGGER_REASON]) == (
        "run-now",
        "unknown:run-now",
        "",
    )


def test_a_cronjobs_runs_are_by_the_system_identity_of_the_cronjob() -> None:
    t = target()
    cronjob = builders.build_cronjob(t, t.spec.tables[1])
    env = _env(cronjob["spec"]["jobTemplate"]["spec"])
    assert env[triggers.ENV_TRIGGERED_BY] == f"system:schedule:{cronjob['metadata']['name']}"
    assert cronjob["metadata"]["name"] == "ingest-customers"


def test_builders_output_is_plain_yaml() -> None:
    for child in builders.desired_children(target(), creds()):
        assert yaml.safe_load(yaml.safe_dump(child)) == child


def test_the_role_binding_gives_the_tenant_role_to_the_operator_alone_first_in_the_namespace() -> None:
    spec = target().spec
    t = builders.Target(
        "org-123", "uid-1", spec, builders.JobSettings(tenant_binding=("op-tenant", "ops", "op"))
    )
    children = builders.desired_children(t, creds())
    assert [c["kind"] for c in children[:2]] == ["Namespace", "RoleBinding"]
    binding = children[1]
    assert binding["metadata"]["namespace"] == "org-123"
    assert binding["metadata"]["name"] == naming.ROLE_BINDING
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "op-tenant",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "op", "namespace": "ops"}]
    assert binding["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    # every child is watched (the Secret in each org namespace only, through the tenant role)
    assert {c["kind"] for c in children} <= builders.WATCHED_KINDS
    # without a tenant role (the operator's RBAC granted some other way) there is no binding
    assert "RoleBinding" not in {c["kind"] for c in builders.desired_children(target(), creds())}
