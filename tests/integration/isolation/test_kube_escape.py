"""Kubernetes escapes (issue 22, items 4 and 5), tried on the real API server against a running
operator: a namespace someone else made for an org id is not adopted; a second OrgPipeline with an
org id already held is refused and never inherits the org, nor can its deletion drop the first
owner's data; Jobs the operator did not make (the org's labels in another namespace, or in the
org's namespace without the operator's owner) neither block a run-now nor become the org's lastRun.
Each one got through before the fix."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
from operator_helpers import (
    TEST_LABEL,
    Kubectl,
    Operator,
    condition,
    get_pipeline,
    operator_env,
    pipeline,
    report_message,
    running_operator,  # the operator tests' helpers (on the path just above)
    wait_for,
    wait_ready,
    write_terminated,
)
from orgpipeline_api import store_names
from orgpipeline_operator import kube, naming

ESCAPE_LABEL = "kube-escape"
"""The OrgPipelines of this file are reconciled by this file's operator alone."""
API = "orgpipeline.io/v1alpha1"


@pytest.fixture(scope="module")
def kubectl(stack: Any) -> Kubectl:
    return Kubectl(os.environ["PATH"], stack.kubeconfig)  # the stack fixture put kubectl on PATH


@pytest.fixture(scope="module")
def api(kube_api: Any) -> kube.Kube:
    return kube.Kube(kube_api)


@pytest.fixture(scope="module")
def escape_operator(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """`orgpipeline-operator` as a subprocess, as the operator tests run it (short resyncs)."""
    env = operator_env(stack, f"{TEST_LABEL}={ESCAPE_LABEL}", resync=2)
    with running_operator(env, tmp_path_factory.mktemp("kube-escape") / "operator.log") as op:
        yield op


@pytest.fixture()
def cleanup(kubectl: Kubectl) -> Iterator[list[tuple[str, ...]]]:
    """(kind, name[, namespace]) deleted after the test, in reverse order (the operator still runs)."""
    made: list[tuple[str, ...]] = []
    yield made
    for kind, name, *ns in reversed(made):
        where = ["-n", ns[0]] if ns else []
        kubectl("delete", kind, name, *where, "--ignore-not-found", "--timeout=60s", check=False)


def _manifest(org: str, name: str | None = None, **spec: Any) -> dict[str, Any]:
    manifest = pipeline(org, **spec)
    manifest["metadata"]["labels"] = {TEST_LABEL: ESCAPE_LABEL}
    if name:
        manifest["metadata"]["name"] = name
    return manifest


def _waited(op: Operator, fn: Any, what: str, timeout: float = 60) -> Any:
    try:
        return wait_for(fn, timeout=timeout, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{op.log.read_text()[-3000:]}") from None


def _ready(api: kube.Kube, name: str) -> dict[str, Any]:
    return condition(get_pipeline(api, name), "Ready")


def _managed_in(kubectl: Kubectl, ns: str) -> list[str]:
    """Every object of the operator's kinds in the namespace (what an adopted namespace would hold)."""
    kinds = "secrets,configmaps,serviceaccounts,resourcequotas,limitranges,networkpolicies,cronjobs,jobs"
    items = kubectl.json("get", kinds, "-n", ns)["items"]
    return sorted(
        f"{i['kind']}/{i['metadata']['name']}"
        for i in items
        if not (i["kind"] == "ServiceAccount" and i["metadata"]["name"] == "default")
        and not (i["kind"] == "ConfigMap" and i["metadata"]["name"] == "kube-root-ca.crt")
    )


# --- a namespace someone else made -----------------------------------------------------------

FORGERIES = {
    "plain": ({}, {}),
    "forged-pipeline-label": ({naming.LABEL_PIPELINE: "NAME"}, {}),
    "forged-every-mark": (
        {naming.LABEL_PIPELINE: "NAME", naming.LABEL_MANAGED_BY: naming.MANAGER, naming.LABEL_ORG: "ORG"},
        {naming.ANNOTATION_OWNER_UID: "00000000-0000-0000-0000-000000000000"},
    ),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_namespace_someone_else_made_is_not_adopted(
    escape_operator: Operator,
    kubectl: Kubectl,
    api: kube.Kube,
    unique_id: str,
    cleanup: list[tuple[str, ...]],
    forgery: str,
) -> None:
    org = f"grab{unique_id}"
    ns, name = naming.namespace(org), f"org-{org}"
    labels, annotations = FORGERIES[forgery]
    meta: dict[str, Any] = {
        "name": ns,
        "labels": {k: v.replace("NAME", name).replace("ORG", org) for k, v in labels.items()},
        "annotations": annotations,
    }
    cleanup.append(("namespace", ns))
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
    before = kubectl.json("get", "namespace", ns)["metadata"]

    cleanup.append(("orgpipeline", name))
    kubectl.apply(_manifest(org))
    ready = _waited(
        escape_operator,
        lambda: (c := _ready(api, name)).get("reason") == "NamespaceNotOwned" and c,
        "Ready False NamespaceNotOwned",
    )
    assert ready["status"] == "False" and ns in ready["message"], ready
    # A run-now makes no Job in it either.
    kubectl("annotate", "--overwrite", "orgpipeline", name, f"{naming.ANNOTATION_RUN_NOW}=orders")
    # Several resyncs later: nothing of the operator's was written into it, its marks are as made.
    for _ in range(3):
        time.sleep(2)
        assert _managed_in(kubectl, ns) == []
    after = kubectl.json("get", "namespace", ns)["metadata"]
    assert (after.get("labels"), after.get("annotations"), after["uid"]) == (
        before.get("labels"),
        before.get("annotations"),
        before["uid"],
    )
    assert not (after.get("ownerReferences") or [])
    assert _ready(api, name)["reason"] == "NamespaceNotOwned"

    # Once that namespace is gone, the org starts in a namespace the operator makes for it.
    kubectl("delete", "namespace", ns, "--wait=true", "--timeout=60s")
    obj = wait_ready(api, name, timeout=60)
    made = kubectl.json("get", "namespace", ns)["metadata"]
    assert made["annotations"][naming.ANNOTATION_OWNER_UID] == obj["metadata"]["uid"]
    assert made["uid"] != before["uid"]


# --- a second OrgPipeline with an org id already held -----------------------------------------


def _schema_marker(conn: Any, org: str) -> list[tuple[Any, ...]]:
    schema = store_names.pg_schema(org)
    found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    if found is None:
        return []
    return list(conn.execute(f'SELECT note FROM "{schema}".escape_marker').fetchall())


def test_a_second_orgpipeline_for_a_held_org_id_is_refused_for_good(
    escape_operator: Operator,
    kubectl: Kubectl,
    api: kube.Kube,
    stack: Any,
    mongo: Any,
    unique_id: str,
    cleanup: list[tuple[str, ...]],
) -> None:
    org = f"dup{unique_id}"
    ns, first, second = naming.namespace(org), f"org-{org}", f"org-{org}-second"
    collection = mongo[store_names.mongo_database(org)][store_names.mongo_collection(org, "orders")]
    cleanup.append(("orgpipeline", second))
    cleanup.append(("orgpipeline", first))
    # The first owner keeps its data when deleted (Retain): the org's data outlives it.
    kubectl.apply(_manifest(org, deletionPolicy="Retain"))
    owner_uid = wait_ready(api, first)["metadata"]["uid"]
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
        schema = store_names.pg_schema(org)
        conn.execute(f'CREATE TABLE "{schema}".escape_marker (note text)')
        conn.execute(f'INSERT INTO "{schema}".escape_marker VALUES (%s)', ("the first org's row",))
    collection.insert_one({"note": "the first org's document"})
    try:
        # The second, with deletionPolicy Delete: refused.
        kubectl.apply(_manifest(org, name=second, deletionPolicy="Delete"))
        refused = _waited(
            escape_operator,
            lambda: (c := _ready(api, second)).get("reason") == "OrgIdConflict" and c,
            "the second refused",
        )
        assert first in refused["message"]
        # Its run-now makes no Job in the owner's namespace (it would run with the owner's Secret).
        kubectl("annotate", "--overwrite", "orgpipeline", second, f"{naming.ANNOTATION_RUN_NOW}=orders")
        time.sleep(3)
        assert api.list("batch/v1", "Job", ns, f"{naming.LABEL_PIPELINE}={second}") == []

        # The owner goes; the second stays refused and never takes the org.
        kubectl("delete", "orgpipeline", first, "--timeout=60s")
        wait_for(
            lambda: kubectl("get", "namespace", ns, check=False).returncode != 0, timeout=60, what="ns gone"
        )
        for _ in range(4):  # a few resyncs (2 s apart)
            time.sleep(2)
            assert _ready(api, second)["reason"] == "OrgIdConflict"
            assert kubectl("get", "namespace", ns, check=False).returncode != 0  # not made for the second

        # Its deletion, Delete or not, leaves the first org's schema and collections as they were.
        kubectl("delete", "orgpipeline", second, "--timeout=60s")
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
            assert _schema_marker(conn, org) == [("the first org's row",)]
            role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (store_names.pg_role(org),))
            assert role.fetchone() is not None
        assert collection.count_documents({"note": "the first org's document"}) == 1

        # After the owner is gone, an OrgPipeline created anew takes the id (and its data).
        third = f"org-{org}-third"
        cleanup.append(("orgpipeline", third))
        kubectl.apply(_manifest(org, name=third, deletionPolicy="Delete"))
        obj = wait_ready(api, third, timeout=60)
        assert obj["metadata"]["uid"] != owner_uid
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
            assert _schema_marker(conn, org) == [("the first org's row",)]
    finally:
        collection.drop()


# --- Jobs the operator did not make -----------------------------------------------------------


def _forged_job(
    name: str, ns: str, org: str, pipeline_name: str, template: dict[str, Any], owners: list[Any]
) -> dict[str, Any]:
    labels = {**naming.labels(pipeline_name, org, "orders", "ingest"), naming.LABEL_RUN_KIND: "manual"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "ownerReferences": owners},
        "spec": template,
    }


def test_jobs_the_operator_did_not_make_are_not_the_orgs_runs(
    escape_operator: Operator,
    kubectl: Kubectl,
    api: kube.Kube,
    unique_id: str,
    cleanup: list[tuple[str, ...]],
) -> None:
    org, other = f"jobs{unique_id}", f"jobo{unique_id}"
    ns, name, other_ns = naming.namespace(org), f"org-{org}", naming.namespace(other)
    plain_ns = f"forge-{unique_id}"
    cleanup.append(("orgpipeline", name))
    cleanup.append(("orgpipeline", f"org-{other}"))
    cleanup.append(("namespace", plain_ns))
    kubectl.apply(_manifest(org))
    kubectl.apply(_manifest(other))
    wait_ready(api, name)
    wait_ready(api, f"org-{other}")
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": plain_ns}})
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": naming.SERVICE_ACCOUNT}}
    kubectl("apply", "-n", plain_ns, "-f", "-", input=json.dumps(account))

    # The org's own job spec (a valid pod for its restricted namespace), copied by the forger.
    cron = kubectl.json("get", "cronjob", naming.cronjob("orders"), "-n", ns)
    template = cron["spec"]["jobTemplate"]["spec"]
    # A CronJob in the org's namespace that the operator did not make, to own one forged Job.
    fake_cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "ingest-orders-copy", "namespace": ns},
        "spec": {"schedule": "@yearly", "suspend": True, "jobTemplate": {"spec": template}},
    }
    kubectl.apply(fake_cron)
    fake_uid = kubectl.json("get", "cronjob", "ingest-orders-copy", "-n", ns)["metadata"]["uid"]
    fake_ref = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "name": "ingest-orders-copy",
        "uid": fake_uid,
        "controller": True,
    }
    forged = {
        "in-a-plain-namespace": _forged_job("ingest-orders-forged-a", plain_ns, org, name, template, []),
        "in-another-orgs-namespace": _forged_job("ingest-orders-forged-b", other_ns, org, name, template, []),
        "in-the-org-namespace-no-owner": _forged_job("ingest-orders-forged-c", ns, org, name, template, []),
        "owned-by-a-cronjob-not-the-operators": _forged_job(
            "ingest-orders-forged-d", ns, org, name, template, [fake_ref]
        ),
    }
    for job in forged.values():
        kubectl.apply(job)

    # Run-now is not blocked by the forged (running) Jobs: the operator makes its own Job.
    forged_names = {j["metadata"]["name"] for j in forged.values()}
    kubectl("annotate", "--overwrite", "orgpipeline", name, f"{naming.ANNOTATION_RUN_NOW}=orders")

    def run_now_job() -> str | None:
        jobs = api.list("batch/v1", "Job", ns, f"{naming.LABEL_TABLE}=orders")
        mine = [j["metadata"]["name"] for j in jobs if j["metadata"]["name"] not in forged_names]
        return mine[0] if mine else None

    made = _waited(escape_operator, run_now_job, "the run-now Job (not blocked by forged Jobs)", timeout=30)
    assert made.startswith(naming.manual_job_prefix("orders"))

    # The forged Jobs finish with a report; none of them becomes the org's lastRun.
    for job in forged.values():
        job_ns, job_name = job["metadata"]["namespace"], job["metadata"]["name"]

        def pod(job_ns: str = job_ns, job_name: str = job_name) -> dict[str, Any] | None:
            pods = api.list("v1", "Pod", job_ns, f"batch.kubernetes.io/job-name={job_name}")
            return pods[0] if pods else None

        found = wait_for(pod, timeout=30, what=f"the pod of {job_name}")
        write_terminated(api, job_ns, found, 0, report_message(org, "orders", runId=job_name, rowsRead=4242))

    def all_complete() -> bool:
        for job in forged.values():
            got = api.get("batch/v1", "Job", job["metadata"]["name"], job["metadata"]["namespace"]) or {}
            conds = (got.get("status") or {}).get("conditions") or []
            if not any(c["type"] == "Complete" and c["status"] == "True" for c in conds):
                return False
        return True

    wait_for(all_complete, timeout=60, what="the forged Jobs complete")
    for _ in range(3):  # the Job events, then a few resyncs (each looks at finished Jobs)
        time.sleep(2)
        tables = get_pipeline(api, name)["status"].get("tables") or []
        assert all(not t.get("lastRun") for t in tables), tables
