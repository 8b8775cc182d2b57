"""Runs: the run-now annotation makes a Job; a finished Job (its pod status written as a kubelet
would, through pods/status) lands in the OrgPipeline's status, alerts and Events."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from operator_helpers import (
    TEST_LABEL,
    Kubectl,
    Operator,
    apply_ready,
    get_pipeline,
    pipeline,
    posted_reasons,
    report_message,
    wait_for,
    wait_ready,
    write_terminated,
)
from orgpipeline_operator import kube, naming, runs, runtime


def _jobs(kubectl: Kubectl, ns: str) -> list[dict[str, Any]]:
    return list(kubectl.json("get", "jobs", "-n", ns)["items"])


def _finish_pod(api: kube.Kube, ns: str, job: str, exit_code: int, message: str) -> None:
    """What a kubelet reports when the container ends: phase, and the terminated state with its message.
    A failure is repeated for every retry the Job makes (backoffLimit) until the Job itself fails."""

    def pending() -> list[dict[str, Any]]:
        pods = api.list("v1", "Pod", ns, f"batch.kubernetes.io/job-name={job}")
        return [p for p in pods if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]

    while True:
        pods = wait_for(lambda: pending() or _job_done(api, ns, job), what=f"a running pod of {job}")
        if pods is True:
            return
        write_terminated(api, ns, pods[0], exit_code, message)
        if exit_code == 0:
            return


def _job_done(api: kube.Kube, ns: str, job: str) -> bool:
    found = api.get("batch/v1", "Job", job, ns) or {}
    return any(
        c["status"] == "True" and c["type"] in ("Complete", "Failed")
        for c in found.get("status", {}).get("conditions", [])
    )


def _run_now(kubectl: Kubectl, name: str, ns: str, table: str, known: set[str]) -> str:
    kubectl("annotate", "--overwrite", "orgpipeline", name, f"{naming.ANNOTATION_RUN_NOW}={table}")

    def new_job() -> str | None:
        of_table = [j for j in _jobs(kubectl, ns) if j["metadata"]["labels"].get(naming.LABEL_TABLE) == table]
        names = sorted({j["metadata"]["name"] for j in of_table} - known)
        return names[0] if names else None

    job = wait_for(new_job, what=f"run-now Job of {table}")
    known.add(job)
    return job


def test_run_now_and_finished_jobs_update_status_alerts_and_events(
    operator: Operator, kubectl: Kubectl, api: kube.Kube, unique_id: str, cleanup_pipelines: list[str]
) -> None:
    org = f"runs{unique_id}"
    ns, name = f"org-{org}", f"org-{org}"
    apply_ready(kubectl, api, cleanup_pipelines, pipeline(org, ["orders", "customers"]))
    known: set[str] = set()

    # run-now -> a Job from the CronJob's template; the annotation is consumed.
    job = _run_now(kubectl, name, ns, "orders", known)
    assert job.startswith("ingest-orders-now-")
    spec = kubectl.json("get", "job", job, "-n", ns)
    cron = kubectl.json("get", "cronjob", "ingest-orders", "-n", ns)
    assert (
        spec["spec"]["template"]["spec"]["containers"][0]["command"]
        == (cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"])
    )
    assert spec["metadata"]["labels"][naming.LABEL_TABLE] == "orders"
    wait_for(
        lambda: (
            naming.ANNOTATION_RUN_NOW not in (get_pipeline(api, name)["metadata"].get("annotations") or {})
        ),
        what="run-now annotation removed",
    )

    # The job succeeds with a quality score under the threshold -> lastRun + critical alert + Event.
    _finish_pod(api, ns, job, 0, report_message(org, "orders", qualityScore=0.5, rejected=3))

    def recorded() -> dict[str, Any] | None:
        st = get_pipeline(api, name).get("status") or {}
        t = next((t for t in st.get("tables", []) if t["name"] == "orders"), {})
        return st if (t.get("lastRun") or {}).get("job") == job else None

    st = wait_for(recorded, timeout=40, what="lastRun recorded")
    run = st["tables"][0]["lastRun"]
    assert (run["result"], run["rowsRead"], run["inserted"], run["rejected"], run["qualityScore"]) == (
        "Succeeded", 100, 90, 3, 0.5,
    )  # fmt: skip
    assert run["files"] == ["orders_1.csv"]
    assert [(a["type"], a["table"], a["severity"]) for a in st["alerts"]] == [
        ("QualityBelowThreshold", "orders", "critical")
    ]
    assert st["activeAlerts"] == 1 and st["qualityScore"] == 0.5 and st["lastRunTime"]
    row = kubectl("get", "orgpipeline", name, "--no-headers").stdout.split()
    assert row[5:7] == ["0.5", "1"], row  # QUALITY and ALERTS printer columns

    def event(reason: str) -> bool:
        items = kubectl.json(
            "get", "events", "-n", "default", "--field-selector", f"involvedObject.name={name}"
        )
        return any(e["reason"] == reason for e in items["items"])

    wait_for(lambda: event("QualityBelowThreshold"), what="QualityBelowThreshold Event")

    # A failed run of the other table -> RunFailed with the reason from the termination message.
    job2 = _run_now(kubectl, name, ns, "customers", known)
    _finish_pod(
        api, ns, job2, 1, report_message(org, "customers", result="Failed", error="S3 bucket unreachable")
    )

    def failed() -> dict[str, Any] | None:
        st = get_pipeline(api, name)["status"]
        return st if any(a["type"] == "RunFailed" for a in st["alerts"]) else None

    st = wait_for(failed, timeout=60, what="RunFailed alert")
    alert = next(a for a in st["alerts"] if a["type"] == "RunFailed")
    assert alert["table"] == "customers" and "S3 bucket unreachable" in alert["message"]
    assert st["activeAlerts"] == 2
    healthy = next(c for c in st["conditions"] if c["type"] == "Healthy")
    assert healthy["status"] == "False" and healthy["reason"] == "AlertsActive"
    wait_for(lambda: event("RunFailed"), what="RunFailed Event")

    # A later good run of orders clears its alert, and metrics carry the org's gauges.
    job3 = _run_now(kubectl, name, ns, "orders", known)
    _finish_pod(api, ns, job3, 0, report_message(org, "orders"))
    wait_for(lambda: get_pipeline(api, name)["status"]["activeAlerts"] == 1, timeout=40, what="alert cleared")
    text = operator.metrics()
    assert f'orgpipeline_org_active_alerts{{org="{org}"}} 1.0' in text
    assert f'orgpipeline_org_quality_score{{org="{org}"}}' in text
    # Per org and table: rows read, written, rejected over the two orders runs (100 read, 95 written
    # and 3 rejected by the first, 100 and 95 by the second), run counts, durations, last success.
    orders = f'org="{org}",table="orders"'
    assert f"orgpipeline_table_rows_read_total{{{orders}}} 200.0" in text
    assert f"orgpipeline_table_rows_written_total{{{orders}}} 190.0" in text
    assert f"orgpipeline_table_rows_rejected_total{{{orders}}} 3.0" in text
    assert f'orgpipeline_table_runs_total{{org="{org}",result="Failed",table="customers"}} 1.0' in text
    assert f"orgpipeline_table_run_duration_seconds_count{{{orders}}} 2.0" in text
    assert f"orgpipeline_table_last_success_timestamp_seconds{{{orders}}}" in text
    assert f'orgpipeline_table_last_success_timestamp_seconds{{org="{org}",table="customers"}}' not in text


def test_run_now_unknown_table_is_an_event_not_a_crash(
    operator: Operator, kubectl: Kubectl, api: kube.Kube, unique_id: str, cleanup_pipelines: list[str]
) -> None:
    org = f"rnx{unique_id}"
    name = f"org-{org}"
    apply_ready(kubectl, api, cleanup_pipelines, pipeline(org, ["orders"]))
    kubectl("annotate", "orgpipeline", name, f"{naming.ANNOTATION_RUN_NOW}=nosuchtable")

    def warned() -> bool:
        items = kubectl.json(
            "get", "events", "-n", "default", "--field-selector", f"involvedObject.name={name}"
        )
        return any(e["reason"] == "RunNowUnknownTable" for e in items["items"])

    wait_for(warned, what="RunNowUnknownTable Event")
    assert _jobs(kubectl, f"org-{org}") == []
    wait_ready(api, name)


def test_run_now_twice_for_one_request_makes_one_job(
    direct_rt: runtime.Runtime, kubectl: Kubectl, api: kube.Kube, unique_id: str, events: asyncio.Queue[Any]
) -> None:
    """The handler run twice for one annotation (an event still carrying it, a watch cache that has
    not yet seen the first Job: `active` empty both times), against the real API server: one Job.
    A later `kubectl annotate --overwrite` is a new request: a new Job."""
    org = f"rnd{unique_id}"
    ns = name = f"org-{org}"
    manifest = pipeline(org, ["orders", "customers"])
    manifest["metadata"]["labels"] = {TEST_LABEL: "none"}  # no operator handles it: this test does
    kubectl.apply(manifest)
    kubectl("create", "namespace", ns)
    selector = f"{naming.LABEL_PIPELINE}={name},{naming.LABEL_TABLE}=orders"
    try:
        kubectl("annotate", "orgpipeline", name, f"{naming.ANNOTATION_RUN_NOW}=orders")
        body = get_pipeline(api, name)
        first = runs.run_now(direct_rt, name, body["metadata"]["uid"], body["spec"], "orders", [], body)
        second = runs.run_now(direct_rt, name, body["metadata"]["uid"], body["spec"], "orders", [], body)
        jobs = api.list("batch/v1", "Job", ns, selector)
        assert [j["metadata"]["name"] for j in jobs] == first, (first, second)
        assert len(first) == 1 and first[0].startswith("ingest-orders-now-") and second == []
        assert posted_reasons(events) == ["RunNowStarted"]  # no second start, no failure

        # The same request seen after other writes (a newer resourceVersion): still the same Job.
        kubectl("label", "orgpipeline", name, "orgpipeline.io/touched=yes")
        later = get_pipeline(api, name)
        assert later["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"]
        assert (
            runs.run_now(direct_rt, name, later["metadata"]["uid"], later["spec"], "orders", [], later) == []
        )
        assert len(api.list("batch/v1", "Job", ns, selector)) == 1

        # The annotation removed (as the handler does), later written again: a new request, a new Job.
        kubectl("annotate", "orgpipeline", name, f"{naming.ANNOTATION_RUN_NOW}-")
        time.sleep(1.1)  # managedFields times are in seconds
        kubectl("annotate", "orgpipeline", name, f"{naming.ANNOTATION_RUN_NOW}=orders")
        body = get_pipeline(api, name)
        third = runs.run_now(direct_rt, name, body["metadata"]["uid"], body["spec"], "orders", [], body)
        assert len(third) == 1 and third != first
        assert sorted(j["metadata"]["name"] for j in api.list("batch/v1", "Job", ns, selector)) == sorted(
            first + third
        )
    finally:
        kubectl("delete", "orgpipeline", name, "--ignore-not-found", "--wait=false", check=False)
        kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)
