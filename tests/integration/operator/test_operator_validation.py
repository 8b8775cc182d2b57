"""Bad manifests: the schema refuses the corpus on apply with a clear message; what passes the schema
but still cannot work becomes a False condition with a reason, and the operator keeps running."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from operator_helpers import CASES, Kubectl, Operator, condition, get_pipeline, pipeline, wait_for, wait_ready
from orgpipeline_operator import kube

INVALID = sorted((CASES / "invalid").glob("*.yaml"))


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_api_server_refuses_invalid_manifest_with_a_clear_message(
    kubectl: Kubectl, path: Path, unique_id: str
) -> None:
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    doc = yaml.safe_load(path.read_text())
    doc["metadata"]["name"] = f"{path.stem}-{unique_id}"
    proc = kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert proc.returncode != 0, f"{path.name} was accepted"
    assert expected in proc.stderr, proc.stderr


def test_org_id_is_immutable(
    operator: Operator, kubectl: Kubectl, api: kube.Kube, unique_id: str, cleanup_pipelines: list[str]
) -> None:
    org = f"imm{unique_id}"
    manifest = pipeline(org)
    cleanup_pipelines.append(manifest["metadata"]["name"])
    kubectl.apply(manifest)
    manifest["spec"]["orgId"] = f"other{unique_id}"
    proc = kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert proc.returncode != 0 and "orgId is immutable" in proc.stderr


def test_spec_valid_for_the_schema_but_not_the_model_is_a_false_condition(
    operator: Operator, kubectl: Kubectl, api: kube.Kube, unique_id: str, cleanup_pipelines: list[str]
) -> None:
    org = f"badre{unique_id}"
    manifest = pipeline(org)
    manifest["spec"]["tables"][0]["columns"][0]["pattern"] = "([unclosed"  # not a valid regex
    cleanup_pipelines.append(manifest["metadata"]["name"])
    kubectl.apply(manifest)

    def refused() -> dict[str, str] | None:
        c = condition(get_pipeline(api, f"org-{org}"), "Ready")
        return c if c.get("reason") == "InvalidSpec" else None

    ready = wait_for(refused, what="Ready=False InvalidSpec")
    assert ready["status"] == "False" and "invalid pattern" in ready["message"]
    assert api.get("v1", "Namespace", f"org-{org}") is None  # nothing was created
    assert operator.proc is not None and operator.proc.poll() is None

    # Fixing the spec makes it Ready.
    del manifest["spec"]["tables"][0]["columns"][0]["pattern"]
    kubectl.apply(manifest)
    wait_ready(api, f"org-{org}")


def test_two_pipelines_claiming_one_org_the_second_is_refused(
    operator: Operator, kubectl: Kubectl, api: kube.Kube, unique_id: str, cleanup_pipelines: list[str]
) -> None:
    org = f"dup{unique_id}"
    first = pipeline(org)
    second = pipeline(org)
    second["metadata"]["name"] = f"org-{org}-again"
    cleanup_pipelines.extend([first["metadata"]["name"], second["metadata"]["name"]])
    kubectl.apply(first)
    wait_ready(api, first["metadata"]["name"])
    kubectl.apply(second)

    def conflict() -> dict[str, str] | None:
        c = condition(get_pipeline(api, second["metadata"]["name"]), "Ready")
        return c if c.get("reason") == "OrgIdConflict" else None

    msg = wait_for(conflict, what="Ready=False OrgIdConflict")["message"]
    assert first["metadata"]["name"] in msg
    ns = kubectl.json("get", "namespace", f"org-{org}")
    assert ns["metadata"]["labels"]["orgpipeline.io/pipeline"] == first["metadata"]["name"]

    # Deleting the loser leaves the winner's org alone.
    kubectl("delete", "orgpipeline", second["metadata"]["name"], "--timeout=30s")
    wait_ready(api, first["metadata"]["name"])
    assert api.get("v1", "Namespace", f"org-{org}") is not None
