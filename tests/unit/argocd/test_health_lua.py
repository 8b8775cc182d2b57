"""The Argo CD health check of OrgPipeline, run by the real Lua 5.4 interpreter over sample objects.

Argo CD runs the script with the resource as the global `obj` (JSON turned into Lua tables) and reads
the returned `hs.status` / `hs.message`. The harness does exactly that: it writes `obj` as a Lua
table literal, loads the script as a chunk and prints the result.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "examples" / "argocd" / "health-orgpipeline.lua"
ARGOCD_CM = REPO / "examples" / "argocd" / "argocd-cm.yaml"
KEY = "resource.customizations.health.orgpipeline.io_OrgPipeline"
LUA = shutil.which("lua5.4")

pytestmark = pytest.mark.skipif(LUA is None, reason="lua5.4 is not installed (hack/bootstrap installs it)")


def lua_literal(value: Any) -> str:
    """A Python value (decoded JSON) as a Lua expression, the way Argo CD hands `obj` to the script."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(c if c.isalnum() or c in " -_.:/,()" else f"\\{ord(c)}" for c in value)
        return f'"{escaped}"'
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def health(obj: dict[str, Any], script: str | None = None) -> tuple[str, str]:
    """Runs the health script over `obj`; returns (status, message)."""
    harness = (
        f"obj = {lua_literal(obj)}\n"
        f"local chunk = assert(load({lua_literal(script or SCRIPT.read_text())}, 'health', 't'))\n"
        "local hs = chunk()\n"
        "io.write(hs.status, '\\n', hs.message or '', '\\n')\n"
    )
    out = subprocess.run([str(LUA), "-"], input=harness, capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    status, message = out.stdout.split("\n", 1)
    return status, message.rstrip("\n")


def cond(type_: str, status: str, reason: str, message: str = "", generation: int = 2) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": "2026-11-01T10:00:00Z",
    }


def pipeline(
    generation: int = 2, status: dict[str, Any] | None = None, suspend: bool = False
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "orgpipeline.io/v1alpha1",
        "kind": "OrgPipeline",
        "metadata": {"name": "org-123", "generation": generation},
        "spec": {"orgId": "123", "suspend": suspend, "tables": [{"name": "orders"}]},
    }
    if status is not None:
        obj["status"] = status
    return obj


def ready_status(*extra: dict[str, Any], alerts: int = 0) -> dict[str, Any]:
    conditions = [
        cond("Ready", "True", "Reconciled", "namespace, credentials, database and CronJobs are in place"),
        cond("DatabaseReady", "True", "Provisioned"),
        cond("ResourcesReady", "True", "Applied"),
        cond("Suspended", "False", "Active"),
        cond("Healthy", "True", "NoAlerts"),
    ]
    for e in extra:
        conditions = [c for c in conditions if c["type"] != e["type"]] + [e]
    return {"observedGeneration": 2, "conditions": conditions, "activeAlerts": alerts, "qualityScore": 0.99}


def test_new_object_without_status_is_progressing() -> None:
    status, message = health(pipeline(status=None))
    assert status == "Progressing"
    assert "reconcile" in message


def test_stale_observed_generation_is_progressing_even_if_ready() -> None:
    obj = pipeline(generation=3, status=ready_status())
    status, message = health(obj)
    assert status == "Progressing"
    assert "generation 3" in message


def test_ready_condition_of_an_older_generation_is_progressing() -> None:
    st = ready_status(cond("Ready", "True", "Reconciled", generation=1))
    assert health(pipeline(status=st))[0] == "Progressing"


def test_ready_and_no_alerts_is_healthy() -> None:
    status, message = health(pipeline(status=ready_status()))
    assert status == "Healthy"
    assert message.startswith("Reconciled")


def test_ready_unknown_or_missing_is_progressing() -> None:
    assert health(pipeline(status=ready_status(cond("Ready", "Unknown", "Starting"))))[0] == "Progressing"
    assert health(pipeline(status={"observedGeneration": 2}))[0] == "Progressing"


def test_ready_false_while_reconciling_is_progressing() -> None:
    st = ready_status(cond("Ready", "False", "Reconciling", "DatabaseReady not yet observed"))
    status, message = health(pipeline(status=st))
    assert status == "Progressing"
    assert "DatabaseReady not yet observed" in message


def test_ready_false_for_an_error_is_degraded_with_its_reason() -> None:
    st = ready_status(cond("Ready", "False", "InvalidSpec", "businessKeys: unknown column 'x'"))
    status, message = health(pipeline(status=st))
    assert status == "Degraded"
    assert message == "InvalidSpec: businessKeys: unknown column 'x'"


def test_active_alerts_are_degraded() -> None:
    st = ready_status(cond("Healthy", "False", "AlertsActive", "orders: QualityBelowThreshold"), alerts=1)
    status, message = health(pipeline(status=st))
    assert status == "Degraded"
    assert "1 active alert" in message
    assert "QualityBelowThreshold" in message


def test_suspended_pipeline_is_suspended() -> None:
    st = ready_status(cond("Suspended", "True", "SpecSuspended", "spec.suspend is true"))
    assert health(pipeline(status=st, suspend=True))[0] == "Suspended"
    # from the condition alone too (a spec without the field)
    obj = pipeline(status=st)
    del obj["spec"]["suspend"]
    assert health(obj)[0] == "Suspended"


def test_an_error_outranks_suspension() -> None:
    st = ready_status(
        cond("Suspended", "True", "SpecSuspended"),
        cond("Ready", "False", "DatabaseError", "connection refused"),
    )
    assert health(pipeline(status=st, suspend=True))[0] == "Degraded"


def test_argocd_cm_carries_the_same_script() -> None:
    cm = yaml.safe_load(ARGOCD_CM.read_text())
    assert cm["kind"] == "ConfigMap"
    assert cm["metadata"]["name"] == "argocd-cm"
    embedded = cm["data"][KEY]
    assert embedded == SCRIPT.read_text()
    # and the embedded copy runs the same
    assert health(pipeline(status=ready_status()), script=embedded)[0] == "Healthy"


def test_statuses_the_operator_computes_map_to_the_expected_health() -> None:
    """The operator's own status logic (pure functions) -> the Lua check: the two agree on the contract."""
    op_status = pytest.importorskip("orgpipeline_operator.status", reason="the operator package is absent")
    from orgpipeline_api.v1alpha1 import load_manifest
    from orgpipeline_api.v1alpha1_status import LastRun, OrgPipelineStatus, RunResult

    _, spec = load_manifest(REPO / "examples" / "org-123.yaml")
    now = "2026-11-01T10:00:00Z"
    ok = op_status.Check(True, "Provisioned")
    fresh = op_status.Observation(generation=1)
    st = op_status.compute_status(spec, OrgPipelineStatus(), fresh, now)
    assert health(pipeline(generation=1, status=op_status.dump(st)))[0] == "Progressing"

    reconciled = op_status.Observation(generation=1, database=ok, resources=ok)
    st = op_status.compute_status(spec, st, reconciled, now)
    assert health(pipeline(generation=1, status=op_status.dump(st)))[0] == "Healthy"

    failed = LastRun(job="ingest-orders-now-abcde", result=RunResult.Failed, error="exit code 1")
    bad = op_status.Observation(generation=1, database=ok, resources=ok, runs={"orders": failed})
    st = op_status.compute_status(spec, st, bad, now)
    status, message = health(pipeline(generation=1, status=op_status.dump(st)))
    assert (status, "RunFailed" in message) == ("Degraded", True)

    db_down = op_status.Observation(generation=2, database=op_status.Check(False, "DatabaseUnreachable", "x"))
    st = op_status.compute_status(spec, OrgPipelineStatus(), db_down, now)
    assert (
        health(pipeline(generation=2, status={**op_status.dump(st), "observedGeneration": 2}))[0]
        == "Degraded"
    )
