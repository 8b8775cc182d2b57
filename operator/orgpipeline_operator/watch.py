"""The operator's own watch of its CronJobs: metadata only, straight into the cache.

(Secrets were watched too until the operator lost cluster-wide Secret read, issue 22: they are now
tracked by hash like the other unwatched children; see kinds.py.)

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

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from orgpipeline_operator import cache, kinds, kube, naming

log = logging.getLogger("orgpipeline.operator")

KINDS = kinds.watched()
WATCH_SECONDS = 300
"""The server ends each watch after this long (a little randomness is the server's); then it is
renewed from the last resourceVersion, as Kopf's `settings.watching.server_timeout` did."""
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
PAGE = 100
"""Objects per page of a listing: a page of 500 CronJobs' metadata (managedFields and all) parsed
at once was ~11 MB, at the start of the operator, when its memory peaks."""


class Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


def as_child(kind: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """A PartialObjectMetadata item as the cache takes a child (its kind is the listed one)."""
    return {"kind": kind, "metadata": item.get("metadata") or {}}


Heal = Callable[[str], None]
"""Called with the name of a pipeline one of whose children someone else deleted or changed:
level-based reconciliation repairs it now (resync.Schedule.heal), not at the next idle resync."""


def _no_heal(_pipeline: str) -> None:
    return None


class ChildWatch:
    """One kind's list-then-watch loop on a daemon thread, feeding `cache.CACHE`."""

    def __init__(
        self, client: kube.Kube, api_version: str, kind: str, selector: str, heal: Heal = _no_heal
    ) -> None:
        self.heal = heal
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
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list()
                    self.listed.set()
                version = self._watch(version)
                failures = 0
            except Gone:
                version = None
            except kube.ApiError as exc:
                if exc.status == 410:  # the version is too old, said as a status, not an event
                    version = None
                    continue
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                log.warning("watch of %ss: %s; again in %ss", self.kind, exc, delay)
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
                if (changed := cache.CACHE.child("ADDED", child)) is not None:
                    self.heal(changed)  # changed by someone else (while the watch was down)
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                for pipeline in cache.CACHE.keep_only(self.kind, keys):
                    self.heal(pipeline)  # deleted while the watch was down
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
                if obj.get("code") == 410:
                    raise Gone()
                raise kube.ApiError(
                    int(obj.get("code") or 0), str(obj.get("reason")), str(obj.get("message"))
                )
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                to_heal = cache.CACHE.child(str(kind), as_child(self.kind, obj))
                if to_heal is not None:
                    self.heal(to_heal)
        return version


def start_all(client: kube.Kube, heal: Heal = _no_heal) -> list[ChildWatch]:
    watches = [
        ChildWatch(client, api_version, kind, naming.MANAGED_SELECTOR, heal) for api_version, kind in KINDS
    ]
    for w in watches:
        w.start()
    return watches
