"""The one table of kinds (kinds.py): the modules that list kinds read it, and the chart's RBAC
grants exactly what it says, no more and no less."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from orgpipeline_api import v1alpha1
from orgpipeline_operator import builders, kinds, kube, reconcile, snapshot, watch

RBAC = Path(__file__).resolve().parents[3] / "charts" / "orgpipeline-operator" / "templates" / "rbac.yaml"


def _documents() -> list[dict[str, Any]]:
    """rbac.yaml as YAML: template-only lines dropped, `{{ ... }}` values made plain strings."""
    lines = []
    for line in RBAC.read_text().splitlines():
        if re.fullmatch(r"\s*\{\{-?.*-?\}\}\s*", line):
            continue
        lines.append(re.sub(r"\{\{-?[^}]*-?\}\}", "templated", line))
    return [d for d in yaml.safe_load_all("\n".join(lines)) if d]


def _granted(kind: str) -> set[tuple[str, str, str]]:
    out = set()
    for doc in _documents():
        if doc.get("kind") != kind:
            continue
        for rule in doc.get("rules") or []:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out |= {(group, resource, verb) for verb in rule["verbs"]}
    return out


def test_the_cluster_role_grants_exactly_what_the_table_needs() -> None:
    granted = _granted("ClusterRole")
    needed = kinds.rbac_rules()
    assert granted - needed == set(), "granted but not in kinds.KINDS"
    assert needed - granted == set(), "in kinds.KINDS but not granted"


def test_the_modules_read_the_table() -> None:
    assert kube.RESOURCES[("batch/v1", "CronJob")] == ("cronjobs", True)
    assert kube.RESOURCES[(v1alpha1.API_VERSION, v1alpha1.KIND)] == (v1alpha1.PLURAL, False)
    assert watch.KINDS == (("v1", "Secret"), ("batch/v1", "CronJob"))
    assert set(builders.WATCHED_KINDS) == {"Secret", "CronJob"}
    assert set(reconcile.PRUNABLE) == {"CronJob"}
    assert ("v1", "Namespace") in snapshot.KINDS and ("batch/v1", "Job") not in snapshot.KINDS


def test_every_child_the_builders_make_is_a_child_kind_of_the_table() -> None:
    from orgpipeline_api.v1alpha1 import OrgPipelineSpec

    doc = yaml.safe_load((Path(__file__).resolve().parents[3] / "examples" / "org-123.yaml").read_text())
    target = builders.Target("org-123", "uid-1", OrgPipelineSpec.model_validate(doc["spec"]))
    creds = builders.Credentials("u", "p", "h", "5432", "db", "mongodb://m", "m", "http://s3", "a", "s")
    made = {(c["apiVersion"], c["kind"]) for c in builders.desired_children(target, creds)}
    assert made == {(k.api_version, k.kind) for k in kinds.children()}
    assert all(kinds.api_version(kind) == api for api, kind in made)
