"""Who asked for a run: `orgpipeline run-now` through the real API server, and the operator's Job.

The CLI finds the caller with a SelfSubjectReview, so the requester is whoever the API server
authenticated: the stack's admin (client certificate) or a ServiceAccount (token). A plain
`kubectl annotate` still runs, with an unknown requester; a caller without rights gets one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_helpers import Kubectl, Operator, apply_ready, get_pipeline, pipeline, wait_for
from operator_helpers import report_message as _report
from orgpipeline_api import triggers
from orgpipeline_operator import kube, naming
from test_operator_runs import _finish_pod

CLI = str(Path(sys.executable).parent / "orgpipeline")


def run_cli(kubeconfig: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def job_env(kubectl: Kubectl, api: kube.Kube, org: str, known: set[str]) -> dict[str, str]:
    """The trigger env of the next run-now Job of the org (one not in `known`); the Job is then
    finished and recorded, so that the next request is not refused as an overlapping run."""
    ns = name = f"org-{org}"

    def new_job() -> dict[str, Any] | None:
        jobs = kubectl.json("get", "jobs", "-n", ns)["items"]
        return next((j for j in jobs if j["metadata"]["name"] not in known), None)

    job = wait_for(new_job, what="a run-now Job")
    job_name = job["metadata"]["name"]
    known.add(job_name)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {
        e["name"]: e.get("value", "") for e in container["env"] if e["name"].startswith("ORGPIPELINE_TRIG")
    }
    _finish_pod(api, ns, job_name, 0, _report(org, "orders"))

    def recorded() -> bool:
        tables = (get_pipeline(api, name).get("status") or {}).get("tables") or []
        return any((t.get("lastRun") or {}).get("job") == job_name for t in tables)

    wait_for(recorded, what=f"{job_name} recorded")
    return env


def request_served(api: kube.Kube, name: str) -> None:
    def gone() -> bool:
        annotations = get_pipeline(api, name)["metadata"].get("annotations") or {}
        return not set(naming.RUN_NOW_ANNOTATIONS) & set(annotations)

    wait_for(gone, what="the run-now annotations removed")


def token_kubeconfig(kubectl: Kubectl, admin_kubeconfig: str, sa: str, path: Path) -> str:
    kubectl("-n", "default", "create", "serviceaccount", sa)
    token = kubectl("-n", "default", "create", "token", sa, "--duration=1h").stdout.strip()
    cluster = yaml.safe_load(Path(admin_kubeconfig).read_text())["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": sa, "context": {"cluster": "local", "user": sa}}],
        "current-context": sa,
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_run_now_records_the_authenticated_requester_and_reason(
    operator: Operator,
    kubectl: Kubectl,
    api: kube.Kube,
    stack: Any,
    unique_id: str,
    cleanup_pipelines: list[str],
    tmp_path: Path,
) -> None:
    org = f"rnow{unique_id}"
    name = f"org-{org}"
    apply_ready(kubectl, api, cleanup_pipelines, pipeline(org, ["orders"]))
    admin = kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout.strip()
    assert admin
    known: set[str] = set()

    done = run_cli(
        stack.kubeconfig, "run-now", "--org-id", org, "--table", "orders", "--reason", "fixed file"
    )
    assert done.returncode == 0, done.stderr
    assert f"for {admin} (fixed file)" in done.stdout
    env = job_env(kubectl, api, org, known)
    assert env == {
        triggers.ENV_TRIGGER: "run-now",
        triggers.ENV_TRIGGERED_BY: admin,
        triggers.ENV_TRIGGER_REASON: "fixed file",
    }
    request_served(api, name)

    # A plain annotation runs too, with an unknown requester (no stale one from the request before)
    # that says so and names the field manager that wrote it: never an empty user.
    kubectl("annotate", "--overwrite", "orgpipeline", name, f"{naming.ANNOTATION_RUN_NOW}=orders")
    assert job_env(kubectl, api, org, known) == {
        triggers.ENV_TRIGGER: "run-now",
        triggers.ENV_TRIGGERED_BY: "unknown:run-now:kubectl-annotate",
        triggers.ENV_TRIGGER_REASON: "",
    }
    request_served(api, name)

    # Another caller, authenticated by a token: its own name is recorded.
    sa = f"runner-{unique_id}"
    config = token_kubeconfig(kubectl, stack.kubeconfig, sa, tmp_path / "sa.kubeconfig")
    try:
        forbidden = run_cli(config, "run-now", "--org-id", org, "--table", "orders")
        assert forbidden.returncode == 2 and forbidden.stdout == ""
        assert (
            len(forbidden.stderr.strip().splitlines()) == 1 and "cannot list OrgPipelines" in forbidden.stderr
        )
        kubectl(
            "create", "clusterrole", sa, "--verb=get,list,patch", "--resource=orgpipelines.orgpipeline.io"
        )  # fmt: skip
        kubectl("create", "clusterrolebinding", sa, f"--clusterrole={sa}", f"--serviceaccount=default:{sa}")

        def allowed() -> subprocess.CompletedProcess[str] | None:
            done = run_cli(config, "run-now", "--org-id", org, "--table", "orders", "-o", "json")
            return done if done.returncode == 0 else None

        assert f"system:serviceaccount:default:{sa}" in wait_for(allowed, what="the binding in effect").stdout
        assert (
            job_env(kubectl, api, org, known)[triggers.ENV_TRIGGERED_BY]
            == f"system:serviceaccount:default:{sa}"
        )
    finally:
        kubectl("delete", "clusterrolebinding,clusterrole", sa, "--ignore-not-found", check=False)
        kubectl("-n", "default", "delete", "serviceaccount", sa, "--ignore-not-found", check=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--org-id", "no-such-org", "--table", "orders"], "unknown org"),
        (["--table", "nosuch"], "unknown table"),
    ],
)
def test_unknown_org_or_table_is_one_line_and_exit_2(
    kubectl: Kubectl, stack: Any, unique_id: str, cleanup_pipelines: list[str], args: list[str], message: str
) -> None:
    org = f"rnbad{unique_id}"
    manifest = pipeline(org, ["orders"])
    manifest["metadata"]["labels"] = {}  # no operator serves it: only the CLI's checks are tested
    cleanup_pipelines.append(manifest["metadata"]["name"])
    kubectl.apply(manifest)
    full = args if args[0] == "--org-id" else ["--org-id", org, *args]
    done = run_cli(stack.kubeconfig, "run-now", *full)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr
