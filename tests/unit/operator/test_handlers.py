"""The Kopf handlers with the objects Kopf passes, on the paths that must touch nothing: no server,
no runtime (the memo's runtime is None, so any request would fail the test)."""

from __future__ import annotations

from typing import Any

import kopf
from orgpipeline_operator import cache, main, resync

NO_RUNTIME = kopf.Memo(rt=None)
PIPELINE: dict[str, Any] = {
    "apiVersion": "orgpipeline.io/v1alpha1",
    "kind": "OrgPipeline",
    "metadata": {"name": "org-123", "uid": "u1", "generation": 1},
    "spec": {"orgId": "123"},
    "status": {},
}


def test_run_now_without_a_value_leaves_the_annotation_alone() -> None:
    patch = kopf.Patch()
    main.run_now(name="org-123", body=kopf.Body(PIPELINE), new="", memo=NO_RUNTIME, patch=patch)
    assert patch == {}


def test_a_running_or_deleted_job_records_nothing() -> None:
    running = {"metadata": {"name": "ingest-orders-1", "labels": {}}, "status": {"active": 1}}
    main.job_event(body=kopf.Body(running), type="MODIFIED", labels={}, memo=NO_RUNTIME)
    done = {**running, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    main.job_event(body=kopf.Body(done), type="DELETED", labels={}, memo=NO_RUNTIME)


def test_the_resync_of_an_object_being_deleted_or_gone_does_nothing() -> None:
    deleting = {**PIPELINE, "metadata": {**PIPELINE["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    cache.CACHE.pipeline("MODIFIED", deleting)
    try:
        assert "org-123" not in cache.CACHE.resyncable()
        resync.resync(NO_RUNTIME.rt, "org-123", 3600)
    finally:
        cache.CACHE.pipeline("DELETED", deleting)
    resync.resync(NO_RUNTIME.rt, "org-123", 3600)  # gone from the cache


def test_deleting_a_pipeline_that_never_had_a_valid_org_touches_nothing() -> None:
    for org_id in ("", "Not_An_Org"):
        body = {**PIPELINE, "spec": {"orgId": org_id, "deletionPolicy": "Delete"}}
        main.delete_pipeline(name="org-123", body=kopf.Body(body), memo=NO_RUNTIME)
