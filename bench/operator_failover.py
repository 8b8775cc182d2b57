"""Failover benchmark of the operator (issue 25): two replicas elect the active one with a Lease
(operator/orgpipeline_operator/leadership.py); this kills the active one with SIGKILL `--kills`
times and measures

- the takeover: seconds from the kill until the standby holds the Lease, until it acts (Kopf
  started and every org verified: its Ready gauge), and until a file posted after the kill has its
  Job,
- file arrivals across the kills: one file posted to the dying leader just before the kill (its
  batch pending), one posted to the standby while no replica leads; each must start exactly one
  run (one file-arrival Job naming it), none twice, none lost.

After each kill the killed replica is started again (the next standby). Prints the figures and a
JSON line. A script, not a test: against the local stack (`eval "$(hack/stack env)"`):

    flock /tmp/orgpipeline-bench.lock .venv/bin/python bench/operator_failover.py --kills 10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import kubernetes
from orgpipeline_api import v1alpha1
from orgpipeline_operator import kube, naming

sys.path.insert(0, str(Path(__file__).resolve().parent))
from operator_scale import CRD, REPO, free_port, manifest, ready_from_metrics

TOKEN = "failover-bench-token"
BUCKET = "uploads"


class Replica:
    def __init__(self, run: str, name: str, lease: str) -> None:
        self.name, self.port, self.webhook = name, free_port(), free_port()
        env = {
            **os.environ,
            "ORGPIPELINE_POSTGRES_DSN": os.environ.get("ORGPIPELINE_OPERATOR_POSTGRES_DSN")
            or os.environ["ORGPIPELINE_POSTGRES_DSN"],
            "ORGPIPELINE_MONGO_URI": os.environ.get("ORGPIPELINE_OPERATOR_MONGO_URI")
            or os.environ["ORGPIPELINE_MONGO_URI"],
            "ORGPIPELINE_METRICS_PORT": str(self.port),
            "ORGPIPELINE_HEALTH_PORT": str(free_port()),
            "ORGPIPELINE_WEBHOOK_PORT": str(self.webhook),
            "ORGPIPELINE_WEBHOOK_TOKEN": TOKEN,
            "ORGPIPELINE_WEBHOOK_DEBOUNCE_SECONDS": "1",
            "ORGPIPELINE_LABEL_SELECTOR": f"bench={run}",
            "ORGPIPELINE_LEASE_NAME": lease,
            "ORGPIPELINE_POD_NAME": name,
            "ORGPIPELINE_NAMESPACE": "default",
            "ORGPIPELINE_LOG_LEVEL": "WARNING",
            "ORGPIPELINE_JOB_NODE_SELECTOR": "orgpipeline.io/no-such-node=true",
        }
        self.log = open(f"/tmp/operator-failover-{run}-{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "orgpipeline-operator")],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def post(self, key: str) -> int:
        body = {
            "Records": [
                {
                    "eventName": "s3:ObjectCreated:Put",
                    "s3": {"bucket": {"name": BUCKET}, "object": {"key": key}},
                }
            ]
        }
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.webhook}/s3/events",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.log.close()


def _orgs_ready(port: int) -> int:
    try:
        return ready_from_metrics(port)
    except OSError:
        return 0


def holder(api: kube.Kube, lease: str) -> str:
    try:
        found = api.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/default/leases/{lease}")
    except kube.ApiError:
        return ""
    return str(found["spec"].get("holderIdentity") or "")


def wait(fn: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout}s waiting for {what}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--orgs", type=int, default=20, help="OrgPipelines in place (x 1 table) during the kills")
    args = ap.parse_args()
    client = kubernetes.config.new_client_from_config()
    api = kube.Kube(client)
    subprocess.run(
        ["kubectl", "apply", "--server-side", "--force-conflicts", "-f", str(CRD)],
        check=True,
        capture_output=True,
    )
    run = uuid.uuid4().hex[:4]
    lease = f"orgpipeline-failover-{run}"
    replicas = {n: Replica(run, n, lease) for n in ("r0", "r1")}
    names: list[str] = []
    results: list[dict[str, Any]] = []
    posted: list[str] = []
    try:
        wait(lambda: all(r.ready() for r in replicas.values()), 60, "both replicas")
        wait(lambda: holder(api, lease), 30, "a leader")
        for i in range(args.orgs):
            # The first org has a table per kill: a run never finishes here (no kubelet), and a
            # table's next file waits for the end of its active run.
            body = manifest(run, i, args.kills if i == 0 else 1)
            body["spec"]["source"]["bucket"] = BUCKET
            api.create(body)
            names.append(body["metadata"]["name"])
        org0 = manifest(run, 0, 1)["spec"]["orgId"]
        ns = naming.namespace(org0)
        wait(lambda: api.get("v1", "Namespace", ns), 120, "the first org's namespace")
        print(f"run {run}: {args.orgs} orgs, {args.kills} kills", flush=True)
        for k in range(args.kills):
            who = holder(api, lease)
            active = next(r for r in replicas.values() if who.startswith(r.name + "_"))
            standby = next(r for r in replicas.values() if r is not active)
            before, during = f"org-{org0}/t{k}_a.csv", f"org-{org0}/t{k}_b.csv"
            assert active.post(before) == 200
            active.kill()
            killed = time.monotonic()
            assert standby.post(during) == 200
            posted += [before, during]
            name = standby.name + "_"
            wait(lambda name=name: holder(api, lease).startswith(name), 30, "the takeover")
            lease_s = time.monotonic() - killed
            # Acting: Kopf started and every org verified again (its Ready gauge counts them all).
            wait(
                lambda port=standby.port: _orgs_ready(port) >= args.orgs, 60, "the new leader's verified orgs"
            )
            acting_s = time.monotonic() - killed

            def jobs_naming(key: str) -> list[str]:
                return [
                    j["metadata"]["name"]
                    for j in api.list("batch/v1", "Job", ns, f"{naming.LABEL_RUN_KIND}=file-arrival")
                    if key in str(j["spec"]["template"]["spec"]["containers"][0]["env"])
                ]

            wait(lambda key=during: jobs_naming(key), 60, "the run of the file sent during the takeover")
            run_s = time.monotonic() - killed
            results.append(
                {
                    "kill": k,
                    "lease_s": round(lease_s, 2),
                    "acting_s": round(acting_s, 2),
                    "run_s": round(run_s, 2),
                }
            )
            print(
                f"  kill {k}: Lease taken after {lease_s:.1f}s, acting {acting_s:.1f}s,"
                f" run of a file sent meanwhile {run_s:.1f}s",
                flush=True,
            )
            replicas[active.name] = Replica(run, active.name, lease)
            wait(replicas[active.name].ready, 60, "the restarted replica (standby)")
        time.sleep(5)
        jobs = api.list("batch/v1", "Job", ns, f"{naming.LABEL_RUN_KIND}=file-arrival")
        envs = [str(j["spec"]["template"]["spec"]["containers"][0]["env"]) for j in jobs]
        runs_per_file = {key: sum(key in e for e in envs) for key in posted}
        lease_times = [r["lease_s"] for r in results]
        summary = {
            "kills": args.kills,
            "orgs": args.orgs,
            "takeover_lease_s": {"median": statistics.median(lease_times), "max": max(lease_times)},
            "takeover_acting_s_max": max(r["acting_s"] for r in results),
            "file_run_s_max": max(r["run_s"] for r in results),
            "files_posted": len(posted),
            "files_run_once": sum(n == 1 for n in runs_per_file.values()),
            "files_run_twice_or_more": sum(n > 1 for n in runs_per_file.values()),
            "files_lost": sum(n == 0 for n in runs_per_file.values()),
            "kills_detail": results,
        }
        print(
            f"\ntakeover (Lease) median {summary['takeover_lease_s']['median']}s, max {max(lease_times)}s;"
            f" files posted {len(posted)}: once {summary['files_run_once']},"
            f" twice+ {summary['files_run_twice_or_more']}, lost {summary['files_lost']}"
        )
        print(json.dumps(summary))
    finally:
        for name in names:
            with contextlib.suppress(kube.ApiError):
                api.request("DELETE", kube.path(v1alpha1.API_VERSION, v1alpha1.KIND, None, name))
        deadline = time.monotonic() + 120
        while names and time.monotonic() < deadline:
            if not [n for n in names if api.get(v1alpha1.API_VERSION, v1alpha1.KIND, n)]:
                break
            time.sleep(1)
        for r in replicas.values():
            r.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
