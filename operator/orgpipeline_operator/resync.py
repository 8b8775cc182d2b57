"""The idle resync of every OrgPipeline: one loop for all orgs, not a Kopf timer per org.

The resume of the orgs found at start runs here too (Kopf's resume handler only asks for it): as
Kopf handlers, the 3,000 resumes of a restart waited for a thread each holding its object's whole
body, Kopf's diff and its bookkeeping, hundreds of MB at once; here they wait as names.

A Kopf timer costs, per object, an asyncio task, a daemon record and the object's last whole body
(managedFields, Kopf's annotations and all), kept to pass as the handler's `body`: at 3,000 orgs
~24 KB of body and ~12 KB of task and records per org, a third of the operator's memory (measured
from its object graph; see operator/README.md, scale). The resync needs none of it: the cache
already holds what a reconcile reads (spec, status, uid, generation, resourceVersion).

As the timer did: an org's first resync comes `interval` after its create (or update, or resume)
succeeded, each next one
`interval` after the previous one ended (the error's delay after a failure); none while the object
is being deleted, and the finalizer waits for one in flight (`Schedule.stop`), as Kopf stops an
object's timers before its deletion handlers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
from collections.abc import Iterable

import kopf

from orgpipeline_operator import backoff, cache, naming, reconcile, runs, status
from orgpipeline_operator.runtime import Runtime, log

RETRY_CAP_SECONDS = 30.0
"""The longest wait between two tries of a failing org (unless its error asks for longer)."""
STOP_WAIT_SECONDS = 120.0
"""How long the finalizer waits for a resync of the org that is still running."""
CLOSE_WAIT_SECONDS = 20.0
"""How long the operator, stopping, waits for the resyncs in flight (before its database
connections and thread pools go)."""


class Schedule:
    """When each pipeline's next resync is due, and which are running: thread-safe, no I/O."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._cond = threading.Condition()
        self._due: dict[str, float] = {}
        self._running: set[str] = set()
        self._stopped: set[str] = set()
        self._resume: set[str] = set()  # to verify (resume) at their next turn
        self._heal: set[str] = set()  # a watched child of theirs was deleted or changed: repair now
        self._soon: set[str] = set()  # asked for (soon) before their create handler ended

    def resume(self, name: str, now: float) -> None:
        """The pipeline is to be verified as on an operator start: due now, as a resume."""
        with self._cond:
            self._resume.add(name)
            self._due[name] = now

    def heal(self, name: str, now: float) -> bool:
        """A child of the pipeline was deleted or changed behind the operator (a watch event): its
        repair is due now, as a `heal` (which reads the namespace and the unwatched children back).
        Only for a pipeline already handled: one whose create is still running makes its children
        itself (a heal beside it would make them twice). Whether the repair was asked for."""
        with self._cond:
            if name in self._due and name not in self._stopped:
                self._heal.add(name)
                self._due[name] = min(self._due[name], now)
                return True
            return False

    def handled(self, name: str, now: float) -> None:
        """The pipeline's create or update handler succeeded: its resyncs start (the first one
        `interval` from now), as Kopf starts an object's timers only once it was handled; a resync
        before the create would make the org's children a second time beside it."""
        with self._cond:
            self._due.setdefault(name, now if name in self._soon else now + self.interval)
            self._soon.discard(name)

    def soon(self, name: str, now: float) -> None:
        """Its next resync is due now (e.g. its source grant was written: Ready), or, while its
        create handler runs, as soon as that ended."""
        with self._cond:
            if name in self._due:
                self._due[name] = min(self._due[name], now)
            else:
                self._soon.add(name)

    def take_due(self, names: Iterable[str], now: float) -> list[tuple[str, str]]:
        """The pipelines whose turn is due, marked running, each with its trigger (resume, or
        resync); one not yet handled (see `handled`, `resume`) waits."""
        taken = []
        with self._cond:
            for name in names:
                if name in self._running or name in self._stopped:
                    continue
                due = self._due.get(name)
                if due is not None and now >= due:
                    self._running.add(name)
                    trigger = "resume" if name in self._resume else "heal" if name in self._heal else "resync"
                    if trigger == "heal":  # a heal event while this one runs asks for another
                        self._heal.discard(name)
                    taken.append((name, trigger))
        return taken

    def finish(self, name: str, now: float, delay: float | None = None, trigger: str = "resync") -> None:
        """The pipeline's turn ended: the next one is due `interval` from now; after a failure
        `delay` from now, and a resume (or heal) stays one. A heal asked for while it ran is due now."""
        with self._cond:
            self._running.discard(name)
            if delay is None:
                self._resume.discard(name)
            elif trigger == "heal":
                self._heal.add(name)
            if name in self._due:
                next_due = now + (self.interval if delay is None else delay)
                self._due[name] = now if delay is None and name in self._heal else next_due
            self._cond.notify_all()

    def stop(self, name: str, timeout: float = STOP_WAIT_SECONDS) -> bool:
        """No more resyncs of the pipeline (it is being deleted); waits for one in flight. False
        when it was still running after `timeout`."""
        with self._cond:
            self._stopped.add(name)
            return self._cond.wait_for(lambda: name not in self._running, timeout)

    def forget(self, name: str) -> None:
        """The pipeline is gone: drop what is kept of it (a new one of the same name starts anew)."""
        with self._cond:
            self._due.pop(name, None)
            self._stopped.discard(name)
            self._resume.discard(name)
            self._heal.discard(name)
            self._soon.discard(name)

    def __len__(self) -> int:
        with self._cond:
            return len(self._due)


class Resyncer:
    """Runs the due resyncs on a small thread pool, from a loop on Kopf's event loop."""

    def __init__(self, rt: Runtime, interval: float, deep_interval: float, workers: int) -> None:
        self.rt = rt
        self.deep_interval = deep_interval
        self.schedule = Schedule(interval)
        self.tick = min(1.0, interval / 4)
        self._pool = concurrent.futures.ThreadPoolExecutor(max(1, workers), thread_name_prefix="resync")
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._inflight: set[concurrent.futures.Future[None]] = set()
        self._failures: dict[str, tuple[int, str]] = {}  # org -> failures in a row, the last error

    def start(self) -> None:
        """Starts the loop (once) from a Kopf handler on the event loop: the resyncs run in a copy
        of that context, where Kopf's Event posting (kopf.info/warn) works as in its handlers."""
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._forever(), name="resync")

    def forget(self, name: str) -> None:
        """The pipeline is gone: its schedule and its failures go too."""
        self.schedule.forget(name)
        with self._lock:
            self._failures.pop(name, None)

    def close(self, timeout: float = CLOSE_WAIT_SECONDS) -> bool:
        """Stops the resyncs (the operator is stopping): no new one starts, those queued are dropped,
        and those running are waited for (up to `timeout`), so that none is cut short by the
        database connections and the shared thread pool going away under it. Whether all ended."""
        self._closing.set()
        if self._task is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        with self._lock:
            inflight = set(self._inflight)
        for future in inflight:
            future.cancel()  # not started yet: dropped
        _done, running = concurrent.futures.wait(inflight, timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if running:
            log.warning("stopping with %d resyncs still running after %.0fs", len(running), timeout)
        return not running

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                if self._closing.is_set():
                    return
                for name, trigger in self.schedule.take_due(cache.CACHE.resyncable(), time.monotonic()):
                    ctx = contextvars.copy_context()
                    future = self._pool.submit(ctx.run, self._one, name, trigger)
                    with self._lock:
                        self._inflight.add(future)
                    future.add_done_callback(self._done)
            except Exception:  # keep the loop: one bad tick must not end the resyncs of all orgs
                log.exception("resync loop")

    def _done(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._inflight.discard(future)

    def _one(self, name: str, trigger: str) -> None:
        delay: float | None = None
        if self._closing.is_set():  # taken just before the operator began to stop
            self.schedule.finish(name, time.monotonic(), None, trigger)
            return
        try:
            if trigger == "resume":
                resume(self.rt, name)
            else:
                resync(self.rt, name, self.deep_interval, heal=trigger == "heal")
        except kopf.TemporaryError as exc:
            base = exc.delay if exc.delay is not None else self.rt.settings.retry_seconds
            delay = self._backoff(name, base, str(exc))
        except Exception as exc:
            if self._closing.is_set():
                # Still running when close() stopped waiting: the interpreter's exit refuses its
                # next thread-pool task, a connection is closed. Nothing to retry or report.
                log.info("%s: %s left unfinished, the operator is stopping (%s)", name, trigger, exc)
                return
            delay = self._backoff(name, self.rt.settings.retry_seconds, f"{type(exc).__name__}: {exc}", True)
        else:
            with self._lock:
                failed = self._failures.pop(name, None)
            if failed is not None:
                log.info("%s: %s succeeded after %d failed tries", name, trigger, failed[0])
        finally:
            self.schedule.finish(name, time.monotonic(), delay, trigger)

    def _backoff(self, name: str, base: float, error: str, unexpected: bool = False) -> float:
        """The wait before the org's next try: `base` doubling with each failure in a row, capped
        (RETRY_CAP_SECONDS, or `base` when larger), half of it random (orgs failing together, as
        when the API server is down, do not retry together). Logged once per change of error."""
        with self._lock:
            count, last = self._failures.get(name, (0, ""))
            count += 1
            self._failures[name] = (count, error)
        delay = base if count == 1 else backoff.delay(count, base, max(base, RETRY_CAP_SECONDS))
        if error != last:
            if unexpected:
                log.exception("%s: resync failed, retrying with back-off (from %ss): %s", name, base, error)
            else:
                log.warning("%s: resync failed, retrying with back-off (from %ss): %s", name, base, error)
        return delay


def resume(rt: Runtime, name: str) -> None:
    """Verifies an OrgPipeline that existed before the operator started (see reconcile)."""
    obj = cache.CACHE.pipeline_snapshot(name)
    if obj is None or obj["metadata"].get("deletionTimestamp"):
        return
    reconcile.reconcile(rt, reconcile.request("resume", name, obj), obj)


def resync(rt: Runtime, name: str, deep_interval: float, heal: bool = False) -> None:
    """The idle resync of one OrgPipeline, from the object as the cache last saw it; every
    `deep_interval` (per org, spread) a deep one; a heal when a watched child was deleted or
    changed. Also records finished Jobs the watch missed."""
    obj = cache.CACHE.pipeline_snapshot(name)
    if obj is None or obj["metadata"].get("deletionTimestamp"):
        return
    trigger = "heal" if heal else "deep" if cache.CACHE.deep_due(name, deep_interval) else "resync"
    reconcile.reconcile(rt, reconcile.request(trigger, name, obj), obj)
    finished = [(table, job) for table, job, done in cache.CACHE.jobs_of(name) if done]
    if not finished:
        return
    current = status.parse(dict(obj.get("status") or {}))
    recorded = {t.name: t.last_run.job for t in current.tables if t.last_run}
    if current.retention and current.retention.last_run:  # retention Jobs carry no table: ""
        recorded[""] = current.retention.last_run.job
    for table, job in finished:
        if recorded.get(table) != job:  # a Job event the watcher missed
            org_id = str((obj.get("spec") or {}).get("orgId") or "")
            found = rt.kube.get("batch/v1", "Job", job, naming.namespace(org_id))
            if found:
                runs.record_finished_job(rt, found, cache.CACHE.pipeline_snapshot(name))
