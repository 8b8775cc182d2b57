"""Reading OrgPipeline objects from the cluster that KUBECONFIG names, when there is one.

The management commands work without a cluster (they read the stores); with one, `alerts` reports
what the operator decided (`.status.alerts`) and `retention` takes the policy from the org's spec.
An unset KUBECONFIG or an unreachable API server is not an error: the callers fall back and say so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from orgpipeline_api.v1alpha1 import GROUP, PLURAL, VERSION

TIMEOUT_SECONDS = 5


@dataclass
class ClusterView:
    """The OrgPipelines by org id, or why the cluster could not be read."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    reachable: bool = False
    reason: str = ""


def read_orgpipelines() -> ClusterView:
    path = os.environ.get("KUBECONFIG", "").strip()
    if not path:
        return ClusterView(reason="KUBECONFIG is not set")
    try:
        import kubernetes

        api = kubernetes.config.new_client_from_config(config_file=path.split(os.pathsep)[0])
    except Exception as exc:
        return ClusterView(reason=f"cannot use KUBECONFIG: {str(exc).splitlines()[0] if str(exc) else exc!r}")
    try:
        custom = kubernetes.client.CustomObjectsApi(api)
        listing = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, _request_timeout=TIMEOUT_SECONDS)
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ClusterView(reason=f"cluster unreachable: {text[:200]}")
    finally:
        api.close()
    objects = {}
    items: dict[str, Any] = listing  # type: ignore[assignment]
    for item in items.get("items") or []:
        org = (item.get("spec") or {}).get("orgId")
        if org:
            objects[str(org)] = item
    return ClusterView(objects=objects, reachable=True)


def status_alerts(org_id: str, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The operator's active alerts of one OrgPipeline, in the shape `alerts` prints."""
    from orgpipeline_api.v1alpha1_status import OrgPipelineStatus

    status = OrgPipelineStatus.model_validate(obj.get("status") or {})
    return [
        {
            "org_id": org_id,
            "severity": a.severity.value,
            "type": a.type,
            "table": a.table,
            "message": a.message,
            "since": a.since,
            "source": "cluster",
        }
        for a in status.alerts
    ]
