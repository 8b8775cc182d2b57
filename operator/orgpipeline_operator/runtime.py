"""What every handler shares: settings, the API client, the database connections, the thread pool
the reconcile applies children on, and the org's credentials (the Secret's content)."""

from __future__ import annotations

import base64
import concurrent.futures
import contextvars
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

import kopf
from orgpipeline_api import store_names, v1alpha1
from orgpipeline_api.v1alpha1 import OrgPipelineSpec
from orgpipeline_api.v1alpha1_status import OrgPipelineStatus

from orgpipeline_operator import builders, database, kube, naming, operator_settings, s3access, status
from orgpipeline_operator.snapshot import Snapshot

log = logging.getLogger("orgpipeline.operator")

T = TypeVar("T")
R = TypeVar("R")
STATUS_ATTEMPTS = 5
"""Status patches tried (each after re-reading the object on a conflict) before retrying later."""

ComputeStatus = Callable[[Mapping[str, Any], OrgPipelineStatus], OrgPipelineStatus | None]
"""The new status from the object and its current status; None when there is nothing to write."""
Skipped = Literal["unchanged", "gone"]


@dataclass(frozen=True)
class StatusWrite:
    """A status patch the API server took: the object it applied to, the status before and after."""

    obj: Mapping[str, Any]
    old: OrgPipelineStatus
    new: OrgPipelineStatus


@dataclass
class Runtime:
    settings: operator_settings.Settings
    kube: kube.Kube
    db: database.Databases
    pool: concurrent.futures.ThreadPoolExecutor = dataclasses.field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(32, thread_name_prefix="apply")
    )
    snapshot: Snapshot | None = None  # the children as listed at start-up (resume only)
    on_source_granted: Callable[[str], None] | None = None  # main: the org's reconcile again, soon

    def parallel(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """fn over items on the shared pool; the first exception is raised once all have finished."""
        futures = [self.pool.submit(fn, item) for item in items]
        concurrent.futures.wait(futures)
        return [f.result() for f in futures]

    @classmethod
    def start(cls, settings: operator_settings.Settings) -> Runtime:
        client = kube.Kube.from_environment(pool_size=settings.workers * 4 + 8)
        db = database.Databases(
            settings.postgres_dsn,
            settings.mongo_uri,
            settings.mongo_db,
            mongo_users=settings.mongo_users,
            ferretdb_database=settings.ferretdb_database,
        )
        return cls(
            settings=settings,
            kube=client,
            db=db,
            pool=concurrent.futures.ThreadPoolExecutor(settings.workers * 4, thread_name_prefix="apply"),
            snapshot=Snapshot(client, db),
        )

    @property
    def job_settings(self) -> builders.JobSettings:
        s = self.settings
        selector = tuple(
            (k.strip(), v.strip())
            for k, _, v in (kv.partition("=") for kv in (s.job_node_selector or "").split(","))
            if k
        )
        binding = (
            (s.tenant_role, s.namespace, s.service_account) if s.tenant_role and s.service_account else None
        )
        return builders.JobSettings(
            s.job_image, s.job_image_pull_policy, tuple(s.egress_ports), selector, binding
        )

    def credentials(
        self, spec: OrgPipelineSpec, password: str, s3: tuple[str, str] | None = None
    ) -> builders.Credentials:
        """The org's Secret content. Without `s3` the S3 keys are placeholders (for the hash only)."""
        s = self.settings
        host, port = s.jobs_postgres_hostport
        if s3 is None:
            s3 = s3access.placeholder(s, spec)
        return builders.Credentials(
            postgres_user=store_names.pg_role(spec.org_id),
            postgres_password=password,
            postgres_host=host,
            postgres_port=port,
            postgres_db=s.postgres_dbname,
            # The org's own identity and database (issue 22), never the operator's.
            mongo_uri=database.org_mongo_uri(
                s.job_mongo_uri or s.mongo_uri, spec.org_id, password, s.mongo_users
            ),
            mongo_db=store_names.mongo_database(spec.org_id),
            s3_endpoint=s.job_s3_endpoint or s.s3_endpoint,
            s3_access_key=s3[0],
            s3_secret_key=s3[1],
        )

    def source_refusal(self, spec: OrgPipelineSpec) -> tuple[str, str] | None:
        """(reason, message) when the spec names S3 keys that are not the org's (see s3access)."""
        return s3access.refusal(self.settings, self.kube, spec)

    def source_keys(self, spec: OrgPipelineSpec) -> tuple[str, str]:
        """S3 keys for the org that reach only its source: its labelled credentialsSecret, else its
        own account (never the operator's keys; see s3access)."""
        own_account = not spec.source.credentials_secret and self.settings.s3_accounts == "versitygw"
        known = self.current_s3_keys(naming.namespace(spec.org_id)) if own_account else None
        return s3access.org_keys(self.settings, self.kube, spec, known, wait=False)

    def source_granted(self, spec: OrgPipelineSpec, name: str) -> bool:
        """Whether the org's own account's statement is in the source bucket's policy (see
        s3access.granted); when not yet, `on_source_granted(name)` is called once it is."""
        hook = self.on_source_granted
        return s3access.granted(self.settings, spec, lambda: hook(name) if hook else None)

    def current_s3_keys(self, namespace: str) -> tuple[str, str] | None:
        secret = self.kube.get("v1", "Secret", naming.SECRET, namespace)
        data = (secret or {}).get("data") or {}
        if "ORGPIPELINE_S3_ACCESS_KEY" not in data or "ORGPIPELINE_S3_SECRET_KEY" not in data:
            return None
        return _b64(data["ORGPIPELINE_S3_ACCESS_KEY"]), _b64(data["ORGPIPELINE_S3_SECRET_KEY"])

    def patch_status(
        self, obj: Mapping[str, Any], compute: ComputeStatus, what: str
    ) -> StatusWrite | Skipped:
        """Patches the OrgPipeline's status to what `compute` makes of the object as last read
        (None: nothing to write); on a conflict re-reads the object and computes again.

        Returns the write, "unchanged" when the status already is as computed, "gone" when the
        object was deleted meanwhile. Other API errors, and a status that keeps changing under the
        operator, are retried later (kopf.TemporaryError); `what` names the write in their message.
        """
        name = obj["metadata"]["name"]
        for _attempt in range(STATUS_ATTEMPTS):
            raw = dict(obj.get("status") or {})
            old = status.parse(raw)
            new = compute(obj, old)
            patch = None if new is None else status.status_patch(raw, new)
            if new is None or patch is None:
                return "unchanged"
            try:
                self.kube.patch_status(name, patch, obj["metadata"].get("resourceVersion"))
            except kube.ApiError as exc:
                if exc.status == 409:
                    fresh = self.kube.get(v1alpha1.API_VERSION, v1alpha1.KIND, name)
                    if fresh is None:
                        return "gone"
                    obj = fresh
                    continue
                if exc.status == 404:
                    return "gone"
                raise kopf.TemporaryError(f"cannot {what}: {exc}", delay=self.settings.retry_seconds) from exc
            return StatusWrite(obj, old, new)
        raise kopf.TemporaryError(
            "status kept changing under the operator", delay=self.settings.retry_seconds
        )

    def current_password(self, namespace: str) -> str | None:
        secret = self.kube.get("v1", "Secret", naming.SECRET, namespace)
        value = ((secret or {}).get("data") or {}).get("ORGPIPELINE_POSTGRES_PASSWORD")
        return _b64(value) if value else None


_POSTING: contextvars.Context | None = None
"""A copy of the context of a Kopf handler, where Kopf's Event posting works: for the code that
runs outside any handler (the file-arrival loop, started by a startup activity, which has none)."""


def capture_posting() -> None:
    """Keeps the current context for `warn` and `info` (called once, from a Kopf handler)."""
    global _POSTING
    if _POSTING is None:
        _POSTING = contextvars.copy_context()


def _post(post: Callable[..., None], obj: Mapping[str, Any], reason: str, message: str) -> None:
    body = kopf.Body(cast("kopf.RawBody", dict(obj)))
    try:
        post(body, reason=reason, message=message[:1000])
    except LookupError:  # outside Kopf's handler context: post from a handler's (a fresh copy)
        if _POSTING is None:
            log.debug("Event %s not posted (Kopf's posting is not started yet): %s", reason, message)
            return
        _POSTING.copy().run(post, body, reason=reason, message=message[:1000])


def warn(obj: Mapping[str, Any], reason: str, message: str) -> None:
    """A Warning Event on the object (posted by Kopf in the background)."""
    _post(kopf.warn, obj, reason, message)


def info(obj: Mapping[str, Any], reason: str, message: str) -> None:
    """A Normal Event on the object."""
    _post(kopf.info, obj, reason, message)


SourceSecretMissing = s3access.SourceAccessError
"""The org's S3 keys cannot be made (a credentialsSecret missing or not labelled for the org, the S3
admin API down); its `reason` is the Ready condition's."""


def _b64(value: str) -> str:
    return base64.b64decode(value).decode()
