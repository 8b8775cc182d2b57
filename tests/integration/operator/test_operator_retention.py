"""Retention by the operator: the org's retention CronJob, its Job run through the pod runner with the
org's own credentials, and the result in .status.retention, an Event and the metrics."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from operator_helpers import (
    REPO,
    TEST_LABEL,
    Kubectl,
    Operator,
    apply_ready,
    get_pipeline,
    pipeline,
    posted_reasons,
    wait_for,
)
from orgpipeline_operator import kube, naming, retention_runs, runtime
from prometheus_client import REGISTRY

_spec = importlib.util.spec_from_file_location("retention_harness", REPO / "tests" / "e2e" / "harness.py")
assert _spec is not None and _spec.loader is not None
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

CLI = str(Path(sys.executable).with_name("orgpipeline"))


def _org_env(kubectl: Kubectl, org: str, stack: Any) -> dict[str, str]:
    """The environment the org's pods get from its Secret (the org's PostgreSQL role)."""
    secret = kubectl.json("get", "secret", naming.SECRET, "-n", f"org-{org}")
    env = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    info = psycopg.conninfo.conninfo_to_dict(stack.postgres_dsn)
    env["ORGPIPELINE_POSTGRES_DSN"] = psycopg.conninfo.make_conninfo(
        stack.postgres_dsn,
        user=env["ORGPIPELINE_POSTGRES_USER"],
        password=env["ORGPIPELINE_POSTGRES_PASSWORD"],
        dbname=info["dbname"],
    )
    return {**os.environ, **env}


def _run_file(manifest: Path, source: Path, env: dict[str, str], rows: str) -> None:
    """One run of the table over one more file, as the org's role (what its CronJob would do)."""
    n = len(list(source.iterdir())) + 1
    (source / f"orders_{n}.csv").write_text("order_id,amount\n" + rows)
    proc = subprocess.run(
        [CLI, "run", "-f", str(manifest), "--table", "orders", "--source-dir", str(source), "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_retention_cronjob_runs_with_the_org_credentials_and_reports_in_status(
    operator: Operator,
    kubectl: Kubectl,
    api: kube.Kube,
    stack: Any,
    unique_id: str,
    cleanup_pipelines: list[str],
    tmp_path: Path,
) -> None:
    org = f"ret{unique_id}"
    ns, name = f"org-{org}", f"org-{org}"
    manifest = pipeline(org, ["orders"], retention={"keepVersions": 1, "auditLogDays": 30})
    apply_ready(kubectl, api, cleanup_pipelines, manifest)

    # One CronJob for the org, labelled as retention, on the default daily schedule.
    cron = kubectl.json("get", "cronjob", naming.RETENTION_CRONJOB, "-n", ns)
    assert cron["metadata"]["labels"][naming.LABEL_ORG_COMPONENT] == "retention"
    assert cron["spec"]["schedule"] == "@daily" and cron["spec"]["suspend"] is False
    selected = kubectl.json("get", "cronjobs", "-n", ns, "-l", "orgpipeline.io/component=retention")
    assert [c["metadata"]["name"] for c in selected["items"]] == ["retention"]
    status = get_pipeline(api, name)["status"]["retention"]
    assert status == {"cronJob": "retention", "schedule": "@daily", "suspended": False}

    # Two versions of one key: with keepVersions 1, retention deactivates the older one.
    yaml_path = tmp_path / "org.yaml"
    yaml_path.write_text(
        kubectl.json("get", "configmap", naming.CONFIGMAP, "-n", ns)["data"]["pipeline.yaml"]
    )
    source = tmp_path / "files"
    source.mkdir()
    env = _org_env(kubectl, org, stack)
    _run_file(yaml_path, source, env, "A1,10.00\nA2,5.00\n")
    _run_file(yaml_path, source, env, "A1,11.00\n")

    # The CronJob's own Job template, as `kubectl create job --from=cronjob/retention` makes it; the
    # test operator's nodeSelector (no real node may take its pods) is dropped for the pod runner.
    template = cron["spec"]["jobTemplate"]
    template["spec"]["template"]["spec"].pop("nodeSelector", None)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "retention-now",
            "namespace": ns,
            "labels": template["metadata"]["labels"],
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": cron["metadata"]["name"],
                    "uid": cron["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": template["spec"],
    }
    kubectl.apply(job)
    runner_env = {**os.environ, **stack.as_environ()}
    runner = harness.PodRunner(runner_env, tmp_path / "podrunner.log", [ns], tmp_path / "pods")
    try:

        def recorded() -> dict[str, Any] | None:
            last = (get_pipeline(api, name)["status"].get("retention") or {}).get("lastRun")
            return last if last and last.get("job") == "retention-now" else None

        try:
            last = wait_for(recorded, timeout=120, what="the retention run in the status")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; pod runner log:\n{runner.output()}") from None
    finally:
        runner.stop()
    assert last["result"] == "Succeeded", last
    assert last["versionsDeactivated"] == 1
    assert last["auditRowsRemoved"] == 0
    assert last["finishedAt"]

    # The org's role did the work: the older version is inactive in its schema.
    with psycopg.connect(env["ORGPIPELINE_POSTGRES_DSN"], autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT version, is_active FROM "orgdata_{org}".raw_orders '
            "WHERE composite_key LIKE %s ORDER BY version",
            ("%A1%",),
        ).fetchall()
    assert rows == [(1, False), (2, True)]

    metrics = operator.metrics()
    assert f'orgpipeline_retention_versions_deactivated_total{{org="{org}"}} 1.0' in metrics
    assert f'orgpipeline_retention_last_success_timestamp_seconds{{org="{org}"}}' in metrics

    # suspend: the retention CronJob is suspended with the tables'.
    kubectl("patch", "orgpipeline", name, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    wait_for(
        lambda: kubectl.json("get", "cronjob", "retention", "-n", ns)["spec"]["suspend"] is True,
        what="the retention CronJob suspended",
    )
    wait_for(
        lambda: get_pipeline(api, name)["status"]["retention"]["suspended"] is True,
        what="status.retention.suspended",
    )


def test_a_retention_job_read_again_from_a_stale_parent_is_counted_once(
    direct_rt: runtime.Runtime, kubectl: Kubectl, api: kube.Kube, unique_id: str, events: asyncio.Queue[Any]
) -> None:
    """A finished retention Job read a second time with the parent as it was before the first
    reading's status patch (a watch event that crossed the patch): the status holds the run and the
    metrics count it once, not once per reading."""
    org = f"retc{unique_id}"
    name = f"org-{org}"
    manifest = pipeline(org, ["orders"])
    manifest["metadata"]["labels"] = {TEST_LABEL: "none"}  # no operator reconciles it: this test does
    job = {
        "metadata": {
            "name": "retention-29000000",
            "namespace": name,
            "labels": {naming.LABEL_ORG_COMPONENT: naming.COMPONENT_RETENTION},
        },
        "status": {
            "startTime": "2026-01-01T03:00:00Z",
            "completionTime": "2026-01-01T03:00:09Z",
            "conditions": [{"type": "Complete", "status": "True"}],
        },
    }

    def runs() -> float | None:
        labels = {"org": org, "result": "Succeeded"}
        return REGISTRY.get_sample_value("orgpipeline_retention_runs_total", labels)

    kubectl.apply(manifest)
    try:
        stale = get_pipeline(api, name)
        assert retention_runs.record_finished_job(direct_rt, job, stale)
        assert runs() == 1
        assert not retention_runs.record_finished_job(direct_rt, job, stale)
        assert runs() == 1
        assert posted_reasons(events) == ["RetentionSucceeded"]
        last = get_pipeline(api, name)["status"]["retention"]["lastRun"]
        assert (last["job"], last["result"]) == ("retention-29000000", "Succeeded")
    finally:
        kubectl("delete", "orgpipeline", name, "--ignore-not-found", "--wait=false", check=False)
