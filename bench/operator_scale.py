"""Scale benchmark of the operator (issues 4, 14): apply N OrgPipelines with T tables each and measure

- the time from the first create until every OrgPipeline is Ready (at its generation), and the
  Ready curve (orgs Ready over time) so that linearity shows in one run,
- per org: the operator's API requests by verb (its metrics) and its CPU seconds; the CPU seconds of
  the API server, etcd and the controller manager over the same span,
- the operator's peak RSS (sampled every 0.25 s),
- what one idle resync costs: the operator's own API requests by verb (its metrics), objects whose
  resourceVersion moved, and the API server's request counters for the operator's resources,
- an operator restart with the N orgs in place: time from the process start until every org was
  verified (N resume reconciles done), and the requests that took, by verb (writes should be 0).

`--orgs 300,1000,3000` runs the sizes one after the other on the same stack (each with a fresh
operator, after the previous run's namespaces are gone) and prints a summary table.
The CronJobs' schedules do not fire during the run unless `--firing` (see `manifest`).
`--profile DIR` records the operator with py-spy (raw collapsed stacks, one file per phase).

A script, not a test. It starts `orgpipeline-operator` itself (stop any other operator on the same
cluster first) against the local stack (`eval "$(hack/stack env)"`) or any KUBECONFIG:

    flock /tmp/orgpipeline-bench.lock .venv/bin/python bench/operator_scale.py --orgs 1000 --tables 3
    .venv/bin/python bench/operator_scale.py --orgs 200 --keep      # leave the orgs for a look
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
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
CRD = REPO / "crds" / "orgpipeline.io_orgpipelines.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def manifest(run: str, i: int, tables: int, firing: bool = False) -> dict[str, Any]:
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
            "source": {"bucket": SOURCE_BUCKET, "prefix": f"org-{org}/"},
            "tables": [
                {
                    "name": f"t{j}",
                    # Hourly, like a tenant's pipeline; by default on Jan 1 only, so that no Job
                    # starts during the run: Jobs started by N orgs' CronJobs are a load that grows
                    # with N x the run's length, the data plane's and not the operator's.
                    "schedule": f"{(i + j) % 60} * * * *" if firing else f"{(i + j) % 60} 4 1 1 *",
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


def stack_dir() -> str | None:
    """The local stack's directory (`hack/stack env` points KUBECONFIG into it), else None."""
    config = os.environ.get("KUBECONFIG")
    if config and (Path(config).parent / "postgres").is_dir():
        return str(Path(config).parent)
    return None


SERVERS = ("kube-apiserver", "etcd", "kube-controller-manager", "postgres", "versitygw", "ferretdb")


def servers(stack: str | None) -> list[psutil.Process]:
    """The stack's server processes: those started with its directory in their command line, and
    their children (PostgreSQL's backends). Another stack on the same machine (another session's)
    runs the same programs; without a stack directory every one of them counts."""
    found = []
    pids = set()
    if stack is not None:  # the stack's own record of its servers (FerretDB's command line names no folder)
        for pid_file in (Path(stack) / "pids").glob("*.pid"):
            with contextlib.suppress(ValueError, OSError, psutil.Error):
                pids.add(int(pid_file.read_text().split()[0]))
    for p in psutil.process_iter(["name", "cmdline", "ppid"]):
        if (p.info["name"] or "") not in SERVERS:
            continue
        if p.pid in pids:
            found.append(p)
            continue
        if stack is None or any(stack + "/" in arg for arg in p.info["cmdline"] or []):
            found.append(p)
            continue
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(p.info["ppid"])
            if any(stack + "/" in arg for arg in parent.cmdline()):
                found.append(p)
    return found


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time of the operator and of the stack's servers (to see who the bottleneck is). PostgreSQL
    backends that ended in between (a delegate's session, FerretDB's idle connections) count too:
    the postmaster reaps them, and their CPU is in its children's times."""
    out = {}
    try:
        t = psutil.Process(pid).cpu_times()
        out["operator"] = round(t.user + t.system, 1)
    except psutil.Error:
        pass
    for p in servers(stack_dir()):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            name = p.name()
            reaped = t.children_user + t.children_system if name == "postgres" else 0.0
            out[name] = round(out.get(name, 0) + t.user + t.system + reaped, 1)
    return out


def metrics_text(port: int, *names: str) -> str:
    query = "?" + "&".join(f"name[]={n}" for n in names) if names else ""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics{query}", timeout=30) as resp:
        return str(resp.read().decode())


def reconcile_stats(port: int) -> dict[str, float]:
    """Mean reconcile duration and count by trigger, from the operator's histogram."""
    text = metrics_text(
        port, "orgpipeline_reconcile_duration_seconds_sum", "orgpipeline_reconcile_duration_seconds_count"
    )
    out = {}
    for trigger in ("create", "resume", "update", "resync", "deep"):
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
    text = metrics_text(port, "orgpipeline_api_requests_total")
    out = {}
    for m in re.finditer(r'^orgpipeline_api_requests_total\{verb="(\w+)"\} ([0-9.e+]+)$', text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


def policy_stats(port: int) -> dict[str, float]:
    """The source bucket policy's writer: reads, writes (each takes along the orgs asking meanwhile)
    and the seconds they took."""
    text = metrics_text(port, "orgpipeline_s3_policy_syncs_total", "orgpipeline_s3_policy_seconds_total")
    out = {}
    for m in re.finditer(r'^orgpipeline_s3_policy_syncs_total\{wrote="(\w+)"\} ([0-9.e+]+)$', text, re.M):
        out["writes" if m.group(1) == "true" else "reads_unchanged"] = float(m.group(2))
    if m := re.search(r"^orgpipeline_s3_policy_seconds_total ([0-9.e+]+)$", text, re.M):
        out["seconds"] = round(float(m.group(1)), 1)
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
        "rolebindings",
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


def ready_from_metrics(port: int) -> int:
    """Orgs the operator reports Ready (its total gauge; the operator sees only this run's orgs):
    polling this costs the API server nothing, and the operator only these few series."""
    text = metrics_text(port, "orgpipeline_orgs_ready")
    m = re.search(r"^orgpipeline_orgs_ready ([0-9.e+]+)$", text, re.M)
    return int(float(m.group(1))) if m else 0


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


WRITES = ("POST", "PATCH", "PUT", "DELETE")


def per_org(values: dict[str, float], orgs: int) -> dict[str, float]:
    return {k: round(v / orgs, 2) for k, v in sorted(values.items()) if v}


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0), 1) for k, v in after.items()}


class Patient(kube.Kube):
    """The benchmark's client: waits out what a shared stack throws at it (429 while another client
    re-applies the CRD, a 5xx) instead of losing a run's figures."""

    def request(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        for attempt in range(30):
            try:
                return super().request(*args, **kwargs)
            except kube.ApiError as exc:
                if not exc.transient or exc.status == 409 or attempt == 29:
                    raise
                time.sleep(2)
        raise AssertionError("unreachable")


class Operator:
    """One `orgpipeline-operator` process of the run, with its RSS sampler and an optional py-spy."""

    def __init__(self, run: str, env: dict[str, str], phase: str, profile: Path | None) -> None:
        self.port = free_port()
        env = {**env, "ORGPIPELINE_METRICS_PORT": str(self.port), "ORGPIPELINE_HEALTH_PORT": str(free_port())}
        # Its own PostgreSQL role, not the superuser (`hack/stack env` exports it).
        own = env.get("ORGPIPELINE_OPERATOR_POSTGRES_DSN")
        env["ORGPIPELINE_POSTGRES_DSN"] = own or env["ORGPIPELINE_POSTGRES_DSN"]
        env["ORGPIPELINE_MONGO_URI"] = (
            env.get("ORGPIPELINE_OPERATOR_MONGO_URI") or env["ORGPIPELINE_MONGO_URI"]
        )
        self.log = open(f"/tmp/operator-scale-{run}-{phase}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "orgpipeline-operator")],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.sampler = RssSampler(self.proc.pid)
        self.sampler.start()
        self.spy: subprocess.Popen[bytes] | None = None
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            out = profile / f"operator-{run}-{phase}.txt"
            self.spy = subprocess.Popen(
                [
                    *(str(REPO / ".venv" / "bin" / "py-spy"), "record", "--pid", str(self.proc.pid)),
                    # --gil: only the thread holding the GIL, i.e. Python's CPU (a thread waiting
                    # for the GIL after a blocking call would otherwise count as busy there).
                    *("--format", "raw", "--rate", "50", "--nonblocking", "--gil", "--threads"),
                    *("-o", str(out)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("the operator did not start; see " + self.log.name) from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.sampler.stop_flag.set()
        if self.spy is not None:
            self.spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                self.spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.spy.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()

    @property
    def peak_rss_mb(self) -> float:
        return round(self.sampler.peak / 2**20, 1)


def reconciles(port: int, trigger: str) -> float:
    text = metrics_text(port, "orgpipeline_reconcile_total")
    pattern = rf'^orgpipeline_reconcile_total{{result="\w+",trigger="{trigger}"}} ([0-9.e+]+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))


def curve_summary(curve: list[tuple[float, int]], orgs: int) -> list[tuple[int, float]]:
    """(orgs Ready, seconds) at each tenth of the orgs: a straight line when the cost per org is flat."""
    out = []
    for tenth in range(1, 11):
        target = orgs * tenth // 10
        hit = next((t for t, n in curve if n >= target), None)
        if hit is not None:
            out.append((target, round(hit, 1)))
    return out


def run_namespaces(api: kube.Kube, run: str) -> int:
    prefix = f"org-b{run}"
    items = api.list("v1", "Namespace", selector=naming.MANAGED_SELECTOR)
    return sum(1 for i in items if i["metadata"]["name"].startswith(prefix))


def crd_generation(api: kube.Kube) -> int:
    """The CRD's generation: when another client re-applies a different CRD during a run (a shared
    stack), the run's figures are not this code's alone, and the JSON says so."""
    crd = api.request(
        "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/orgpipelines.orgpipeline.io"
    )
    return int(crd["metadata"]["generation"])


SOURCE_BUCKET = "uploads"


def source_bucket() -> None:
    """The orgs' source bucket, made if missing, as a deployment has it: each org's account gets a
    statement in its policy (one document for every org, written as orgs come). Without the bucket
    no statement is written, and a run measured less than a real onboarding costs."""
    endpoint = os.environ.get("ORGPIPELINE_S3_ENDPOINT")
    if not endpoint:
        return
    from minio import Minio

    scheme, _, host = endpoint.partition("://")
    s3 = Minio(
        host,
        access_key=os.environ["ORGPIPELINE_S3_ACCESS_KEY"],
        secret_key=os.environ["ORGPIPELINE_S3_SECRET_KEY"],
        secure=scheme == "https",
    )
    if not s3.bucket_exists(SOURCE_BUCKET):
        s3.make_bucket(SOURCE_BUCKET)


def one_size(api: kube.Kube, args: argparse.Namespace, orgs: int) -> dict[str, Any]:
    run = uuid.uuid4().hex[:4]
    source_bucket()
    subprocess.run(
        ["kubectl", "apply", "--server-side", "--force-conflicts", "-f", str(CRD)],
        check=True,
        capture_output=True,
    )
    crd_before = crd_generation(api)
    env = {
        **os.environ,
        "ORGPIPELINE_RESYNC_SECONDS": str(args.resync),
        "ORGPIPELINE_WORKERS": str(args.workers),
        "ORGPIPELINE_LOG_LEVEL": "WARNING",
        "ORGPIPELINE_LABEL_SELECTOR": f"bench={run}",  # other OrgPipelines on the cluster are not ours
    }
    op = Operator(run, env, "create", args.profile)
    result: dict[str, Any] = {"orgs": orgs, "tables": args.tables, "run": run}
    try:
        op.wait_ready()
        print(f"run {run}: creating {orgs} OrgPipelines x {args.tables} tables ...", flush=True)
        cpu_before, req_before = cpu_seconds(op.proc.pid), counters(op.port)
        srv_before = apiserver_writes(api)
        start = time.monotonic()
        curve: list[tuple[float, int]] = []
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            creating = pool.map(lambda i: api.create(manifest(run, i, args.tables, args.firing)), range(orgs))
            watcher = threading.Thread(target=lambda: list(creating))
            watcher.start()
            while watcher.is_alive():
                curve.append((time.monotonic() - start, ready_from_metrics(op.port)))
                watcher.join(1)
        created = time.monotonic() - start
        print(f"  created in {created:.1f}s", flush=True)
        last_print = 0.0
        while (n := ready_from_metrics(op.port)) < orgs:
            now = time.monotonic() - start
            curve.append((now, n))
            if now > args.timeout:
                raise SystemExit(f"only {n}/{orgs} Ready after {args.timeout}s")
            if now - last_print >= 10:
                print(f"  {n}/{orgs} Ready at {now:.0f}s", flush=True)
                last_print = now
            time.sleep(1)
        all_ready = time.monotonic() - start
        curve.append((all_ready, orgs))
        cpu_after, req_after = cpu_seconds(op.proc.pid), counters(op.port)
        cpu = delta(cpu_after, cpu_before)
        requests = delta(req_after, req_before)
        result.update(
            create_seconds=round(created, 1),
            all_ready_seconds=round(all_ready, 1),
            ms_per_org=round(all_ready / orgs * 1000, 1),
            ready_curve=curve_summary(curve, orgs),
            requests_per_org=per_org(requests, orgs),
            writes_per_org=round(sum(v for k, v in requests.items() if k in WRITES) / orgs, 2),
            cpu_seconds_until_ready=cpu,
            operator_cpu_ms_per_org=round(cpu.get("operator", 0) / orgs * 1000, 1),
            postgres_cpu_ms_per_org=round(cpu.get("postgres", 0) / orgs * 1000, 1),
            apiserver_cpu_seconds=cpu.get("kube-apiserver"),
            apiserver_cpu_ms_per_org=round(cpu.get("kube-apiserver", 0) / orgs * 1000, 1),
            s3_cpu_ms_per_org=round(cpu.get("versitygw", 0) / orgs * 1000, 1),
            reconciles_until_ready=reconcile_stats(op.port),
            s3_policy=policy_stats(op.port),
            # every client's writes (the operator's, Kopf's own, the benchmark's creates) by resource
            apiserver_writes_per_org={
                k: round(v / orgs, 2)
                for k, v in sorted(delta(apiserver_writes(api), srv_before).items())
                if v / orgs >= 0.01
            },
        )
        print(f"  all Ready (the operator's view) after {all_ready:.1f}s", flush=True)
        print(f"  Ready curve (orgs, s): {result['ready_curve']}", flush=True)
        while True:  # and as the API server has it: Ready=True at the current generation, every one
            n, server_seconds = ready_on_server(api, run)
            if server_seconds is not None or time.monotonic() - start > args.timeout:
                break
            time.sleep(2)
        print(f"  {n}/{orgs} Ready on the server; first create -> last Ready: {server_seconds}s", flush=True)
        result["all_ready_server_seconds"] = server_seconds
        result["peak_rss_mb_until_ready"] = op.peak_rss_mb
        print(json.dumps(result), flush=True)  # the figures so far, whatever happens next

        # Idle: let the creation settle, then measure exactly one resync period.
        time.sleep(min(args.resync, 10))
        before_ops, before_srv, before_v = counters(op.port), apiserver_writes(api), versions(api, run)
        time.sleep(args.resync * 1.2)
        after_ops, after_srv, after_v = counters(op.port), apiserver_writes(api), versions(api, run)
        ops = {k: after_ops.get(k, 0) - before_ops.get(k, 0) for k in after_ops}
        srv = {k: v - before_srv.get(k, 0) for k, v in after_srv.items() if v - before_srv.get(k, 0)}
        moved = [k for k in after_v if after_v[k] != before_v.get(k)]
        result.update(
            idle_window_seconds=round(args.resync * 1.2, 1),
            idle_resyncs=reconciles(op.port, "resync"),
            idle_operator_requests=ops,
            idle_apiserver_writes_all_clients=srv,
            idle_objects_changed=len(moved),
            idle_objects_changed_examples=moved[:5],
            objects_checked=len(after_v),
            peak_rss_mb=op.peak_rss_mb,
        )
        print(f"  idle resync: operator requests {ops}, objects changed {len(moved)}", flush=True)
        if args.restart:
            result.update(restart(api, run, env, op, orgs, args))
    finally:
        if crd_generation(api) != crd_before:
            result["disturbed"] = "the CRD was re-applied by another client during the run"
            print(f"  warning: {result['disturbed']}", flush=True)
        if not args.keep:
            cleanup(api, run, env, op)
        op.stop()
    return result


def restart(
    api: kube.Kube, run: str, env: dict[str, str], op: Operator, orgs: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Stops the operator and starts a new one on the same orgs: until all N are verified (resume)."""
    op.stop()
    time.sleep(2)
    srv_before, versions_before = apiserver_writes(api), versions(api, run)
    new = Operator(run, env, "restart", args.profile)
    op.__dict__.update(new.__dict__)  # the caller stops whichever operator runs
    return resumed(api, run, new, orgs, args, srv_before, versions_before)


def resumed(
    api: kube.Kube,
    run: str,
    new: Operator,
    orgs: int,
    args: argparse.Namespace,
    srv_before: dict[str, float],
    versions_before: dict[str, str],
) -> dict[str, Any]:
    """From the new operator's start until all N orgs are verified: time, requests, writes, CPU."""
    cpu_before = cpu_seconds(new.proc.pid)
    new.wait_ready()
    while (n := reconciles(new.port, "resume")) < orgs:
        if time.monotonic() - new.started > args.timeout:
            raise SystemExit(f"only {n}/{orgs} resumed after {args.timeout}s")
        time.sleep(0.5)
    seconds = time.monotonic() - new.started
    cpu = delta(cpu_seconds(new.proc.pid), cpu_before)
    requests = counters(new.port)
    time.sleep(5)  # Kopf's own patches (if any) come after the handlers
    srv = delta(apiserver_writes(api), srv_before) if srv_before else {}
    after = versions(api, run) if versions_before else {}
    out = {
        "orgs": orgs,
        "restart_seconds": round(seconds, 1),
        "restart_requests": {k: v for k, v in requests.items() if v},
        "restart_writes": sum(v for k, v in requests.items() if k in WRITES),
        "restart_cpu_seconds": cpu,
        "restart_peak_rss_mb": new.peak_rss_mb,
        "restart_retries": reconciles(new.port, "resume") - orgs,
        "restart_apiserver_writes_all_clients": {k: v for k, v in srv.items() if v},
        "restart_objects_changed": sum(1 for k in after if after[k] != versions_before.get(k)),
    }
    print(f"  restart: all {orgs} verified in {seconds:.1f}s, requests {out['restart_requests']}", flush=True)
    return out


def cleanup(api: kube.Kube, run: str, env: dict[str, str], op: Operator) -> None:
    """Deletes the run's OrgPipelines with an operator running (the finalizer drops each org's data),
    then waits for their namespaces to be gone so that the next run starts on a quiet stack."""
    print("  cleaning up ...", flush=True)
    started = time.monotonic()
    try:
        if op.proc.poll() is not None:  # it died: another one finishes the job
            op.__dict__.update(Operator(run, env, "cleanup", None).__dict__)
        op.wait_ready()
        # One DELETE each, 8 at a time: a DELETE of the collection is served one object after the
        # other and took minutes for 3,000 on a busy API server.
        names = [i["metadata"]["name"] for i in list_run(api, run)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: api.delete(v1alpha1.API_VERSION, v1alpha1.KIND, n), names))
        deadline = time.monotonic() + 900
        while api.request(
            "GET",
            kube.path(v1alpha1.API_VERSION, v1alpha1.KIND),
            query={"labelSelector": f"bench={run}", "limit": "1"},
        ).get("items"):
            if time.monotonic() > deadline:
                print("  cleanup still running; the operator stopped before finishing", file=sys.stderr)
                return
            time.sleep(2)
    except Exception as exc:  # the caller stops the operator whatever happened
        print(f"  cleanup failed: {exc}", file=sys.stderr)
        return
    while (left := run_namespaces(api, run)) and time.monotonic() - started < 180:
        time.sleep(5)
    print(f"  cleaned up in {time.monotonic() - started:.0f}s ({left} namespaces left)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orgs", default="1000", help="one size or several, comma-separated (300,1000,3000)")
    ap.add_argument("--tables", type=int, default=3)
    ap.add_argument("--resync", type=float, default=30.0, help="the operator's idle resync interval (s)")
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--firing", action="store_true", help="hourly schedules: Jobs start during the run")
    ap.add_argument("--no-restart", dest="restart", action="store_false", help="skip the restart phase")
    ap.add_argument("--profile", type=Path, help="record the operator with py-spy into this folder")
    ap.add_argument("--keep", action="store_true", help="leave the OrgPipelines in place")
    ap.add_argument(
        "--existing", metavar="RUN", help="an earlier run's OrgPipelines: restart on them, then delete them"
    )
    args = ap.parse_args()

    client = kubernetes.config.new_client_from_config()
    client.configuration.connection_pool_maxsize = 32
    api = Patient(client)
    if args.existing:  # the OrgPipelines of an earlier run (--keep, or interrupted)
        run = args.existing
        env = {
            **os.environ,
            "ORGPIPELINE_RESYNC_SECONDS": str(args.resync),
            "ORGPIPELINE_WORKERS": str(args.workers),
            "ORGPIPELINE_LOG_LEVEL": "WARNING",
            "ORGPIPELINE_LABEL_SELECTOR": f"bench={run}",
        }
        subprocess.run(["kubectl", "apply", "--server-side", "--force-conflicts", "-f", str(CRD)], check=True)
        orgs = len(list_run(api, run))
        op = Operator(run, env, "existing", args.profile)
        try:
            if args.restart:
                print(json.dumps(resumed(api, run, op, orgs, args, {}, {}), indent=2), flush=True)
            if not args.keep:
                cleanup(api, run, env, op)
        finally:
            op.stop()
        return 0
    results = []
    for orgs in (int(n) for n in args.orgs.split(",")):
        result = one_size(api, args, orgs)
        print(json.dumps(result, indent=2), flush=True)
        results.append(result)
    print(
        "\n| orgs | created s | all Ready s | ms/org | writes/org | op CPU ms/org | postgres CPU ms/org |"
        " apiserver CPU ms/org | S3 CPU ms/org | peak RSS MB | restart s (writes) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        cells = [r.get(k) for k in ("orgs", "create_seconds", "all_ready_seconds", "ms_per_org")]
        cells += [r.get(k) for k in ("writes_per_org", "operator_cpu_ms_per_org", "postgres_cpu_ms_per_org")]
        cells += [r.get("apiserver_cpu_ms_per_org"), r.get("s3_cpu_ms_per_org")]
        cells += [r.get("peak_rss_mb"), f"{r.get('restart_seconds')} ({r.get('restart_writes')})"]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
