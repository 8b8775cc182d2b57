"""The operator's own watches of its children: metadata only, straight into the cache.

Every child kind is watched (issue 24: one deleted or changed behind the operator is put back
within seconds of the event, `Heal`). Cluster-wide, label-selected, for every kind but Secrets: the
operator may not read Secrets cluster-wide (issue 22), so those are watched in each org namespace
(the tenant role grants list and watch there only), all on one event loop (`NamespacedWatches`).

The cache needs of each child its kind, namespace, name, pipeline label and applied-hash
annotation. Kopf's watch delivered whole objects (a CronJob with its job template and
managedFields) to a per-object worker, and kept a record per object for as long as the object
lived: at 3,000 orgs 18,000 records and, at each start, 18,000 whole bodies parsed and processed
in a burst (most of the operator's memory peak on a restart; see operator/README.md, scale). Here
each kind is one thread: a paged, label-selected LIST of PartialObjectMetadata, then a WATCH from
its resourceVersion (bookmarks on), again and again; a 410 (the version is too old) or a broken
stream lists again, and the listing replaces the kind's entries in the cache (so an object deleted
while the watch was down goes too, which Kopf's relisting did not do).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from orgpipeline_operator import backoff, cache, kinds, kube, naming

log = logging.getLogger("orgpipeline.operator")

KINDS = kinds.watched()
NAMESPACED_KINDS = kinds.namespace_watched()
WATCH_SECONDS = 300
"""The server ends each watch after this long (a little randomness is the server's); then it is
renewed from the last resourceVersion, as Kopf's `settings.watching.server_timeout` did."""
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
WATCH_BACKOFF_CAP = 8.0
"""A cluster-wide watch that fails is listed again at most this long after the last try: what was
deleted while the API server was away is repaired within seconds of its return (a handful of
watches, so trying often costs nothing)."""
PAGE = 100
"""Objects per page of a listing: a page of 500 CronJobs' metadata (managedFields and all) parsed
at once was ~11 MB, at the start of the operator, when its memory peaks."""


class Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


def raise_for_error(status: Mapping[str, Any]) -> NoReturn:
    """A watch's ERROR event (its object a Status) as the exception the watch loops handle: Gone
    on 410 (list again), else kube.ApiError."""
    if status.get("code") == 410:
        raise Gone()
    raise kube.ApiError(int(status.get("code") or 0), str(status.get("reason")), str(status.get("message")))


def as_child(kind: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """A PartialObjectMetadata item as the cache takes a child (its kind is the listed one)."""
    return {"kind": kind, "metadata": item.get("metadata") or {}}


Heal = Callable[[str], bool | None]
"""Called with the name of a pipeline one of whose children someone else deleted or changed:
level-based reconciliation repairs it now (resync.Schedule.heal), not at the next idle resync.
False: no repair is asked for (the pipeline is being deleted, or not made yet)."""


def _told(heal: Heal, pipeline: str, event: str, child: Mapping[str, Any]) -> None:
    """Asks for the pipeline's repair, saying (once per event) what someone else did."""
    if heal(pipeline) is False:
        return  # not to be repaired: being deleted, or not made yet
    key = cache.key_of(child)
    meta = child.get("metadata") or {}
    what = (
        "deleted" if event == "DELETED" else "being deleted" if meta.get("deletionTimestamp") else "changed"
    )
    log.info("%s: %s %s/%s %s behind the operator; repairing", pipeline, key[0], key[1], key[2], what)


def _no_heal(_pipeline: str) -> None:
    return None


class ChildWatch:
    """One kind's list-then-watch loop on a daemon thread, feeding `cache.CACHE`."""

    def __init__(
        self,
        client: kube.Kube,
        api_version: str,
        kind: str,
        selector: str,
        heal: Heal = _no_heal,
        observe: Callable[[str, Mapping[str, Any]], None] | None = None,
    ) -> None:
        self.heal = heal
        self.observe = observe  # told of every event of the kind (the namespaces: NamespacedWatches)
        self.client = client
        self.api_version = api_version
        self.kind = kind
        self.selector = selector
        self.listed = threading.Event()  # set once the first listing is in the cache
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{kind}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        version: str | None = None
        failures = 0
        last = ""
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list()
                    self.listed.set()
                    if failures:
                        log.info("watch of %ss: back", self.kind)
                    failures, last = 0, ""
                version = self._watch(version)
            except Gone:
                version = None
            except kube.ApiError as exc:
                if exc.status == 410:  # the version is too old, said as a status, not an event
                    version = None
                    continue
                failures += 1
                delay = backoff.delay(failures, 0.5, WATCH_BACKOFF_CAP)
                if exc.reason != last:  # once per change of error, not once per try
                    log.warning("watch of %ss: %s; retrying with back-off", self.kind, exc)
                    last = exc.reason
                # A broken watch is listed afresh: what was deleted meanwhile is found missing.
                version = None
                self._stop.wait(delay)
            except Exception:  # never end the thread: the cache would silently go stale
                log.exception("watch of %ss", self.kind)
                self._stop.wait(RETRY_SECONDS[-1])
                version = None

    def _list(self) -> str:
        """Lists every object of the kind (in pages) into the cache; the listing's version."""
        url = kube.path(self.api_version, self.kind)
        query = {"labelSelector": self.selector, "limit": str(PAGE)}
        keys: set[cache.ChildKey] = set()
        while True:
            page = self.client.request("GET", url, query=query, accept=kube.METADATA_LIST, counted=False)
            for item in page.get("items") or []:
                child = as_child(self.kind, item)
                keys.add(cache.key_of(child))
                if self.observe is not None:
                    self.observe("ADDED", child)
                if (changed := cache.CACHE.child("ADDED", child)) is not None:
                    _told(self.heal, changed, "ADDED", child)  # changed while the watch was down
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                for pipeline in cache.CACHE.keep_only(self.kind, keys):
                    if self.heal(pipeline) is not False:
                        log.info("%s: a %s deleted while unwatched; repairing", pipeline, self.kind)
                if self.observe is not None:
                    self.observe("LISTED", {"kind": self.kind, "keys": keys})
                return str(meta.get("resourceVersion") or "")
            query = {**query, "continue": str(meta["continue"])}

    def _watch(self, version: str) -> str:
        """Follows the kind's changes from `version` until the server ends the watch; the last
        version seen (to go on from)."""
        query = {
            "watch": "1",
            "labelSelector": self.selector,
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        url = kube.path(self.api_version, self.kind)
        for event in self.client.stream(url, query, kube.METADATA, WATCH_SECONDS + 30):
            if self._stop.is_set():
                break
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                raise_for_error(obj)
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                child = as_child(self.kind, obj)
                if self.observe is not None:
                    self.observe(str(kind), child)
                to_heal = cache.CACHE.child(str(kind), child)
                if to_heal is not None:
                    _told(self.heal, to_heal, str(kind), child)
        return version


NAMESPACE_WATCH_SECONDS = 1800
"""Per org namespace the watch is renewed less often than a cluster-wide one: thousands of them
renewed every 5 minutes would be requests every second at rest."""
ACCESS_GRACE_SECONDS = 15.0
"""How long after its watch starts a namespace's 403 is the RoleBinding still being made (logged at
debug level); later, a warning."""
SYNC_SECONDS = 2.0
"""How often the namespaces watched are checked against the OrgPipelines this process handles."""
LISTINGS_AT_ONCE = 16
"""Namespaces listed at once (at start every org namespace is: thousands of listings at a time
would be a burst for the API server)."""


class NamespacedWatches:
    """A kind (Secrets) watched in each org namespace: a list-then-watch per namespace, metadata
    only and label-selected as ChildWatch's, all as tasks of one event loop on one thread.

    Which namespaces: the org namespaces the Namespace watch reports (`observe`), not being
    deleted, of an OrgPipeline this process handles (not another shard's: checked again every
    SYNC_SECONDS, as the OrgPipelines may be seen after their namespaces at start-up), and, when
    the operator's access to them is its own RoleBinding there (`bound`: ORGPIPELINE_TENANT_ROLE),
    once the RoleBinding watch reports that binding: a watch started before it was only refused
    (403) and retried, at thousands of new namespaces a load on the API server and the operator.
    A namespace whose listing is still refused (the binding not in the authorizer yet) is tried
    again with back-off, logged once per change of error; one whose binding goes (someone deleted
    it: its heal makes it again) is not watched until it is back, then listed afresh."""

    def __init__(
        self, client: kube.Kube, api_version: str, kind: str, selector: str, heal: Heal, bound: bool = False
    ) -> None:
        self.client, self.api_version, self.kind, self.selector, self.heal = (
            client,
            api_version,
            kind,
            selector,
            heal,
        )
        self._loop = asyncio.new_event_loop()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._live: dict[str, str] = {}  # org namespace (not being deleted) -> its pipeline label
        # The namespaces holding the operator's RoleBinding (not being deleted); None: not needed.
        self._bound: set[str] | None = set() if bound else None
        self._thread = threading.Thread(target=self._run, name=f"watch-ns-{kind}", daemon=True)
        self._streams: kube.AsyncStreams | None = None
        self._listing: asyncio.Semaphore | None = None
        self.failing: dict[str, str] = {}  # namespace -> its last error, while failing

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)

    def watching(self) -> set[str]:
        """The namespaces followed now (a copy, for tests and metrics)."""
        return set(self._tasks)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._streams = self._loop.run_until_complete(self._open())
        self._listing = asyncio.Semaphore(LISTINGS_AT_ONCE)
        self._loop.call_soon(self._sync_forever)
        try:
            self._loop.run_forever()
        finally:
            for task in self._tasks.values():
                task.cancel()
            self._loop.run_until_complete(self._streams.close())

    async def _open(self) -> kube.AsyncStreams:
        return self.client.streams()  # its session belongs to the running loop

    def observe(self, event: str, obj: Mapping[str, Any]) -> None:
        """A Namespace or RoleBinding watch event (from ChildWatch's thread): start or stop that
        namespace's watch. "LISTED" carries the keys of a fresh listing: what is not in it is gone."""
        kind = obj.get("kind")
        if kind == "RoleBinding":
            if self._bound is not None:
                self._binding(event, obj)
            return
        if event == "LISTED":
            names = {key[2] for key in obj.get("keys") or ()}
            self._loop.call_soon_threadsafe(self._keep_only, names)
            return
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        live = event != "DELETED" and not meta.get("deletionTimestamp")
        pipeline = str((meta.get("labels") or {}).get(naming.LABEL_PIPELINE) or "")
        if name:
            self._loop.call_soon_threadsafe(self._seen, name, pipeline if live else None)

    def _binding(self, event: str, obj: Mapping[str, Any]) -> None:
        if event == "LISTED":
            names = {key[1] for key in obj.get("keys") or () if key[2] == naming.ROLE_BINDING}
            self._loop.call_soon_threadsafe(self._bound_only, names)
            return
        meta = obj.get("metadata") or {}
        if meta.get("name") != naming.ROLE_BINDING or not meta.get("namespace"):
            return
        live = event != "DELETED" and not meta.get("deletionTimestamp")
        self._loop.call_soon_threadsafe(self._bind, str(meta["namespace"]), live)

    def _bind(self, namespace: str, live: bool) -> None:
        assert self._bound is not None
        if live:
            self._bound.add(namespace)
        else:
            self._bound.discard(namespace)
        self._sync({namespace})

    def _bound_only(self, names: set[str]) -> None:
        assert self._bound is not None
        gone = self._bound - names
        self._bound &= names
        self._sync(gone | (names & set(self._live)))

    def _seen(self, namespace: str, pipeline: str | None) -> None:
        if pipeline is None:
            self._live.pop(namespace, None)
        else:
            self._live[namespace] = pipeline
        self._sync({namespace})

    def _keep_only(self, names: set[str]) -> None:
        for gone in set(self._live) - names:
            del self._live[gone]
        self._sync(set(self._tasks) - names)

    def _sync_forever(self) -> None:
        self._sync(set(self._live) | set(self._tasks))
        self._loop.call_later(SYNC_SECONDS, self._sync_forever)

    def _wanted(self, namespace: str) -> bool:
        pipeline = self._live.get(namespace)
        if pipeline is None or not cache.CACHE.handles(pipeline):
            return False
        return self._bound is None or namespace in self._bound

    def _sync(self, namespaces: set[str]) -> None:
        """Starts or stops the watches of these namespaces as they should be now (each in O(1):
        called per namespace event, and every SYNC_SECONDS for all)."""
        for ns in namespaces:
            wanted = self._wanted(ns)
            task = self._tasks.get(ns)
            if wanted and task is None:
                self._tasks[ns] = self._loop.create_task(self._follow(ns))
            elif not wanted and task is not None:
                task.cancel()
                del self._tasks[ns]
                self.failing.pop(ns, None)

    async def _follow(self, namespace: str) -> None:
        version: str | None = None
        failures = 0
        # A namespace just made: the operator's RoleBinding in it may not be written yet, or not
        # known to the authorizer (a 403 for a moment, expected: not worth a warning).
        grace = self._loop.time() + ACCESS_GRACE_SECONDS
        while True:
            try:
                if version is None:
                    version = await self._list(namespace)
                    if self.failing.pop(namespace, None) is not None and not self.failing:
                        log.info("watch of %ss: back in every namespace", self.kind)
                    failures = 0
                version = await self._watch(namespace, version)
            except Gone:
                version = None
            except kube.ApiError as exc:
                version = None
                if exc.status == 410:
                    continue
                failures += 1
                if exc.status == 403 and self._loop.time() < grace:
                    log.debug("watch of %ss in %s: %s; no access yet", self.kind, namespace, exc)
                elif self.failing.get(namespace) != exc.reason:
                    # One line when the first namespace fails (an outage fails them all: thousands
                    # of lines said nothing more), the others at debug level.
                    level = logging.WARNING if not self.failing else logging.DEBUG
                    log.log(
                        level, "watch of %ss in %s: %s; retrying with back-off", self.kind, namespace, exc
                    )
                    self.failing[namespace] = exc.reason
                await asyncio.sleep(backoff.delay(failures, 0.5, 30.0))
            except asyncio.CancelledError:
                raise
            except Exception:  # never end the task: the cache would silently go stale
                log.exception("watch of %ss in %s", self.kind, namespace)
                version = None
                await asyncio.sleep(RETRY_SECONDS[-1])

    async def _list(self, namespace: str) -> str:
        assert self._streams is not None and self._listing is not None
        url = kube.path(self.api_version, self.kind, namespace)
        query = {"labelSelector": self.selector, "limit": str(PAGE)}
        keys: set[cache.ChildKey] = set()
        async with self._listing:
            while True:
                page = await self._streams.get(url, query, kube.METADATA_LIST)
                for item in page.get("items") or []:
                    child = as_child(self.kind, item)
                    keys.add(cache.key_of(child))
                    if (changed := cache.CACHE.child("ADDED", child)) is not None:
                        _told(self.heal, changed, "ADDED", child)
                meta = page.get("metadata") or {}
                if not meta.get("continue"):
                    for pipeline in cache.CACHE.keep_only(self.kind, keys, namespace):
                        if self.heal(pipeline) is not False:
                            log.info("%s: a %s deleted while unwatched; repairing", pipeline, self.kind)
                    return str(meta.get("resourceVersion") or "")
                query = {**query, "continue": str(meta["continue"])}

    async def _watch(self, namespace: str, version: str) -> str:
        assert self._streams is not None
        seconds = NAMESPACE_WATCH_SECONDS + random.randint(0, NAMESPACE_WATCH_SECONDS // 4)
        query = {
            "watch": "1",
            "labelSelector": self.selector,
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(seconds),
        }
        url = kube.path(self.api_version, self.kind, namespace)
        async for event in self._streams.stream(url, query, kube.METADATA, seconds + 30):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                raise_for_error(obj)
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                child = as_child(self.kind, obj)
                to_heal = cache.CACHE.child(str(kind), child)
                if to_heal is not None:
                    _told(self.heal, to_heal, str(kind), child)
        return version


def start_all(
    client: kube.Kube, heal: Heal = _no_heal, bound: bool = False
) -> list[ChildWatch | NamespacedWatches]:
    """Every child kind's watch: cluster-wide (ChildWatch) or per org namespace (NamespacedWatches,
    told of the namespaces by the Namespace watch and, when `bound` (the operator's access there is
    its RoleBinding child), of its RoleBindings by the RoleBinding watch)."""
    namespaced = [
        NamespacedWatches(client, api_version, kind, naming.MANAGED_SELECTOR, heal, bound)
        for api_version, kind in NAMESPACED_KINDS
    ]

    def observe(event: str, namespace: Mapping[str, Any]) -> None:
        for w in namespaced:
            w.observe(event, namespace)

    watches: list[ChildWatch | NamespacedWatches] = [*namespaced]
    for api_version, kind in KINDS:
        told = observe if kind in ("Namespace", "RoleBinding") and namespaced else None
        watches.append(ChildWatch(client, api_version, kind, naming.MANAGED_SELECTOR, heal, told))
    for w in watches:
        w.start()
    return watches
