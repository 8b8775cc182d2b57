"""Every kind the operator talks to, once: how to reach it, what the operator does with it, and the
RBAC verbs that takes. kube.py (paths), builders.py (watched kinds), watch.py, snapshot.py,
reconcile.py (what it prunes) read this table, and a unit test holds the chart's rbac.yaml to it:
a new child or a narrower rule is one edit here (and the matching line of rbac.yaml).

The verbs come in three scopes (issue 22: no cluster-wide Secret read, Secrets and Jobs only where
the operator manages): `verbs` cluster-wide (the ClusterRole), `tenant_verbs` only inside the org
namespaces (the `-tenant` ClusterRole, which the operator binds to its own ServiceAccount with a
RoleBinding child in each namespace it makes), `home_verbs` only in the operator's own namespace (a
Role: the orgs' spec.source.credentialsSecret Secrets).
"""

from __future__ import annotations

from dataclasses import dataclass

from orgpipeline_api import v1alpha1


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool
    verbs: tuple[str, ...]
    """What the operator's ClusterRole grants on it (exactly what the operator and Kopf send)."""
    tenant_verbs: tuple[str, ...] = ()  # granted in the org namespaces only (the tenant ClusterRole)
    home_verbs: tuple[str, ...] = ()  # granted in the operator's namespace only (a Role)
    resource_names: tuple[str, ...] = ()  # `verbs` only on these objects (TENANT_ROLE: the tenant role)
    child: bool = False  # made per org (builders.desired_children)
    watched: bool = False  # followed cluster-wide by watch.py into the cache (metadata only)
    namespace_watched: bool = False  # followed by watch.py in each org namespace (tenant_verbs)
    prunable: bool = False  # deleted by the reconcile when no longer desired
    listed: bool = False  # listed once at start-up (snapshot.py) to verify every org at once
    subresources: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (subresource, verbs)

    @property
    def group(self) -> str:
        """The API group ("" for the core group)."""
        return self.api_version.rpartition("/")[0]


_APPLIED = ("get", "list", "create", "patch")  # server-side applied, read back, listed at start-up
_WATCHED = (*_APPLIED, "watch")  # and followed (label-selected, metadata only): repaired at once
TENANT_ROLE = "<fullname>-tenant"
"""The chart's tenant ClusterRole (ORGPIPELINE_TENANT_ROLE), as `resource_names` names it."""

KINDS: tuple[Kind, ...] = (
    # The org's children, in the order they are made.
    # Every child is watched (issue 24): one deleted or changed behind the operator is put back
    # within seconds of the event, and Ready says False meanwhile if it cannot be.
    Kind(
        "v1", "Namespace", "namespaces", False, (*_WATCHED, "delete"), child=True, watched=True, listed=True
    ),
    # What lets the operator at the org's Secrets and Jobs (the tenant ClusterRole, bound to the
    # operator alone): made right after the namespace, before anything that needs it. Creating it
    # takes `bind` on that one ClusterRole; the chart's ValidatingAdmissionPolicy allows it only in
    # namespaces the operator made (so a stolen token cannot bind it in kube-system).
    Kind(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "rolebindings",
        True,
        _WATCHED,
        child=True,
        watched=True,
        listed=True,
    ),
    Kind("v1", "ServiceAccount", "serviceaccounts", True, _WATCHED, child=True, watched=True, listed=True),
    Kind("v1", "ResourceQuota", "resourcequotas", True, _WATCHED, child=True, watched=True, listed=True),
    Kind("v1", "LimitRange", "limitranges", True, _WATCHED, child=True, watched=True, listed=True),
    Kind(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "networkpolicies",
        True,
        _WATCHED,
        child=True,
        watched=True,
        listed=True,
    ),
    Kind("v1", "ConfigMap", "configmaps", True, _WATCHED, child=True, watched=True, listed=True),
    # Never read cluster-wide (issue 22): watched (metadata only) in each org namespace through the
    # tenant role, not listed at start-up (read back with a GET on resume). The org's own in its
    # namespace; the orgs' credentialsSecrets (read only) in the operator's.
    Kind(
        "v1",
        "Secret",
        "secrets",
        True,
        (),
        tenant_verbs=("get", "list", "watch", "create", "patch"),
        home_verbs=("get",),
        child=True,
        namespace_watched=True,
    ),
    Kind(
        "batch/v1",
        "CronJob",
        "cronjobs",
        True,
        (*_APPLIED, "watch", "delete"),
        child=True,
        watched=True,
        prunable=True,
        listed=True,
    ),
    # Runs: run-now and file-arrival Jobs made (in the org namespaces only), finished Jobs read back
    # (Kopf watches them; which count as runs is ownership.py's business).
    Kind("batch/v1", "Job", "jobs", True, ("get", "list", "watch"), tenant_verbs=("create",)),
    # `bind` on the tenant ClusterRole alone: what RBAC asks of whoever makes a RoleBinding to a role
    # whose permissions it does not hold itself.
    Kind(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "clusterroles",
        False,
        ("bind",),
        resource_names=(TENANT_ROLE,),
    ),
    # The termination message of a finished Job's pods (listed by the job-name label).
    Kind("v1", "Pod", "pods", True, ("list",)),
    # Events about OrgPipelines: Kopf posts core Events; nothing reads them.
    Kind("v1", "Event", "events", True, ("create",)),
    Kind("events.k8s.io/v1", "Event", "events", True, ("create",)),
    # The custom resource: watched, annotated and finalized by Kopf, status written back; children
    # carry ownerReferences with blockOwnerDeletion (the finalizers subresource).
    Kind(
        v1alpha1.API_VERSION,
        v1alpha1.KIND,
        v1alpha1.PLURAL,
        False,
        ("get", "list", "watch", "patch"),
        subresources=(("status", ("get", "patch")), ("finalizers", ("update",))),
    ),
    # The Lease that elects the active replica (leadership.py), in the operator's namespace.
    Kind("coordination.k8s.io/v1", "Lease", "leases", True, (), home_verbs=("get", "create", "update")),
    # Kopf discovers and follows the CRD.
    Kind(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        False,
        ("get", "list", "watch"),
    ),
)


def resources() -> dict[tuple[str, str], tuple[str, bool]]:
    """(apiVersion, kind) -> (plural, namespaced): how kube.py builds paths."""
    return {(k.api_version, k.kind): (k.plural, k.namespaced) for k in KINDS}


def children() -> tuple[Kind, ...]:
    return tuple(k for k in KINDS if k.child)


def watched() -> tuple[tuple[str, str], ...]:
    """(apiVersion, kind) of the children watch.py follows cluster-wide."""
    return tuple((k.api_version, k.kind) for k in KINDS if k.watched)


def namespace_watched() -> tuple[tuple[str, str], ...]:
    """(apiVersion, kind) of the children watch.py follows in each org namespace."""
    return tuple((k.api_version, k.kind) for k in KINDS if k.namespace_watched)


def watched_names() -> frozenset[str]:
    """Every child kind whose objects the cache follows (either way)."""
    return frozenset(k.kind for k in KINDS if k.watched or k.namespace_watched)


def listed() -> tuple[tuple[str, str], ...]:
    """(apiVersion, kind) of the children listed at start-up."""
    return tuple((k.api_version, k.kind) for k in KINDS if k.listed)


def prunable() -> frozenset[str]:
    return frozenset(k.kind for k in KINDS if k.prunable)


def api_version(kind: str) -> str:
    """The apiVersion of a child kind (children's kinds are unique by name)."""
    return next(k.api_version for k in KINDS if k.kind == kind and k.child)


def rbac_rules() -> set[tuple[str, str, str, tuple[str, ...]]]:
    """(apiGroup, resource, verb, resourceNames) of every permission the table needs cluster-wide:
    what the ClusterRole grants (resourceNames empty: on every object of the resource)."""
    out = set()
    for k in KINDS:
        out |= {(k.group, k.plural, verb, k.resource_names) for verb in k.verbs}
        for sub, verbs in k.subresources:
            out |= {(k.group, f"{k.plural}/{sub}", verb, ()) for verb in verbs}
    return out


def tenant_rules() -> set[tuple[str, str, str]]:
    """What the tenant ClusterRole grants: the operator's permissions inside an org namespace."""
    return {(k.group, k.plural, verb) for k in KINDS for verb in k.tenant_verbs}


def home_rules() -> set[tuple[str, str, str]]:
    """What the Role in the operator's own namespace grants."""
    return {(k.group, k.plural, verb) for k in KINDS for verb in k.home_verbs}
