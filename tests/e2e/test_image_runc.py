"""The image, built here without Docker (hack/image.py), runs a table's job under runc with the pod's
security context, against the stack's stores.

What the operator's job pod asks of a node (builders._pod_spec), applied by runc as containerd would
apply it: uid/gid 10001, a read-only root filesystem with /tmp the only writable directory, no
capabilities, no privilege escalation, containerd's RuntimeDefault seccomp profile, the small tier's
memory limit (512Mi) and CPU limit, in cgroup v1. The container uses the host's network namespace:
the stack's stores listen on 127.0.0.1 (the real node, tests/e2e/test_real_node.py, reaches them on
the pods' network instead).

Opt-in: ORGPIPELINE_NODE=kubelet (the image's first build takes minutes; the tools come from
`ORGPIPELINE_NODE=kubelet hack/bootstrap`). Runs as root (runc, cgroups).
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pymongo
import pytest
from harness import drop_org_data
from orgpipeline_api import store_names
from psycopg import sql

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "hack"))

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.environ.get("ORGPIPELINE_NODE") != "kubelet",
        reason="the image under runc is opt-in: ORGPIPELINE_NODE=kubelet (builds the image: minutes, once)",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="runc and cgroups need root"),
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in ("runc", "umoci", "mmdebstrap")),
        reason="runc, umoci or mmdebstrap missing: ORGPIPELINE_NODE=kubelet hack/bootstrap",
    ),
]

SMALL = {"memory_limit": "512Mi", "cpu_limit": "500m"}  # operator/orgpipeline_operator/tiers.py, small
TERMINATION_LOG = "/dev/termination-log"


def manifest(org_id: str, bucket: str) -> str:
    return f"""apiVersion: orgpipeline.io/v1alpha1
kind: OrgPipeline
metadata: {{name: org-{org_id}}}
spec:
  orgId: "{org_id}"
  source: {{bucket: {bucket}, prefix: org-{org_id}/}}
  tables:
    - name: orders
      businessKeys: [order_id]
      columns:
        - {{name: order_id, type: text, required: true}}
        - {{name: customer_id, type: text, required: true}}
        - {{name: order_date, type: date, required: true}}
        - {{name: amount, type: "decimal(10,2)", required: true, min: 0}}
        - {{name: note, type: text}}
"""


def write_orders(path: Path, rows: int) -> None:
    rng = random.Random(5)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["order_id", "customer_id", "order_date", "amount", "note"])
        for i in range(rows):
            w.writerow(
                [
                    f"ORD{i:09d}",
                    f"CUST{rng.randint(0, 99999):06d}",
                    f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                    f"{rng.randint(100, 99999) / 100:.2f}",
                    "alpha bravo charlie" if i % 3 else "",
                ]
            )


@pytest.fixture(scope="module")
def built() -> Any:
    import image

    return image.build()


@pytest.fixture
def org(stack: Any, s3: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    org_id = f"runc{uuid.uuid4().hex[:8]}"
    bucket = "orgpipeline-runc"
    if not s3.bucket_exists(bucket):
        s3.make_bucket(bucket)
    manifest_dir = tmp_path / "manifest"
    manifest_dir.mkdir()
    (manifest_dir / "pipeline.yaml").write_text(manifest(org_id, bucket))
    os.chmod(tmp_path, 0o755)
    try:
        yield {"org_id": org_id, "bucket": bucket, "manifest_dir": manifest_dir, "tmp": tmp_path}
    finally:
        for obj in s3.list_objects(bucket, prefix=f"org-{org_id}/", recursive=True):
            s3.remove_object(bucket, obj.object_name)
        drop_org_data(stack.postgres_dsn, stack.mongo_uri, org_id)


def job_env(stack: Any) -> dict[str, str]:
    return {**stack.as_environ(), "ORGPIPELINE_TERMINATION_LOG": TERMINATION_LOG}


def run_table(stack: Any, built: Any, org: dict[str, Any], **limits: str) -> Any:
    import node

    args = ["orgpipeline", "run", "-f", "/etc/orgpipeline/pipeline.yaml", "--table", "orders", "-o", "json"]
    return node.run_job(built, args, job_env(stack), org["manifest_dir"], **{**SMALL, **limits})


def pg_count(stack: Any, org_id: str) -> int:
    with psycopg.connect(stack.postgres_dsn) as conn:
        table = sql.Identifier(store_names.pg_schema(org_id), store_names.pg_table("orders"))
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    return int(row[0]) if row else 0


def counts(stack: Any, org_id: str) -> tuple[int, int]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(stack.mongo_uri)
    try:
        db = client[store_names.mongo_database(org_id)]
        docs = db[store_names.mongo_collection(org_id, "orders")].count_documents({})
    finally:
        client.close()
    return pg_count(stack, org_id), int(docs)


def test_the_job_container_loads_a_table_under_the_pods_security_context(
    stack: Any, s3: Any, built: Any, org: dict[str, Any]
) -> None:
    csv_path = org["tmp"] / "orders_2026-12-01.csv"
    write_orders(csv_path, 1000)
    s3.fput_object(org["bucket"], f"org-{org['org_id']}/{csv_path.name}", str(csv_path))

    result = run_table(stack, built, org)

    assert result.exit_code == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["inserted"] == 1000, out
    assert counts(stack, org["org_id"]) == (1000, 1000)
    # The termination message the kubelet would put in the pod's status: the run's summary.
    assert result.termination_message.strip(), "nothing written to /dev/termination-log"
    assert not result.oom_killed
    peak = result.peak_memory_bytes / 2**20
    print(f"\nrunc: 1,000 rows in {result.seconds:.1f}s, peak memory {peak:.0f} MiB")


PROBE = r"""
import ctypes, json, os
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
def writable(path):
    try:
        with open(os.path.join(path, ".probe"), "w") as f:
            f.write("x")
        os.unlink(os.path.join(path, ".probe"))
        return True
    except OSError:
        return False
libc = ctypes.CDLL(None, use_errno=True)
# unshare(CLONE_NEWUSER): allowed to an unprivileged process, refused by the RuntimeDefault profile.
unshare = "allowed" if libc.unshare(0x10000000) == 0 else os.strerror(ctypes.get_errno())
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "cap_eff": status["CapEff"].strip(), "cap_bnd": status["CapBnd"].strip(),
    "no_new_privs": status["NoNewPrivs"].strip(), "seccomp": status["Seccomp"].strip(),
    "root_writable": writable("/"), "opt_writable": writable("/opt/orgpipeline"),
    "tmp_writable": writable("/tmp"), "unshare": unshare,
}))
"""


def test_the_job_container_has_the_pods_security_context(stack: Any, built: Any, org: dict[str, Any]) -> None:
    import node

    result = node.run_job(built, ["python", "-c", PROBE], {}, org["manifest_dir"], **SMALL)

    assert result.exit_code == 0, result.stderr
    seen = json.loads(result.stdout)
    assert (seen["uid"], seen["gid"]) == (10001, 10001)
    assert seen["cap_eff"] == seen["cap_bnd"] == "0000000000000000"
    assert seen["no_new_privs"] == "1"
    assert seen["seccomp"] == "2"  # a filter: containerd's RuntimeDefault
    assert seen["unshare"] != "allowed"
    assert not seen["root_writable"] and not seen["opt_writable"]
    assert seen["tmp_writable"]


def test_the_tiers_memory_limit_is_enforced(stack: Any, built: Any, org: dict[str, Any]) -> None:
    import node

    grab = "b = bytearray(700 * 2**20); b[::4096] = b'x' * len(b[::4096]); print('survived')"
    result = node.run_job(built, ["python", "-c", grab], {}, org["manifest_dir"], **SMALL)

    assert result.exit_code == 137 and result.oom_killed, (result.exit_code, result.stdout, result.stderr)
    assert "survived" not in result.stdout


@pytest.mark.skipif(
    os.environ.get("ORGPIPELINE_NODE_BIG") != "1", reason="the 1M-row run: ORGPIPELINE_NODE_BIG=1 (minutes)"
)
@pytest.mark.timeout(2400)
def test_a_million_rows_fit_the_small_tier(stack: Any, s3: Any, built: Any, org: dict[str, Any]) -> None:
    rows = 1_000_000
    csv_path = org["tmp"] / "orders_2026-12-02.csv"
    write_orders(csv_path, rows)
    s3.fput_object(org["bucket"], f"org-{org['org_id']}/{csv_path.name}", str(csv_path))

    result = run_table(stack, built, org)

    print(
        f"\nrunc, small tier (512Mi, 500m): {rows:,} rows ({csv_path.stat().st_size / 1e6:.0f} MB) exit "
        f"{result.exit_code} in {result.seconds:.0f}s, peak memory {result.peak_memory_bytes / 2**20:.0f} MiB"
        f"{' (OOM-killed)' if result.oom_killed else ''}"
    )
    assert result.exit_code == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["inserted"] == rows
    # PostgreSQL only: FerretDB counts a collection by reading every document (past 12 GB at 1M).
    assert pg_count(stack, org["org_id"]) == rows
