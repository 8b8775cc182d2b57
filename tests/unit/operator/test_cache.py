"""The operator's watch cache: org id claims (oldest wins), children and Jobs per pipeline."""

from __future__ import annotations

from typing import Any

from orgpipeline_operator import cache, naming
from orgpipeline_operator.cache import Cache
from orgpipeline_operator.ownership import Owner


def pipeline(name: str, org: str, created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"u-{name}", "creationTimestamp": created},
        "spec": {"orgId": org},
    }


def test_the_recorded_owner_owns_the_org_and_its_deletion_hands_it_to_nobody() -> None:
    """The owner is what PostgreSQL recorded (claims.py), not the oldest claimant: once the owner
    goes, a second OrgPipeline with the same orgId does not inherit the org (it was refused)."""
    c = Cache()
    c.pipeline("ADDED", pipeline("b", "42", "2026-01-02T00:00:00Z"))
    c.pipeline("ADDED", pipeline("a", "42", "2026-01-01T00:00:00Z"))
    assert c.org_owner("42") is None  # nothing recorded yet: nobody routes file arrivals to either
    c.set_org_owner("42", Owner("u-a", "a"))
    assert c.org_owner("42") is None  # claimed, its namespace not made yet: no runs
    c.set_org_owner("42", Owner("u-a", "a", "ns-uid"))
    c.refuse("42", "u-b")
    assert c.org_owner("42") == "a" and c.refused("42", "u-b")
    c.pipeline("DELETED", pipeline("a", "42", "2026-01-01T00:00:00Z"))
    c.release_org("42", "u-b")  # a refused one's deletion releases nothing of the owner's
    assert c.org_owner("42") == "a"
    c.release_org("42", "u-a")
    assert c.org_owner("42") is None
    assert c.org_owner_record("42") is None


def test_a_recorded_owner_moves_the_specs_version() -> None:
    """File arrivals are routed over the recorded owners: a new owner rebuilds the routing index."""
    c = Cache()
    before = c.specs_version()
    c.set_org_owner("1", Owner("u", "a"))
    assert c.specs_version() != before
    same = c.specs_version()
    c.set_org_owner("1", Owner("u", "a"))
    assert c.specs_version() == same


def test_repeated_events_keep_one_claim_per_pipeline() -> None:
    c = Cache()
    for i in range(100):
        c.pipeline("ADDED", pipeline(f"p{i}", str(i)))
    for _ in range(3):
        for i in range(100):
            c.pipeline("MODIFIED", pipeline(f"p{i}", str(i)))
    assert len(c._claim) == 100 and c._claim["p7"] == "7"
    c.pipeline("MODIFIED", {"metadata": {"name": "p7", "uid": "u-p7"}, "spec": {}})  # no org id
    assert "p7" not in c._claim


def run_now_job(name: str, pipeline_name: str, org: str, **meta: Any) -> dict[str, Any]:
    """A Job as the operator makes it for a run-now request (its OrgPipeline is its controller)."""
    labels = {naming.LABEL_PIPELINE: pipeline_name, naming.LABEL_ORG: org, naming.LABEL_TABLE: "orders"}
    base = {
        "name": name,
        "namespace": f"org-{org}",
        "labels": labels,
        "ownerReferences": [naming.owner_reference(pipeline_name, f"u-{pipeline_name}")],
    }
    return {"metadata": {**base, **meta}}


def test_children_and_jobs_go_with_their_pipeline() -> None:
    c = Cache()
    c.pipeline("ADDED", pipeline("a", "1"))
    labels = {naming.LABEL_PIPELINE: "a", naming.LABEL_TABLE: "orders"}
    cron = {
        "kind": "CronJob",
        "metadata": {
            "name": "ingest-orders",
            "namespace": "org-1",
            "labels": labels,
            "annotations": {naming.ANNOTATION_HASH: "h1"},
        },
    }
    c.child("ADDED", cron)
    c.job("ADDED", run_now_job("j1", "a", "1"), finished=False)
    assert c.children_of("a") == {("CronJob", "org-1", "ingest-orders"): "h1"}
    assert c.jobs_of("a") == [("orders", "j1", False)]
    c.child("DELETED", cron)
    assert c.children_of("a") == {}
    c.pipeline("DELETED", pipeline("a", "1"))
    assert c.jobs_of("a") == [] and c.pipeline_snapshot("a") is None


def test_a_quiet_fingerprint_is_kept_until_the_pipeline_goes() -> None:
    c = Cache()
    assert c.quiet("a") is None
    c.set_quiet("a", ("x",))  # unknown pipeline: not kept
    assert c.quiet("a") is None
    c.pipeline("ADDED", pipeline("a", "1"))
    c.set_quiet("a", ("x",))
    assert c.quiet("a") == ("x",)
    c.pipeline("DELETED", pipeline("a", "1"))
    assert c.quiet("a") is None


def test_the_quiet_fingerprint_moves_with_the_object_and_its_watched_children() -> None:
    from orgpipeline_operator.reconcile import Request, quiet_fingerprint

    def req(rv: str, children: dict[tuple[str, str, str], str | None]) -> Request:
        return Request("a", "u", 1, rv, {}, {}, "resync", children, None)

    cron = ("CronJob", "org-1", "ingest-orders")
    base = quiet_fingerprint(req("1", {cron: "h"}))
    assert quiet_fingerprint(req("1", {cron: "h"})) == base
    assert quiet_fingerprint(req("2", {cron: "h"})) != base  # spec, status or metadata changed
    assert quiet_fingerprint(req("1", {cron: "edited"})) != base  # a child edited
    assert quiet_fingerprint(req("1", {})) != base  # a child deleted


def test_the_deep_resync_comes_once_per_interval_the_first_spread_by_name() -> None:
    c = Cache()
    assert not c.deep_due("a", 100, now=0)  # the first call sets the first due time
    firsts = []
    for name in ("a", "b", "c", "d"):
        c.deep_due(name, 100, now=0)
        t = next(t for t in range(0, 200) if c.deep_due(name, 100, now=t))
        firsts.append(t)
    assert all(100 <= t <= 126 for t in firsts) and len(set(firsts)) > 1
    assert not c.deep_due("a", 100, now=firsts[0] + 50)
    assert c.deep_due("a", 100, now=firsts[0] + 100)


def test_a_fresh_listing_drops_the_children_of_its_kind_it_no_longer_has() -> None:
    c = Cache()
    labels = {naming.LABEL_PIPELINE: "a"}
    for kind, name in (("CronJob", "ingest-x"), ("CronJob", "ingest-y"), ("Secret", "creds")):
        c.child("ADDED", {"kind": kind, "metadata": {"name": name, "namespace": "org-1", "labels": labels}})
    c.keep_only("CronJob", {("CronJob", "org-1", "ingest-x")})
    assert set(c.children_of("a")) == {("CronJob", "org-1", "ingest-x"), ("Secret", "org-1", "creds")}


def test_the_pipeline_kept_is_a_copy_with_what_a_reconcile_reads() -> None:
    c = Cache()
    body = {
        "apiVersion": "orgpipeline.io/v1alpha1",
        "kind": "OrgPipeline",
        "metadata": {"name": "a", "uid": "u", "resourceVersion": "7", "generation": 2, "managedFields": [{}]},
        "spec": {"orgId": "1", "tables": [{"name": "t"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    c.pipeline("ADDED", body)
    kept = c.pipeline_snapshot("a")
    assert kept is not None
    assert kept["spec"] == body["spec"] and kept["status"] == body["status"]
    assert kept["metadata"]["resourceVersion"] == "7" and "managedFields" not in kept["metadata"]
    assert (kept["apiVersion"], kept["kind"]) == ("orgpipeline.io/v1alpha1", "OrgPipeline")
    kept["spec"]["tables"].append({"name": "u"})  # the caller's own copy
    assert c.pipeline_snapshot("a") == {**kept, "spec": body["spec"]}
    assert c.resyncable() == ["a"] and [p["metadata"]["name"] for p in c.pipelines()] == ["a"]


def test_only_the_orgs_own_runs_are_its_jobs() -> None:
    """Forged Jobs (the org's labels elsewhere, or no operator owner) are not runs: they block no
    run-now or file arrival. A scheduled run counts once its CronJob is watched, whatever came first."""
    c = Cache()
    c.pipeline("ADDED", pipeline("a", "1"))
    c.pipeline("ADDED", pipeline("b", "2"))
    labels_a = {naming.LABEL_PIPELINE: "a", naming.LABEL_ORG: "1", naming.LABEL_TABLE: "orders"}
    cron_ref = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "name": "ingest-orders",
        "uid": "c-1",
        "controller": True,
    }
    c.job("ADDED", run_now_job("elsewhere", "a", "1", namespace="org-2"), finished=False)
    c.job("ADDED", run_now_job("no-owner", "a", "1", ownerReferences=[]), finished=False)
    c.job(
        "ADDED",
        run_now_job("other-uid", "a", "1", ownerReferences=[naming.owner_reference("a", "u-x")]),
        False,
    )
    scheduled = {"name": "sched", "namespace": "org-1", "labels": labels_a, "ownerReferences": [cron_ref]}
    c.job("ADDED", {"metadata": scheduled}, finished=False)
    assert c.jobs_of("a") == []  # the CronJob is not watched yet
    cron_meta = {
        "name": "ingest-orders",
        "namespace": "org-1",
        "uid": "c-1",
        "labels": labels_a,
        "ownerReferences": [naming.owner_reference("a", "u-a")],
    }
    c.child("ADDED", {"kind": "CronJob", "metadata": cron_meta})
    assert c.jobs_of("a") == [("orders", "sched", False)]
    assert c.cronjob_uids("a") == {"c-1"}
    # A CronJob with the pipeline's labels that the OrgPipeline does not control is not the operator's.
    forged_cron = {**cron_meta, "name": "ingest-x", "uid": "c-2", "ownerReferences": []}
    c.child("ADDED", {"kind": "CronJob", "metadata": forged_cron})
    assert c.cronjob_uids("a") == {"c-1"}
    c.child("DELETED", {"kind": "CronJob", "metadata": cron_meta})
    assert c.jobs_of("a") == []


def test_a_deletion_names_its_pipeline_only_when_someone_else_deleted_the_child() -> None:
    """The watch asks for a heal of the pipeline on a DELETED event of a child the cache still had:
    the operator forgets the children it deletes itself before their event comes."""
    c = Cache()
    labels = {naming.LABEL_PIPELINE: "a"}
    cron = {"kind": "CronJob", "metadata": {"name": "ingest-x", "namespace": "org-1", "labels": labels}}
    c.child("ADDED", cron)
    assert c.child("DELETED", cron) == "a"
    assert c.child("DELETED", cron) is None  # already forgotten (the operator's own prune)
    c.child("ADDED", cron)
    assert c.keep_only("CronJob", set()) == {"a"}
    assert c.keep_only("CronJob", set()) == set()


def test_a_child_whose_spec_someone_else_wrote_is_drifted_and_named_for_a_heal() -> None:
    """The CronJob controller's status writes (a subresource) and the operator's own applies are no
    drift; another manager owning spec fields (kubectl edit, patch) is."""
    c = Cache()
    labels = {naming.LABEL_PIPELINE: "a"}
    ours = {"manager": naming.MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {}}}
    status = {"manager": "kube-controller-manager", "subresource": "status", "fieldsV1": {"f:status": {}}}
    meta: dict[str, Any] = {
        "name": "ingest-x",
        "namespace": "org-1",
        "labels": labels,
        "annotations": {naming.ANNOTATION_HASH: "h1"},
        "managedFields": [ours, status],
    }
    assert c.child("MODIFIED", {"kind": "CronJob", "metadata": meta}) is None
    assert c.children_of("a") == {("CronJob", "org-1", "ingest-x"): "h1"}
    edit = {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:spec": {"f:schedule": {}}}}
    meta["managedFields"] = [ours, status, edit]
    assert c.child("MODIFIED", {"kind": "CronJob", "metadata": meta}) == "a"
    assert c.children_of("a") == {("CronJob", "org-1", "ingest-x"): cache.DRIFTED}


def test_any_content_someone_else_wrote_is_drift_labels_and_annotations_are_not() -> None:
    """Every child kind is watched (issue 24): a ConfigMap's or Secret's data, a RoleBinding's
    subjects are content as a CronJob's spec is; a label or annotation someone adds is not; a child
    being deleted (a namespace in Terminating) asks for a heal too."""
    c = Cache()
    labels = {naming.LABEL_PIPELINE: "a"}
    ours = {"manager": naming.MANAGER, "operation": "Apply", "fieldsV1": {"f:data": {}}}

    def seen(kind: str, *entries: dict[str, Any], **extra: Any) -> str | None:
        meta = {"name": "x", "namespace": "org-1", "labels": labels, "managedFields": [ours, *entries]}
        return c.child("MODIFIED", {"kind": kind, "metadata": {**meta, **extra}})

    label = {"manager": "kubectl-label", "operation": "Update", "fieldsV1": {"f:metadata": {"f:labels": {}}}}
    assert seen("ConfigMap", label) is None
    for kind, field in (("ConfigMap", "f:data"), ("Secret", "f:data"), ("RoleBinding", "f:subjects")):
        edit = {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {field: {}}}
        assert seen(kind, edit) == "a", kind
    assert seen("Namespace", deletionTimestamp="2026-01-01T00:00:00Z") == "a"


def test_a_listing_of_one_namespace_drops_only_that_namespaces_children() -> None:
    """Secrets are listed per org namespace: one namespace's listing says nothing of another's."""
    c = Cache()
    for ns in ("org-1", "org-2"):
        labels = {naming.LABEL_PIPELINE: f"p{ns[-1]}"}
        c.child("ADDED", {"kind": "Secret", "metadata": {"name": "s", "namespace": ns, "labels": labels}})
    assert c.keep_only("Secret", set(), "org-1") == {"p1"}
    assert ("Secret", "org-2", "s") in c.children_of("p2")
