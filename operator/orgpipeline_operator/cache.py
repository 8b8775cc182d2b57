"""What the operator knows about the cluster without asking: its children (with their applied
hashes), its Jobs, and the OrgPipelines (org id claims, last status), fed by watch events; and
who owns each org id (as recorded in PostgreSQL, see claims.py) as far as this process has read it.

Kopf's own indexes would do the same, but they hold every handler back until each indexed object of
the initial listing is in, and the wait is quadratic: with a thousand orgs the operator sat for
minutes before its first reconcile. This cache never blocks; the reconcile copes with a cache that
is still filling (it reads a child back before writing it on resume and resync).
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from orgpipeline_operator import naming, ownership
from orgpipeline_operator.ownership import Owner

ChildKey = tuple[str, str, str]  # kind, namespace, name


@dataclass(frozen=True, slots=True)
class _Pipeline:
    """An OrgPipeline as the cache keeps it: the few metadata fields read often, and spec and
    status as compact JSON. As parsed dicts they took ~12 KB per org (36 MB at 3,000 orgs); as
    JSON ~3 KB, parsed again (tens of microseconds) by the few who read them."""

    api_version: str
    kind: str
    metadata: dict[str, Any]
    spec_status: bytes

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> _Pipeline:
        meta = body.get("metadata") or {}
        kept = {k: meta.get(k) for k in ("name", "uid", "resourceVersion", "generation", "deletionTimestamp")}
        parts = [body.get("spec") or {}, body.get("status") or {}]
        return cls(
            str(body.get("apiVersion") or ""),
            str(body.get("kind") or ""),
            kept,
            json.dumps(parts, separators=(",", ":"), default=_plain).encode(),
        )

    def expand(self) -> dict[str, Any]:
        spec, status = json.loads(self.spec_status)
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": dict(self.metadata),
            "spec": spec,
            "status": status,
        }


def _plain(value: Any) -> Any:
    """Kopf's mapping views (a Body's parts) as the plain dicts they stand for."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class _Job:
    """What decides whether a Job is a run of its org (ownership.is_org_run), and its state."""

    table: str
    finished: bool
    meta: dict[str, Any]  # namespace, the org label, the controller reference


DRIFTED = "drifted"
"""The cached hash of a child someone else changed: no desired child has it, so it is applied (its
applied-hash annotation, which an edit of the spec keeps, cannot tell)."""


NOT_CONTENT = frozenset({"f:metadata", "f:status", "f:apiVersion", "f:kind", "."})
"""Fields of a child whose change by someone else is no drift: labels and annotations others add
(kubectl label, client-side apply's last-applied annotation) and status."""


def drifted(meta: Mapping[str, Any]) -> bool:
    """Whether someone other than the operator wrote the child's content (its managedFields, as the
    metadata-only watch delivers them: an entry of another manager owning spec, data, subjects,
    roleRef... anything but metadata and status). Status writes (a subresource: the CronJob and
    quota controllers') do not count. After the operator's forced apply takes its fields back, the
    other entry goes (or keeps only fields the operator does not set: then one more apply, a no-op
    that brings no new event)."""
    for entry in meta.get("managedFields") or []:
        if (
            not isinstance(entry, Mapping)
            or entry.get("manager") == naming.MANAGER
            or entry.get("subresource")
        ):
            continue
        if set(entry.get("fieldsV1") or {}) - NOT_CONTENT:
            return True
    return False


def key_of(body: Mapping[str, Any]) -> ChildKey:
    meta = body.get("metadata") or {}
    return str(body.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name"))


class Cache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._children: dict[str, dict[ChildKey, str | None]] = {}
        # namespace -> the pipelines with a child there (may name some that no longer have one):
        # what a namespace's relisting goes over, not every org's children (O(orgs) per namespace).
        self._in_namespace: dict[str, set[str]] = {}
        self._jobs: dict[str, dict[str, _Job]] = {}
        self._crons: dict[ChildKey, tuple[str, dict[str, Any]]] = {}  # CronJob -> its uid, what owns it
        self._pipelines: dict[str, _Pipeline] = {}
        self._claim: dict[str, str] = {}  # pipeline -> the org id its spec names
        self._owners: dict[str, Owner] = {}  # org id -> its recorded owner (claims.py)
        self._refused: set[tuple[str, str]] = set()  # (org id, uid) refused the org id
        self._namespaces: dict[str, str] = {}  # pipeline -> uid of the namespace verified as its own
        self._quiet: dict[str, Hashable] = {}  # pipeline -> inputs of its last reconcile that wrote nothing
        self._deep: dict[str, float] = {}  # pipeline -> when its next deep resync is due (monotonic)
        self._recording: set[tuple[str, str]] = set()  # (pipeline, job) being recorded or recorded
        self._specs_version = 0  # bumped when an OrgPipeline comes, goes, or its spec changes

    # --- feeding (from watch events) ----------------------------------------------------------

    def child(self, event: str | None, body: Mapping[str, Any]) -> str | None:
        """Records the event; returns the pipeline to repair now (resync.Schedule.heal), if any: on
        a DELETED event, the one whose child it was when the cache still had it (a deletion by
        someone else: the operator forgets its own before the event comes); on another, the one
        whose child someone else changed (`drifted`), recorded as DRIFTED so that it is applied."""
        meta = body.get("metadata") or {}
        pipeline = (meta.get("labels") or {}).get(naming.LABEL_PIPELINE)
        if not pipeline:
            return None
        key = key_of(body)
        with self._lock:
            entries = self._children.setdefault(pipeline, {})
            if key[1]:
                self._in_namespace.setdefault(key[1], set()).add(str(pipeline))
            if event == "DELETED":
                self._crons.pop(key, None)
                return str(pipeline) if entries.pop(key, False) is not False else None
            else:
                # Being deleted (a namespace in Terminating, a child held by a finalizer): the org
                # cannot run in it; the heal says so in the status and makes it again once gone.
                drift = drifted(meta) or bool(meta.get("deletionTimestamp"))
                entries[key] = (
                    DRIFTED if drift else (meta.get("annotations") or {}).get(naming.ANNOTATION_HASH)
                )
                if key[0] == "CronJob" and meta.get("uid"):  # as watched (a desired one has none)
                    ref = ownership.controller(meta)
                    owned = {"namespace": key[1], "ownerReferences": [dict(ref)] if ref else []}
                    self._crons[key] = (str(meta["uid"]), owned)
        return str(pipeline) if drift else None

    def claim_job(self, pipeline: str, job: str) -> bool:
        """Whether this caller is the one to record the finished Job (False: another event or the
        resync already is, or did, while the status that says so may not have come back yet)."""
        with self._lock:
            if (pipeline, job) in self._recording:
                return False
            self._recording.add((pipeline, job))
            return True

    def release_job(self, pipeline: str, job: str) -> None:
        """Recording the Job failed: the next event or resync may try again."""
        with self._lock:
            self._recording.discard((pipeline, job))

    def keep_only(self, kind: str, keys: set[ChildKey], namespace: str | None = None) -> set[str]:
        """Drops the children of the kind (in `namespace`, if given) that are not in `keys` (a fresh
        listing of the kind: what was deleted while the watch was down); returns the pipelines that
        lost one."""
        lost = set()
        with self._lock:
            if namespace is None:
                scanned = list(self._children)
            else:
                scanned = list(self._in_namespace.get(namespace, ()))
            for pipeline in scanned:
                entries = self._children.get(pipeline, {})
                gone = [k for k in entries if k[0] == kind and k not in keys]
                for key in [k for k in gone if namespace is None or k[1] == namespace]:
                    del entries[key]
                    self._crons.pop(key, None)
                    lost.add(pipeline)
                if namespace is not None and not any(k[1] == namespace for k in entries):
                    self._in_namespace[namespace].discard(pipeline)
            if namespace is not None and not self._in_namespace.get(namespace, True):
                del self._in_namespace[namespace]
        return lost

    def job(self, event: str | None, body: Mapping[str, Any], finished: bool) -> None:
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        pipeline = labels.get(naming.LABEL_PIPELINE)
        if not pipeline:
            return
        with self._lock:
            jobs = self._jobs.setdefault(pipeline, {})
            if event == "DELETED":
                jobs.pop(str(meta.get("name")), None)
                self._recording.discard((pipeline, str(meta.get("name"))))
            else:
                ref = ownership.controller(meta)
                kept = {
                    "namespace": str(meta.get("namespace") or ""),
                    "labels": {naming.LABEL_ORG: labels.get(naming.LABEL_ORG)},
                    "ownerReferences": [dict(ref)] if ref is not None else [],
                }
                jobs[meta["name"]] = _Job(labels.get(naming.LABEL_TABLE, ""), finished, kept)

    def pipeline(self, event: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        name = str(meta.get("name"))
        org = str((body.get("spec") or {}).get("orgId") or "")
        with self._lock:
            # Every event of every OrgPipeline passes here: drop this pipeline's claim by its own
            # record, not by a scan of all orgs' claims (which made each event cost O(orgs)).
            self._claim.pop(name, None)
            if event == "DELETED":
                self._specs_version += 1
                self._pipelines.pop(name, None)
                for ns in {key[1] for key in self._children.pop(name, {})}:
                    if ns in self._in_namespace:
                        self._in_namespace[ns].discard(name)
                        if not self._in_namespace[ns]:
                            del self._in_namespace[ns]
                self._jobs.pop(name, None)
                self._recording = {r for r in self._recording if r[0] != name}
                self._quiet.pop(name, None)
                self._deep.pop(name, None)
                self._namespaces.pop(name, None)
                return
            known = self._pipelines[name].metadata if name in self._pipelines else {}
            if any(known.get(k) != meta.get(k) for k in ("uid", "generation", "deletionTimestamp")):
                self._specs_version += 1
            if known.get("uid") != meta.get("uid"):
                self._namespaces.pop(name, None)
            self._pipelines[name] = _Pipeline.of(body)
            if org:
                self._claim[name] = org

    # --- reading ------------------------------------------------------------------------------

    def children_of(self, pipeline: str) -> dict[ChildKey, str | None]:
        with self._lock:
            return dict(self._children.get(pipeline, {}))

    def jobs_of(self, pipeline: str) -> list[tuple[str, str, bool]]:
        """(table, job name, finished) of the pipeline's runs: its Jobs that are runs of its org as
        far as the cache knows now (ownership.is_org_run; a Job elsewhere with its labels, or not
        made by the operator, is not one). Decided when read, not when the Job's event came: the
        CronJob that made a Job may be watched after the Job."""
        with self._lock:
            org = self._claim.get(pipeline, "")
            found = self._pipelines.get(pipeline)
            uid = str(found.metadata.get("uid") or "") if found is not None else ""
            crons = self._cronjob_uids(pipeline, org, uid)
            return [
                (j.table, name, j.finished)
                for name, j in self._jobs.get(pipeline, {}).items()
                if ownership.is_org_run(j.meta, org, uid, crons)
            ]

    def cronjob_uids(self, pipeline: str) -> set[str]:
        """The uids of the CronJobs the operator made for the pipeline (in its org's namespace,
        controlled by it), as watched: their Jobs are its scheduled runs."""
        with self._lock:
            found = self._pipelines.get(pipeline)
            uid = str(found.metadata.get("uid") or "") if found is not None else ""
            return self._cronjob_uids(pipeline, self._claim.get(pipeline, ""), uid)

    def _cronjob_uids(self, pipeline: str, org: str, uid: str) -> set[str]:
        out = set()
        for key in self._children.get(pipeline, {}):
            if key[0] == "CronJob" and key in self._crons:
                cron_uid, owned = self._crons[key]
                if ownership.is_org_cronjob(owned, org, uid):
                    out.add(cron_uid)
        return out

    def pipelines(self) -> list[dict[str, Any]]:
        """Every OrgPipeline as last seen (not being deleted): what file arrivals are routed over."""
        with self._lock:
            kept = [p for p in self._pipelines.values() if not p.metadata.get("deletionTimestamp")]
        return [p.expand() for p in kept]

    def handles(self, pipeline: str) -> bool:
        """Whether the OrgPipeline is known and not being deleted (one of `resyncable()`, in O(1))."""
        with self._lock:
            found = self._pipelines.get(pipeline)
            return found is not None and not found.metadata.get("deletionTimestamp")

    def resyncable(self) -> list[str]:
        """The names of the OrgPipelines not being deleted (what the idle resync goes over)."""
        with self._lock:
            return [n for n, p in self._pipelines.items() if not p.metadata.get("deletionTimestamp")]

    def specs_version(self) -> int:
        """Changes whenever `pipelines()` may give other specs (or org owners): a new, deleted or
        edited OrgPipeline; status writes leave it as it is."""
        with self._lock:
            return self._specs_version

    def pipeline_count(self) -> int:
        with self._lock:
            return len(self._pipelines)

    def pipeline_snapshot(self, name: str) -> dict[str, Any] | None:
        """The OrgPipeline as last seen (apiVersion, kind, the metadata a reconcile reads, spec,
        status): a fresh copy, the caller's to keep or change."""
        with self._lock:
            found = self._pipelines.get(name)
        return found.expand() if found is not None else None

    def quiet(self, pipeline: str) -> Hashable | None:
        """The inputs of the pipeline's last reconcile that found everything as desired (see
        reconcile.quiet_fingerprint), or None."""
        with self._lock:
            return self._quiet.get(pipeline)

    def set_quiet(self, pipeline: str, fingerprint: Hashable) -> None:
        with self._lock:
            if pipeline in self._pipelines:  # not for one deleted meanwhile
                self._quiet[pipeline] = fingerprint

    def deep_due(self, pipeline: str, interval: float, now: float | None = None) -> bool:
        """Whether the pipeline's deep resync is due (then the next one is set `interval` later).
        The first falls between one and 1.25 intervals after the first call, spread by the name, so
        that orgs created together do not all read their children back at the same moment."""
        now = time.monotonic() if now is None else now
        with self._lock:
            due = self._deep.get(pipeline)
            if due is None:
                spread = (zlib.crc32(pipeline.encode()) % 1000) / 4000
                self._deep[pipeline] = now + interval * (1 + spread)
                return False
            if now < due:
                return False
            self._deep[pipeline] = now + interval
            return True

    def org_owner(self, org_id: str | None) -> str | None:
        """The name of the OrgPipeline recorded as the org id's owner (claims.py) with the namespace
        the operator made for it, as this process read or made the record; None when it knows of
        none. It alone may start the org's runs (file arrivals are routed to it)."""
        found = self.org_owner_record(org_id)
        return found.name if found is not None and found.namespace_uid else None

    def org_owner_record(self, org_id: str | None) -> Owner | None:
        if not org_id:
            return None
        with self._lock:
            return self._owners.get(org_id)

    def set_org_owner(self, org_id: str, owner: Owner) -> None:
        """Records the owner read from (or just written to) PostgreSQL."""
        with self._lock:
            if self._owners.get(org_id) != owner:
                self._owners[org_id] = owner
                self._specs_version += 1  # file arrivals route to the owner alone

    def release_org(self, org_id: str, uid: str) -> None:
        """OrgPipeline `uid` is deleted: its ownership of the org id (if it had it) goes."""
        with self._lock:
            found = self._owners.get(org_id)
            if found is not None and found.uid == uid:
                del self._owners[org_id]
                self._specs_version += 1
            self._refused.discard((org_id, uid))

    def refuse(self, org_id: str, uid: str) -> None:
        with self._lock:
            self._refused.add((org_id, uid))

    def refused(self, org_id: str, uid: str) -> bool:
        """Whether OrgPipeline `uid` was refused the org id (it stays refused)."""
        with self._lock:
            return (org_id, uid) in self._refused

    def namespace_verified(self, pipeline: str) -> str | None:
        """The uid of the org namespace this process verified as the pipeline's own (or made)."""
        with self._lock:
            return self._namespaces.get(pipeline)

    def set_namespace_verified(self, pipeline: str, namespace_uid: str | None) -> None:
        with self._lock:
            if namespace_uid is None:
                self._namespaces.pop(pipeline, None)
            elif pipeline in self._pipelines:
                self._namespaces[pipeline] = namespace_uid


CACHE = Cache()
