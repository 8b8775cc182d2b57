"""The console's orgs list at 3,000 orgs: server time of GET /orgs for a platform admin (one
SubjectAccessReview for every org) and for an org admin (one review per org, cached), against the
stack's real API server.

    eval "$(hack/stack env)"
    make demo-down            # no operator may watch every OrgPipeline: it would onboard these
    .venv/bin/python bench/console_orgs.py [--orgs 3000] [--requests 30]

Makes --orgs OrgPipelines labelled `orgpipeline.io/bench=console` (status written through the
status subresource: Ready, quality, alerts, last run), two ServiceAccounts (a platform admin who may
get and list every OrgPipeline, an org admin who may get one), starts `orgpipeline console`, and
times requests: each caller's first (its SubjectAccessReviews asked) and then --requests
warm ones of each page kind (the console lists the OrgPipelines at start, in the background; the
first request comes --settle seconds later). "server ms" is the console's own Server-Timing
(handler and template), "wall ms" the client's. Deletes what it made at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import yaml

REPO = Path(__file__).resolve().parents[1]
LABEL = "orgpipeline.io/bench"
NS = "default"
SA_PLATFORM, SA_ORG = "console-bench-platform", "console-bench-org"
GOAL_MS = 300.0


def manifest(i: int) -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "examples" / "org-123.yaml").read_text())
    org = f"b{i:05d}"
    doc["metadata"] = {"name": f"org-{org}", "labels": {LABEL: "console"}}
    doc["spec"]["orgId"] = org
    doc["spec"]["source"] = {"bucket": "bench", "prefix": f"org-{org}/"}
    return dict(doc)


def status(i: int) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ready = "False" if i % 10 == 0 else "True"
    alerts = (
        [
            {
                "severity": "warning",
                "type": "QualityBelowThreshold",
                "table": "orders",
                "message": "m",
                "since": now,
            }
        ]
        if i % 7 == 0
        else []
    )
    return {
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": "Reconciled",
                    "message": "",
                    "lastTransitionTime": now,
                }
            ],
            "alerts": alerts,
            "qualityScore": 0.9 + (i % 10) / 100,
            "activeAlerts": len(alerts),
            "lastRunTime": now,
            "tableCount": 2,
        }
    }


def make_orgs(api: Any, n: int) -> None:
    custom = kubernetes.client.CustomObjectsApi(api)

    def one(i: int) -> None:
        body = manifest(i)
        try:
            custom.create_cluster_custom_object("orgpipeline.io", "v1alpha1", "orgpipelines", body)
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:
                raise
            return  # made by an earlier run (--keep)
        custom.patch_cluster_custom_object_status(
            "orgpipeline.io", "v1alpha1", "orgpipelines", body["metadata"]["name"], status(i)
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))


def identities() -> dict[str, str]:
    docs = []
    for sa, rule in (
        (SA_PLATFORM, {"verbs": ["get", "list"]}),
        (SA_ORG, {"verbs": ["get"], "resourceNames": ["org-b00042"]}),
    ):
        docs += [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": NS}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": sa},
                "rules": [{"apiGroups": ["orgpipeline.io"], "resources": ["orgpipelines"], **rule}],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": sa},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": sa},
                "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": NS}],
            },
        ]
    subprocess.run(["kubectl", "apply", "-f", "-"], input=yaml.safe_dump_all(docs), text=True, check=True)
    return {
        sa: subprocess.run(
            ["kubectl", "-n", NS, "create", "token", sa], capture_output=True, text=True, check=True
        ).stdout.strip()
        for sa in (SA_PLATFORM, SA_ORG)
    }


def timed(url: str, token: str) -> tuple[float, float, str]:
    """(server ms, wall ms, body) of one GET."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as r:
        body = r.read().decode()
        timing = r.headers.get("Server-Timing", "app;dur=nan")
    wall = (time.perf_counter() - started) * 1000
    return float(timing.split("dur=")[1]), wall, body


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orgs", type=int, default=3000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument(
        "--settle", type=float, default=10.0, help="seconds between start and the first request"
    )
    parser.add_argument("--keep", action="store_true", help="leave the OrgPipelines for another run")
    args = parser.parse_args()
    api = kubernetes.config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
    started = time.perf_counter()
    make_orgs(api, args.orgs)
    print(f"{args.orgs} OrgPipelines with status in {time.perf_counter() - started:.1f} s", flush=True)
    tokens = identities()
    port = subprocess.run(
        [
            sys.executable,
            "-c",
            "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    console = subprocess.Popen(
        [str(Path(sys.executable).parent / "orgpipeline"), "console", "--host", "127.0.0.1", "--port", port],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.2)
        time.sleep(args.settle)  # the console lists the OrgPipelines once at start, in the background
        rows = []
        pages = {
            "first page": "/orgs",
            "page 30": "/orgs?page=30",
            "name filter": "/orgs?q=b0012",
            "not ready + alerts": "/orgs?ready=False&alerts=yes",
        }
        for who, token in (("platform admin", tokens[SA_PLATFORM]), ("org admin", tokens[SA_ORG])):
            server, wall, body = timed(base + "/orgs", token)
            shown = body.count('<th scope="row">')
            rows.append((who, "first (reviews)", server, wall, shown))
            print(f"{who}: cold {server:.0f} ms", flush=True)
            for kind, path in pages.items():
                samples = [timed(base + path, token) for _ in range(args.requests)]
                rows.append(
                    (
                        who,
                        kind,
                        statistics.median(s[0] for s in samples),
                        statistics.median(s[1] for s in samples),
                        samples[-1][2].count('<th scope="row">'),
                    )
                )
        print(f"\nGET /orgs at {args.orgs} orgs; warm rows: median of {args.requests} requests")
        print(f"{'caller':<16}{'request':<24}{'server ms':>10}{'wall ms':>10}{'rows':>6}{'vs 300 ms':>11}")
        for who, kind, server, wall, shown in rows:
            print(f"{who:<16}{kind:<24}{server:>10.1f}{wall:>10.1f}{shown:>6}{server / GOAL_MS:>10.2f}x")
    finally:
        console.terminate()
        console.wait(timeout=10)
        if not args.keep:
            kubernetes.client.CustomObjectsApi(api).delete_collection_cluster_custom_object(
                "orgpipeline.io", "v1alpha1", "orgpipelines", label_selector=f"{LABEL}=console"
            )
            for sa in (SA_PLATFORM, SA_ORG):
                subprocess.run(
                    ["kubectl", "delete", "clusterrolebinding,clusterrole", sa], capture_output=True
                )
                subprocess.run(["kubectl", "-n", NS, "delete", "serviceaccount", sa], capture_output=True)


if __name__ == "__main__":
    main()
