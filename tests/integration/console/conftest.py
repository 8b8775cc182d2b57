"""The console's world: one org onboarded for real (operator, pod runner, S3 files, runs), a second
OrgPipeline, two Kubernetes identities (ServiceAccounts, tokens from `kubectl create token`) and
`orgpipeline console` as a subprocess on a free port.

- `admin`: may get and patch the first org's OrgPipeline only (its org admin);
- `other`: may get the second org's OrgPipeline only.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("console_harness", REPO / "tests" / "e2e" / "harness.py")
assert _spec is not None and _spec.loader is not None
harness = importlib.util.module_from_spec(_spec)
sys.modules["console_harness"] = harness
_spec.loader.exec_module(harness)

FILES = [
    "orders_2024_01_15.csv",  # the seed's record ORD001, version 1
    "orders_2024_01_16.csv",  # ... and its version 2 (amount, status, note changed)
    "orders_2026-11-01.csv",
    "orders_2026-11-02_bad.csv",
    "customers_2026-11-01.csv",
]
MANY_BAD = "orders_2026-11-03_many_bad.csv"
MANY_BAD_ROWS = 60
"""Rejected rows of the generated file: more than two pages of the console's 25."""
SEED_KEY_PARTS = ("ORD001", "CUST456", "2024-01-15")
NS = "default"


@dataclass
class Identity:
    name: str
    token: str
    username: str


@dataclass
class World:
    org_id: str
    name: str
    other_name: str
    url: str
    admin: Identity
    other: Identity
    env: dict[str, str]
    console_log: Path
    tmp: Path


def many_bad_csv() -> str:
    """An orders file whose every row lacks its required amount: one rejected row each."""
    header = "order_id,customer_id,product_id,order_date,amount,status,email,note"
    rows = [
        f"B{i:05d},C{i:04d},P001,2026-11-03,,pending,person{i}@example.com,row {i}"
        for i in range(MANY_BAD_ROWS)
    ]
    return "\n".join([header, *rows]) + "\n"


def _identity(name: str, pipeline: str, verbs: list[str]) -> Identity:
    """A ServiceAccount allowed `verbs` on one OrgPipeline (a ClusterRole with resourceNames), and
    its token."""
    docs = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": NS}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {
                    "apiGroups": ["orgpipeline.io"],
                    "resources": ["orgpipelines"],
                    "resourceNames": [pipeline],
                    "verbs": verbs,
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NS}],
        },
    ]
    harness.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    token = harness.kubectl("-n", NS, "create", "token", name, "--duration=2h").strip()
    return Identity(name, token, f"system:serviceaccount:{NS}:{name}")


def _drop_identity(name: str) -> None:
    harness.kubectl("delete", "clusterrolebinding,clusterrole", name, "--ignore-not-found", check=False)
    harness.kubectl("-n", NS, "delete", "serviceaccount", name, "--ignore-not-found", check=False)


def start_console(env: dict[str, str], log: Path) -> tuple[Any, str]:
    port = harness.free_port()
    out = log.open("w")
    proc = subprocess.Popen(
        [str(harness.BIN / "orgpipeline"), "console", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, f"the console exited:\n{log.read_text()}"
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    harness.wait_for("the console's /healthz", up, timeout=30)
    return proc, url


@pytest.fixture(scope="package")
def world(stack: Any, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("console")
    org_id = f"con{uuid.uuid4().hex[:8]}"
    # A bucket of this run's own: its policy names only this run's org accounts.
    bucket = f"orgpipeline-console-{org_id}"
    name, other_name = f"org-{org_id}", f"org-{org_id}-other"
    manifest = harness.pipeline_manifest(name, org_id, bucket, deletion_policy="Delete")
    for table in manifest["spec"]["tables"]:
        table["schedule"] = "0 0 1 1 *"  # every run of this test is one it asks for
    other = harness.pipeline_manifest(other_name, f"{org_id}x", bucket, deletion_policy="Delete")
    other["metadata"]["labels"] = {harness.TEST_LABEL: f"{org_id}-unreconciled"}  # no operator takes it
    s3.make_bucket(bucket)
    for f in FILES:
        s3.fput_object(bucket, f"org-{org_id}/{f}", str(harness.SAMPLES / f))
    bad = tmp / MANY_BAD
    bad.write_text(many_bad_csv())
    s3.fput_object(bucket, f"org-{org_id}/{MANY_BAD}", str(bad))

    env = {**os.environ, **stack.as_environ()}
    operator = harness.Operator(
        env, tmp / "operator.log", stack.kubeconfig, label_selector=f"{harness.TEST_LABEL}={org_id}"
    )
    runner = harness.PodRunner(env, tmp / "podrunner.log", [name], tmp / "pods")
    console = None
    ids = [f"console-admin-{org_id}", f"console-other-{org_id}"]
    try:
        operator.wait_ready()
        harness.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([manifest, other]))
        harness.wait_for(
            "the org to be Ready", lambda: harness.is_ready(harness.get_json("orgpipeline", name)), 180
        )
        harness.kubectl(
            "annotate", "--overwrite", "orgpipeline", name, "orgpipeline.io/run-now=orders,customers"
        )

        def ran() -> bool:
            obj = harness.get_json("orgpipeline", name)
            return all((harness.last_run(obj, t) or {}).get("result") for t in ("orders", "customers"))

        harness.wait_for("the first runs", ran, timeout=240, every=1)
        admin = _identity(ids[0], name, ["get", "patch"])
        other_id = _identity(ids[1], other_name, ["get"])
        console_env = {
            **env,
            # The console's PostgreSQL login is the operator's (as the chart gives it), not the superuser.
            "ORGPIPELINE_POSTGRES_DSN": stack.operator_postgres_dsn,
            "ORGPIPELINE_MONGO_URI": stack.operator_mongo_uri,
        }
        console, url = start_console(console_env, tmp / "console.log")
        yield World(org_id, name, other_name, url, admin, other_id, env, tmp / "console.log", tmp)
    finally:
        if console is not None:
            console.terminate()
            try:
                console.wait(timeout=10)
            except subprocess.TimeoutExpired:
                console.kill()
            print(
                "--- console log (tail) ---\n"
                + "\n".join((tmp / "console.log").read_text().splitlines()[-30:])
            )
        # Deleted while the operator runs: its finalizer removes what it made (namespace, accounts).
        try:
            harness.kubectl("delete", "orgpipeline", other_name, "--wait=false", check=False)
            harness.kubectl("delete", "orgpipeline", name, "--ignore-not-found", "--timeout=40s", check=False)
        finally:
            operator.stop()
            runner.stop()
        print("--- operator log (tail) ---\n" + "\n".join(operator.output().splitlines()[-20:]))
        for n in (name, other_name):
            harness.kubectl("delete", "orgpipeline", n, "--ignore-not-found", "--wait=false", check=False)
            if harness.get_json("orgpipeline", n) is not None:
                harness.kubectl(
                    "patch",
                    "orgpipeline",
                    n,
                    "--type=merge",
                    "-p",
                    '{"metadata":{"finalizers":null}}',
                    check=False,
                )
        harness.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false", check=False)
        for f in [*FILES, MANY_BAD]:
            s3.remove_object(bucket, f"org-{org_id}/{f}")
        try:
            s3.remove_bucket(bucket)
        except Exception as exc:  # a policy or object left behind: reported, not fatal
            print(f"bucket {bucket} not removed: {exc}")
        harness.drop_org_data(stack.postgres_dsn, stack.mongo_uri, org_id)
        for n in ids:
            _drop_identity(n)
