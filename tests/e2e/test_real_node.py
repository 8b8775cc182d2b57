"""End to end on the real node (ORGPIPELINE_NODE=kubelet): a run's pod from the image, as a node runs it.

`kubectl apply` of an OrgPipeline (small tier) -> files in S3 -> run-now -> the Job's pod is
scheduled on the stack's node (kube-scheduler), the kubelet runs it through containerd and runc
from orgpipeline:dev (hack/image.py) -> rows in MongoDB and PostgreSQL, reached on the pods'
network -> the OrgPipeline's status, the pod's termination message, its Events and `kubectl logs`.
What containerd was asked to run is read back from it: uid/gid 10001, a read-only root, no
capabilities, no new privileges, the RuntimeDefault seccomp profile, the small tier's 512Mi limit.

The rest of the end-to-end suite (test_org_lifecycle, test_file_arrival) runs on this node too
when ORGPIPELINE_NODE=kubelet: the stand-in (hack/podrunner.py) is not started then.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pymongo
import pytest
import yaml
from harness import (
    SAMPLES,
    TEST_LABEL,
    Operator,
    drop_org_data,
    get_json,
    is_ready,
    kubectl,
    last_run,
    pipeline_manifest,
    wait_for,
)
from orgpipeline_api import store_names
from psycopg import sql

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "hack"))

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.environ.get("ORGPIPELINE_NODE") != "kubelet",
        reason="the real node is opt-in: ORGPIPELINE_NODE=kubelet (hack/stack up runs kubelet, containerd)",
    ),
]

BUCKET = "orgpipeline-node"
FILE = "orders_2026-11-01.csv"
NODE_NAME = "orgpipeline-node"


@pytest.fixture(scope="module")
def org(stack: Any, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    assert stack.real_node, "ORGPIPELINE_NODE=kubelet but the stack exports no node environment"
    tmp = tmp_path_factory.mktemp("node")
    org_id = f"node{uuid.uuid4().hex[:8]}"
    name = f"org-{org_id}"
    manifest = pipeline_manifest(name, org_id, BUCKET)
    manifest["spec"]["tier"] = "small"
    for table in manifest["spec"]["tables"]:
        table["schedule"] = "0 0 1 1 *"  # only the runs this test asks for
    path = tmp / "org.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    if not s3.bucket_exists(BUCKET):
        s3.make_bucket(BUCKET)
    env = {**os.environ, **stack.as_environ()}
    operator = Operator(env, tmp / "operator.log", stack.kubeconfig, label_selector=f"{TEST_LABEL}={org_id}")
    try:
        operator.wait_ready()
        kubectl("apply", "-f", str(path))
        wait_for("the OrgPipeline to be Ready", lambda: is_ready(get_json("orgpipeline", name)), timeout=180)
        yield {"org_id": org_id, "name": name, "namespace": name, "operator": operator}
    finally:
        operator.stop()
        print("--- operator log (tail) ---\n" + "\n".join(operator.output().splitlines()[-30:]))
        kubectl("delete", "orgpipeline", name, "--ignore-not-found", "--wait=false", check=False)
        kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false", check=False)
        s3.remove_object(BUCKET, f"org-{org_id}/{FILE}")
        drop_org_data(stack.postgres_dsn, stack.mongo_uri, org_id)


def run_now(org: dict[str, Any], table: str) -> dict[str, Any]:
    asked = datetime.now(UTC).replace(microsecond=0)
    before = (last_run(get_json("orgpipeline", org["name"]), table) or {}).get("job")
    kubectl("annotate", "--overwrite", "orgpipeline", org["name"], f"orgpipeline.io/run-now={table}")

    def done() -> dict[str, Any] | None:
        run = last_run(get_json("orgpipeline", org["name"]), table)
        if not run or run.get("job") == before or "result" not in run:
            return None
        started = run.get("startedAt")
        return run if started is None or datetime.fromisoformat(str(started)) >= asked else None

    return wait_for(f"a new run of {table}", done, timeout=300, every=1)


def container_spec(container_id: str) -> dict[str, Any]:
    """What the kubelet asked containerd to run (the OCI spec runc got)."""
    import node

    info = node.ctr("containers", "info", container_id.removeprefix("containerd://")).stdout
    return dict(json.loads(info)["Spec"])


def test_run_now_runs_the_job_in_a_pod_from_the_image_on_the_node(
    stack: Any, s3: Any, org: dict[str, Any]
) -> None:
    s3.fput_object(BUCKET, f"org-{org['org_id']}/{FILE}", str(SAMPLES / FILE))

    run = run_now(org, "orders")

    assert run["result"] == "Succeeded", run
    assert (run["rowsRead"], run["inserted"], run["rejected"]) == (40, 40, 0)
    # Rows in both stores, written from the pod through the pods' network.
    with psycopg.connect(stack.postgres_dsn) as conn:
        table = sql.Identifier(store_names.pg_schema(org["org_id"]), store_names.pg_table("orders"))
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone() == (40,)
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(stack.mongo_uri)
    try:
        db = client[store_names.mongo_database(org["org_id"])]
        assert db[store_names.mongo_collection(org["org_id"], "orders")].count_documents({}) == 40
    finally:
        client.close()

    pods = get_json("-n", org["namespace"], "pods", "-l", f"job-name={run['job']}")
    assert pods and pods["items"], f"no pod of {run['job']}"
    pod = pods["items"][-1]
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert pod["status"]["phase"] == "Succeeded"
    status = pod["status"]["containerStatuses"][0]
    assert status["image"].endswith("orgpipeline:dev")
    terminated = status["state"]["terminated"]
    assert terminated["exitCode"] == 0
    # The termination message: the run's one-line summary, written to /dev/termination-log.
    assert terminated.get("message", "").strip(), terminated

    # `kubectl logs` reaches the kubelet through the API server.
    logs = kubectl("logs", "-n", org["namespace"], pod["metadata"]["name"])
    assert logs.strip(), "kubectl logs returned nothing"

    # The pod's Events: the scheduler's and the kubelet's.
    events = get_json(
        "-n", org["namespace"], "events", "--field-selector", f"involvedObject.name={pod['metadata']['name']}"
    )
    reasons = {e["reason"] for e in (events or {}).get("items", [])}
    assert {"Scheduled", "Pulled", "Created", "Started"} <= reasons, reasons

    spec = container_spec(status["containerID"])
    user = spec["process"]["user"]
    assert (user["uid"], user["gid"]) == (10001, 10001)
    assert spec["root"].get("readonly") is True
    caps = spec["process"].get("capabilities") or {}
    assert not any(caps.get(k) for k in ("bounding", "effective", "permitted", "inheritable", "ambient")), (
        caps
    )
    assert spec["process"].get("noNewPrivileges") is True
    assert spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert spec["linux"]["resources"]["memory"]["limit"] == 512 * 2**20  # the small tier
    assert not any(n["type"] == "network" and not n.get("path") for n in spec["linux"]["namespaces"])


NETWORK_PROBE = r"""
import errno, json, os, socket
routes = [l.split() for l in open("/proc/net/route").read().splitlines()[1:]]
def connect(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "connected"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
print(json.dumps({
    "default_route": any(r[1] == "00000000" for r in routes),
    "store": connect("10.89.0.1", int(os.environ["STORE_PORT"])),
    "outside": connect(os.environ["OUTSIDE"], 53),
}))
"""


def test_the_nodes_pods_reach_the_stores_and_nothing_off_the_machine(stack: Any) -> None:
    """A pod's network: no default route; the stores on 10.89.0.1; this machine's own gateway is
    unreachable (no NAT, no forwarding)."""
    outside = subprocess.run(["ip", "-4", "route", "show", "default"], capture_output=True, text=True).stdout
    gateway = outside.split()[2] if outside.split()[:1] == ["default"] else "192.0.2.1"
    name = f"netprobe-{uuid.uuid4().hex[:6]}"
    store_port = stack.node_env["ORGPIPELINE_JOB_POSTGRES_HOST"].rsplit(":", 1)[1]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "probe",
                    "image": "orgpipeline:dev",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-c", NETWORK_PROBE],
                    "env": [
                        {"name": "STORE_PORT", "value": store_port},
                        {"name": "OUTSIDE", "value": gateway},
                    ],
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(pod))
    try:
        wait_for(
            "the probe pod to finish",
            lambda: (
                (get_json("pod", name, "-n", "default") or {}).get("status", {}).get("phase")
                in ("Succeeded", "Failed")
            ),
            timeout=120,
        )
        seen = json.loads(kubectl("logs", "-n", "default", name))
    finally:
        kubectl("delete", "pod", name, "-n", "default", "--wait=false", check=False)
    assert seen["default_route"] is False
    assert seen["store"] == "connected"
    assert seen["outside"] != "connected", seen
