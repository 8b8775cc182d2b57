"""What belongs to an org (issue 22): its namespace only when the operator made it for the
OrgPipeline, its runs only in its namespace and made by the operator. Forged variants included."""

from __future__ import annotations

from typing import Any

from orgpipeline_operator import naming, ownership

UID = "0d6c7c1e-pipeline-a"
CRON_UID = "9a1b-cron-orders"


def job(
    namespace: str = "org-a", org: str = "a", owners: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    labels = {naming.LABEL_PIPELINE: "org-a", naming.LABEL_ORG: org, naming.LABEL_TABLE: "orders"}
    refs = owners if owners is not None else [naming.owner_reference("org-a", UID)]
    return {
        "metadata": {
            "name": "ingest-orders-x",
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": refs,
        }
    }


def cron_ref(uid: str = CRON_UID, **kw: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "name": "ingest-orders",
        "uid": uid,
        "controller": True,
        **kw,
    }


def is_run(j: dict[str, Any]) -> bool:
    return ownership.is_org_run(j, "a", UID, {CRON_UID})


def test_the_operators_own_jobs_are_runs() -> None:
    assert is_run(job())  # run-now / file arrival: controlled by the OrgPipeline
    assert is_run(job(owners=[cron_ref()]))  # scheduled: controlled by the operator's CronJob
    assert is_run(job()["metadata"])  # the metadata alone decides


def test_a_job_in_another_namespace_with_the_orgs_labels_is_not_a_run() -> None:
    assert not is_run(job(namespace="default"))
    assert not is_run(job(namespace="org-b"))  # org B's namespace, org A's labels and owner
    assert not is_run(job(namespace="org-a-evil"))
    assert not is_run(job(namespace="ORG-A"))
    assert not is_run(job(namespace=""))


def test_a_job_in_the_orgs_namespace_without_the_operators_owner_is_not_a_run() -> None:
    assert not is_run(job(owners=[]))
    not_controller = {**naming.owner_reference("org-a", UID), "controller": False}
    assert not is_run(job(owners=[not_controller]))
    assert not is_run(job(owners=[naming.owner_reference("org-a", "another-uid")]))  # same name, other uid
    assert not is_run(job(owners=[cron_ref(uid="someone-elses-cron")]))  # a CronJob not the operator's
    assert not is_run(job(owners=[cron_ref(kind="Deployment")]))
    assert not is_run(job(owners=[cron_ref(apiVersion="batch/v1beta1")]))
    assert not is_run(job(owners=[{**naming.owner_reference("org-a", UID), "apiVersion": "evil.io/v1"}]))


def test_a_job_of_org_b_with_org_as_labels_is_not_org_as_run() -> None:
    """In org B's namespace with org A's labels: neither A's run (namespace) nor B's (labels)."""
    forged = job(namespace="org-b", org="a")
    assert not ownership.is_org_run(forged, "a", UID, {CRON_UID})
    assert not ownership.is_org_run(forged, "b", "uid-b", {CRON_UID})
    # and a Job in A's namespace labelled for another org is not A's run either
    assert not is_run(job(org="b"))


def test_a_cronjob_is_the_operators_only_in_the_orgs_namespace_under_the_orgpipeline() -> None:
    meta = {"namespace": "org-a", "ownerReferences": [naming.owner_reference("org-a", UID)]}
    assert ownership.is_org_cronjob(meta, "a", UID)
    assert not ownership.is_org_cronjob({**meta, "namespace": "org-b"}, "a", UID)
    assert not ownership.is_org_cronjob({**meta, "ownerReferences": []}, "a", UID)
    assert not ownership.is_org_cronjob(meta, "a", "other-uid")


def ns(
    labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None, **kw: Any
) -> dict[str, Any]:
    return {
        "name": "org-a",
        "uid": "ns-uid-1",
        "labels": labels or {},
        "annotations": annotations or {},
        **kw,
    }


def test_a_namespace_is_the_operators_only_when_made_for_the_orgpipelines_uid() -> None:
    mine = ns({naming.LABEL_PIPELINE: "org-a"}, {naming.ANNOTATION_OWNER_UID: UID})
    assert ownership.namespace_owned(mine, "org-a", UID, None)
    legacy = ns({naming.LABEL_PIPELINE: "org-a"}, ownerReferences=[naming.owner_reference("org-a", UID)])
    assert ownership.namespace_owned(legacy, "org-a", UID, None)  # made before the annotation existed


def test_a_namespace_someone_else_made_is_never_adopted() -> None:
    assert not ownership.namespace_owned(ns(), "org-a", UID, None)  # kubectl create namespace org-a
    forged_label = ns({naming.LABEL_PIPELINE: "org-a"})
    assert not ownership.namespace_owned(forged_label, "org-a", UID, None)
    wrong_uid = ns({naming.LABEL_PIPELINE: "org-a"}, {naming.ANNOTATION_OWNER_UID: "guessed"})
    assert not ownership.namespace_owned(wrong_uid, "org-a", UID, None)
    other_pipeline = ns({naming.LABEL_PIPELINE: "org-b"}, {naming.ANNOTATION_OWNER_UID: UID})
    assert not ownership.namespace_owned(other_pipeline, "org-a", UID, None)
    assert not ownership.namespace_owned(ns({naming.LABEL_PIPELINE: "org-a"}), "org-a", "", None)


def test_a_recorded_namespace_uid_decides_alone() -> None:
    """Deleted and made again by someone who copied every label and annotation: another uid."""
    copied = ns({naming.LABEL_PIPELINE: "org-a"}, {naming.ANNOTATION_OWNER_UID: UID}, uid="ns-uid-2")
    assert not ownership.namespace_owned(copied, "org-a", UID, "ns-uid-1")
    assert ownership.namespace_owned({**copied, "uid": "ns-uid-1"}, "org-a", UID, "ns-uid-1")


def test_the_jobs_the_operator_makes_are_runs_of_their_org() -> None:
    """Run-now and file-arrival Jobs carry the OrgPipeline as controller, so the check can hold."""
    from pathlib import Path

    import yaml
    from orgpipeline_api import triggers
    from orgpipeline_api.v1alpha1 import OrgPipelineSpec
    from orgpipeline_operator import builders

    doc = yaml.safe_load((Path(__file__).resolve().parents[3] / "examples" / "org-123.yaml").read_text())
    target = builders.Target("org-123", UID, OrgPipelineSpec.model_validate(doc["spec"]))
    table = target.spec.tables[0]
    manual = builders.build_manual_job(
        target, table, "2026-01-01T00:00:00Z", triggers.RunTrigger.of(triggers.Trigger.run_now, None, "")
    )
    arrival = builders.build_file_arrival_job(target, table, "batch-1", "new object")
    for made in (manual, arrival):
        assert ownership.is_org_run(made, "123", UID, set())
        assert not ownership.is_org_run(made, "123", "another-uid", set())
    namespace = builders.build_namespace(target)
    assert namespace["metadata"]["annotations"][naming.ANNOTATION_OWNER_UID] == UID
