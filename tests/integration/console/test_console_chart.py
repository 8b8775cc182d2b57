"""The chart's console: off by default; when on, a Deployment running `orgpipeline console`, its
Service, and a ServiceAccount whose ClusterRole is enough for the console and no more: the console
started with only that ServiceAccount's token answers a caller's request (TokenReview and
SubjectAccessReview allowed) and may not write an OrgPipeline or read a Secret."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import REPO, _drop_identity, _identity, harness, start_console

_spec = importlib.util.spec_from_file_location(
    "console_chart_release", REPO / "tests/integration/chart/chart_release.py"
)
assert _spec is not None and _spec.loader is not None
chart_release = importlib.util.module_from_spec(_spec)
sys.modules["console_chart_release"] = chart_release
_spec.loader.exec_module(chart_release)


def render(*sets: str) -> list[dict[str, Any]]:
    args = [
        "helm",
        "template",
        "op",
        str(chart_release.CHART),
        "-n",
        "ops",
        "-f",
        str(chart_release.CI_VALUES),
    ]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def console_docs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs if d["metadata"]["name"].endswith("-console")}


def test_the_console_is_off_by_default(stack: Any) -> None:
    assert console_docs(render()) == {}


def test_the_rendered_console(stack: Any) -> None:
    docs = console_docs(render("console.enabled=true"))
    assert set(docs) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "op-orgpipeline-operator-console"
    (container,) = pod["containers"]
    assert container["command"] == ["orgpipeline", "console", "--port", "8080"]
    # Only the PostgreSQL login of the connections Secret: not the S3 or MongoDB keys.
    assert [e["name"] for e in container["env"]] == ["ORGPIPELINE_POSTGRES_DSN"]
    assert "envFrom" not in container
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    verbs = {(r["apiGroups"][0], r["resources"][0]): r["verbs"] for r in docs["ClusterRole"]["rules"]}
    assert verbs == {
        ("authentication.k8s.io", "tokenreviews"): ["create"],
        ("authorization.k8s.io", "subjectaccessreviews"): ["create"],
        ("orgpipeline.io", "orgpipelines"): ["get", "list"],
        ("batch", "jobs"): ["list"],
    }


@pytest.fixture()
def released(stack: Any, tmp_path: Path) -> Iterator[dict[str, str]]:
    uid = uuid.uuid4().hex[:8]
    ns, release = f"console-chart-{uid}", f"cc-{uid}"
    harness.kubectl("create", "namespace", ns)
    try:
        chart_release.apply_release(ns, release, "console.enabled=true")
        yield {"namespace": ns, "release": release, "sa": f"{release}-orgpipeline-operator-console"}
    finally:
        for kind in ("clusterrolebinding", "clusterrole"):
            for suffix in ("", "-tenant", "-console"):
                harness.kubectl(
                    "delete",
                    kind,
                    f"{release}-orgpipeline-operator{suffix}",
                    "--ignore-not-found",
                    check=False,
                )
        for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
            for name in (
                f"{release}-orgpipeline-operator-tenant-bounds",
                f"{release}-orgpipeline-operator-run-now",
            ):
                harness.kubectl("delete", kind, name, "--ignore-not-found", check=False)
        harness.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def kubeconfig_for(token: str, path: Path) -> str:
    """The stack's kubeconfig with the token as its only credential."""
    config = yaml.safe_load(Path(os.environ.get("KUBECONFIG", "")).read_text())
    cluster = config["clusters"][0]
    out = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "console", "user": {"token": token}}],
        "contexts": [{"name": "console", "context": {"cluster": cluster["name"], "user": "console"}}],
        "current-context": "console",
    }
    path.write_text(yaml.safe_dump(out))
    return str(path)


def test_the_console_works_with_only_its_chart_rbac(
    released: dict[str, str], stack: Any, tmp_path: Path
) -> None:
    ns, sa = released["namespace"], released["sa"]
    token = harness.kubectl("-n", ns, "create", "token", sa, "--duration=1h").strip()
    kubeconfig = kubeconfig_for(token, tmp_path / "console.kubeconfig")

    def can(*args: str) -> bool:
        out = harness.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
        return out.strip() == "yes"

    assert can("create", "tokenreviews.authentication.k8s.io")
    assert can("list", "orgpipelines.orgpipeline.io")
    assert not can("patch", "orgpipelines.orgpipeline.io")
    assert not can("get", "secrets", "-A")
    assert not can("create", "jobs", "-A")

    uid = uuid.uuid4().hex[:8]
    name = f"org-cc{uid}"
    doc = harness.pipeline_manifest(name, f"cc{uid}", "orgpipeline-console-chart")
    doc["metadata"]["labels"] = {harness.TEST_LABEL: f"cc{uid}-unreconciled"}
    harness.kubectl("apply", "-f", "-", input=json.dumps(doc))
    caller = _identity(f"console-chart-{uid}", name, ["get"])
    env = {
        **os.environ,
        **stack.as_environ(),
        "KUBECONFIG": kubeconfig,
        "ORGPIPELINE_POSTGRES_DSN": stack.operator_postgres_dsn,
    }
    proc, url = start_console(env, tmp_path / "console.log")
    try:
        headers = {"Authorization": f"Bearer {caller.token}"}
        r = requests.get(url + "/orgs", headers=headers, timeout=60)
        assert r.status_code == 200, (tmp_path / "console.log").read_text()
        assert f'href="/orgs/{name}"' in r.text
        assert requests.get(f"{url}/orgs/{name}", headers=headers, timeout=60).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        harness.kubectl("delete", "orgpipeline", name, "--wait=false", check=False)
        _drop_identity(caller.name)
