"""The Kopf registrations of the OrgPipeline operator, and `orgpipeline-operator` (the entry point).

Only wiring here: each handler turns Kopf's kwargs into a call of reconcile, runs or cleanup.
Indexes of the operator's children (watched with a server-side label selector) let a resync compare
desired and existing objects without a single API request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
import time
from typing import Any

import kopf
from aiohttp import web
from orgpipeline_api import memory, v1alpha1

from orgpipeline_operator import (
    cache,
    claims,
    cleanup,
    database,
    kube,
    leadership,
    metrics,
    naming,
    operator_settings,
    reconcile,
    resync,
    runs,
    runtime,
    status,
    watch,
    webhook,
)

G, V, P = v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL
MANAGED = {naming.LABEL_MANAGED_BY: naming.MANAGER}
# The children (builders.WATCHED_KINDS: every kind) are watched by watch.py, metadata only, not by
# Kopf (whole bodies, a record per object), so that one deleted or changed is put back at once.


def _seconds(var: str, default: float) -> float:
    """A resync interval, read at import; a bad value falls back here and is refused by `run()`
    with the settings' one clear message, not a traceback."""
    try:
        value = float(os.environ.get(var) or default)
    except ValueError:
        return default
    return value if value > 0 else default


RESYNC_SECONDS = _seconds("ORGPIPELINE_RESYNC_SECONDS", 300)
DEEP_RESYNC_SECONDS = _seconds("ORGPIPELINE_DEEP_RESYNC_SECONDS", 3600)
READY = threading.Event()
HANDOVER_GRACE_SECONDS = 0.5
"""How long a standby that now leads answers what its webhook accepted before it closes it."""
PAGE = watch.PAGE


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    conf: operator_settings.Settings = memo.conf
    settings.persistence.finalizer = naming.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.orgpipeline.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kopf.orgpipeline.io")
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = naming.MANAGER
    settings.execution.max_workers = conf.workers
    settings.queueing.error_delays = (1, 2, 5, 10, 30, 60)
    settings.networking.request_timeout = 60
    # Kopf's requests and watches retry an unreachable API server for ~1 minute by default (1, 1,
    # 2, ... 21 s), then give up: keep trying for ~5 minutes (an API server upgrade or restart),
    # never more than 10 s apart, so that its watches are back within 10 s of the API server.
    settings.networking.error_backoffs = (1, 2, 4, 8, *[10] * 30)
    settings.watching.server_timeout = 600
    # The initial listings in pages of 100: a page of 500 OrgPipelines was ~12 MB of parsed JSON at
    # once, at the start, when the operator's memory peaks.
    settings.watching.chunk_size = PAGE
    settings.watching.label_selectors["batch/v1", "jobs"] = naming.MANAGED_SELECTOR
    if conf.label_selector:
        settings.watching.label_selectors[G, P] = conf.label_selector
    memo.rt = runtime.Runtime.start(conf)
    try:  # who owns which org id, once (else each org's first reconcile reads its own claim)
        for org, owner in claims.owners(memo.rt.db).items():
            cache.CACHE.set_org_owner(org, owner)
    except database.DatabaseError as exc:
        runtime.log.warning("%s; reading the org id owners org by org", exc)
    memo.resyncer = resync.Resyncer(memo.rt, RESYNC_SECONDS, DEEP_RESYNC_SECONDS, conf.workers)
    schedule = memo.resyncer.schedule
    memo.rt.on_source_granted = lambda name: schedule.soon(name, time.monotonic())
    memo.watches = watch.start_all(
        memo.rt.kube, lambda name: schedule.heal(name, time.monotonic()), bound=conf.tenant_role is not None
    )


@kopf.on.startup()
async def start_webhook(memo: kopf.Memo, **_: Any) -> None:
    sock = memo.get("webhook_socket")
    if sock is not None:
        memo.webhook = webhook.Receiver(memo.conf, lambda: memo.rt)
        await memo.webhook.start(sock)


@kopf.on.cleanup()
async def stop_webhook(memo: kopf.Memo, **_: Any) -> None:
    if memo.get("webhook") is not None:
        await memo.webhook.stop()


@kopf.on.cleanup()
def shutdown(memo: kopf.Memo, **_: Any) -> None:
    for child_watch in memo.watches:
        child_watch.stop()
    memo.resyncer.close()
    memo.rt.db.close()
    memo.rt.kube.close()


# --- the cache (watch events; never blocks the handlers, unlike Kopf's indexes) -----------------


@kopf.on.event(G, V, P)
async def cache_pipelines(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    cache.CACHE.pipeline(type, body)
    runtime.capture_posting()  # for Events posted outside Kopf's handlers (file arrivals)
    resyncer: resync.Resyncer = memo.resyncer
    resyncer.start()  # once, here: in the context of Kopf's object handlers (see resync.py)
    if type == "DELETED":
        resyncer.forget(body.metadata.name or "")


@kopf.on.event("batch/v1", "jobs", labels=MANAGED)
async def cache_jobs(type: str | None, body: kopf.Body, **_: Any) -> None:
    cache.CACHE.job(type, body, status.job_finished(dict(body)) is not None)


# --- the OrgPipeline ---------------------------------------------------------------------------


@kopf.on.create(G, V, P)
@kopf.on.update(G, V, P)
def reconcile_pipeline(name: str, body: kopf.Body, memo: kopf.Memo, reason: str, **kwargs: Any) -> None:
    trigger = "create" if reason == "create" else "update"
    reconcile.reconcile(memo.rt, reconcile.request(trigger, name, body), body)
    resyncer: resync.Resyncer = memo.resyncer
    resyncer.schedule.handled(name, time.monotonic())


@kopf.on.resume(G, V, P)
async def resume_pipeline(name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """An OrgPipeline found at start: verified by the resync loop from the cache (see resync.py),
    so that Kopf does not hold thousands of whole bodies while they wait for a thread."""
    resyncer: resync.Resyncer = memo.resyncer
    resyncer.schedule.resume(name, time.monotonic())


@kopf.on.field(G, V, P, field=("metadata", "annotations", naming.ANNOTATION_RUN_NOW))
def run_now(name: str, body: kopf.Body, new: Any, memo: kopf.Memo, patch: kopf.Patch, **kwargs: Any) -> None:
    if not new:
        return
    refused = runs.refused_run(body.metadata.uid or "", str(body.spec.get("orgId") or ""))
    if refused is None:
        active = [t for t, _job, finished in cache.CACHE.jobs_of(name) if not finished]
        runs.run_now(memo.rt, name, body.metadata.uid or "", dict(body.spec), str(new), active, body)
    else:
        runtime.warn(body, reason="RunNowRefused", message=f"no run: {refused}"[:1000])
    served = patch.metadata.setdefault("annotations", {})
    for annotation in naming.RUN_NOW_ANNOTATIONS:
        served[annotation] = None


@kopf.on.delete(G, V, P)
def delete_pipeline(name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    resyncer: resync.Resyncer | None = memo.get("resyncer")
    if resyncer is not None and not resyncer.schedule.stop(name):  # no resync beside the clean-up
        wait, _new = cleanup.RETRIES.failed(name, "resync running", first=memo.rt.settings.retry_seconds)
        raise kopf.TemporaryError("a resync of the org is still running", delay=wait)
    cleanup.finalize(memo.rt, name, dict(body.spec), body)


# --- Jobs --------------------------------------------------------------------------------------


@kopf.on.event("batch/v1", "jobs", labels=MANAGED)
def job_event(body: kopf.Body, type: str | None, labels: kopf.Labels, memo: kopf.Memo, **kwargs: Any) -> None:
    if type == "DELETED" or status.job_finished(dict(body)) is None:
        return
    parent = cache.CACHE.pipeline_snapshot(labels.get(naming.LABEL_PIPELINE, ""))
    runs.record_finished_job(memo.rt, body, parent)


# --- entry point -------------------------------------------------------------------------------


async def _standby(
    conf: operator_settings.Settings, elector: leadership.Elector, webhook_socket: socket.socket | None
) -> None:
    """Until this replica leads: /healthz (alive), /readyz (ready: the webhook accepts), and the
    webhook, which stores what arrives for the active replica (`arrivals`) and starts nothing.

    The webhook listens on a duplicate of the operator's one listening socket: closing it when this
    replica leads leaves the socket open, so a notification sent while Kopf starts waits in the
    kernel's queue for the leader's endpoint instead of being refused."""
    runners: list[web.AppRunner] = []
    db: database.Databases | None = None
    receiver: webhook.Receiver | None = None
    try:
        if conf.health_port:
            app = web.Application()

            async def alive(_: web.Request) -> web.Response:
                return web.Response(text="standby\n")

            app.router.add_get("/healthz", alive)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "0.0.0.0", conf.health_port, reuse_address=True).start()
            runners.append(runner)
        if webhook_socket is not None:
            store = db = database.Databases(conf.postgres_dsn, conf.mongo_uri, conf.mongo_db, pool_size=2)
            receiver = webhook.Receiver(conf, None, lambda: store)
            await receiver.start(webhook_socket.dup())
        READY.set()
        await elector.wait_until_leader()
    finally:
        READY.clear()
        if receiver is not None:
            await receiver.stop(grace=HANDOVER_GRACE_SECONDS)
        for runner in runners:
            await runner.cleanup()
        if db is not None:
            db.close()


def run() -> None:
    """`orgpipeline-operator`: validates the settings, then runs Kopf cluster-wide, standalone
    (with ORGPIPELINE_LEASE_NAME: once this replica holds the Lease, see leadership.py)."""
    args = sys.argv[1:]
    if args and args[0] in ("-h", "--help"):
        sys.stdout.write(operator_settings.help_text())
        sys.exit(0)
    if args:
        print(f"orgpipeline-operator: unexpected argument {args[0]!r} (see --help)", file=sys.stderr)
        sys.exit(2)
    try:
        conf = operator_settings.from_env()
    except operator_settings.SettingsError as exc:
        print(f"orgpipeline-operator: {exc}", file=sys.stderr)
        sys.exit(2)
    memory.limit_malloc_arenas()
    level = conf.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":  # Kopf logs every handler at INFO: too much at a thousand orgs
        logging.getLogger("kopf").setLevel(logging.WARNING)
    if conf.metrics_port:
        metrics.serve(conf.metrics_port, READY)
    memo = kopf.Memo(conf=conf)
    if conf.webhook_port:
        try:
            memo.webhook_socket = webhook.bind(conf.webhook_port)
        except OSError as exc:
            print(
                f"orgpipeline-operator: cannot listen on ORGPIPELINE_WEBHOOK_PORT="
                f"{conf.webhook_port}: {exc.strerror}",
                file=sys.stderr,
            )
            sys.exit(2)
    elector = None
    lease = leadership.LeaseSettings.from_settings(conf)
    if lease is not None:
        elector = leadership.Elector(lease, kube.Kube.from_environment(pool_size=2))
        runtime.log.warning(
            "standby: waiting for Lease %s/%s as %s", lease.namespace, lease.name, lease.identity
        )
        asyncio.run(_standby(conf, elector, memo.get("webhook_socket")))
        elector.keep()
    liveness = f"http://0.0.0.0:{conf.health_port}/healthz" if conf.health_port else None
    try:
        kopf.run(
            clusterwide=True,
            standalone=True,
            liveness_endpoint=liveness,
            memo=memo,
            ready_flag=READY,
        )
    finally:
        if elector is not None:
            elector.release()


if __name__ == "__main__":
    run()
