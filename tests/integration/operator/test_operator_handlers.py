"""The operator's handlers called in this process with the objects Kopf passes them (body, spec,
status, patch, memo), against the stack's real API server and databases: no operator subprocess,
no watch, no Kopf machinery. The OrgPipelines here lack the test label, so the operator subprocess
of the other tests leaves them alone."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest
from operator_helpers import pipeline, posted_reasons, report_message, write_terminated
from orgpipeline_api import store_names, v1alpha1
from orgpipeline_operator import database, kube, main, naming, operator_settings, resync, runs, runtime


@pytest.fixture(scope="module")
def rt(stack: Any, kube_api: Any) -> Iterator[runtime.Runtime]:
    """What the startup handler puts in the memo, on the stack's servers."""
    env = {**os.environ, **stack.as_environ(), "ORGPIPELINE_NAMESPACE": "default"}
    conf = operator_settings.from_env({**env, "ORGPIPELINE_RETRY_SECONDS": "1"})
    db = database.Databases(conf.postgres_dsn, conf.mongo_uri, conf.mongo_db)
    made = runtime.Runtime(settings=conf, kube=kube.Kube(kube_api), db=db)
    yield made
    made.db.close()


@pytest.fixture(scope="module")
def resyncer(rt: runtime.Runtime) -> Iterator[resync.Resyncer]:
    """The resync loop the startup handler puts beside it (never started here: no resyncs)."""
    loop = resync.Resyncer(rt, main.RESYNC_SECONDS, main.DEEP_RESYNC_SECONDS, 1)
    yield loop
    loop.close()


def _memo(rt: runtime.Runtime, resyncer: resync.Resyncer) -> kopf.Memo:
    return kopf.Memo(rt=rt, resyncer=resyncer)


def _get(rt: runtime.Runtime, name: str) -> dict[str, Any]:
    found = rt.kube.get(v1alpha1.API_VERSION, v1alpha1.KIND, name)
    assert found is not None
    return found


@pytest.fixture()
def created(
    rt: runtime.Runtime, resyncer: resync.Resyncer, events: asyncio.Queue[Any]
) -> Iterator[dict[str, Any]]:
    """An OrgPipeline reconciled by the create handler; deleted (data and namespace) afterwards."""
    org = f"h{uuid.uuid4().hex[:8]}"
    manifest = pipeline(org)
    manifest["metadata"]["labels"] = {}
    rt.kube.create(manifest)
    name = manifest["metadata"]["name"]
    body = _get(rt, name)
    main.reconcile_pipeline(name=name, body=kopf.Body(body), memo=_memo(rt, resyncer), reason="create")
    yield _get(rt, name)
    body = _get(rt, name)
    main.delete_pipeline(name=name, body=kopf.Body(body), memo=_memo(rt, resyncer))
    rt.kube.delete(v1alpha1.API_VERSION, v1alpha1.KIND, name)


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def test_create_handler_provisions_and_writes_status(
    rt: runtime.Runtime, created: dict[str, Any], pg: Any
) -> None:
    org = created["spec"]["orgId"]
    ns = naming.namespace(org)
    assert _condition(created, "Ready")["status"] == "True", created["status"]
    assert created["status"]["namespace"] == ns and created["status"]["tableCount"] == 1
    assert rt.kube.get("batch/v1", "CronJob", naming.cronjob("orders"), ns) is not None
    assert _schema_exists(pg, org)


def test_run_now_handler_makes_a_job_and_clears_the_annotation(
    rt: runtime.Runtime, created: dict[str, Any]
) -> None:
    name, ns = created["metadata"]["name"], created["status"]["namespace"]
    patch = kopf.Patch()
    main.run_now(name=name, body=kopf.Body(created), new="orders", memo=kopf.Memo(rt=rt), patch=patch)
    # the request is removed whole: table, requester and reason
    assert patch["metadata"]["annotations"] == dict.fromkeys(naming.RUN_NOW_ANNOTATIONS)
    jobs = rt.kube.list("batch/v1", "Job", ns, f"{naming.LABEL_TABLE}=orders")
    assert len(jobs) == 1 and jobs[0]["metadata"]["name"].startswith("ingest-orders-now-")


JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def _finished_job(rt: runtime.Runtime, pipeline_obj: dict[str, Any], message: str) -> dict[str, Any]:
    """A Job of the org's orders table that completed, with the pod that carries `message`."""
    ns, name = pipeline_obj["status"]["namespace"], f"ingest-orders-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    pod = rt.kube.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-pod",
                "namespace": ns,
                "labels": {"batch.kubernetes.io/job-name": name},
            },
            "spec": {
                "nodeSelector": {"orgpipeline.io/no-such-node": "true"},
                "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [
                    {
                        "name": naming.CONTAINER,
                        "image": "orgpipeline:dev",
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        }
    )
    write_terminated(rt.kube, ns, pod, 0, message)
    # As the operator makes a run-now Job: in the org's namespace, labelled for the org, controlled
    # by the OrgPipeline (only such a Job counts as the org's run).
    meta = pipeline_obj["metadata"]
    labels = naming.labels(meta["name"], pipeline_obj["spec"]["orgId"], "orders")
    owners = [naming.owner_reference(meta["name"], meta["uid"])]
    return {
        "metadata": {"name": name, "namespace": ns, "labels": labels, "ownerReferences": owners},
        "status": {
            "startTime": now,
            "completionTime": now,
            "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": now}],
        },
    }


def test_a_finished_job_becomes_the_last_run_and_its_alerts(
    rt: runtime.Runtime, created: dict[str, Any], events: asyncio.Queue[Any]
) -> None:
    org = created["spec"]["orgId"]
    posted_reasons(events)
    job = _finished_job(rt, created, report_message(org, "orders", qualityScore=0.5))
    assert runs.record_finished_job(rt, job, created)
    after = _get(rt, created["metadata"]["name"])
    last = after["status"]["tables"][0]["lastRun"]
    assert (last["job"], last["result"], last["rowsRead"], last["qualityScore"]) == (
        job["metadata"]["name"],
        "Succeeded",
        100,
        0.5,
    )
    assert [(a["type"], a["severity"]) for a in after["status"]["alerts"]] == [
        ("QualityBelowThreshold", "critical")
    ]
    assert posted_reasons(events) == ["RunSucceeded", "QualityBelowThreshold"]
    assert not runs.record_finished_job(rt, job, after)  # recorded once


def test_an_unreadable_report_is_a_failed_run_not_a_crash(
    rt: runtime.Runtime, created: dict[str, Any]
) -> None:
    cut = report_message(created["spec"]["orgId"], "orders", files=["f" * 5000])[:4000]
    assert runs.record_finished_job(rt, _finished_job(rt, created, cut), created)
    after = _get(rt, created["metadata"]["name"])
    last = after["status"]["tables"][0]["lastRun"]
    assert last["result"] == "Failed" and last["error"].startswith("unreadable result:")
    assert _condition(after, "Healthy")["status"] == "False"


def _schema_exists(pg: Any, org: str) -> bool:
    query = "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s"
    return pg.execute(query, (store_names.pg_schema(org),)).fetchone() is not None


def test_delete_handler_drops_the_org(
    rt: runtime.Runtime, resyncer: resync.Resyncer, created: dict[str, Any], pg: Any
) -> None:
    name, org = created["metadata"]["name"], created["spec"]["orgId"]
    main.delete_pipeline(name=name, body=kopf.Body(_get(rt, name)), memo=_memo(rt, resyncer))
    namespace = rt.kube.get("v1", "Namespace", naming.namespace(org))
    assert namespace is None or namespace["metadata"].get("deletionTimestamp")
    assert not _schema_exists(pg, org)
