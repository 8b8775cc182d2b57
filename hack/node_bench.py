"""The same job pod on the real node and on the stand-in: pod start and run wall time, side by side.

    ORGPIPELINE_NODE=kubelet hack/stack up
    ORGPIPELINE_NODE=kubelet .venv/bin/python hack/node_bench.py [--rows 1000] [--trials 3]

Each trial creates a Pod that runs `orgpipeline run` of one table (a new file of --rows rows each
time) with the job's security context, once on the node (kubelet + containerd + runc, from
orgpipeline:dev, the stores on 10.89.0.1) and once on hack/podrunner.py (a local process, the stores
on 127.0.0.1), and polls it every 0.1 s: created -> container running (first seen), created ->
finished, and the run's own duration_seconds from its output. Prints the medians. A script, not a
test: figures only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "hack"))

import dataplane  # noqa: E402  (its manifest and CSV generator)


def kubectl(*args: str, input: str | None = None) -> str:
    out = subprocess.run(["kubectl", *args], capture_output=True, text=True, input=input, timeout=60)
    if out.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


RUN = ["orgpipeline", "run", "-f", "/etc/orgpipeline/pipeline.yaml", "--table", "orders", "-o", "json"]


def pod(name: str, ns: str, env: dict[str, str], standin: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "job",
                "image": "orgpipeline:dev",
                "imagePullPolicy": "IfNotPresent",
                "command": RUN,
                "env": [{"name": k, "value": v} for k, v in env.items()],
                "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}},
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": "manifest", "mountPath": "/etc/orgpipeline", "readOnly": True},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }
        ],
        "volumes": [
            {"name": "manifest", "configMap": {"name": "pipeline"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }
    if standin:  # the scheduler cannot place it on the real node: the stand-in binds it
        spec["nodeSelector"] = {"orgpipeline.io/podrunner": "true"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def measure(manifest: dict[str, Any], ns: str, name: str, logs: Path | None) -> dict[str, float]:
    started = time.monotonic()
    kubectl("apply", "-f", "-", input=json.dumps(manifest))
    running = None
    peak = 0
    while True:
        obj = json.loads(kubectl("get", "pod", name, "-n", ns, "-o", "json"))
        # On the node: the pod's memory cgroup (Guaranteed QoS: kubepods/pod<uid>), its peak so far.
        with contextlib.suppress(OSError, ValueError):
            cgroup = Path("/sys/fs/cgroup/memory/kubepods") / f"pod{obj['metadata']['uid']}"
            peak = max(peak, int((cgroup / "memory.max_usage_in_bytes").read_text()))
        statuses = obj.get("status", {}).get("containerStatuses") or []
        state = statuses[0].get("state", {}) if statuses else {}
        if running is None and ("running" in state or "terminated" in state):
            running = time.monotonic() - started
        if obj.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(0.1 if running is None else 1)
    finished = time.monotonic() - started
    phase = obj["status"]["phase"]
    # The node: kubectl logs; the stand-in has none (its log file).
    out = kubectl("logs", "-n", ns, name) if logs is None else (logs / ns / name / "job.log").read_text()
    if phase != "Succeeded":
        raise SystemExit(f"{name} {phase}: {out[-2000:]}")
    result = json.loads(out[out.index("{") :])
    return {
        "running": running or finished,
        "finished": finished,
        "run": float(result.get("duration_seconds", 0)),
        "peak_mib": peak / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--only", choices=["node", "stand-in"], help="measure one side only")
    args = parser.parse_args()
    env = json.loads(
        subprocess.run(
            [str(REPO / "hack" / "stack"), "env", "--json"], check=True, capture_output=True, text=True
        ).stdout
    )
    if env.get("ORGPIPELINE_NODE") != "kubelet":
        raise SystemExit("needs the real node: ORGPIPELINE_NODE=kubelet hack/stack up, and this with it set")
    os.environ.update(env)
    os.environ["PATH"] = f"{env['ORGPIPELINE_STACK_BIN']}:{os.environ['PATH']}"
    import node
    from minio import Minio

    tag = uuid.uuid4().hex[:6]
    org, bucket = f"nodebench{tag}", f"nodebench-{tag}"
    host, _, _ = env["ORGPIPELINE_S3_ENDPOINT"].partition("://")[2].partition("/")
    s3 = Minio(
        host,
        access_key=env["ORGPIPELINE_S3_ACCESS_KEY"],
        secret_key=env["ORGPIPELINE_S3_SECRET_KEY"],
        secure=False,
    )
    s3.make_bucket(bucket)
    base = {
        k: env[k]
        for k in (
            "ORGPIPELINE_POSTGRES_DSN",
            "ORGPIPELINE_MONGO_URI",
            "ORGPIPELINE_S3_ENDPOINT",
            "ORGPIPELINE_S3_ACCESS_KEY",
            "ORGPIPELINE_S3_SECRET_KEY",
        )
    }
    on_node = {k: v.replace("127.0.0.1", node.HOST_IP) for k, v in base.items()}
    namespaces = {"node": f"nodebench-{tag}", "stand-in": f"standin-{tag}"}
    work = Path(tempfile.mkdtemp(prefix="nodebench-"))
    manifest_path = work / "pipeline.yaml"
    manifest_path.write_text(dataplane.manifest(org, bucket))
    for ns in namespaces.values():
        kubectl("create", "namespace", ns)
        kubectl("create", "configmap", "pipeline", "-n", ns, f"--from-file=pipeline.yaml={manifest_path}")
    runner = subprocess.Popen(
        [
            *(str(REPO / ".venv" / "bin" / "python"), str(REPO / "hack" / "podrunner.py"), "--no-selector"),
            *("--namespace", namespaces["stand-in"], "--workdir", str(work / "pods"), "--interval", "0.1"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "podrunner.log", "w"),  # noqa: SIM115
        env=os.environ,
    )
    figures: dict[str, list[dict[str, float]]] = {"node": [], "stand-in": []}
    try:
        time.sleep(2)
        for trial in range(args.trials):
            for where in [w for w in ("node", "stand-in") if args.only in (None, w)]:
                csv = work / f"orders_{trial}_{where}.csv"
                dataplane.generate(csv, args.rows, first=(2 * trial + (where == "node")) * args.rows)
                s3.fput_object(bucket, f"org-{org}/{csv.name}", str(csv))
                name = f"run-{trial}"
                standin = where == "stand-in"
                manifest = pod(name, namespaces[where], base if standin else on_node, standin)
                figures[where].append(
                    measure(manifest, namespaces[where], name, work / "pods" if standin else None)
                )
                print(f"{where:<9} trial {trial}: {figures[where][-1]}", flush=True)
    finally:
        runner.terminate()
        runner.wait(timeout=30)
        for ns in namespaces.values():
            kubectl("delete", "namespace", ns, "--wait=false")
        dataplane.cleanup(env, [org], tag)
        for obj in s3.list_objects(bucket, recursive=True):
            s3.remove_object(bucket, obj.object_name)
        s3.remove_bucket(bucket)
    print(f"\n{args.rows:,} rows a run, median of {args.trials}:")
    print(f"{'':<10}{'created->running':>18}{'created->finished':>19}{'run (in-process)':>18}")
    for where, runs in figures.items():
        if not runs:
            continue
        med = {k: statistics.median(r[k] for r in runs) for k in ("running", "finished", "run")}
        peak = max(r["peak_mib"] for r in runs)
        print(f"{where:<10}{med['running']:>17.2f}s{med['finished']:>18.2f}s{med['run']:>17.2f}s", end="")
        print(f"   peak memory {peak:.0f} MiB (the pod's cgroup)" if peak else "")


if __name__ == "__main__":
    main()
