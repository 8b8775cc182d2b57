"""The one table of kinds (kinds.py): the modules that list kinds read it, and the chart's RBAC
grants exactly what it says, no more and no less, in each of its three scopes (cluster-wide, inside
the org namespaces, in the operator's own namespace)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from orgpipeline_api import v1alpha1
from orgpipeline_api.v1alpha1 import OrgPipelineSpec
from orgpipeline_operator import builders, kinds, kube, reconcile, snapshot, watch

CHART = Path(__file__).resolve().parents[3] / "charts" / "orgpipeline-operator" / "templates"
RBAC = CHART / "rbac.yaml"
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "org-123.yaml"


def _documents() -> list[dict[str, Any]]:
    """rbac.yaml as YAML: template-only lines dropped, `{{ ... }}` values made `<fullname>`."""
    lines = []
    for line in RBAC.read_text().splitlines():
        if re.fullmatch(r"\s*\{\{-?.*-?\}\}\s*", line):
            continue
        lines.append(re.sub(r"\{\{-?[^}]*-?\}\}", "<fullname>", line))
    return [d for d in yaml.safe_load_all("\n".join(lines)) if d]


def _role(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in _documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _granted(doc: dict[str, Any]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    out = set()
    for rule in doc.get("rules") or []:
        names = tuple(rule.get("resourceNames") or ())
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out |= {(group, resource, verb, names) for verb in rule["verbs"]}
    return out


def test_the_cluster_role_grants_exactly_what_the_table_needs() -> None:
    granted = _granted(_role("ClusterRole", "<fullname>"))
    needed = kinds.rbac_rules()
    assert granted - needed == set(), "granted but not in kinds.KINDS"
    assert needed - granted == set(), "in kinds.KINDS but not granted"


def test_the_cluster_role_reads_no_secret_and_makes_no_job() -> None:
    granted = {(g, r, v) for g, r, v, _ in _granted(_role("ClusterRole", "<fullname>"))}
    assert not {rule for rule in granted if rule[1] == "secrets"}
    assert ("batch", "jobs", "create") not in granted
    # RoleBindings: it may bind the tenant role, that one only (bind by name, no escalate)
    bind = {rule for rule in _granted(_role("ClusterRole", "<fullname>")) if rule[1] == "clusterroles"}
    assert bind == {("rbac.authorization.k8s.io", "clusterroles", "bind", (kinds.TENANT_ROLE,))}


def test_the_tenant_role_and_the_home_role_grant_exactly_what_the_table_needs() -> None:
    tenant = {(g, r, v) for g, r, v, _ in _granted(_role("ClusterRole", kinds.TENANT_ROLE))}
    assert tenant == kinds.tenant_rules()
    assert tenant == {
        ("", "secrets", "get"),
        ("", "secrets", "list"),
        ("", "secrets", "watch"),
        ("", "secrets", "create"),
        ("", "secrets", "patch"),
        ("batch", "jobs", "create"),
    }
    home = {(g, r, v) for g, r, v, _ in _granted(_role("Role", "<fullname>"))}
    # The credentialsSecrets, read by name; the Lease that elects the active replica.
    assert (
        home
        == kinds.home_rules()
        == {
            ("", "secrets", "get"),
            ("coordination.k8s.io", "leases", "get"),
            ("coordination.k8s.io", "leases", "create"),
            ("coordination.k8s.io", "leases", "update"),
        }
    )


def test_the_roles_are_bound_to_the_operators_service_account() -> None:
    for kind, name in (("ClusterRoleBinding", "<fullname>"), ("RoleBinding", "<fullname>")):
        doc = _role(kind, name)
        assert doc["roleRef"]["name"] == "<fullname>"
        assert [s["kind"] for s in doc["subjects"]] == ["ServiceAccount"]
    # the tenant role has no binding in the chart: the operator makes one per org namespace
    assert not [d for d in _documents() if d.get("roleRef", {}).get("name") == kinds.TENANT_ROLE]


def test_the_modules_read_the_table() -> None:
    assert kube.RESOURCES[("batch/v1", "CronJob")] == ("cronjobs", True)
    assert kube.RESOURCES[(v1alpha1.API_VERSION, v1alpha1.KIND)] == (v1alpha1.PLURAL, False)
    assert kube.RESOURCES[("rbac.authorization.k8s.io/v1", "RoleBinding")] == ("rolebindings", True)
    # every child watched: cluster-wide but Secrets, which only in each org namespace
    assert ("v1", "Secret") not in watch.KINDS
    assert watch.NAMESPACED_KINDS == (("v1", "Secret"),)
    assert {kind for _, kind in watch.KINDS} | {"Secret"} == {k.kind for k in kinds.children()}
    assert set(builders.WATCHED_KINDS) == {k.kind for k in kinds.children()}
    assert set(reconcile.PRUNABLE) == {"CronJob"}
    assert ("v1", "Namespace") in snapshot.KINDS and ("batch/v1", "Job") not in snapshot.KINDS
    assert ("v1", "Secret") not in snapshot.KINDS  # nor a cluster-wide listing
    assert ("rbac.authorization.k8s.io/v1", "RoleBinding") in snapshot.KINDS


def _target(binding: tuple[str, str, str] | None) -> builders.Target:
    doc = yaml.safe_load(EXAMPLE.read_text())
    settings = builders.JobSettings(tenant_binding=binding)
    return builders.Target("org-123", "uid-1", OrgPipelineSpec.model_validate(doc["spec"]), settings)


CREDS = builders.Credentials("u", "p", "h", "5432", "db", "mongodb://m", "m", "http://s3", "a", "s")


def test_every_child_the_builders_make_is_a_child_kind_of_the_table() -> None:
    target = _target(("op-tenant", "orgpipeline-system", "op"))
    made = {(c["apiVersion"], c["kind"]) for c in builders.desired_children(target, CREDS)}
    assert made == {(k.api_version, k.kind) for k in kinds.children()}
    assert all(kinds.api_version(kind) == api for api, kind in made)
