"""Talking to the Kubernetes API: the one module that sends requests (Kopf's own watches aside).

Objects are plain dicts. Children are written with server-side apply (`fieldManager=orgpipeline-
operator`, forced: the operator owns the fields it sets), so create and update are one call and
"already exists" is not an error. Every request is counted by verb for the metrics and the
benchmark's "requests per idle resync".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import threading
from asyncio import sslproto
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
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
"""asyncio gives every TLS connection a read buffer of 256 KiB, zeroed (resident) when made. Process-
wide (asyncio has no per-connection setting): Kopf's few aiohttp connections read in pieces of this
size (watch events are a few KB; a large listing is read in more, smaller pieces)."""

STREAMS_PER_CONNECTION = 100
"""Watches and listings at once over one HTTP/2 connection of AsyncStreams (fewer if the server says
so; Go's HTTP/2 server, the API server's, allows 250 unless told otherwise): 30 connections carry
the Secret watches of 3,000 org namespaces."""

_Item = tuple[str, int] | bytes | Exception | None  # what the reader hands a stream (see _H2)


class _H2:
    """One HTTP/2 connection to the API server, GET requests only: one reader task hands each
    stream's response (its status, its body in pieces, then None; or the error) to the stream's
    queue. Long-lived streams (watches) and short ones (listings) share it without waiting for each
    other (with httpx's HTTP/2 a request waited behind the watches reading before it)."""

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.streams: dict[int, asyncio.Queue[_Item]] = {}
        self.busy = 0
        self.failed: Exception | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def open(self, host: str, port: int, context: ssl.SSLContext | None) -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host if context else None), 5
        )
        if context is not None:
            tls = writer.get_extra_info("ssl_object")
            if tls is None or tls.selected_alpn_protocol() != "h2":
                writer.close()
                raise ConnectionError("the API server did not agree to HTTP/2")
        self._writer = writer
        self.conn.initiate_connection()
        self._flush()
        self._reader_task = asyncio.get_running_loop().create_task(self._read_forever(reader))

    @property
    def room(self) -> int:
        """How many more streams this connection takes."""
        if self.failed is not None:
            return 0
        return min(STREAMS_PER_CONNECTION, self.conn.remote_settings.max_concurrent_streams) - self.busy

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self._writer is not None:
            self._writer.write(data)

    def request(self, path: str, headers: dict[str, str], authority: str) -> tuple[int, asyncio.Queue[_Item]]:
        sid = self.conn.get_next_available_stream_id()
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        self.streams[sid] = queue
        fields = [(":method", "GET"), (":scheme", "https"), (":authority", authority), (":path", path)]
        fields += [(k.lower(), v) for k, v in headers.items() if k.lower() not in ("host", "connection")]
        self.conn.send_headers(sid, fields, end_stream=True)
        self._flush()
        return sid, queue

    def done(self, sid: int) -> None:
        """The caller is done with the stream: reset it if the server has not ended it."""
        if self.streams.pop(sid, None) is not None and self.failed is None:
            with contextlib.suppress(h2.exceptions.H2Error):
                self.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                self._flush()

    async def _read_forever(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("the API server closed the connection")
                for event in self.conn.receive_data(data):
                    self._handle(event)
                self._flush()
        except Exception as exc:  # the connection is unusable: every stream on it fails
            self.failed = exc
            for queue in self.streams.values():
                queue.put_nowait(exc)
            self.streams.clear()
            if self._writer is not None:
                self._writer.close()

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ConnectionTerminated):
            raise ConnectionError(f"the API server ended the connection ({event.error_code!r})")
        sid = getattr(event, "stream_id", None)
        queue = self.streams.get(sid) if sid is not None else None
        if isinstance(event, h2.events.DataReceived):
            # Read at once: the window opens again (a watch left unread stalls no other stream).
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        if queue is None:
            return
        if isinstance(event, h2.events.ResponseReceived):
            status = next((v for k, v in event.headers or [] if k in (":status", b":status")), b"0")
            queue.put_nowait(("status", int(status)))
        elif isinstance(event, h2.events.DataReceived) and event.data:
            queue.put_nowait(bytes(event.data))
        elif isinstance(event, h2.events.StreamEnded):
            queue.put_nowait(None)
            self.streams.pop(event.stream_id, None)
        elif isinstance(event, h2.events.StreamReset):
            queue.put_nowait(ConnectionError(f"stream reset by the API server ({event.error_code!r})"))
            self.streams.pop(event.stream_id, None)

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.close()


def _refusal(status: int, body: bytes) -> ApiError:
    """The API server's refusal: its Status object, or the text it sent (a path it does not serve)."""
    try:
        payload = json.loads(body) if body else {}
    except ValueError:
        payload = {"message": body.decode(errors="replace").strip()}
    if not isinstance(payload, dict):
        payload = {"message": str(payload)}
    return ApiError(status, str(payload.get("reason") or status), str(payload.get("message") or body))


class AsyncStreams:
    """Listings and watches over HTTP/2, for the watches of one kind in every org namespace: one
    connection carries up to STREAMS_PER_CONNECTION of them. A TLS connection per watch (HTTP/1.1,
    as aiohttp does) held ~85-110 KB resident each (OpenSSL's state and buffers, the transport's):
    ~300 MB at 3,000 orgs, more than the rest of the operator; and each was a TLS handshake for the
    API server. Not counted, like `Kube.stream`. Made and used on one event loop."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
        self._api = api
        config = api.configuration
        url = urlsplit(config.host)
        self._host = url.hostname or "localhost"
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._authority = url.netloc
        self._context: ssl.SSLContext | None = None
        if url.scheme == "https":
            context = ssl.create_default_context(cafile=config.ssl_ca_cert)
            if not config.verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if config.cert_file:
                context.load_cert_chain(config.cert_file, config.key_file)
            context.set_alpn_protocols(["h2"])
            self._context = context
        self._lanes: list[_H2] = []
        self._opening: asyncio.Lock | None = None

    async def close(self) -> None:
        for lane in self._lanes:
            await lane.close()
        self._lanes.clear()

    def connections(self) -> int:
        """The HTTP/2 connections open now (for tests and the benchmark)."""
        return sum(1 for lane in self._lanes if lane.failed is None)

    async def _lane(self) -> _H2:
        """A connection with room for one more stream (the fullest such: fewer connections), or a
        new one; the stream is counted on it."""
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:  # one connection made at a time, not one per waiting stream
            self._lanes = [lane for lane in self._lanes if lane.failed is None or lane.busy]
            free = [lane for lane in self._lanes if lane.room > 0]
            if free:
                lane = max(free, key=lambda lane: lane.busy)
            else:
                lane = _H2()
                await lane.open(self._host, self._port, self._context)
                self._lanes.append(lane)
            lane.busy += 1
            return lane

    def _prepare(self, url: str, query: dict[str, str], accept: str) -> tuple[str, dict[str, str]]:
        """The path and headers with the current credentials (a rotated token is read again)."""
        full_url = url + "?" + urlencode(query)
        _m, full, headers, _b, _ = self._api.param_serialize(
            "GET", full_url, header_params={"Accept": accept}, auth_settings=["BearerToken"]
        )
        parts = urlsplit(full)
        return parts.path + ("?" + parts.query if parts.query else ""), dict(headers)

    async def _chunks(self, url: str, query: dict[str, str], accept: str) -> AsyncIterator[bytes | int]:
        """The response's status, then its body in pieces as they come."""
        path, headers = self._prepare(url, query, accept)
        lane = await self._lane()
        sid = 0
        try:
            sid, queue = lane.request(path, headers, self._authority)
            while (item := await queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item[1] if isinstance(item, tuple) else item
        finally:
            lane.busy -= 1
            if sid:
                lane.done(sid)

    async def get(self, url: str, query: dict[str, str], accept: str) -> dict[str, Any]:
        status, body = 0, bytearray()
        try:
            async with asyncio.timeout(60):
                async for piece in self._chunks(url, query, accept):
                    if isinstance(piece, int):
                        status = piece
                    else:
                        body += piece
        except Exception as exc:  # connection refused, timeouts, TLS trouble
            raise ApiError(0, "Unavailable", str(exc) or type(exc).__name__) from exc
        if status >= 400:
            raise _refusal(status, bytes(body))
        return dict(json.loads(body) if body else {})

    async def stream(
        self, url: str, query: dict[str, str], accept: str, timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        """A watch, as `Kube.stream`: one JSON event per line until the server ends it (or
        `timeout` seconds have passed)."""
        status, rest = 0, b""
        try:
            async with asyncio.timeout(timeout):
                async for piece in self._chunks(url, query, accept):
                    if isinstance(piece, int):
                        status = piece
                        continue
                    rest += piece
                    if status >= 400:
                        continue  # the error's body, read whole below
                    *lines, rest = rest.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield json.loads(line)
        except Exception as exc:  # the connection broke, or a line was cut
            raise ApiError(0, "Unavailable", str(exc) or type(exc).__name__) from exc
        if status >= 400:
            raise _refusal(status, rest)
