"""What the API server held of the operator's children when the operator started: one paged LIST per
kind, label-selected, instead of a GET of every child of every org.

On resume (an operator start) every org's children are verified: read back, compared with their
desired hash, repaired if they differ. Read one by one that is ~10 GETs per org: 30,000 requests at
3,000 orgs, and the restart took minutes. The snapshot reads the same objects in a few dozen pages
(500 objects each) and keeps only what the verification needs: each child's applied hash, the
owner marks of each Namespace (uid, labels, owner annotation) and each pipeline's CronJobs (what to
prune).

Used by the resume only, and only while young (`MAX_AGE`): the operator is the only writer of these
objects (one replica), its own writes are recorded here too, and whatever the snapshot does not hold
is read with a GET as before. A failed LIST falls back to the GETs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orgpipeline_api import store_names
from orgpipeline_api.v1alpha1 import OrgPipelineSpec

from orgpipeline_operator import builders, database, kinds, kube, naming
from orgpipeline_operator.cache import ChildKey

log = logging.getLogger("orgpipeline.operator")

MAX_AGE = 300.0
MIN_ORGS = 100
"""Below this many OrgPipelines a resume reads its few children with GETs: the listing covers every
managed child on the cluster, which a small operator (or one shard of many) need not pay for."""
KINDS = kinds.listed()


@dataclass
class Inventory:
    """The children as listed: applied hash by key, the metadata that says who owns each namespace
    (ownership.namespace_owned), CronJobs by pipeline."""

    hashes: dict[ChildKey, str | None] = field(default_factory=dict)
    namespaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    cronjobs: dict[str, set[ChildKey]] = field(default_factory=dict)
    schemas: set[tuple[str, str]] | None = None  # (schema, owner role) in PostgreSQL; None: not read
    readers: dict[str, database.ReaderState] | None = None  # by org id; None: not read

    def add(self, kind: str, items: Iterable[Mapping[str, Any]]) -> None:
        for item in items:
            meta = item.get("metadata") or {}
            key = (kind, str(meta.get("namespace") or ""), str(meta.get("name")))
            labels = meta.get("labels") or {}
            self.hashes[key] = (meta.get("annotations") or {}).get(naming.ANNOTATION_HASH)
            if kind == "Namespace":
                self.namespaces[key[2]] = {
                    k: meta.get(k) for k in ("name", "uid", "labels", "annotations", "ownerReferences")
                }
            elif kind == "CronJob" and labels.get(naming.LABEL_PIPELINE):
                self.cronjobs.setdefault(labels[naming.LABEL_PIPELINE], set()).add(key)

    def applied(self, obj: Mapping[str, Any]) -> None:
        """Records a child the operator just wrote (its hash as applied)."""
        key = builders.child_key(dict(obj))
        self.hashes[key] = builders.applied_hash(dict(obj))
        pipeline = ((obj.get("metadata") or {}).get("labels") or {}).get(naming.LABEL_PIPELINE)
        if key[0] == "CronJob" and pipeline:
            self.cronjobs.setdefault(pipeline, set()).add(key)

    def provisioned(self, org_id: str) -> bool:
        """Whether the org's role exists and owns its schema (as provision() would leave them)."""
        return (
            self.schemas is not None
            and (store_names.pg_schema(org_id), store_names.pg_role(org_id)) in self.schemas
        )

    def reader_ready(self, spec: OrgPipelineSpec) -> bool | None:
        """Whether the org's reader role and views are in place, as listed; None: not read."""
        if self.readers is None:
            return None
        return self.readers.get(spec.org_id, database.ReaderState()).ready(spec)

    def deleted(self, pipeline: str, key: ChildKey) -> None:
        self.hashes.pop(key, None)
        self.cronjobs.get(pipeline, set()).discard(key)


class Snapshot:
    """The inventory, taken once on first use (the first resume) and dropped when too old."""

    def __init__(self, client: kube.Kube, db: database.Databases | None, max_age: float = MAX_AGE) -> None:
        self._kube = client
        self._db = db
        self._max_age = max_age
        self._lock = threading.Lock()
        self._inventory: Inventory | None = None
        self._taken = 0.0
        self._failed = False

    def get(self) -> Inventory | None:
        """The inventory while it is young; taken on the first call. None: read object by object."""
        with self._lock:
            if self._inventory is None and not self._failed:
                self._inventory = self._take()
                self._failed = self._inventory is None
                self._taken = time.monotonic()
            if self._inventory is not None and time.monotonic() - self._taken > self._max_age:
                self._inventory = None  # every start-up verification is long done: GETs from now on
            return self._inventory

    def applied(self, obj: Mapping[str, Any]) -> None:
        with self._lock:
            if self._inventory is not None:
                self._inventory.applied(obj)

    def deleted(self, pipeline: str, key: ChildKey) -> None:
        with self._lock:
            if self._inventory is not None:
                self._inventory.deleted(pipeline, key)

    def _take(self) -> Inventory | None:
        started = time.monotonic()
        inventory = Inventory()
        try:
            for api_version, kind in KINDS:
                inventory.add(kind, self._kube.list_metadata(api_version, kind, naming.MANAGED_SELECTOR))
        except kube.ApiError as exc:
            log.warning("cannot list the children at start-up (%s); verifying them one by one", exc)
            return None
        if self._db is not None:
            try:
                inventory.schemas = self._db.schema_owners()
                inventory.readers = self._db.readers()
            except database.DatabaseError as exc:
                log.warning("%s; provisioning org by org", exc)
        log.info(
            "listed %d children of %d namespaces in %.1fs",
            len(inventory.hashes),
            len(inventory.namespaces),
            time.monotonic() - started,
        )
        return inventory
