"""Pure decisions about what belongs to an org: its namespace, its runs, its org id's owner.

Labels say what an object claims to be, and anyone who can create the object can write them. So
ownership is decided by what cannot be forged in advance: uids. The API server assigns an object's
uid when it is created, so a namespace made before an OrgPipeline existed cannot name that
OrgPipeline's uid, and a namespace whose own uid the operator recorded when it created it is the
one it made. A Job counts as an org's run only in the org's namespace and with, as its controller,
the org's OrgPipeline (run-now and file-arrival Jobs) or one of the CronJobs the operator made
there (the CronJob's uid as the watch saw it).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from orgpipeline_api import v1alpha1

from orgpipeline_operator import naming


@dataclass(frozen=True)
class Owner:
    """The OrgPipeline recorded as the owner of an org id (see claims.py), with the uid of the
    namespace the operator made for it (None until made, or for an org claimed before it was kept)."""

    uid: str
    name: str
    namespace_uid: str | None = None


def controller(meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference marked as the object's controller, if any."""
    for ref in meta.get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller"):
            return ref
    return None


def namespace_owned(meta: Mapping[str, Any], pipeline: str, uid: str, recorded_uid: str | None) -> bool:
    """Whether the namespace (its metadata) is the one the operator made for OrgPipeline
    `pipeline` of uid `uid`.

    With the namespace's uid recorded at creation (`recorded_uid`), that alone decides: a namespace
    deleted and made again by someone else has another uid. Without it (an org from before the uid
    was recorded), the namespace must carry the pipeline label and name the OrgPipeline's uid, in
    the owner annotation the operator writes or as its controller: a uid nobody could know before
    the OrgPipeline was created. A namespace someone made for the org id (`kubectl create
    namespace org-x`, labelled or not) is never the operator's.
    """
    if not uid:
        return False
    if recorded_uid:
        return str(meta.get("uid") or "") == recorded_uid
    if (meta.get("labels") or {}).get(naming.LABEL_PIPELINE) != pipeline:
        return False
    if (meta.get("annotations") or {}).get(naming.ANNOTATION_OWNER_UID) == uid:
        return True
    return controlled_by_pipeline(meta, uid)


def controlled_by_pipeline(meta: Mapping[str, Any], pipeline_uid: str) -> bool:
    """Whether the object's controller is the OrgPipeline with this uid."""
    ref = controller(meta)
    return (
        ref is not None
        and ref.get("kind") == v1alpha1.KIND
        and ref.get("apiVersion") == v1alpha1.API_VERSION
        and bool(pipeline_uid)
        and ref.get("uid") == pipeline_uid
    )


def is_org_run(job: Mapping[str, Any], org_id: str, pipeline_uid: str, cronjob_uids: Collection[str]) -> bool:
    """Whether the Job (its metadata, or the whole object) is a run of the org: in namespace
    `org-<id>`, labelled for the org, and controlled by the org's OrgPipeline (`pipeline_uid`:
    run-now and file-arrival Jobs) or by one of the operator's CronJobs of the org (`cronjob_uids`).
    A Job elsewhere with the org's labels, or without such an owner, is someone else's."""
    meta = job["metadata"] if isinstance(job.get("metadata"), Mapping) else job
    if not org_id or str(meta.get("namespace") or "") != naming.namespace(org_id):
        return False
    if (meta.get("labels") or {}).get(naming.LABEL_ORG) != org_id:
        return False
    ref = controller(meta)
    if ref is None or not ref.get("uid"):
        return False
    uid, kind, api_version = str(ref["uid"]), ref.get("kind"), ref.get("apiVersion")
    if kind == v1alpha1.KIND and api_version == v1alpha1.API_VERSION:
        return bool(pipeline_uid) and uid == pipeline_uid
    return kind == "CronJob" and api_version == "batch/v1" and uid in cronjob_uids


def is_org_cronjob(meta: Mapping[str, Any], org_id: str, pipeline_uid: str) -> bool:
    """Whether a CronJob (its metadata) is one the operator made for the org: in the org's namespace
    and controlled by the org's OrgPipeline. Only their Jobs count as scheduled runs."""
    if not org_id or str(meta.get("namespace") or "") != naming.namespace(org_id):
        return False
    return controlled_by_pipeline(meta, pipeline_uid)
