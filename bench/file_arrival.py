#!/usr/bin/env python3
"""File-arrival latency (issue 25): from a CSV's upload to its rows being queryable in PostgreSQL,
through the path the product uses: the bucket's notification to the operator's webhook, the
debounced file-arrival Job, its pod running `orgpipeline run`.

    eval "$(hack/stack env)"; .venv/bin/python bench/file_arrival.py [--uploads 20] [--rows 100]

Starts the operator (`orgpipeline-operator`, its own logins, listening on the port the stack's
versitygw posts its notifications to) and the test-only pod runner (hack/podrunner.py, the local
stack's stand-in for a kubelet, polling every --pod-interval s), applies one OrgPipeline whose
orders table runs on file arrival only, then uploads --uploads files of --rows new orders one after
the other, each once the previous one's rows are in. For each it polls raw_orders every 20 ms and
reads the run's started_at from pipeline_runs, and prints p50 / p95 / max of:

  - upload -> rows queryable (the figure a user sees; goal p50 <= 3 s on the local stack);
  - upload -> the run started (notification, debounce, Job, pod, the command's start);
  - run started -> rows queryable (the run itself).

The operator's settings are its defaults (debounce ORGPIPELINE_WEBHOOK_DEBOUNCE_SECONDS=1.0) unless
set in the environment. A script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from dataplane import generate, stack_env  # noqa: E402
from harness import (  # noqa: E402
    TEST_LABEL,
    Operator,
    Process,
    drop_org_data,
    get_json,
    is_ready,
    kubectl,
    pipeline_manifest,
    wait_for,
)


def percentile(values: list[float], share: float) -> float:
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, max(0, round(share * (len(ranked) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--rows", type=int, default=100, help="rows of each uploaded file")
    parser.add_argument("--pod-interval", type=float, default=0.1, help="the pod runner's polling interval")
    args = parser.parse_args()

    import psycopg
    import yaml
    from minio import Minio
    from orgpipeline_api import store_names
    from orgpipeline_operator import naming
    from psycopg import sql

    env = stack_env()
    os.environ.update(env)
    work = Path(tempfile.mkdtemp(prefix="orgpipeline-arrival-"))
    org_id = f"arr{uuid.uuid4().hex[:8]}"
    name, bucket = f"org-{org_id}", f"arrival-{org_id}"
    url = env["ORGPIPELINE_S3_ENDPOINT"].split("://", 1)
    s3 = Minio(
        url[1],
        access_key=env["ORGPIPELINE_S3_ACCESS_KEY"],
        secret_key=env["ORGPIPELINE_S3_SECRET_KEY"],
        secure=url[0] == "https",
    )
    s3.make_bucket(bucket)
    manifest = pipeline_manifest(name, org_id, bucket)
    manifest["spec"]["tables"] = [t for t in manifest["spec"]["tables"] if t["name"] == "orders"]
    manifest["spec"]["tables"][0]["trigger"] = "fileArrival"
    path = work / "org.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    operator_env = {
        **env,
        "ORGPIPELINE_WEBHOOK_PORT": env["ORGPIPELINE_STACK_WEBHOOK_PORT"],
        "ORGPIPELINE_WEBHOOK_TOKEN": env["ORGPIPELINE_STACK_WEBHOOK_TOKEN"],
    }
    selector = f"{TEST_LABEL}={org_id}"
    operator = Operator(operator_env, work / "operator.log", env["KUBECONFIG"], label_selector=selector)
    namespace = naming.namespace(org_id)
    podrunner = [sys.executable, str(ROOT / "hack" / "podrunner.py"), "--no-selector"]
    podrunner += ["--workdir", str(work / "pods"), "--interval", str(args.pod_interval), "-n", namespace]
    runner = Process(
        podrunner,
        env,
        work / "podrunner.log",
    )
    schema = store_names.pg_schema(org_id)
    count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, store_names.pg_table("orders")))
    last_start = sql.SQL("SELECT extract(epoch FROM max(started_at)) FROM {} WHERE command = 'run'").format(
        sql.Identifier(schema, store_names.PG_RUNS_TABLE)
    )
    figures: dict[str, list[float]] = {"total": [], "to_start": [], "run": []}
    try:
        crd = ROOT / "crds" / "orgpipeline.io_orgpipelines.yaml"
        kubectl(
            "apply", "--server-side", "--force-conflicts", "--field-manager=orgpipeline-bench", "-f", str(crd)
        )
        kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/orgpipelines.orgpipeline.io")
        operator.wait_ready()
        kubectl("apply", "-f", str(path))
        wait_for("the OrgPipeline to be Ready", lambda: is_ready(get_json("orgpipeline", name)), timeout=180)
        with psycopg.connect(env["ORGPIPELINE_POSTGRES_DSN"], autocommit=True) as conn:
            for k in range(args.uploads):
                csv_path = work / f"orders_{k:03d}.csv"
                generate(csv_path, args.rows, seed=k, first=k * args.rows)
                expected = (k + 1) * args.rows
                uploaded_wall = time.time()
                uploaded = time.monotonic()
                s3.fput_object(bucket, f"org-{org_id}/orders_{k:03d}.csv", str(csv_path))
                while True:
                    try:
                        row = conn.execute(count).fetchone()
                    except psycopg.errors.UndefinedTable:
                        row = (0,)
                    if row and row[0] >= expected:
                        break
                    if time.monotonic() - uploaded > 120:
                        raise SystemExit(f"upload {k}: rows not loaded after 120 s; see {work}")
                    time.sleep(0.02)
                total = time.monotonic() - uploaded
                started = conn.execute(last_start).fetchone()
                to_start = float(started[0]) - uploaded_wall if started and started[0] else float("nan")
                figures["total"].append(total)
                figures["to_start"].append(to_start)
                figures["run"].append(total - to_start)
                print(f"upload {k + 1:>2}: {total:.2f} s (run started after {to_start:.2f} s)", flush=True)
                time.sleep(1.5)  # the next upload is a burst of its own (debounce 1 s)
        report(args, figures)
    finally:
        kubectl("delete", "orgpipeline", name, "--ignore-not-found", "--timeout=60s", check=False)
        operator.stop()
        runner.stop()
        for obj in s3.list_objects(bucket, recursive=True):
            s3.remove_object(bucket, obj.object_name)
        s3.remove_bucket(bucket)
        drop_org_data(env["ORGPIPELINE_POSTGRES_DSN"], env["ORGPIPELINE_MONGO_URI"], org_id)


def report(args: argparse.Namespace, figures: dict[str, list[float]]) -> None:
    load = os.getloadavg()
    averages = " ".join(f"{x:.2f}" for x in load)
    print(f"\n{args.uploads} uploads of {args.rows} rows; load average {averages}")
    print(f"| {'seconds':<34} | {'p50':>6} | {'p95':>6} | {'max':>6} |")
    print(f"|{'-' * 36}|{'-' * 8}|{'-' * 8}|{'-' * 8}|")
    labels = {
        "total": "upload -> rows queryable",
        "to_start": "upload -> run started",
        "run": "run started -> rows queryable",
    }
    out: dict[str, Any] = {
        "uploads": args.uploads,
        "rows": args.rows,
        "load_average": [round(x, 2) for x in load],
    }
    for key, label in labels.items():
        values = figures[key]
        p50, p95 = statistics.median(values), percentile(values, 0.95)
        print(f"| {label:<34} | {p50:>6.2f} | {p95:>6.2f} | {max(values):>6.2f} |")
        out[key] = {"p50": round(p50, 3), "p95": round(p95, 3), "max": round(max(values), 3)}
    verdict = "met" if out["total"]["p50"] <= 3 else "NOT met"
    print(f"goal p50 upload -> rows queryable <= 3 s: {verdict}")
    print(json.dumps(out, separators=(",", ":")))


if __name__ == "__main__":
    main()
