"""Talking to the Kubernetes API: the one module that sends requests (Kopf's own watches aside).

Objects are plain dicts. Children are written with server-side apply (`fieldManager=orgpipeline-
operator`, forced: the operator owns the fields it sets), so create and update are one call and
"already exists" is not an error. Every request is counted by verb for the metrics and the
benchmark's "requests per idle resync".
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from asyncio import sslproto
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import kubernetes
from orgpipeline_api import v1alpha1

from orgpipeline_operator import kinds, metrics, naming

# urllib3 logs every retry of a connection (three lines per request while the API server is down);
# the callers retry with back-off and log once per change of error themselves.
logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)

# (apiVersion, kind) -> (plural, namespaced), from the one table of kinds
RESOURCES: dict[tuple[str, str], tuple[str, bool]] = kinds.resources()


METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"


@dataclass
class ApiError(Exception):
    """A request the API server refused or could not serve."""

    status: int
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.status} {self.reason}: {self.message}"

    @property
    def transient(self) -> bool:
        """Whether retrying later can help (server trouble, conflicts, throttling)."""
        return self.status in (0, 409, 429) or self.status >= 500

    @property
    def invalid(self) -> bool:
        """The object was refused as invalid (422) or forbidden by policy: the spec must change."""
        return self.status in (400, 403, 422)


def path(api_version: str, kind: str, namespace: str | None = None, name: str | None = None) -> str:
    plural, namespaced = RESOURCES[(api_version, kind)]
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespaced and namespace:
        base += f"/namespaces/{quote(namespace)}"
    base += f"/{plural}"
    return base + (f"/{quote(name)}" if name else "")


class Kube:
    """A thread-safe, JSON-in JSON-out client over the kubernetes ApiClient's connection pool."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self._api = api
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls, pool_size: int = 32) -> Kube:
        """In-cluster config when running in a pod, else KUBECONFIG / ~/.kube/config."""
        config = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=config)
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(client_configuration=config)
        config.connection_pool_maxsize = pool_size
        return cls(kubernetes.client.ApiClient(config))

    def close(self) -> None:
        self._api.close()

    def streams(self) -> AsyncStreams:
        """The same credentials for many watches at once on one event loop (see AsyncStreams)."""
        return AsyncStreams(self._api)

    def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        counted: bool = True,
        timeout: tuple[float, float] = (5, 60),
    ) -> dict[str, Any]:
        """One request, JSON in and out. `counted=False`: not in `orgpipeline_api_requests_total`
        (the watches' own listings, like Kopf's, are not requests of the reconciles)."""
        full = url + ("?" + urlencode(query) if query else "")
        headers = {"Accept": accept, "Content-Type": content_type}
        m, u, h, b, _ = self._api.param_serialize(
            method, full, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        if counted:
            metrics.API_REQUESTS.labels(verb=method).inc()
        try:
            resp = self._api.call_api(m, u, h, b, _request_timeout=timeout)
            data = resp.read()
            status = resp.status
        except Exception as exc:  # connection refused, timeouts, TLS trouble
            raise ApiError(0, "Unavailable", str(exc)) from exc
        payload = json.loads(data) if data else {}
        if status >= 400:
            raise ApiError(status, str(payload.get("reason") or status), str(payload.get("message") or data))
        return payload

    def stream(
        self, url: str, query: dict[str, str], accept: str, timeout: float
    ) -> Iterator[dict[str, Any]]:
        """A watch: one JSON event per line until the server ends it (not counted, as `request`
        with counted=False). ApiError when refused or when the connection breaks."""
        headers = {"Accept": accept}
        m, u, h, b, _ = self._api.param_serialize(
            "GET", url + "?" + urlencode(query), header_params=headers, auth_settings=["BearerToken"]
        )
        try:
            resp = self._api.call_api(m, u, h, b, _request_timeout=(5, timeout))
        except Exception as exc:
            raise ApiError(0, "Unavailable", str(exc)) from exc
        raw = resp.response
        try:
            if resp.status >= 400:
                data = raw.read()
                payload = json.loads(data) if data else {}
                raise ApiError(resp.status, str(payload.get("reason") or resp.status), str(payload))
            try:
                for line in raw:
                    if line.strip():
                        yield json.loads(line)
            except Exception as exc:  # the connection broke, or a line was cut
                raise ApiError(0, "Unavailable", str(exc)) from exc
        finally:  # a watch's connection is not reused: it may end mid-event
            raw.close()
            raw.release_conn()

    # --- verbs --------------------------------------------------------------------------------

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply: creates or updates the fields the operator manages, in one request."""
        meta = obj["metadata"]
        url = path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        query = {"fieldManager": naming.MANAGER, "force": "true"}
        return self.request("PATCH", url, obj, query, "application/apply-patch+yaml")

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        url = path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        return self.request("POST", url, obj, {"fieldManager": naming.MANAGER})

    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return self.request("GET", path(api_version, kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, selector: str | None = None
    ) -> list[dict[str, Any]]:
        query = {"labelSelector": selector} if selector else None
        items = self.request("GET", path(api_version, kind, namespace), query=query).get("items") or []
        return list(items)

    def list_metadata(
        self, api_version: str, kind: str, selector: str | None = None, page: int = 500
    ) -> Iterator[dict[str, Any]]:
        """The metadata (labels, annotations) of every object of the kind in all namespaces, `page`
        per request: PartialObjectMetadata, a fraction of the bytes of whole CronJobs or Secrets."""
        query = {"limit": str(page), **({"labelSelector": selector} if selector else {})}
        while True:
            body = self.request("GET", path(api_version, kind), query=query, accept=METADATA_LIST)
            yield from body.get("items") or []
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                return
            query = {**query, "continue": token}

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Deletes in the background (dependents are garbage-collected); False when already gone."""
        try:
            self.request(
                "DELETE", path(api_version, kind, namespace, name), {"propagationPolicy": "Background"}
            )
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def patch_status(self, name: str, status: dict[str, Any], resource_version: str | None) -> dict[str, Any]:
        """Merge-patches the OrgPipeline's status; with resource_version, fails (409) when it moved on."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        url = path(v1alpha1.API_VERSION, v1alpha1.KIND, None, name) + "/status"
        return self.request("PATCH", url, body, content_type="application/merge-patch+json")

    def patch_merge(self, obj_ref: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        meta = obj_ref["metadata"]
        url = path(obj_ref["apiVersion"], obj_ref["kind"], meta.get("namespace"), meta["name"])
        return self.request("PATCH", url, patch, content_type="application/merge-patch+json")


TLS_READ_BUFFER = 16 * 1024
"""asyncio gives every TLS connection a read buffer of 256 KiB, zeroed (resident) when made: with a
watch per org namespace that was ~0.3 MB per org (measured at 200 orgs; ~900 MB at 3,000). Watch
events are a few KB; a large listing is read in more, smaller pieces. Process-wide (asyncio has no
per-connection setting), so Kopf's few connections read in pieces of this size too."""


class AsyncStreams:
    """Listings and watches over aiohttp, for the watches of one kind in every org namespace (a
    thread and a pooled connection each, as `Kube.stream` would take, do not scale to thousands of
    namespaces). Not counted, like `Kube.stream`. Made and used on one event loop."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
        self._api = api
        config = api.configuration
        context: ssl.SSLContext | bool = False
        if config.host.startswith("https"):
            context = ssl.create_default_context(cafile=config.ssl_ca_cert)
            if not config.verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if config.cert_file:
                context.load_cert_chain(config.cert_file, config.key_file)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=0))

    async def close(self) -> None:
        await self._session.close()

    def _prepare(self, url: str, query: dict[str, str], accept: str) -> tuple[str, dict[str, str]]:
        """The full URL and headers with the current credentials (a rotated token is read again)."""
        full_url = url + "?" + urlencode(query)
        _m, full, headers, _b, _ = self._api.param_serialize(
            "GET", full_url, header_params={"Accept": accept}, auth_settings=["BearerToken"]
        )
        return full, dict(headers)

    async def get(self, url: str, query: dict[str, str], accept: str) -> dict[str, Any]:
        full, headers = self._prepare(url, query, accept)
        try:
            async with self._session.get(full, headers=headers, timeout=aiohttp.ClientTimeout(60)) as resp:
                data = await resp.read()
                status = resp.status
        except Exception as exc:  # connection refused, timeouts, TLS trouble
            raise ApiError(0, "Unavailable", str(exc) or type(exc).__name__) from exc
        payload = json.loads(data) if data else {}
        if status >= 400:
            raise ApiError(status, str(payload.get("reason") or status), str(payload.get("message") or data))
        return dict(payload)

    async def stream(
        self, url: str, query: dict[str, str], accept: str, timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        """A watch, as `Kube.stream`: one JSON event per line until the server ends it."""
        full, headers = self._prepare(url, query, accept)
        limits = aiohttp.ClientTimeout(total=timeout, sock_connect=5)
        try:
            async with self._session.get(full, headers=headers, timeout=limits) as resp:
                if resp.status >= 400:
                    data = await resp.read()
                    payload = json.loads(data) if data else {}
                    raise ApiError(resp.status, str(payload.get("reason") or resp.status), str(payload))
                async for line in resp.content:
                    if line.strip():
                        yield json.loads(line)
        except ApiError:
            raise
        except Exception as exc:  # the connection broke, or a line was cut
            raise ApiError(0, "Unavailable", str(exc) or type(exc).__name__) from exc
