"""Names, labels, annotations and owner references of everything the operator creates: defined once.

Object names derived from org ids and table names come from `orgpipeline_api.naming`, shared with
the jobs; this module adds the Kubernetes side (labels that select an org's or a table's children,
the owner reference to the OrgPipeline, the annotation that records what was applied).
"""

from __future__ import annotations

from typing import Any

from orgpipeline_api import naming as api_naming
from orgpipeline_api import v1alpha1

MANAGER = "orgpipeline-operator"
"""Field manager of server-side apply, value of app.kubernetes.io/managed-by, Event source."""

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PIPELINE = "orgpipeline.io/pipeline"
LABEL_ORG = "orgpipeline.io/org"
LABEL_TABLE = "orgpipeline.io/table"
LABEL_RUN_KIND = "orgpipeline.io/run"  # scheduled | manual

ANNOTATION_HASH = "orgpipeline.io/applied-hash"
"""Hash of the desired object last applied: equal hash, no write (the idle resync writes nothing)."""
ANNOTATION_RUN_NOW = "orgpipeline.io/run-now"
"""Set by a user on the OrgPipeline (`kubectl annotate ... orgpipeline.io/run-now=orders`)."""

FINALIZER = "orgpipeline.io/finalizer"
SECRET = "orgpipeline-credentials"
CONFIGMAP = "orgpipeline-manifest"
SERVICE_ACCOUNT = "orgpipeline-job"
QUOTA = "orgpipeline-quota"
LIMIT_RANGE = "orgpipeline-limits"
NETWORK_POLICY = "orgpipeline-jobs"
MANIFEST_KEY = "pipeline.yaml"
MANIFEST_DIR = "/etc/orgpipeline"
CONTAINER = "orgpipeline"

MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER}"
"""Label selector of every object the operator made (server-side filter of its watches)."""

namespace = api_naming.namespace
cronjob = api_naming.cronjob


def manual_job_prefix(table: str) -> str:
    """generateName of a run-now Job (the API server appends 5 random characters)."""
    return f"{api_naming.cronjob(table)}-now-"


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
