"""The console's Kubernetes side: who the caller is (TokenReview), what the caller may do
(SubjectAccessReview on the OrgPipeline), the OrgPipelines as a list kept in memory, and run-now
sent with the caller's own token.

The console's own identity (its ServiceAccount in a cluster, KUBECONFIG outside one) may create
TokenReviews and SubjectAccessReviews and read OrgPipelines and Jobs; it never writes. A run-now is
a patch sent with the caller's token, so the API server (and its audit log, and the chart's
requester admission policy) sees the caller, not the console.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from orgpipeline_api import store_names, triggers
from orgpipeline_api.v1alpha1 import GROUP, PLURAL, VERSION

log = logging.getLogger("orgpipeline.console")

TIMEOUT_SECONDS = 10
REVIEW_TTL = 30.0
"""Seconds a token's review and the caller's permissions are reused (a revoked token or binding
is honoured within this time)."""
CATALOG_TTL = 5.0
"""Seconds after which the OrgPipeline list is listed again (in the background)."""
SAR_WORKERS = 16
FIELD_MANAGER = "orgpipeline-console"


@dataclass(frozen=True)
class Identity:
    """The caller as the API server authenticated its token."""

    username: str
    uid: str
    groups: tuple[str, ...]
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        return (self.username, self.groups)


@dataclass(frozen=True)
class OrgRow:
    """What the orgs list shows of one OrgPipeline (read from its status, no database)."""

    name: str
    org_id: str
    tier: str
    ready: str
    ready_reason: str
    quality: float | None
    alerts: int
    critical: int
    last_run: str | None
    tables: int


def org_row(obj: dict[str, Any]) -> OrgRow:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    alerts = status.get("alerts") or []
    quality = status.get("qualityScore")
    return OrgRow(
        name=str(obj["metadata"]["name"]),
        org_id=str(spec.get("orgId") or ""),
        tier=str(spec.get("tier") or "medium"),
        ready=str(ready.get("status") or "Unknown"),
        ready_reason=str(ready.get("reason") or ""),
        quality=float(quality) if isinstance(quality, int | float) else None,
        alerts=len(alerts),
        critical=sum(1 for a in alerts if a.get("severity") == "critical"),
        last_run=status.get("lastRunTime"),
        tables=len(spec.get("tables") or []),
    )


def token_key(token: str) -> str:
    """What caches hold of a token: its hash, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _config() -> Any:
    """The console's own client configuration: in-cluster when it runs in a pod, else KUBECONFIG."""
    import kubernetes

    configuration = kubernetes.client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    else:
        path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
        kubernetes.config.load_kube_config(config_file=path, client_configuration=configuration)
    configuration.connection_pool_maxsize = SAR_WORKERS + 4
    return configuration


class Kube:
    """The console's API clients and its caches (thread-safe: the web handlers call it from threads)."""

    def __init__(self, configuration: Any | None = None) -> None:
        import kubernetes

        self.configuration = configuration or _config()
        self.api = kubernetes.client.ApiClient(self.configuration)
        self._lock = threading.Lock()
        self._reviews: dict[str, tuple[float, Identity | None]] = {}
        self._access: dict[tuple[Any, ...], tuple[float, bool]] = {}
        self._catalog: tuple[float, list[dict[str, Any]], list[OrgRow]] | None = None
        self._visible: dict[tuple[str, tuple[str, ...]], tuple[float, frozenset[str]]] = {}
        self._asking: set[tuple[str, tuple[str, ...]]] = set()
        self._catalog_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(SAR_WORKERS, thread_name_prefix="sar")

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self.api.close()

    # --- who ---------------------------------------------------------------------------------

    def review(self, token: str) -> Identity | None:
        """The token's user (TokenReview), None when the API server does not accept it."""
        import kubernetes

        key, now = token_key(token), time.monotonic()
        with self._lock:
            cached = self._reviews.get(key)
        if cached is not None and now - cached[0] < REVIEW_TTL:
            return cached[1]
        body = kubernetes.client.V1TokenReview(spec=kubernetes.client.V1TokenReviewSpec(token=token))
        result = kubernetes.client.AuthenticationV1Api(self.api).create_token_review(
            body, _request_timeout=TIMEOUT_SECONDS
        )
        status = result.status
        identity = None
        if status is not None and status.authenticated and status.user is not None:
            user = status.user
            identity = Identity(
                username=str(user.username or ""),
                uid=str(user.uid or ""),
                groups=tuple(user.groups or ()),
                extra=tuple(sorted((k, tuple(v)) for k, v in (user.extra or {}).items())),
            )
        with self._lock:
            if len(self._reviews) > 10_000:
                self._reviews.clear()
            self._reviews[key] = (now, identity)
        return identity

    # --- what --------------------------------------------------------------------------------

    def allowed(self, who: Identity, verb: str, name: str = "") -> bool:
        """Whether `who` may `verb` the OrgPipeline `name` (every OrgPipeline when name is empty)."""
        import kubernetes

        key, now = (who.key, verb, name), time.monotonic()
        with self._lock:
            cached = self._access.get(key)
        if cached is not None and now - cached[0] < REVIEW_TTL:
            return cached[1]
        spec = kubernetes.client.V1SubjectAccessReviewSpec(
            user=who.username,
            uid=who.uid or None,
            groups=list(who.groups),
            extra={k: list(v) for k, v in who.extra} or None,
            resource_attributes=kubernetes.client.V1ResourceAttributes(
                group=GROUP, resource=PLURAL, verb=verb, name=name or None
            ),
        )
        result = kubernetes.client.AuthorizationV1Api(self.api).create_subject_access_review(
            kubernetes.client.V1SubjectAccessReview(spec=spec), _request_timeout=TIMEOUT_SECONDS
        )
        answer = bool(result.status and result.status.allowed)
        with self._lock:
            if len(self._access) > 100_000:
                self._access.clear()
            self._access[key] = (now, answer)
        return answer

    def visible(self, who: Identity, rows: list[OrgRow]) -> list[OrgRow]:
        """The orgs `who` may get: all of them after one review when `who` may get every
        OrgPipeline (a platform admin), else one review per org, in parallel. The per-org answers
        of a caller are kept as one set: only its first listing waits for them; once REVIEW_TTL
        old, the set is asked again in the background (an org's own pages always ask afresh)."""
        if self.allowed(who, "get"):
            return rows
        with self._lock:
            cached = self._visible.get(who.key)
        if cached is None:
            names = self._ask_visible(who, rows)
        else:
            names = cached[1]
            if time.monotonic() - cached[0] >= REVIEW_TTL and who.key not in self._asking:
                with self._lock:
                    self._asking.add(who.key)
                threading.Thread(target=self._ask_in_background, args=(who, rows), daemon=True).start()
        return [r for r in rows if r.name in names]

    def _ask_visible(self, who: Identity, rows: list[OrgRow]) -> frozenset[str]:
        answers = list(self._pool.map(lambda r: self.allowed(who, "get", r.name), rows))
        names = frozenset(r.name for r, ok in zip(rows, answers, strict=True) if ok)
        with self._lock:
            if len(self._visible) > 10_000:
                self._visible.clear()
            self._visible[who.key] = (time.monotonic(), names)
        return names

    def _ask_in_background(self, who: Identity, rows: list[OrgRow]) -> None:
        try:
            self._ask_visible(who, rows)
        except Exception as exc:  # the last answers stay; the next listing asks again
            log.warning("cannot review %s's orgs: %s", who.username, exc)
        finally:
            with self._lock:
                self._asking.discard(who.key)

    # --- the OrgPipelines --------------------------------------------------------------------

    def catalog(self) -> tuple[list[dict[str, Any]], list[OrgRow]]:
        """Every OrgPipeline and its list row. Only the first call waits for the list; later ones
        get what was listed and, once it is CATALOG_TTL old, start one refresh in the background,
        so that no request pays for listing thousands of OrgPipelines."""
        with self._catalog_lock:
            current = self._catalog
        if current is None:
            with self._refresh_lock:
                if self._catalog is None:
                    self._refresh()
            current = self._catalog
            assert current is not None
        elif time.monotonic() - current[0] >= CATALOG_TTL and self._refresh_lock.acquire(blocking=False):
            threading.Thread(target=self._refresh_in_background, daemon=True).start()
        return current[1], current[2]

    def _refresh(self) -> None:
        items = self._list()
        rows = sorted((org_row(i) for i in items), key=lambda r: r.name)
        with self._catalog_lock:
            self._catalog = (time.monotonic(), items, rows)

    def _refresh_in_background(self) -> None:
        try:
            self._refresh()
        except Exception as exc:  # the last list stays; the next request tries again
            log.warning("cannot list the OrgPipelines: %s", exc)
        finally:
            self._refresh_lock.release()

    def _list(self) -> list[dict[str, Any]]:
        import kubernetes

        listing = kubernetes.client.CustomObjectsApi(self.api).list_cluster_custom_object(
            GROUP, VERSION, PLURAL, _request_timeout=TIMEOUT_SECONDS * 3
        )
        return list(dict(listing).get("items") or [])  # type: ignore[call-overload]

    def get(self, name: str) -> dict[str, Any] | None:
        """One OrgPipeline, read now (its page shows the latest status)."""
        import kubernetes

        try:
            obj = kubernetes.client.CustomObjectsApi(self.api).get_cluster_custom_object(
                GROUP, VERSION, PLURAL, name, _request_timeout=TIMEOUT_SECONDS
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(obj)  # type: ignore[call-overload]

    def jobs(self, org_id: str, table: str | None = None, limit: int = 10) -> list[dict[str, Any]]:
        """The org's most recent Jobs (of one table), newest first: name, table, state, times."""
        import kubernetes

        selector = f"orgpipeline.io/table={table}" if table else None
        try:
            found = kubernetes.client.BatchV1Api(self.api).list_namespaced_job(
                store_names.namespace(org_id), label_selector=selector, _request_timeout=TIMEOUT_SECONDS
            )
        except kubernetes.client.ApiException as exc:
            if exc.status in (403, 404):
                return []
            raise
        out = []
        for job in found.items:
            st = job.status
            state = "running"
            if st and st.succeeded:
                state = "succeeded"
            elif st and st.failed and not st.active:
                state = "failed"
            meta = job.metadata or kubernetes.client.V1ObjectMeta()
            labels = meta.labels or {}
            out.append(
                {
                    "name": meta.name,
                    "table": labels.get("orgpipeline.io/table", ""),
                    "state": state,
                    "created": meta.creation_timestamp,
                    "finished": st.completion_time if st else None,
                }
            )
        out.sort(key=lambda j: j["created"] or 0, reverse=True)
        return out[:limit]

    # --- run now -----------------------------------------------------------------------------

    def caller_api(self, token: str) -> Any:
        """A client of the same API server that authenticates as the caller (its bearer token)."""
        import copy

        import kubernetes

        configuration = copy.copy(self.configuration)
        configuration.cert_file = configuration.key_file = None
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        configuration.username = configuration.password = None
        configuration.refresh_api_key_hook = None
        return kubernetes.client.ApiClient(configuration)

    def run_now(self, token: str, who: Identity, name: str, table: str, reason: str | None) -> None:
        """Asks for a run as `orgpipeline run-now` does (the same annotations), sent as the caller."""
        import kubernetes
        from orgpipeline_cli.manage.runnow import send_run_now

        trigger = triggers.RunTrigger.of(triggers.Trigger.run_now, who.username or None, reason)
        api = self.caller_api(token)
        try:
            send_run_now(kubernetes.client.CustomObjectsApi(api), name, table, trigger, FIELD_MANAGER)
        finally:
            api.close()


@dataclass
class Page:
    """One page of a filtered list."""

    rows: list[Any]
    page: int
    pages: int
    total: int
    size: int
    params: dict[str, str] = field(default_factory=dict)


def paginate(rows: list[Any], page: int, size: int) -> Page:
    pages = max(1, -(-len(rows) // size))
    page = min(max(1, page), pages)
    return Page(rows[(page - 1) * size : page * size], page, pages, len(rows), size)


def filter_orgs(rows: list[OrgRow], text: str, ready: str, alerts: str) -> list[OrgRow]:
    """The orgs whose name or id holds `text`, with the Ready status asked for ("" any, True,
    False, Unknown) and, when `alerts` is "yes", at least one alert ("no": none)."""
    needle = text.strip().lower()
    out = []
    for r in rows:
        if needle and needle not in r.name.lower() and needle not in r.org_id.lower():
            continue
        if ready and r.ready != ready:
            continue
        if (alerts == "yes" and not r.alerts) or (alerts == "no" and r.alerts):
            continue
        out.append(r)
    return out
