"""End to end, as a user does it, on the local control plane.

`kubectl apply -f examples/org-123.yaml` (a copy with this run's org id and bucket) -> the sample
CSVs uploaded to S3 -> run-now -> the Job's pod runs `orgpipeline run` for real (ingest + load) ->
`kubectl get orgpipelines` shows the org Ready with the last run's rows and quality; a bad file
raises an alert in the status and an Event; `orgpipeline quality --org-id ...` shows the report;
deleting the OrgPipeline cleans up per its policy (the example's Retain: the namespace goes, the
data stays).

Everything is real (API server, controller manager with the Job controller, PostgreSQL, FerretDB,
S3, the operator as a subprocess) except the kubelet: there is no container runtime on this
machine, so hack/podrunner.py, a test-only stand-in, runs the pods' commands as local processes.
On kind, the same steps run real pods from the image (see README: skaffold).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import (
    BIN,
    SAMPLES,
    TEST_LABEL,
    Operator,
    PodRunner,
    condition,
    drop_org_data,
    get_json,
    is_ready,
    kubectl,
    last_run,
    pipeline_manifest,
    wait_for,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        importlib.util.find_spec("orgpipeline_operator.main") is None
        or importlib.util.find_spec("orgpipeline_cli.main") is None,
        reason="the operator (orgpipeline_operator.main) or the CLI (orgpipeline_cli.main) is absent",
    ),
]

BUCKET = "orgpipeline-e2e"
GOOD = ["orders_2026-11-01.csv", "customers_2026-11-01.csv"]
BAD = "orders_2026-11-02_bad.csv"


@dataclass
class World:
    org_id: str
    name: str
    namespace: str
    manifest: Path
    env: dict[str, str]
    operator: Operator
    runner: PodRunner | None
    s3: Any
    stack: Any
    jobs: dict[str, str]


@pytest.fixture(scope="module")
def world(stack: Any, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("e2e")
    org_id = f"e2e{uuid.uuid4().hex[:8]}"
    name = f"org-{org_id}"
    manifest = pipeline_manifest(name, org_id, BUCKET, deletion_policy="Retain")  # the example's policy
    for table in manifest["spec"]["tables"]:
        # The example's */15 schedule would start a run on the quarter hour and take the files that a
        # run-now test uploaded; a yearly schedule keeps every run in this test asked for by the test.
        table["schedule"] = "0 0 1 1 *"
    path = tmp / "org.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    if not s3.bucket_exists(BUCKET):
        s3.make_bucket(BUCKET)
    env = {**os.environ, **stack.as_environ()}
    operator = Operator(env, tmp / "operator.log", stack.kubeconfig, label_selector=f"{TEST_LABEL}={org_id}")
    # A real cluster (kind: ORGPIPELINE_USE_EXISTING_CLUSTER=1) has kubelets that run the Job's pods
    # from the image (ORGPIPELINE_JOB_IMAGE, and ORGPIPELINE_JOB_* for the servers as pods reach
    # them); the local stack has none, and the test-only pod runner stands in.
    runner = (
        None
        if stack.existing_cluster or stack.real_node
        else PodRunner(env, tmp / "podrunner.log", [name], tmp / "pods")
    )
    w = World(org_id, name, name, path, env, operator, runner, s3, stack, {})
    try:
        operator.wait_ready()
        yield w
    finally:
        operator.stop()
        print("--- operator log (tail) ---\n" + "\n".join(operator.output().splitlines()[-40:]))
        if runner is not None:
            runner.stop()
            print("--- podrunner log (tail) ---\n" + "\n".join(runner.output().splitlines()[-40:]))
        kubectl("delete", "orgpipeline", name, "--ignore-not-found", "--wait=false", check=False)
        if get_json("orgpipeline", name) is not None:  # no operator left to run the finalizer
            kubectl(
                "patch",
                "orgpipeline",
                name,
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )
        kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false", check=False)
        for f in [*GOOD, BAD]:
            s3.remove_object(BUCKET, f"org-{org_id}/{f}")
        drop_org_data(stack.postgres_dsn, stack.mongo_uri, org_id)


def upload(w: World, *files: str) -> None:
    for f in files:
        w.s3.fput_object(BUCKET, f"org-{w.org_id}/{f}", str(SAMPLES / f))


def pipeline(w: World) -> dict[str, Any] | None:
    return get_json("orgpipeline", w.name)


def get_orgpipelines_row(w: World) -> dict[str, str]:
    """`kubectl get orgpipelines`, the user's view, as {column: value} for this org."""
    lines = kubectl("get", "orgpipelines").splitlines()
    columns = [(m.group(0), m.start()) for m in re.finditer(r"\S+(?: \S+)*", lines[0])]  # "LAST RUN"
    bounds = [start for _, start in columns[1:]] + [None]
    for line in lines[1:]:
        if line.split()[0] == w.name:
            return {name: line[start:end].strip() for (name, start), end in zip(columns, bounds, strict=True)}
    raise AssertionError(f"{w.name} not in `kubectl get orgpipelines`:\n" + "\n".join(lines))


def run_now(w: World, tables: str, reason: str | None = None) -> dict[str, dict[str, Any]]:
    """Asks for a run now and waits for a new finished run of each table; returns their lastRun.

    With a reason, through `orgpipeline run-now` (one table); else with a plain `kubectl annotate`.
    """
    before = {t: (last_run(pipeline(w), t) or {}).get("job") for t in tables.split(",")}
    asked = datetime.now(UTC).replace(microsecond=0)
    if reason is None:
        kubectl("annotate", "--overwrite", "orgpipeline", w.name, f"orgpipeline.io/run-now={tables}")
    else:
        cli = str(BIN / "orgpipeline")
        cmd = [cli, "run-now", "--org-id", w.org_id, "--table", tables, "--reason", reason]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)

    def requested(run: dict[str, Any] | None, table: str) -> bool:
        """A run of this request: a new Job that started after the annotation (a late run of an
        earlier request is not the answer to this one)."""
        if not run or run.get("job") == before[table]:
            return False
        started = run.get("startedAt")
        return started is None or datetime.fromisoformat(str(started)) >= asked

    def done() -> dict[str, dict[str, Any]] | None:
        obj = pipeline(w)
        runs = {t: last_run(obj, t) for t in before}
        if all(requested(r, t) for t, r in runs.items()):
            return {t: r for t, r in runs.items() if r}
        return None

    runs = wait_for(f"new runs of {tables}", done, timeout=180, every=1)
    w.jobs.update({t: r["job"] for t, r in runs.items()})
    return runs


def test_kubectl_apply_onboards_the_org_and_it_becomes_ready(world: World) -> None:
    kubectl("apply", "-f", str(world.manifest))

    def ready() -> dict[str, Any] | None:
        obj = pipeline(world)
        return obj if is_ready(obj) else None

    try:
        obj = wait_for("the OrgPipeline to be Ready", ready, timeout=180)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; status: {(pipeline(world) or {}).get('status')}") from None
    assert obj["status"]["namespace"] == world.namespace
    ns = get_json("namespace", world.namespace)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    cronjobs = get_json("-n", world.namespace, "cronjobs")
    assert {c["metadata"]["name"] for c in cronjobs["items"]} == {
        "ingest-orders",
        "ingest-customers",
        "retention",
    }
    row = get_orgpipelines_row(world)
    assert row["ORG"] == world.org_id
    assert row["READY"] == "True"
    assert row["TABLES"] == "2"


def test_run_now_ingests_and_loads_the_sample_files(world: World) -> None:
    upload(world, *GOOD)
    runs = run_now(world, "orders,customers")
    orders, customers = runs["orders"], runs["customers"]
    assert orders["result"] == "Succeeded", orders
    assert (orders["rowsRead"], orders["inserted"], orders["rejected"]) == (40, 40, 0)
    assert orders["qualityScore"] == 1.0
    assert orders["files"] == ["orders_2026-11-01.csv"]
    assert customers["result"] == "Succeeded", customers
    assert (customers["rowsRead"], customers["inserted"]) == (12, 12)
    # A plain annotation: the API server does not say who wrote it, the field manager is named.
    assert (orders["trigger"], orders.get("triggeredBy")) == ("run-now", "unknown:run-now:kubectl-annotate")

    import psycopg
    from psycopg import sql

    with psycopg.connect(world.stack.postgres_dsn) as conn:
        count = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(f"orgdata_{world.org_id}"), sql.Identifier("raw_orders")
            )
        ).fetchone()
    assert count == (40,)

    obj = pipeline(world)
    assert condition(obj, "Ready")["status"] == "True"
    assert condition(obj, "Healthy")["status"] == "True"
    row = get_orgpipelines_row(world)
    assert row["READY"] == "True"
    assert float(row["QUALITY"]) == 1.0
    assert row["ALERTS"] == "0"
    assert row["LAST RUN"] not in ("", "<none>")


def test_a_bad_file_raises_an_alert_in_the_status_and_an_event(world: World) -> None:
    upload(world, BAD)
    orders = run_now(world, "orders", reason="a file with bad rows")["orders"]
    admin = kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").strip()
    assert (orders["trigger"], orders["triggeredBy"], orders["triggerReason"]) == (
        "run-now",
        admin,
        "a file with bad rows",
    )
    assert orders["files"] == [BAD]
    assert orders["rowsRead"] == 10
    assert orders["rejected"] >= 4, orders
    assert orders["qualityScore"] < 0.95
    obj = pipeline(world)
    assert obj is not None
    alerts = obj["status"]["alerts"]
    assert any(a["table"] == "orders" and "Quality" in a["type"] for a in alerts), alerts
    assert obj["status"]["activeAlerts"] == len(alerts) > 0
    assert condition(obj, "Healthy")["status"] == "False"
    row = get_orgpipelines_row(world)
    assert row["ALERTS"] == str(len(alerts))
    assert float(row["QUALITY"]) < 0.95

    def events() -> list[dict[str, Any]]:
        out = get_json("events", "-A", "--field-selector", f"involvedObject.name={world.name}")
        return [
            e for e in (out or {}).get("items", []) if e["type"] == "Warning" and "Quality" in e["reason"]
        ]

    found = wait_for("a Warning Event about the quality breach", events, timeout=30)
    assert found[0]["involvedObject"]["kind"] == "OrgPipeline"
    assert "orders" in found[0]["message"]


def test_the_quality_report_shows_the_bad_file(world: World) -> None:
    cmd = [str(BIN / "orgpipeline"), "quality", "--org-id", world.org_id]
    out = subprocess.run(cmd, env=world.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "orders" in out.stdout
    out = subprocess.run([*cmd, "-o", "json"], env=world.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    text = json.dumps(report)
    assert "orders" in text
    assert world.org_id in text


def test_deleting_the_org_removes_its_namespace_and_retains_its_data(world: World) -> None:
    kubectl("delete", "orgpipeline", world.name, "--wait=false")
    wait_for("the OrgPipeline to be gone", lambda: pipeline(world) is None, timeout=180)
    ns = get_json("namespace", world.namespace)
    assert ns is None or ns["metadata"].get("deletionTimestamp"), "the org's namespace is still there"

    import psycopg
    import pymongo

    with psycopg.connect(world.stack.postgres_dsn) as conn:
        schemas = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = %s", (f"orgdata_{world.org_id}",)
        ).fetchall()
    assert schemas, "deletionPolicy Retain must keep the org's schema"
    with pymongo.MongoClient[dict[str, Any]](world.stack.mongo_uri) as mongo:
        names = mongo[f"orgraw_{world.org_id}"].list_collection_names()
    assert f"raw_{world.org_id}_orders" in names, "deletionPolicy Retain must keep the org's collections"


def test_nothing_is_left_running(world: World) -> None:
    assert world.operator.alive(), world.operator.output()
    if world.runner is not None:
        assert world.runner.alive(), world.runner.output()
    assert Path(world.manifest).exists()
