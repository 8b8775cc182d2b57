"""Scale benchmark of the operator (issue 4): apply N OrgPipelines with T tables each and measure

- the time from the first create until every OrgPipeline is Ready (at its generation),
- the operator's peak RSS (sampled every 0.25 s),
- what one idle resync costs: the operator's own API requests by verb (its metrics), objects whose
  resourceVersion moved, and the API server's request counters for the operator's resources.

A script, not a test. It starts `orgpipeline-operator` itself (stop any other operator on the same
cluster first) against the local stack (`eval "$(hack/stack env)"`) or any KUBECONFIG:

    .venv/bin/python bench/operator_scale.py --orgs 1000 --tables 3
    .venv/bin/python bench/operator_scale.py --orgs 200 --keep      # leave the orgs for a look
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes
import psutil
from orgpipeline_api import v1alpha1
from orgpipeline_operator import kube, naming

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def manifest(run: str, i: int, tables: int) -> dict[str, Any]:
    org = f"b{run}{i:04d}"
    cols = [{"name": "id", "type": "text", "required": True}, {"name": "amount", "type": "decimal(10,2)"}]
    return {
        "apiVersion": v1alpha1.API_VERSION,
        "kind": v1alpha1.KIND,
        "metadata": {"name": f"org-{org}", "labels": {"bench": run}},
        "spec": {
            "orgId": org,
            "tier": "small",
            "deletionPolicy": "Delete",
            "source": {"bucket": "uploads", "prefix": f"{org}/"},
            "tables": [
                {
                    "name": f"t{j}",
                    "schedule": f"{(i + j) % 60} * * * *",
                    "businessKeys": ["id"],
                    "columns": cols,
                }
                for j in range(tables)
            ],
        },
    }


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            try:
                rss = self.proc.memory_info().rss + sum(c.memory_info().rss for c in self.proc.children(True))
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            time.sleep(0.25)


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time of the operator and of the stack's servers (to see who the bottleneck is)."""
    out = {}
    try:
        t = psutil.Process(pid).cpu_times()
        out["operator"] = round(t.user + t.system, 1)
    except psutil.Error:
        pass
    for p in psutil.process_iter(["name", "cpu_times"]):
        name = p.info["name"] or ""
        if name in ("kube-apiserver", "etcd", "kube-controller-manager", "postgres"):
            t = p.info["cpu_times"]
            out[name] = round(out.get(name, 0) + t.user + t.system, 1)
    return out


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def reconcile_stats(port: int) -> dict[str, float]:
    """Mean reconcile duration and count by trigger, from the operator's histogram."""
    text = metrics_text(port)
    out = {}
    for trigger in ("create", "resume", "update", "resync"):
        total = re.search(
            rf'orgpipeline_reconcile_duration_seconds_sum{{trigger="{trigger}"}} ([0-9.e+-]+)', text
        )
        count = re.search(
            rf'orgpipeline_reconcile_duration_seconds_count{{trigger="{trigger}"}} ([0-9.e+-]+)', text
        )
        if total and count and float(count.group(1)):
            out[f"{trigger}_count"] = float(count.group(1))
            out[f"{trigger}_mean_seconds"] = round(float(total.group(1)) / float(count.group(1)), 3)
    return out


def counters(port: int) -> dict[str, float]:
    text = metrics_text(port)
    out = {}
    for m in re.finditer(r'^orgpipeline_api_requests_total\{verb="(\w+)"\} ([0-9.e+]+)$', text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


def apiserver_writes(api: kube.Kube) -> dict[str, float]:
    """apiserver_request_total for mutating verbs on the resources the operator manages (all clients)."""
    m, u, h, b, _ = api._api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
    text = api._api.call_api(m, u, h, b).read().decode()
    resources = {
        "orgpipelines",
        "namespaces",
        "serviceaccounts",
        "resourcequotas",
        "limitranges",
        "configmaps",
        "secrets",
        "networkpolicies",
        "cronjobs",
        "events",
    }
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("resource") in resources and labels.get("verb") in (
            "POST",
            "PUT",
            "PATCH",
            "DELETE",
            "APPLY",
            "CREATE",
            "UPDATE",
        ):
            key = f"{labels['verb']} {labels['resource']}"
            out[key] = out.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return out


def versions(api: kube.Kube, run: str) -> dict[str, str]:
    out = {}
    for item in list_run(api, run):
        out[f"orgpipeline/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    for api_version, kind in (
        ("batch/v1", "CronJob"),
        ("v1", "Secret"),
        ("v1", "ConfigMap"),
        ("v1", "Namespace"),
    ):
        for item in api.list(api_version, kind, selector=naming.MANAGED_SELECTOR):
            meta = item["metadata"]
            if not meta["labels"].get(naming.LABEL_PIPELINE, "").startswith(f"org-b{run}"):
                continue
            # CronJobs: the controller writes their status when a schedule fires; a spec change
            # moves the generation. Nothing but the operator writes to the other kinds.
            version = str(meta.get("generation")) if kind == "CronJob" else meta["resourceVersion"]
            out[f"{kind}/{meta.get('namespace', '')}/{meta['name']}"] = version
    return out


def list_run(api: kube.Kube, run: str) -> list[dict[str, Any]]:
    """The run's OrgPipelines, in pages (one LIST of a thousand big objects is too slow a read)."""
    items: list[dict[str, Any]] = []
    query = {"labelSelector": f"bench={run}", "limit": "200"}
    while True:
        page = api.request("GET", kube.path(v1alpha1.API_VERSION, v1alpha1.KIND), query=query)
        items.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items
        query = {**query, "continue": token}


def ready_from_metrics(port: int, run: str) -> int:
    """Orgs the operator reports Ready (its per-org gauge): polling this costs the API server nothing."""
    return len(re.findall(rf'^orgpipeline_org_ready{{org="b{run}\d+"}} 1\.0$', metrics_text(port), re.M))


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def ready_on_server(api: kube.Kube, run: str) -> tuple[int, float | None]:
    """(Ready count, seconds from the first creation to the last Ready transition) from the objects."""
    items = list_run(api, run)
    created, became = [], []
    for item in items:
        st = item.get("status") or {}
        ready = next((c for c in st.get("conditions", []) if c["type"] == "Ready"), None)
        created.append(item["metadata"]["creationTimestamp"])
        if (
            ready
            and ready["status"] == "True"
            and st.get("observedGeneration") == item["metadata"]["generation"]
        ):
            became.append(ready["lastTransitionTime"])
    if not created or len(became) < len(items):
        return len(became), None
    return len(became), max(_ts(v) for v in became) - min(_ts(v) for v in created)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orgs", type=int, default=1000)
    ap.add_argument("--tables", type=int, default=3)
    ap.add_argument("--resync", type=float, default=30.0, help="the operator's idle resync interval (s)")
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--keep", action="store_true", help="leave the OrgPipelines in place")
    args = ap.parse_args()

    client = kubernetes.config.new_client_from_config()
    client.configuration.connection_pool_maxsize = 32
    api = kube.Kube(client)
    run = uuid.uuid4().hex[:4]
    port = free_port()
    env = {
        **os.environ,
        "ORGPIPELINE_METRICS_PORT": str(port),
        "ORGPIPELINE_HEALTH_PORT": str(free_port()),
        "ORGPIPELINE_RESYNC_SECONDS": str(args.resync),
        "ORGPIPELINE_WORKERS": str(args.workers),
        "ORGPIPELINE_LOG_LEVEL": "WARNING",
        "ORGPIPELINE_LABEL_SELECTOR": f"bench={run}",  # other OrgPipelines on the cluster are not ours
    }
    subprocess.run(
        [
            "kubectl",
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            str(REPO / "crds" / "orgpipeline.io_orgpipelines.yaml"),
        ],
        check=True,
        capture_output=True,
    )
    log = open(f"/tmp/operator-scale-{run}.log", "wb")  # noqa: SIM115 - lives as long as the operator
    op = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "orgpipeline-operator")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    sampler = RssSampler(op.pid)
    sampler.start()
    result: dict[str, Any] = {"orgs": args.orgs, "tables": args.tables, "run": run}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline or op.poll() is not None:
                    raise SystemExit("the operator did not start; see " + log.name) from None
                time.sleep(0.5)
        base_rss = sampler.peak
        print(f"run {run}: creating {args.orgs} OrgPipelines x {args.tables} tables ...", flush=True)
        cpu_before = cpu_seconds(op.pid)
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: api.create(manifest(run, i, args.tables)), range(args.orgs)))
        created = time.monotonic() - start
        print(f"  created in {created:.1f}s", flush=True)
        while (n := ready_from_metrics(port, run)) < args.orgs:
            if time.monotonic() - start > args.timeout:
                raise SystemExit(f"only {n}/{args.orgs} Ready after {args.timeout}s")
            print(f"  {n}/{args.orgs} Ready at {time.monotonic() - start:.0f}s", flush=True)
            time.sleep(2)
        all_ready = time.monotonic() - start
        cpu_after = cpu_seconds(op.pid)
        result["reconciles_until_ready"] = reconcile_stats(port)
        result["cpu_seconds_until_ready"] = {
            k: round(v - cpu_before.get(k, 0), 1) for k, v in cpu_after.items()
        }
        print(f"  all Ready (the operator's view) after {all_ready:.1f}s", flush=True)
        while True:  # and as the API server has it: Ready=True at the current generation, every one
            n, server_seconds = ready_on_server(api, run)
            if server_seconds is not None or time.monotonic() - start > args.timeout:
                break
            time.sleep(2)
        print(
            f"  {n}/{args.orgs} Ready on the server; first create -> last Ready: {server_seconds}s",
            flush=True,
        )
        result["all_ready_server_seconds"] = server_seconds
        result.update(create_seconds=round(created, 1), all_ready_seconds=round(all_ready, 1))

        # Idle: let the creation settle, then measure exactly one resync period.
        time.sleep(min(args.resync, 10))
        before_ops, before_srv, before_v = counters(port), apiserver_writes(api), versions(api, run)
        time.sleep(args.resync * 1.2)
        after_ops, after_srv, after_v = counters(port), apiserver_writes(api), versions(api, run)
        ops = {k: after_ops.get(k, 0) - before_ops.get(k, 0) for k in after_ops}
        srv = {k: v - before_srv.get(k, 0) for k, v in after_srv.items() if v - before_srv.get(k, 0)}
        moved = [k for k in after_v if after_v[k] != before_v.get(k)]
        result.update(
            idle_window_seconds=round(args.resync * 1.2, 1),
            idle_operator_requests=ops,
            idle_apiserver_writes_all_clients=srv,
            idle_objects_changed=len(moved),
            idle_objects_changed_examples=moved[:5],
            objects_checked=len(after_v),
            peak_rss_mb=round(sampler.peak / 2**20, 1),
            start_rss_mb=round(base_rss / 2**20, 1),
        )
    finally:
        sampler.stop_flag.set()
        try:
            if not args.keep:
                print("  cleaning up ...", flush=True)
                api.request(
                    "DELETE",
                    kube.path(v1alpha1.API_VERSION, v1alpha1.KIND),
                    query={"labelSelector": f"bench={run}"},
                )
                deadline = time.monotonic() + 600
                while api.request(
                    "GET",
                    kube.path(v1alpha1.API_VERSION, v1alpha1.KIND),
                    query={"labelSelector": f"bench={run}", "limit": "1"},
                ).get("items"):
                    if time.monotonic() > deadline:
                        print(
                            "  cleanup still running; the operator stopped before finishing", file=sys.stderr
                        )
                        break
                    time.sleep(2)
        except Exception as exc:  # the operator must be stopped whatever happened
            print(f"  cleanup failed: {exc}", file=sys.stderr)
        os.killpg(op.pid, signal.SIGTERM)
        op.wait(timeout=60)
    result["peak_rss_mb"] = round(sampler.peak / 2**20, 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
