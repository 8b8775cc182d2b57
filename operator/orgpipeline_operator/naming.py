"""Names, labels, annotations and owner references of everything the operator creates: defined once.

Object names derived from org ids and table names come from `orgpipeline_api.store_names`, shared with
the jobs; this module adds the Kubernetes side (labels that select an org's or a table's children,
the owner reference to the OrgPipeline, the annotation that records what was applied).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from orgpipeline_api import store_names as api_naming
from orgpipeline_api import triggers, v1alpha1

MANAGER = "orgpipeline-operator"
"""Field manager of server-side apply, value of app.kubernetes.io/managed-by, Event source."""

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PIPELINE = "orgpipeline.io/pipeline"
LABEL_ORG = "orgpipeline.io/org"
LABEL_TABLE = "orgpipeline.io/table"
LABEL_RUN_KIND = "orgpipeline.io/run"  # scheduled | manual | file-arrival
LABEL_ORG_COMPONENT = "orgpipeline.io/component"
"""On the retention CronJob, its Jobs and pods: `retention` (what selects them; ingest Jobs carry a table)."""
COMPONENT_RETENTION = "retention"

ANNOTATION_HASH = "orgpipeline.io/applied-hash"
"""Hash of the desired object last applied: equal hash, no write (the idle resync writes nothing)."""
ANNOTATION_OWNER_UID = "orgpipeline.io/owner-uid"
"""On the org's namespace: the uid of the OrgPipeline it was made for, written when the operator
creates it (a namespace made by anyone else cannot know that uid in advance; see ownership.py)."""
ANNOTATION_RUN_NOW = triggers.ANNOTATION_RUN_NOW
"""Set by a user on the OrgPipeline (`kubectl annotate ... orgpipeline.io/run-now=orders`)."""
RUN_NOW_ANNOTATIONS = (
    triggers.ANNOTATION_RUN_NOW,
    triggers.ANNOTATION_RUN_NOW_REQUESTER,
    triggers.ANNOTATION_RUN_NOW_REASON,
)
"""A run-now request: removed together once served, so a later plain request has no stale requester."""
ANNOTATION_RUN_NOW_FIELD = f"f:{ANNOTATION_RUN_NOW}"
"""The annotation's key in a managedFields entry's fieldsV1 (under f:metadata, f:annotations)."""

FINALIZER = "orgpipeline.io/finalizer"
SECRET = "orgpipeline-credentials"
CONFIGMAP = "orgpipeline-manifest"
SERVICE_ACCOUNT = "orgpipeline-job"
QUOTA = "orgpipeline-quota"
LIMIT_RANGE = "orgpipeline-limits"
NETWORK_POLICY = "orgpipeline-jobs"
ROLE_BINDING = "orgpipeline-operator"
"""In each org namespace: binds the tenant ClusterRole to the operator's own ServiceAccount."""
MANIFEST_KEY = "pipeline.yaml"
MANIFEST_DIR = "/etc/orgpipeline"
CONTAINER = "orgpipeline"

MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER}"
"""Label selector of every object the operator made (server-side filter of its watches)."""

namespace = api_naming.namespace
cronjob = api_naming.cronjob
RETENTION_CRONJOB = api_naming.RETENTION_CRONJOB


def manual_job_prefix(table: str) -> str:
    """What every run-now Job's name starts with (`manual_job_name` appends the request's hash)."""
    return f"{api_naming.cronjob(table)}-now-"


MANUAL_JOB_HASH_LENGTH = 10
"""Hex digits of the request hash: `ingest-` + a table of at most 40 + `-now-` + 10 = 62 <= 63."""


def run_now_requested_at(metadata: Mapping[str, Any]) -> str:
    """What identifies one run-now request: when the annotation was last written.

    The `time` of the metadata.managedFields entry that owns the annotation (the latest, should
    several); the same in every event of one request (also one that still carries the annotation
    after the operator's own status writes), new with every `kubectl annotate --overwrite`. Without
    such an entry, the object's resourceVersion (`rv:` prefixed).
    """
    times = [
        str(entry.get("time"))
        for entry in metadata.get("managedFields") or []
        if entry.get("time")
        and ANNOTATION_RUN_NOW_FIELD
        in (((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations") or {})
    ]
    return max(times) if times else f"rv:{metadata.get('resourceVersion') or ''}"


def run_now_manager(metadata: Mapping[str, Any]) -> str | None:
    """The field manager that last wrote the run-now annotation (`kubectl-annotate`, ...): all the
    API server tells of who asked when the request names no requester."""
    entries = [
        entry
        for entry in metadata.get("managedFields") or []
        if ANNOTATION_RUN_NOW_FIELD
        in (((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations") or {})
    ]
    if not entries:
        return None
    latest = max(entries, key=lambda e: str(e.get("time") or ""))
    manager = latest.get("manager")
    return str(manager) if manager else None


def manual_job_name(uid: str, table: str, requested_at: str) -> str:
    """The run-now Job of one request for one table: `ingest-<table>-now-<hash>`, deterministic.

    A repeat of the same request (the handler run twice) names the same Job, so its create fails
    with AlreadyExists instead of starting a second run; a new request gets a new name. Two requests
    written within the same second share it (managedFields times are in seconds): one run.
    """
    key = "\0".join((uid, table, requested_at)).encode()
    digest = hashlib.sha256(key).hexdigest()[:MANUAL_JOB_HASH_LENGTH]
    return manual_job_prefix(table) + digest


def file_job_name(uid: str, table: str, batch_id: str) -> str:
    """The Job of one batch of arrived files for one table: `ingest-<table>-file-<hash>`
    (`ingest-` + a table of at most 40 + `-file-` + 10 = 63), deterministic like `manual_job_name`."""
    digest = hashlib.sha256("\0".join((uid, table, batch_id)).encode()).hexdigest()[:MANUAL_JOB_HASH_LENGTH]
    return f"{api_naming.cronjob(table)}-file-{digest}"


def labels(
    pipeline: str, org_id: str, table: str | None = None, component: str | None = None
) -> dict[str, str]:
    """The labels every child carries: who manages it, which OrgPipeline and org, which table."""
    out = {
        LABEL_MANAGED_BY: MANAGER,
        LABEL_PART_OF: "orgpipeline",
        LABEL_PIPELINE: pipeline,
        LABEL_ORG: org_id,
    }
    if component:
        out[LABEL_COMPONENT] = component
    if table:
        out[LABEL_TABLE] = table
    return out


def owner_reference(pipeline: str, uid: str) -> dict[str, Any]:
    """The ownerReference to the OrgPipeline (cluster-scoped, so valid on namespaced children too)."""
    return {
        "apiVersion": v1alpha1.API_VERSION,
        "kind": v1alpha1.KIND,
        "name": pipeline,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(
    name: str,
    pipeline: str,
    uid: str,
    org_id: str,
    namespace: str | None,
    table: str | None = None,
    component: str | None = None,
) -> dict[str, Any]:
    """Metadata of a child: name, namespace, labels and the owner reference."""
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = labels(pipeline, org_id, table, component)
    meta["ownerReferences"] = [owner_reference(pipeline, uid)]
    return meta
