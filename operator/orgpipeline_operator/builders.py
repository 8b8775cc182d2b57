"""Pure builders: an OrgPipeline spec in, the desired child objects out (plain dicts, no API calls).

Each builder returns one complete object as server-side apply wants it. `desired_children` lists
them in creation order and stamps each with the hash of its content, which is how the reconcile
knows, without a request, that a child is already as desired.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import yaml
from orgpipeline_api import triggers, v1alpha1
from orgpipeline_api.v1alpha1 import OrgPipelineSpec, Table, TableTrigger

from orgpipeline_operator import kinds, naming, tiers

RUN_AS = 10001
"""uid and gid of the jobs' pods: the image's own user (Dockerfile `USER 10001:10001`)."""
TERMINATION_LOG = "/dev/termination-log"


@dataclass(frozen=True)
class JobSettings:
    """What the jobs need from the operator's settings (a subset, so builders stay pure)."""

    image: str = "orgpipeline:dev"
    image_pull_policy: str = "IfNotPresent"
    egress_ports: tuple[int, ...] = (5432, 27017, 443)
    node_selector: tuple[tuple[str, str], ...] = ()
    tenant_binding: tuple[str, str, str] | None = None
    """(tenant ClusterRole, operator's namespace, operator's ServiceAccount): the org namespace's
    RoleBinding, the operator's only access to Secrets and Job creation there (None: not made)."""


@dataclass(frozen=True)
class Target:
    """The OrgPipeline being reconciled: its name, uid and validated spec."""

    name: str
    uid: str
    spec: OrgPipelineSpec
    jobs: JobSettings = JobSettings()

    @property
    def org(self) -> str:
        return self.spec.org_id

    @property
    def namespace(self) -> str:
        return naming.namespace(self.spec.org_id)

    def meta(
        self, name: str, *, namespaced: bool = True, table: str | None = None, component: str | None = None
    ) -> dict[str, Any]:
        ns = self.namespace if namespaced else None
        return naming.metadata(name, self.name, self.uid, self.org, ns, table, component)


@dataclass(frozen=True)
class Credentials:
    """The org's connection settings, as its jobs see them (the Secret's content)."""

    postgres_user: str
    postgres_password: str
    postgres_host: str
    postgres_port: str
    postgres_db: str
    mongo_uri: str
    mongo_db: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str

    @property
    def postgres_dsn(self) -> str:
        return (
            f"postgresql://{self.postgres_user}:{self.postgres_password}@{self.postgres_host}:"
            f"{self.postgres_port}/{self.postgres_db}"
        )

    def env(self) -> dict[str, str]:
        return {
            "ORGPIPELINE_POSTGRES_DSN": self.postgres_dsn,
            "ORGPIPELINE_POSTGRES_USER": self.postgres_user,
            "ORGPIPELINE_POSTGRES_PASSWORD": self.postgres_password,
            "ORGPIPELINE_MONGO_URI": self.mongo_uri,
            "ORGPIPELINE_MONGO_DB": self.mongo_db,
            "ORGPIPELINE_S3_ENDPOINT": self.s3_endpoint,
            "ORGPIPELINE_S3_ACCESS_KEY": self.s3_access_key,
            "ORGPIPELINE_S3_SECRET_KEY": self.s3_secret_key,
        }


def content_hash(obj: dict[str, Any]) -> str:
    """A stable hash of an object's content (without the hash annotation itself)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def stamp(obj: dict[str, Any], digest: str | None = None) -> dict[str, Any]:
    """Records the content hash in the object's annotations (computed here unless given)."""
    digest = digest or content_hash(obj)
    obj["metadata"].setdefault("annotations", {})[naming.ANNOTATION_HASH] = digest
    return obj


def applied_hash(obj: dict[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(naming.ANNOTATION_HASH)


# --- the children ----------------------------------------------------------------------------


def build_namespace(t: Target) -> dict[str, Any]:
    meta = t.meta(t.namespace, namespaced=False)
    for mode in ("enforce", "audit", "warn"):
        meta["labels"][f"pod-security.kubernetes.io/{mode}"] = "restricted"
        meta["labels"][f"pod-security.kubernetes.io/{mode}-version"] = "latest"
    meta["annotations"] = {naming.ANNOTATION_OWNER_UID: t.uid}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def build_role_binding(t: Target) -> dict[str, Any] | None:
    """The tenant ClusterRole bound to the operator's ServiceAccount, in the org namespace only
    (the chart's admission policy refuses this binding anywhere the operator did not make)."""
    if t.jobs.tenant_binding is None:
        return None
    role, namespace, account = t.jobs.tenant_binding
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": t.meta(naming.ROLE_BINDING),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }


def build_service_account(t: Target) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": t.meta(naming.SERVICE_ACCOUNT),
        "automountServiceAccountToken": False,
    }


def build_resource_quota(t: Target) -> dict[str, Any]:
    r = tiers.of(t.spec.tier)
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": t.meta(naming.QUOTA),
        "spec": {
            "hard": {
                "requests.cpu": r.quota_cpu_requests,
                "requests.memory": r.quota_memory_requests,
                "limits.cpu": r.quota_cpu_limits,
                "limits.memory": r.quota_memory_limits,
                "pods": str(r.quota_pods),
                "services": "0",
                "persistentvolumeclaims": "0",
            }
        },
    }


def build_limit_range(t: Target) -> dict[str, Any]:
    r = tiers.of(t.spec.tier)
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": t.meta(naming.LIMIT_RANGE),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": {"cpu": r.cpu_limit, "memory": r.memory_limit},
                    "defaultRequest": {"cpu": r.cpu_request, "memory": r.memory_request},
                    "max": {"cpu": r.cpu_limit, "memory": r.memory_limit},
                }
            ]
        },
    }


def build_network_policy(t: Target) -> dict[str, Any]:
    """No ingress at all; egress only to DNS and to the ports of PostgreSQL, MongoDB and S3."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": t.meta(naming.NETWORK_POLICY),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [
                {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {"ports": [{"protocol": "TCP", "port": p} for p in sorted(t.jobs.egress_ports)]},
            ],
        },
    }


def manifest_yaml(t: Target) -> str:
    """The manifest the jobs read (`orgpipeline run -f /etc/orgpipeline/pipeline.yaml`)."""
    doc = {
        "apiVersion": v1alpha1.API_VERSION,
        "kind": v1alpha1.KIND,
        "metadata": {"name": t.name},
        "spec": t.spec.model_dump(by_alias=True, mode="json", exclude_none=True),
    }
    return yaml.dump(doc, Dumper=_DUMPER, sort_keys=False)


# libyaml's emitter: the pure-Python one took ~5 ms of the ~6 ms it costs to build an org's children
# (every create, update, resume and deep resync builds them). Same YAML for what manifests hold
# (it may fold a very long escaped string differently: still the same document).
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def build_config_map(t: Target) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": t.meta(naming.CONFIGMAP),
        "data": {naming.MANIFEST_KEY: manifest_yaml(t)},
    }


def build_secret(t: Target, creds: Credentials) -> dict[str, Any]:
    """The org's credentials. Its hash leaves the password out: the password is generated once and
    kept, so the desired Secret can be compared without reading the current one."""
    public = {**creds.env(), "ORGPIPELINE_POSTGRES_PASSWORD": "", "ORGPIPELINE_POSTGRES_DSN": ""}
    # The org's MongoDB URI logs in with the same password: hashed without it.
    public["ORGPIPELINE_MONGO_URI"] = re.sub(r"^([a-z+]+://[^:@/]*:)[^@/]*@", r"\1@", creds.mongo_uri)
    digest = content_hash({"meta": t.meta(naming.SECRET), "env": public})
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": t.meta(naming.SECRET),
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in creds.env().items()},
    }
    return stamp(secret, digest)


def _run_command(table: Table) -> list[str]:
    manifest = f"{naming.MANIFEST_DIR}/{naming.MANIFEST_KEY}"
    return ["orgpipeline", "run", "-f", manifest, "--table", table.name, "-o", "json"]


def _retention_command(t: Target) -> list[str]:
    manifest = f"{naming.MANIFEST_DIR}/{naming.MANIFEST_KEY}"
    return ["orgpipeline", "retention", "--org-id", t.org, "-f", manifest, "-o", "json"]


def _pod_spec(t: Target, command: list[str], trigger: triggers.RunTrigger | None = None) -> dict[str, Any]:
    """The pod of a run (`trigger`: who and why, in its env) or of a retention pass."""
    r = tiers.of(t.spec.tier)
    spec: dict[str, Any] = {
        "serviceAccountName": naming.SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": naming.CONTAINER,
                "image": t.jobs.image,
                "imagePullPolicy": t.jobs.image_pull_policy,
                "command": command,
                "envFrom": [{"secretRef": {"name": naming.SECRET}}],
                "env": [
                    {"name": "ORGPIPELINE_TERMINATION_LOG", "value": TERMINATION_LOG},
                    *(trigger.job_env() if trigger else []),
                ],
                "resources": {
                    "requests": {"cpu": r.cpu_request, "memory": r.memory_request},
                    "limits": {"cpu": r.cpu_limit, "memory": r.memory_limit},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "terminationMessagePath": TERMINATION_LOG,
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "volumeMounts": [
                    {"name": "manifest", "mountPath": naming.MANIFEST_DIR, "readOnly": True},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }
        ],
        "volumes": [
            {"name": "manifest", "configMap": {"name": naming.CONFIGMAP}},
            {"name": "tmp", "emptyDir": {"sizeLimit": r.tmp_size}},
        ],
    }
    if t.jobs.node_selector:
        spec["nodeSelector"] = dict(t.jobs.node_selector)
    return spec


def build_job_spec(t: Target, table: Table, trigger: triggers.RunTrigger) -> dict[str, Any]:
    """The job spec of the table's runs; `trigger` goes into the container's env (who and why)."""
    r = tiers.of(t.spec.tier)
    return {
        "backoffLimit": 2,
        "activeDeadlineSeconds": r.active_deadline_seconds,
        "ttlSecondsAfterFinished": 3 * 86400,
        "template": {
            "metadata": {"labels": naming.labels(t.name, t.org, table.name, "ingest")},
            "spec": _pod_spec(t, _run_command(table), trigger),
        },
    }


def build_cronjob(t: Target, table: Table) -> dict[str, Any]:
    """The table's CronJob: runs `orgpipeline run --table <name>` on the table's schedule."""
    job_labels = naming.labels(t.name, t.org, table.name, "ingest")
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": t.meta(naming.cronjob(table.name), table=table.name, component="ingest"),
        "spec": {
            "schedule": table.schedule,
            "timeZone": "Etc/UTC",
            # A table started by file arrivals only keeps its CronJob (the job template) suspended.
            "suspend": bool(t.spec.suspend or table.suspend or table.trigger == TableTrigger.fileArrival),
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 300,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": {**job_labels, naming.LABEL_RUN_KIND: "scheduled"}},
                "spec": build_job_spec(t, table, triggers.scheduled(naming.cronjob(table.name))),
            },
        },
    }


def build_retention_cronjob(t: Target) -> dict[str, Any]:
    """The org's retention CronJob: `orgpipeline retention` with the org's own credentials, on
    spec.retention.schedule; it deactivates old versions and deletes old audit rows of every table."""
    component = naming.COMPONENT_RETENTION
    meta = t.meta(naming.RETENTION_CRONJOB, component=component)
    meta["labels"][naming.LABEL_ORG_COMPONENT] = component
    job_labels = {**naming.labels(t.name, t.org, None, component), naming.LABEL_ORG_COMPONENT: component}
    r = tiers.of(t.spec.tier)
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": meta,
        "spec": {
            "schedule": t.spec.retention.schedule,
            "timeZone": "Etc/UTC",
            "suspend": bool(t.spec.suspend),
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": {**job_labels, naming.LABEL_RUN_KIND: "scheduled"}},
                "spec": {
                    "backoffLimit": 2,
                    "activeDeadlineSeconds": r.active_deadline_seconds,
                    "ttlSecondsAfterFinished": 3 * 86400,
                    "template": {
                        "metadata": {"labels": job_labels},
                        "spec": _pod_spec(t, _retention_command(t)),
                    },
                },
            },
        },
    }


def build_manual_job(
    t: Target, table: Table, requested_at: str, trigger: triggers.RunTrigger
) -> dict[str, Any]:
    """A one-off Job with the table's CronJob's job spec (what `kubectl create job --from` makes),
    started by `trigger` (a run-now request: its requester and reason).

    Named from the run-now request (`naming.manual_job_name`), so one request makes one Job.
    """
    meta = t.meta(
        naming.manual_job_name(t.uid, table.name, requested_at), table=table.name, component="ingest"
    )
    meta["labels"][naming.LABEL_RUN_KIND] = "manual"
    meta["annotations"] = {"cronjob.kubernetes.io/instantiate": "manual"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": build_job_spec(t, table, trigger),
    }


def build_file_arrival_job(
    t: Target, table: Table, batch_id: str, reason: str, trigger: triggers.RunTrigger | None = None
) -> dict[str, Any]:
    """A one-off Job for files that arrived (S3 events), named from the batch so that one batch
    makes one Job; its env says why it runs (`ORGPIPELINE_TRIGGER=file-arrival`, the keys) and who
    uploaded (`trigger`: `file_events.Batch.trigger`; without it, `system:file-arrival`)."""
    meta = t.meta(naming.file_job_name(t.uid, table.name, batch_id), table=table.name, component="ingest")
    meta["labels"][naming.LABEL_RUN_KIND] = "file-arrival"
    trigger = trigger or triggers.file_arrival({}, reason)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": build_job_spec(t, table, trigger),
    }


def desired_children(t: Target, creds: Credentials) -> list[dict[str, Any]]:
    """Every child of the org, in the order they must be created, each stamped with its hash."""
    children = [stamp(build_namespace(t))]
    if (binding := build_role_binding(t)) is not None:
        children.append(stamp(binding))  # before anything in the namespace that needs it
    children += [
        stamp(build_service_account(t)),
        stamp(build_resource_quota(t)),
        stamp(build_limit_range(t)),
        stamp(build_network_policy(t)),
        stamp(build_config_map(t)),
        build_secret(t, creds),
    ]
    children.extend(stamp(build_cronjob(t, table)) for table in t.spec.tables)
    children.append(stamp(build_retention_cronjob(t)))
    return children


WATCHED_KINDS = kinds.watched_names()
"""Children the operator watches (and indexes); the others change only when the operator writes them
and are tracked by one combined hash in the status (see `fixed_hash`)."""


def fixed_hash(children: list[dict[str, Any]]) -> str:
    """One hash over the children that are not watched: equal to the status' childrenHash, no write."""
    digests = sorted(
        f"{c['kind']}/{c['metadata']['name']}={applied_hash(c)}"
        for c in children
        if c["kind"] not in WATCHED_KINDS
    )
    return content_hash({"children": digests})


def child_key(obj: dict[str, Any]) -> tuple[str, str, str]:
    """(kind, namespace, name): how the reconcile matches desired children with existing ones."""
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace") or "", meta["name"]
