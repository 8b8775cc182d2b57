"""The file-arrival endpoint: S3 bucket notifications in, one run per table and burst of files out.

`POST /s3/events` (on ORGPIPELINE_WEBHOOK_PORT) takes a notification from MinIO, Ceph RGW,
versitygw, or AWS S3 through SNS/EventBridge (see `file_events`), checks the sender's token
before reading the body, refuses bodies over ORGPIPELINE_WEBHOOK_MAX_BYTES, and queues the objects
per table. A loop on Kopf's event loop starts a Job for each batch once it is due (debounced; never
while a run of the table is active, like the CronJob's concurrencyPolicy Forbid), with the run-now
Job's spec and env `ORGPIPELINE_TRIGGER=file-arrival`. The objects are stored in PostgreSQL before
the sender gets its 200 (`arrivals`): a standby replica accepts and stores too, and the active one
routes what is stored, so a batch pending when the active replica dies is rebuilt by the next.

Bounded whatever the senders do: a body nesting deeper than `file_events.MAX_JSON_DEPTH` is a 400,
a key over S3's 1,024 bytes is refused (counted, no run), routing is linear in the key's length
(`file_events.Index`), a table has at most one pending batch and one running Job (files arriving
meanwhile are coalesced into the pending batch), and a finished file-arrival Job is deleted by
Kubernetes after ORGPIPELINE_WEBHOOK_JOB_TTL_SECONDS (its result is in the status and in
pipeline_runs by then). `orgpipeline_webhook_objects_total{result=refused|coalesced}` counts both.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from orgpipeline_api import stores, v1alpha1
from orgpipeline_api.v1alpha1 import OrgPipelineSpec

from orgpipeline_operator import (
    arrivals,
    builders,
    cache,
    database,
    file_events,
    kube,
    metrics,
    operator_settings,
    runtime,
)
from orgpipeline_operator.file_events import Batch, TableKey
from orgpipeline_operator.runtime import Runtime, log

PATH = "/s3/events"
TICK_SECONDS = 0.25
INFLIGHT_SECONDS = 60.0
"""How long a Job just created counts as running before the watch cache has seen it."""
ADOPT_SECONDS = 1.0
"""How often the active replica reads the arrivals stored by another replica (or before it led)."""
ADOPT_DELAY_SECONDS = 3.0
"""After a start, stored arrivals wait this long, so that the Jobs' watch has listed the runs
already active (a batch starts no run beside one)."""


def bind(port: int) -> socket.socket:
    """The listening socket, made before Kopf starts so that a taken port stops the operator with
    one clear line rather than a failing start-up handler."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("0.0.0.0", port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class Receiver:
    """The endpoint and its batches; `runtime` gives the handlers' Runtime once Kopf started it."""

    def __init__(
        self,
        settings: operator_settings.Settings,
        runtime: Callable[[], Runtime] | None,
        store: Callable[[], database.Databases] | None = None,
    ) -> None:
        """`runtime` None: a standby's endpoint, which only stores what arrives (in `store()`)."""
        self.settings = settings
        self.active = runtime is not None
        self.runtime: Callable[[], Runtime] = runtime or _no_runtime
        self.store: Callable[[], database.Databases] = store or (lambda: self.runtime().db)
        self._refs: dict[int, int] = {}  # stored arrival id -> pending batches holding it
        self._unforgotten: list[int] = []  # rows whose batch is done, not yet deleted
        self._adopt_at = time.monotonic() + ADOPT_DELAY_SECONDS
        self.batches = file_events.Batches(
            settings.webhook_debounce_seconds, settings.webhook_max_wait_seconds
        )
        self._inflight: dict[TableKey, tuple[str, float]] = {}
        self._failing: dict[TableKey, str] = {}  # table -> the error its last try failed with
        self._routes: tuple[int, file_events.Index] = (-1, file_events.Index([]))
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.Task[None] | None = None

    async def start(self, sock: socket.socket) -> None:
        app = web.Application(client_max_size=self.settings.webhook_max_bytes)
        app.router.add_route("*", PATH, self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        if self.active:
            self._loop = asyncio.create_task(self._flush_forever(), name="file-arrivals")

    async def stop(self, grace: float = 0.0) -> None:
        """`grace`: seconds between no longer accepting and closing, in which connections accepted
        just before send their request and have it answered (one with no request yet would be
        closed as idle: its sender sees a reset). A standby giving way to the leader uses it."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        if self._runner is not None:
            if grace:
                for site in list(self._runner.sites):
                    await site.stop()
                await asyncio.sleep(grace)
            await self._runner.cleanup()

    # --- the endpoint ------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return _answer(405, "bad_request", "only POST")
        if not file_events.authorized(
            request.headers.get("Authorization"), self.settings.webhook_token or ""
        ):
            return _answer(401, "unauthorized", "missing or wrong token", {"WWW-Authenticate": "Bearer"})
        limit = self.settings.webhook_max_bytes
        if (request.content_length or 0) > limit:
            return _answer(413, "too_large", f"body over {limit} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _answer(413, "too_large", f"body over {limit} bytes")
        try:
            objects = file_events.parse_notification(body)
        except file_events.BadNotification as exc:
            return _answer(400, "bad_request", str(exc))
        if not objects and b"SubscriptionConfirmation" in body:
            url = file_events.sns_subscribe_url(body)
            if url:  # confirming is a person's decision: the operator fetches no URL a body names
                log.warning("SNS subscription to confirm: open %s", url)
        # The index first: once stored, the rows are taken with no await in between (see `_take`).
        index = await self._index() if self.active else None
        try:
            stored = await asyncio.to_thread(
                arrivals.record, self.store(), self.settings.label_selector or "", objects
            )
        except (database.DatabaseError, stores.StoreUnavailable) as exc:
            log.warning("file arrivals not stored (the sender is asked to retry): %s", exc)
            return _answer(503, "unavailable", "cannot store the notification now; retry")
        if index is None:
            metrics.WEBHOOK_REQUESTS.labels(result="accepted").inc()
            return web.json_response({"objects": len(objects), "stored": len(stored)})
        routed, coalesced = self._take(stored, index)
        matched = len(objects) - routed.ignored - routed.ambiguous - routed.refused
        for result, count in (
            ("matched", matched),
            ("ignored", routed.ignored),
            ("ambiguous", routed.ambiguous),
            ("refused", routed.refused),
            ("coalesced", coalesced),
        ):
            if count:
                metrics.WEBHOOK_OBJECTS.labels(result=result).inc(count)
        if routed.ambiguous:
            log.warning(
                "%d object(s) under a bucket/prefix that several orgs claim: no run", routed.ambiguous
            )
        if routed.refused:
            log.warning(
                "%d object(s) with a key over %d bytes refused: no run",
                routed.refused,
                file_events.MAX_KEY_BYTES,
            )
        metrics.WEBHOOK_REQUESTS.labels(result="accepted").inc()
        return web.json_response(
            {
                "objects": len(objects),
                "tables": len(routed.runs),
                "ignored": routed.ignored + routed.ambiguous,
                "refused": routed.refused,
            }
        )

    async def _index(self) -> file_events.Index:
        """The routing index, rebuilt (off the event loop: tens of ms at thousands of orgs) only
        when an OrgPipeline came, went or changed its spec."""
        version = cache.CACHE.specs_version()
        if self._routes[0] != version:
            index = await asyncio.to_thread(_build_index)
            self._routes = (version, index)
        return self._routes[1]

    # --- the batches -------------------------------------------------------------------------

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                await self._adopt()
                await self.flush()
            except Exception:  # keep the loop: one bad batch must not stop file arrivals for all
                log.exception("file-arrival batches")

    async def flush(self) -> None:
        due = self.batches.due(time.monotonic(), self._active)
        if not due:
            return
        rt = self.runtime()
        made = await asyncio.gather(
            *(asyncio.to_thread(start_run, rt, b) for b in due), return_exceptions=True
        )
        now = time.monotonic()
        for batch, result in zip(due, made, strict=True):
            if isinstance(result, BaseException):
                batch.failures += 1
                delay = file_events.retry_delay(batch.failures)
                # Logged once per state (the first failure, another error), not at every try.
                state = f"{type(result).__name__}: {result}"
                if self._failing.get(batch.table) != state:
                    self._failing[batch.table] = state
                    log.warning(
                        "%s/%s: file-arrival Job not created (%s); retrying with back-off (up to %ss)",
                        *batch.table,
                        state,
                        file_events.RETRY_CAP_SECONDS,
                    )
                self.batches.restore(batch, now + delay)
                continue
            if self._failing.pop(batch.table, None) is not None:
                log.info("%s/%s: file-arrival Job made after %d failed tries", *batch.table, batch.failures)
            self._release(batch.rows)
            if result:
                self._inflight[batch.table] = (result, now)

    def _take(
        self, stored: list[arrivals.Arrival], index: file_events.Index
    ) -> tuple[file_events.Routed, int]:
        """Routes stored arrivals not yet held into the batches (no await: an arrival is taken once,
        by the endpoint or by `_adopt`); what starts nothing is forgotten at the next tick."""
        routed, coalesced, now = file_events.Routed(), 0, time.monotonic()
        for arrival in stored:
            if arrival.id in self._refs:
                continue
            one = index.route([arrival.obj])
            routed.ignored += one.ignored
            routed.ambiguous += one.ambiguous
            routed.refused += one.refused
            self._refs[arrival.id] = len(one.runs)
            if not one.runs:
                self._release([arrival.id])
            for table, keys in one.runs.items():
                routed.runs.setdefault(table, []).extend(keys)
                coalesced += self.batches.add(
                    table, keys, now, arrival.received_at, one.uploaders, [arrival.id]
                )
        return routed, coalesced

    def _release(self, ids: list[int]) -> None:
        for i in ids:
            left = self._refs.get(i, 1) - 1
            if left <= 0:
                self._refs.pop(i, None)
                self._unforgotten.append(i)
            else:
                self._refs[i] = left

    async def _adopt(self) -> None:
        """Takes the arrivals stored by the other replicas, or before this one led; deletes the
        rows of finished batches (in this order, one after the other: no row is taken twice)."""
        if self._unforgotten:
            ids, self._unforgotten = self._unforgotten, []
            try:
                await asyncio.to_thread(arrivals.forget, self.store(), ids)
            except (database.DatabaseError, stores.StoreUnavailable):
                self._unforgotten.extend(ids)  # again at the next tick; a rebuilt batch finds its Job
        now = time.monotonic()
        if now < self._adopt_at:
            return
        self._adopt_at = now + ADOPT_SECONDS
        try:
            stored = await asyncio.to_thread(
                arrivals.pending, self.store(), self.settings.label_selector or ""
            )
        except (database.DatabaseError, stores.StoreUnavailable) as exc:
            log.warning("stored file arrivals not read: %s", exc)
            return
        done = set(self._unforgotten)
        fresh = [a for a in stored if a.id not in self._refs and a.id not in done]
        if fresh:
            self._take(fresh, await self._index())

    def _active(self, table: TableKey) -> bool:
        """Whether a run of the table is active: a Job the cache sees running (any trigger), or one
        this loop created that the cache has not seen yet."""
        pipeline, name = table
        jobs = cache.CACHE.jobs_of(pipeline)
        inflight = self._inflight.get(table)
        if inflight is not None:
            job, since = inflight
            if any(j == job for _t, j, _done in jobs) or time.monotonic() - since > INFLIGHT_SECONDS:
                del self._inflight[table]  # the cache knows it now (or never will: it is gone)
                inflight = None
        return inflight is not None or any(t == name and not done for t, _job, done in jobs)


def _no_runtime() -> Runtime:
    raise RuntimeError("a standby's endpoint has no runtime")


def _build_index() -> file_events.Index:
    return file_events.Index(file_events.watches(cache.CACHE.pipelines(), _owns))


def _owns(pipeline: str, org: str) -> bool:
    return cache.CACHE.org_owner(org) == pipeline


def _answer(status: int, result: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    metrics.WEBHOOK_REQUESTS.labels(result=result).inc()
    return web.json_response({"error": message}, status=status, headers=headers)


class Retry(Exception):
    """The Job could not be created for now (API server trouble); the batch is kept."""


def _namespace_coming_back(exc: kube.ApiError) -> bool:
    """The org's namespace is being deleted or is gone: the reconcile makes it again (when it is the
    operator's), so the batch waits for it rather than being dropped."""
    return exc.status == 404 or (exc.status == 403 and "being terminated" in exc.message)


def start_run(rt: Runtime, batch: Batch) -> str | None:
    """Creates the batch's Job; its name, or None when there is nothing to run (gone, invalid)."""
    pipeline, table_name = batch.table
    parent = cache.CACHE.pipeline_snapshot(pipeline)
    if parent is None:
        return None
    try:
        spec = OrgPipelineSpec.model_validate(dict(parent.get("spec") or {}))
    except ValueError:
        return None  # the reconcile reports an invalid spec
    table = spec.table(table_name)
    if table is None:
        return None
    meta: dict[str, Any] = parent["metadata"]
    target = builders.Target(pipeline, str(meta.get("uid") or ""), spec, rt.job_settings)
    reason = batch.reason(spec.source.bucket)
    trigger = batch.trigger(spec.source.bucket)
    manifest = builders.build_file_arrival_job(target, table, batch.batch_id, reason, trigger)
    # Files keep arriving: finished Jobs go after the chart's TTL, not the 3 days of the others.
    manifest["spec"]["ttlSecondsAfterFinished"] = rt.settings.webhook_job_ttl_seconds
    name = str(manifest["metadata"]["name"])
    ref = {"apiVersion": v1alpha1.API_VERSION, "kind": v1alpha1.KIND, "metadata": meta}
    try:
        rt.kube.create(manifest)
    except kube.ApiError as exc:
        if exc.status == 409 and exc.reason == "AlreadyExists":  # this batch's Job: made before
            return name
        if exc.transient or _namespace_coming_back(exc):
            raise Retry(str(exc)) from exc
        metrics.FILE_ARRIVAL_RUNS.labels(result="failed").inc()
        runtime.warn(ref, reason="FileArrivalRunFailed", message=f"{table_name}: {exc.message}")
        return None
    metrics.FILE_ARRIVAL_RUNS.labels(result="started").inc()
    runtime.info(ref, reason="FileArrivalRunStarted", message=f"{table_name}: Job {name} for {reason}")
    log.info("%s/%s: file-arrival Job %s (%d object(s))", pipeline, table_name, name, batch.count)
    return name
