"""The operator's watch cache: org id claims (oldest wins), children and Jobs per pipeline."""

from __future__ import annotations

from typing import Any

from orgpipeline_operator import naming
from orgpipeline_operator.cache import Cache


def pipeline(name: str, org: str, created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"u-{name}", "creationTimestamp": created},
        "spec": {"orgId": org},
    }


def test_oldest_claim_owns_the_org_and_a_deleted_owner_hands_it_on() -> None:
    c = Cache()
    c.pipeline("ADDED", pipeline("b", "42", "2026-01-02T00:00:00Z"))
    c.pipeline("ADDED", pipeline("a", "42", "2026-01-01T00:00:00Z"))
    assert c.org_owner("42") == "a"
    c.pipeline("DELETED", pipeline("a", "42", "2026-01-01T00:00:00Z"))
    assert c.org_owner("42") == "b"
    c.pipeline("DELETED", pipeline("b", "42", "2026-01-02T00:00:00Z"))
    assert c.org_owner("42") is None


def test_a_changed_org_id_moves_the_claim() -> None:
    c = Cache()
    c.pipeline("ADDED", pipeline("a", "1"))
    c.pipeline("MODIFIED", pipeline("a", "2"))
    assert c.org_owner("1") is None
    assert c.org_owner("2") == "a"
    c.pipeline("MODIFIED", {"metadata": {"name": "a"}, "spec": {}})  # no org id: no claim at all
    assert c.org_owner("2") is None


def test_repeated_events_keep_one_claim_per_pipeline() -> None:
    c = Cache()
    for i in range(100):
        c.pipeline("ADDED", pipeline(f"p{i}", str(i)))
    for _ in range(3):
        for i in range(100):
            c.pipeline("MODIFIED", pipeline(f"p{i}", str(i)))
    assert all(c.org_owner(str(i)) == f"p{i}" for i in range(100))
    assert len(c._orgs) == 100 and all(len(claims) == 1 for claims in c._orgs.values())


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
    c.job("ADDED", {"metadata": {"name": "j1", "labels": labels}}, finished=False)
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
