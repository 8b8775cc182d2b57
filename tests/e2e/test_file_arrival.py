"""End to end, with no annotation: a CSV uploaded to S3 is loaded because it arrived.

The stack's versitygw posts a bucket notification for every upload to a fixed port of the stack
(`hack/stack env`: ORGPIPELINE_STACK_WEBHOOK_PORT/_TOKEN); this module's operator listens there.
The upload -> notification -> file-arrival Job -> the pod runs `orgpipeline run` -> the rows are in
PostgreSQL and the run in the OrgPipeline's status. The upload-to-Job-created latency is printed
(a measurement, not an assertion: it moves with the machine's load).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import (
    REPO,
    SAMPLES,
    TEST_LABEL,
    Operator,
    PodRunner,
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
        importlib.util.find_spec("orgpipeline_operator.main") is None,
        reason="the operator (orgpipeline_operator.main) is absent",
    ),
]

BUCKET = "orgpipeline-e2e-events"
FILE = "orders_2026-11-01.csv"


@dataclass
class Org:
    org_id: str
    name: str
    operator: Operator
    s3: Any
    stack: Any


@pytest.fixture(scope="module")
def org(stack: Any, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Org]:
    tmp = tmp_path_factory.mktemp("e2e-events")
    values = json.loads(
        subprocess.run(
            [str(REPO / "hack" / "stack"), "env", "--json"], check=True, capture_output=True
        ).stdout
    )
    org_id = f"ev{uuid.uuid4().hex[:8]}"
    name = f"org-{org_id}"
    manifest = pipeline_manifest(name, org_id, BUCKET)
    manifest["spec"]["tables"][0]["trigger"] = "fileArrival"  # orders: no schedule, files only
    path = tmp / "org.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    if not s3.bucket_exists(BUCKET):
        s3.make_bucket(BUCKET)
    env = {
        **os.environ,
        **stack.as_environ(),
        "ORGPIPELINE_WEBHOOK_PORT": values["ORGPIPELINE_STACK_WEBHOOK_PORT"],
        "ORGPIPELINE_WEBHOOK_TOKEN": values["ORGPIPELINE_STACK_WEBHOOK_TOKEN"],
    }
    operator = Operator(env, tmp / "operator.log", stack.kubeconfig, label_selector=f"{TEST_LABEL}={org_id}")
    runner = (
        None
        if stack.existing_cluster or stack.real_node
        else PodRunner(env, tmp / "podrunner.log", [name], tmp / "pods")
    )
    try:
        operator.wait_ready()
        kubectl("apply", "-f", str(path))
        wait_for("the OrgPipeline to be Ready", lambda: is_ready(get_json("orgpipeline", name)), timeout=180)
        yield Org(org_id, name, operator, s3, stack)
    finally:
        kubectl("delete", "orgpipeline", name, "--ignore-not-found", "--timeout=60s", check=False)
        operator.stop()
        print("--- operator log (tail) ---\n" + "\n".join(operator.output().splitlines()[-30:]))
        if runner is not None:
            runner.stop()
        s3.remove_object(BUCKET, f"org-{org_id}/{FILE}")
        drop_org_data(stack.postgres_dsn, stack.mongo_uri, org_id)


def file_jobs(o: Org) -> list[dict[str, Any]]:
    found = get_json("-n", o.name, "jobs", "-l", "orgpipeline.io/run=file-arrival")
    return list((found or {}).get("items") or [])


def test_an_uploaded_file_is_loaded_without_an_annotation(org: Org) -> None:
    cronjob = get_json("-n", org.name, "cronjob", "ingest-orders") or {}
    assert cronjob["spec"]["suspend"] is True  # trigger: fileArrival

    org.s3.fput_object(BUCKET, f"org-{org.org_id}/{FILE}", str(Path(SAMPLES) / FILE))
    uploaded = time.monotonic()
    (job,) = wait_for("the file-arrival Job", lambda: file_jobs(org), timeout=60, every=0.1)
    latency = time.monotonic() - uploaded
    print(f"\nupload-to-Job-created: {latency:.2f} s (observed by polling the API every 0.1 s)")

    env = {e["name"]: e.get("value", "") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ORGPIPELINE_TRIGGER"] == "file-arrival"
    assert env["ORGPIPELINE_TRIGGER_REASON"] == f"new object s3://{BUCKET}/org-{org.org_id}/{FILE}"
    # Who uploaded, as versitygw's event says (userIdentity: the account that wrote the object).
    uploader = org.stack.s3_access_key
    assert env["ORGPIPELINE_TRIGGERED_BY"] == uploader

    def finished() -> dict[str, Any] | None:
        run = last_run(get_json("orgpipeline", org.name), "orders")
        return run if run and run.get("job") == job["metadata"]["name"] else None

    run = wait_for("the file-arrival run's result", finished, timeout=180, every=1)
    assert run["result"] == "Succeeded", run
    assert (run["rowsRead"], run["inserted"], run["rejected"]) == (40, 40, 0)
    assert run["files"] == [FILE]
    assert run["trigger"] == "file-arrival"  # recorded with the run: who/why
    assert run["triggerReason"] == f"new object s3://{BUCKET}/org-{org.org_id}/{FILE}"
    assert run["triggeredBy"] == uploader

    import psycopg

    with psycopg.connect(org.stack.postgres_dsn) as conn:
        count = conn.execute(f'SELECT count(*) FROM "orgdata_{org.org_id}"."raw_orders"').fetchone()
        who = conn.execute(
            f'SELECT changed_by_user_id, count(*) FROM "orgdata_{org.org_id}"."raw_orders" GROUP BY 1'
        ).fetchall()
    assert count is not None and count[0] == 40
    assert who == [(uploader, 40)]  # every version names its uploader
