"""File arrivals: S3 notifications posted to the operator's webhook, as MinIO or versitygw send
them, start the matching table's Job (one per burst, never while one runs, never another org's);
a sender without the token gets 401 and is counted, an oversized body 413."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from typing import Any

from operator_helpers import WEBHOOK_TOKEN, Kubectl, Operator, apply_ready, pipeline, wait_for
from orgpipeline_operator import kube, naming

BUCKET = "uploads"


def post(operator: Operator, payload: bytes, authorization: str | None = f"Bearer {WEBHOOK_TOKEN}") -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{operator.webhook_port}/s3/events",
        data=payload,
        method="POST",
        headers={
            "Content-Type": "application/json",
            **({"Authorization": authorization} if authorization else {}),
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def created(*keys: str, bucket: str = BUCKET, principal: str | None = None) -> bytes:
    records: list[dict[str, Any]] = [
        {"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": {"key": k}}}
        for k in keys
    ]
    if principal is not None:
        for r in records:
            r["userIdentity"] = {"principalId": principal}
    return json.dumps({"Records": records}).encode()


def metric(operator: Operator, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in operator.metrics().splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.split()[-1])
    return 0.0


def arrival_jobs(api: kube.Kube, ns: str, table: str | None = None) -> list[dict[str, Any]]:
    selector = f"{naming.LABEL_RUN_KIND}=file-arrival" + (f",{naming.LABEL_TABLE}={table}" if table else "")
    return api.list("batch/v1", "Job", ns, selector)


def env_of(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_sender_without_the_token_is_refused_and_counted(operator: Operator) -> None:
    before = metric(operator, "orgpipeline_webhook_requests_total", result="unauthorized")
    assert post(operator, created("x/orders_1.csv"), authorization=None) == 401
    assert post(operator, created("x/orders_1.csv"), authorization="Bearer not-the-token") == 401
    wrong_basic = "Basic " + base64.b64encode(b"orgpipeline:guess").decode()
    assert post(operator, created("x/orders_1.csv"), authorization=wrong_basic) == 401
    assert metric(operator, "orgpipeline_webhook_requests_total", result="unauthorized") == before + 3


def test_oversized_and_malformed_bodies_are_refused(operator: Operator) -> None:
    assert post(operator, b"{" + b" " * 300_000 + b"}") == 413
    assert post(operator, b"not json") == 400
    assert post(operator, json.dumps({"Service": "S3", "Event": "s3:TestEvent"}).encode()) == 200


def test_deep_bodies_and_long_keys_are_refused_and_counted(operator: Operator) -> None:
    """A body nesting deeper than any sender's is a 400 (it was a RecursionError and a 500); a key
    longer than S3's 1,024 bytes starts nothing and is counted as refused."""
    assert post(operator, b"[" * 200_000) == 400
    assert post(operator, b'{"Records": ' + b"[" * 5_000 + b"]" * 5_000 + b"}") == 400
    before = metric(operator, "orgpipeline_webhook_objects_total", result="refused")
    assert post(operator, created("x/" + "k" * 1_100 + ".csv", "y/" + "\u00e9" * 600 + ".csv")) == 200
    assert metric(operator, "orgpipeline_webhook_objects_total", result="refused") == before + 2


def test_a_burst_of_files_starts_one_job_of_the_owning_org_only(
    operator: Operator, kubectl: Kubectl, api: kube.Kube, cleanup_pipelines: list[str]
) -> None:
    suffix = str(int(time.time() * 1000) % 10**8)
    outer, inner = f"fea{suffix}", f"feb{suffix}"
    # Two orgs whose patterns both match the same file names (nested prefixes are refused by admission).
    outer_tables = [
        {"name": "orders", "filePattern": "*orders_*.csv"},
        {"name": "customers", "trigger": "schedule"},
    ]
    outer_manifest = pipeline(
        outer, ["orders", "customers"], source={"bucket": BUCKET, "prefix": f"org-{outer}/"}
    )
    for table, extra in zip(outer_manifest["spec"]["tables"], outer_tables, strict=True):
        table.update(extra)
    inner_manifest = pipeline(inner, ["orders"], source={"bucket": BUCKET, "prefix": f"org-{inner}/"})
    apply_ready(kubectl, api, cleanup_pipelines, outer_manifest)
    apply_ready(kubectl, api, cleanup_pipelines, inner_manifest)
    outer_ns, inner_ns = naming.namespace(outer), naming.namespace(inner)

    burst = [f"org-{inner}/orders_{i}.csv" for i in range(3)]
    for key, who in zip(burst, ["alice", "bob", "alice"], strict=True):
        assert post(operator, created(key, principal=who)) == 200
    assert post(operator, created(f"org-{inner}/orders_x.csv", bucket="another-bucket")) == 200
    assert post(operator, created(f"org-{outer}/customers_1.csv")) == 200  # a schedule-only table

    (job,) = wait_for(lambda: arrival_jobs(api, inner_ns), what="the inner org's file-arrival Job")
    env = env_of(job)
    assert env["ORGPIPELINE_TRIGGER"] == "file-arrival"
    assert env["ORGPIPELINE_TRIGGERED_BY"] == "alice, bob"  # the burst's uploaders
    assert json.loads(env["ORGPIPELINE_TRIGGER_UPLOADERS"]) == dict(
        zip(burst, ["alice", "bob", "alice"], strict=True)
    )
    assert env["ORGPIPELINE_TRIGGER_REASON"] == "3 new objects: " + ", ".join(
        f"s3://{BUCKET}/{k}" for k in burst
    )
    assert job["metadata"]["labels"][naming.LABEL_TABLE] == "orders"
    # Deleted by Kubernetes an hour after it finished (the operator's setting, from the chart).
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600

    # A file of the outer org starts its own run; the inner org's Job is still the only one there.
    assert post(operator, created(f"org-{outer}/orders_9.csv")) == 200
    (outer_job,) = wait_for(lambda: arrival_jobs(api, outer_ns), what="the outer org's file-arrival Job")
    assert (
        env_of(outer_job)["ORGPIPELINE_TRIGGER_REASON"]
        == f"new object s3://{BUCKET}/org-{outer}/orders_9.csv"
    )
    assert env_of(outer_job)["ORGPIPELINE_TRIGGERED_BY"] == "system:file-arrival"  # the event named nobody
    assert len(arrival_jobs(api, inner_ns)) == 1
    assert arrival_jobs(api, outer_ns, "customers") == []


def test_files_arriving_during_a_run_wait_for_it_to_end(
    operator: Operator, kubectl: Kubectl, api: kube.Kube, cleanup_pipelines: list[str]
) -> None:
    org = f"fec{int(time.time() * 1000) % 10**8}"
    apply_ready(
        kubectl,
        api,
        cleanup_pipelines,
        pipeline(org, ["orders"], source={"bucket": BUCKET, "prefix": f"org-{org}/"}),
    )
    ns = naming.namespace(org)
    assert post(operator, created(f"org-{org}/orders_1.csv")) == 200
    (first,) = wait_for(lambda: arrival_jobs(api, ns), what="the first file-arrival Job")

    # The first Job is still running (no kubelet here): the next file waits, however long.
    coalesced = metric(operator, "orgpipeline_webhook_objects_total", result="coalesced")
    assert post(operator, created(f"org-{org}/orders_2.csv")) == 200
    assert post(operator, created(f"org-{org}/orders_3.csv", f"org-{org}/orders_4.csv")) == 200
    time.sleep(3)  # several debounce periods
    assert [j["metadata"]["name"] for j in arrival_jobs(api, ns)] == [first["metadata"]["name"]]
    # One batch waits for the run: the files after its first joined it.
    assert metric(operator, "orgpipeline_webhook_objects_total", result="coalesced") == coalesced + 2

    # The run ends (here: its Job goes); the waiting file gets its own run.
    api.delete("batch/v1", "Job", first["metadata"]["name"], ns)
    (second,) = wait_for(
        lambda: [j for j in arrival_jobs(api, ns) if j["metadata"]["name"] != first["metadata"]["name"]],
        what="the second file-arrival Job",
    )
    assert env_of(second)["ORGPIPELINE_TRIGGER_REASON"] == "3 new objects: " + ", ".join(
        f"s3://{BUCKET}/org-{org}/orders_{i}.csv" for i in (2, 3, 4)
    )
