"""What the operator knows about the cluster without asking: its children (with their applied
hashes), its Jobs, and the OrgPipelines (org id claims, last status), fed by watch events.

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

from orgpipeline_operator import naming

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


def key_of(body: Mapping[str, Any]) -> ChildKey:
    meta = body.get("metadata") or {}
    return str(body.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name"))


class Cache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._children: dict[str, dict[ChildKey, str | None]] = {}
        self._jobs: dict[str, dict[str, tuple[str, bool]]] = {}
        self._pipelines: dict[str, _Pipeline] = {}
        self._orgs: dict[str, dict[str, str]] = {}  # org id -> {pipeline: creationTimestamp}
        self._claim: dict[str, str] = {}  # pipeline -> the org id it claims (to drop that claim alone)
        self._quiet: dict[str, Hashable] = {}  # pipeline -> inputs of its last reconcile that wrote nothing
        self._deep: dict[str, float] = {}  # pipeline -> when its next deep resync is due (monotonic)
        self._recording: set[tuple[str, str]] = set()  # (pipeline, job) being recorded or recorded
        self._specs_version = 0  # bumped when an OrgPipeline comes, goes, or its spec changes

    # --- feeding (from watch events) ----------------------------------------------------------

    def child(self, event: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        pipeline = (meta.get("labels") or {}).get(naming.LABEL_PIPELINE)
        if not pipeline:
            return
        key = key_of(body)
        with self._lock:
            entries = self._children.setdefault(pipeline, {})
            if event == "DELETED":
                entries.pop(key, None)
            else:
                entries[key] = (meta.get("annotations") or {}).get(naming.ANNOTATION_HASH)

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

    def keep_only(self, kind: str, keys: set[ChildKey]) -> None:
        """Drops the children of the kind that are not in `keys` (a fresh listing of the kind: what
        was deleted while the watch was down)."""
        with self._lock:
            for entries in self._children.values():
                for key in [k for k in entries if k[0] == kind and k not in keys]:
                    del entries[key]

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
                jobs[meta["name"]] = (labels.get(naming.LABEL_TABLE, ""), finished)

    def pipeline(self, event: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        name = str(meta.get("name"))
        org = str((body.get("spec") or {}).get("orgId") or "")
        with self._lock:
            # Every event of every OrgPipeline passes here: drop this pipeline's claim by its own
            # record, not by a scan of all orgs' claims (which made each event cost O(orgs)).
            previous = self._claim.pop(name, None)
            if previous is not None:
                claims = self._orgs.get(previous, {})
                claims.pop(name, None)
                if not claims:
                    self._orgs.pop(previous, None)
            if event == "DELETED":
                self._specs_version += 1
                self._pipelines.pop(name, None)
                self._children.pop(name, None)
                self._jobs.pop(name, None)
                self._recording = {r for r in self._recording if r[0] != name}
                self._quiet.pop(name, None)
                self._deep.pop(name, None)
                return
            known = self._pipelines[name].metadata if name in self._pipelines else {}
            if any(known.get(k) != meta.get(k) for k in ("uid", "generation", "deletionTimestamp")):
                self._specs_version += 1
            self._pipelines[name] = _Pipeline.of(body)
            if org:
                self._orgs.setdefault(org, {})[name] = str(meta.get("creationTimestamp") or "")
                self._claim[name] = org

    # --- reading ------------------------------------------------------------------------------

    def children_of(self, pipeline: str) -> dict[ChildKey, str | None]:
        with self._lock:
            return dict(self._children.get(pipeline, {}))

    def jobs_of(self, pipeline: str) -> list[tuple[str, str, bool]]:
        """(table, job name, finished) of the pipeline's Jobs."""
        with self._lock:
            return [(t, name, done) for name, (t, done) in self._jobs.get(pipeline, {}).items()]

    def pipelines(self) -> list[dict[str, Any]]:
        """Every OrgPipeline as last seen (not being deleted): what file arrivals are routed over."""
        with self._lock:
            kept = [p for p in self._pipelines.values() if not p.metadata.get("deletionTimestamp")]
        return [p.expand() for p in kept]

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
        """The oldest OrgPipeline claiming the org id (ties by name): it alone may own the org."""
        if not org_id:
            return None
        with self._lock:
            claims = sorted((ts, name) for name, ts in self._orgs.get(org_id, {}).items())
        return claims[0][1] if claims else None


CACHE = Cache()
