"""Reconcile one OrgPipeline: database, children, status. Called on create, update, resume and by
the idle resync; idempotent, and silent (no write at all) when everything is already as desired.

Failures are sorted: a spec that cannot work (invalid beyond the schema, a child the API server
refuses, an org id another OrgPipeline owns) becomes a False condition and waits for a spec change;
trouble that may pass (API or database unavailable, conflicts) becomes a False condition and a
retry (kopf.TemporaryError).

Ownership first (issue 22, see ownership.py and claims.py): the org id is claimed in PostgreSQL
before anything is written, and the org's namespace is used only when the operator made it for this
OrgPipeline (created with a POST, never adopted by a forced apply; its uid recorded with the
claim). A namespace someone else made stops the org (NamespaceNotOwned) until it goes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import kopf
from orgpipeline_api import v1alpha1
from orgpipeline_api.v1alpha1 import OrgPipelineSpec
from orgpipeline_api.v1alpha1_status import OrgPipelineStatus
from pydantic import ValidationError

from orgpipeline_operator import (
    backoff,
    builders,
    cache,
    claims,
    database,
    kinds,
    kube,
    metrics,
    naming,
    ownership,
    reader,
    runtime,
    status,
)
from orgpipeline_operator.cache import ChildKey
from orgpipeline_operator.request import Request
from orgpipeline_operator.runtime import Runtime, SourceSecretMissing, StatusWrite, log
from orgpipeline_operator.snapshot import MIN_ORGS, Inventory

# Kinds the operator deletes when they are no longer desired (the rest are fixed per org).
PRUNABLE = kinds.prunable()
CHECKED = ("create", "update", "resume", "deep", "heal")
"""Triggers that read the org's namespace back to check it is still the one the operator made (the
idle resync trusts what this process verified: it stays request-free). `heal` is the reconcile a
watch event asks for when someone else deleted a child (resync.Schedule.heal): it reads back the
namespace and every unwatched child (the credentials Secret among them), as the deep resync does."""
READ_BACK = ("resume", "deep", "heal")
"""Triggers that read the unwatched children back instead of trusting status.childrenHash."""


HANDLED = ("create", "update")
"""Triggers that are Kopf handlers: Kopf retries them after the error's delay, which backs off here
(the resync loop backs off its own triggers, see resync.Resyncer)."""
HANDLER_RETRIES = backoff.Streak(first=1.0, cap=30.0)


def reconcile(rt: Runtime, req: Request, body: Mapping[str, Any]) -> None:
    started = time.monotonic()
    result = "ok"
    try:
        _reconcile(rt, req, body)
        HANDLER_RETRIES.succeeded(req.name)
    except kopf.TemporaryError as exc:
        result = "retry"
        if req.trigger in HANDLED:
            base = rt.settings.retry_seconds if exc.delay is None else exc.delay
            wait, _new = HANDLER_RETRIES.failed(req.name, str(exc), first=base)
            raise kopf.TemporaryError(str(exc), delay=wait) from exc
        raise
    except Exception:
        result = "error"
        metrics.RECONCILE_ERRORS.labels(reason="Unexpected").inc()
        raise
    finally:
        metrics.RECONCILES.labels(trigger=req.trigger, result=result).inc()
        metrics.RECONCILE_SECONDS.labels(trigger=req.trigger).observe(time.monotonic() - started)


def request(trigger: str, name: str, obj: Mapping[str, Any]) -> Request:
    """The reconcile of the object (as Kopf passes it, or as the cache keeps it) with the cache's
    view of its children and of who owns its org id."""
    meta = obj.get("metadata") or {}
    spec = dict(obj.get("spec") or {})
    return Request(
        name=name,
        uid=str(meta.get("uid") or ""),
        generation=meta.get("generation"),
        resource_version=meta.get("resourceVersion"),
        spec=spec,
        status=dict(obj.get("status") or {}),
        trigger=trigger,
        existing=cache.CACHE.children_of(name),
        org_owner=cache.CACHE.org_owner_record(spec.get("orgId")),
    )


def quiet_fingerprint(req: Request) -> bytes:
    """What a reconcile depends on that can change between two resyncs: the object (its
    resourceVersion moves with any change of spec, status or metadata) and its watched children as
    the cache has them. The rest (settings, the operator's code) is fixed for the process. Kept per
    org as a 16-byte digest, not as the children's list (a copy of the cache's at thousands of orgs)."""
    inputs = (req.uid, req.resource_version, tuple(sorted(req.existing.items())))
    return hashlib.blake2b(repr(inputs).encode(), digest_size=16).digest()


def _reconcile(rt: Runtime, req: Request, body: Mapping[str, Any]) -> None:
    if req.trigger == "resync" and cache.CACHE.quiet(req.name) == quiet_fingerprint(req):
        # Nothing changed since a reconcile that found everything as desired: the same inputs give
        # the same answer, so skip building every child to find that out again (at thousands of
        # orgs, the idle resync of every org was the operator's largest steady CPU cost).
        return
    obs = status.Observation(generation=req.generation)

    def refuse(reason: str, message: str) -> None:
        """A spec that cannot work as it is: a False Ready condition, no retry."""
        obs.spec_error = status.Check(False, reason, message)
        metrics.RECONCILE_ERRORS.labels(reason=reason).inc()
        write_status(rt, req, None, obs, body)

    try:
        spec = OrgPipelineSpec.model_validate(dict(req.spec))
    except ValidationError as exc:
        refuse("InvalidSpec", v1alpha1.errors_one_line(exc))
        return
    inventory = None
    if rt.snapshot is not None and req.trigger == "resume" and cache.CACHE.pipeline_count() >= MIN_ORGS:
        inventory = rt.snapshot.get()
    target = builders.Target(req.name, req.uid, spec, rt.job_settings)
    old = status.parse(dict(req.status or {}))
    db_ready = (c := old.condition(status.DATABASE_READY)) is not None and c.status == "True"
    retry: str | None = None
    writes = 1  # unless the children were all brought in line, count the reconcile as not quiet
    try:
        held = _hold(rt, req, target, inventory)
        if (s3_refusal := rt.source_refusal(spec)) is not None:
            refuse(*s3_refusal)  # keys not the org's: no child is made with them
            return
        writes = held.writes + _apply_children(rt, req, target, obs, db_ready, Seen(inventory, held.fresh))
    except NotOwned as exc:
        refuse(exc.reason, exc.message)
        return
    except database.SchemaChangeRefused as exc:  # issue 13: no retry helps until spec or data changes
        obs.database = status.Check(False, "ColumnTypeChangeRefused", str(exc))
    except database.DatabaseError as exc:
        obs.database = status.Check(False, "DatabaseUnavailable", str(exc))
        retry = str(exc)
    except SourceSecretMissing as exc:
        obs.resources = status.Check(False, exc.reason, str(exc))
        retry = str(exc)
    except NamespaceGone as exc:
        obs.resources = status.Check(False, exc.reason, str(exc))
        retry = str(exc)
    except kube.ApiError as exc:
        if exc.status == 404:
            # The namespace went behind this process's back (the idle resync trusted it): read it
            # at the retry, which makes it again when it is the operator's to make.
            cache.CACHE.set_namespace_verified(req.name, None)
            obs.resources = status.Check(
                False, "NamespaceMissing", f"namespace {target.namespace} is missing: {exc.message}"
            )
            retry = str(exc)
        elif exc.invalid and not _passing(exc):
            obs.resources = status.Check(
                False, "ChildRejected", f"the API server refused a child: {exc.message}"
            )
        else:
            obs.resources = status.Check(False, "ApplyFailed", str(exc))
            retry = str(exc)
    if obs.resources is not None and not obs.resources.ok:
        metrics.RECONCILE_ERRORS.labels(reason=obs.resources.reason).inc()
    if obs.database is not None and not obs.database.ok:
        metrics.RECONCILE_ERRORS.labels(reason=obs.database.reason).inc()
    wrote_status = write_status(rt, req, spec, obs, body)
    if retry:
        raise kopf.TemporaryError(retry, delay=rt.settings.retry_seconds)
    if not writes and not wrote_status:
        cache.CACHE.set_quiet(req.name, quiet_fingerprint(req))


def _passing(exc: kube.ApiError) -> bool:
    """A refusal that passes without a spec change (retried with back-off, not ChildRejected): the
    namespace is going, or a quota someone put in it is full."""
    return "being terminated" in exc.message or "exceeded quota" in exc.message


class NamespaceGone(Exception):
    """The org's namespace is being deleted: nothing can be written in it until it is gone, then
    the operator makes a new one (the retry)."""

    reason = "NamespaceTerminating"


class NotOwned(Exception):
    """The org id or the org's namespace belongs to someone else: nothing is written."""

    def __init__(self, reason: str, message: str, holder: str = "") -> None:
        super().__init__(message)
        self.reason, self.message, self.holder = reason, message, holder


@dataclass(frozen=True)
class Held:
    """The org is this OrgPipeline's: its claim is recorded and its namespace is the operator's."""

    fresh: bool  # the namespace did not exist: made by this reconcile, nothing of the org in it yet
    writes: int  # requests that wrote the namespace (0 or 1)


def _hold(rt: Runtime, req: Request, target: builders.Target, inventory: Inventory | None) -> Held:
    """Makes sure the org id and the org's namespace are this OrgPipeline's, or raises NotOwned.

    The claim is read (or made) in PostgreSQL once per process and org (then the cache has it); the
    namespace is read back on the CHECKED triggers, and on every resync while this process has not
    verified it (so an org stopped by someone else's namespace starts once that namespace is gone).
    A missing namespace is created with a POST: if someone makes it between the read and the
    create, the create fails instead of taking theirs over.
    """
    org, ns_name = target.org, target.namespace
    owner = req.org_owner
    if cache.CACHE.refused(org, req.uid):
        held = f"OrgPipeline {owner.name}" if owner is not None else "another OrgPipeline"
        raise NotOwned("OrgIdConflict", f"orgId {org} already belonged to {held} when this one was made")
    if owner is not None and owner.uid != req.uid:
        _refuse(rt, req, org, owner.name)
    verified = cache.CACHE.namespace_verified(req.name)
    if owner is not None and verified is not None and req.trigger not in CHECKED:
        return Held(False, 0)
    meta: dict[str, Any] | None
    if inventory is not None and ns_name in inventory.namespaces:
        meta = dict(inventory.namespaces[ns_name])
    else:
        found = rt.kube.get("v1", "Namespace", ns_name)
        meta = dict(found["metadata"]) if found is not None else None
    if owner is None:
        if meta is not None and not ownership.namespace_owned(meta, req.name, req.uid, None):
            refusal = _not_ours(req, org, ns_name, meta)
            if refusal.reason == "OrgIdConflict":  # another OrgPipeline's namespace: refused for good
                _refuse(rt, req, org, refusal.holder)
            raise refusal
        try:
            owner = claims.claim(rt.db, org, req.uid, req.name)
        except claims.Refused as exc:
            cache.CACHE.refuse(org, req.uid)
            raise NotOwned("OrgIdConflict", str(exc)) from None
        cache.CACHE.set_org_owner(org, owner)
        if owner.uid != req.uid:  # claim() recorded the refusal
            cache.CACHE.refuse(org, req.uid)
            raise NotOwned("OrgIdConflict", f"orgId {org} already belongs to OrgPipeline {owner.name}")
    desired = builders.stamp(builders.build_namespace(target))
    if meta is None:
        try:
            made = rt.kube.create(desired)
        except kube.ApiError as exc:
            if exc.status == 409:
                raise NotOwned(
                    "NamespaceNotOwned",
                    f"namespace {ns_name} was just created by someone else; the operator does not "
                    "adopt it (delete it, and the org starts in a namespace of its own)",
                ) from None
            raise
        _record_namespace(rt, req, org, owner, str(made["metadata"]["uid"]))
        metrics.CHILD_WRITES.labels(kind="Namespace", op="apply").inc()
        if rt.snapshot is not None:
            rt.snapshot.applied(made)
        return Held(True, 1)
    if not ownership.namespace_owned(meta, req.name, req.uid, owner.namespace_uid):
        raise _not_ours(req, org, ns_name, meta)
    if meta.get("deletionTimestamp"):
        cache.CACHE.set_namespace_verified(req.name, None)  # read again at the retry
        raise NamespaceGone(
            f"namespace {ns_name} is being deleted; the operator makes it again once it is gone"
        )
    if owner.namespace_uid is None:  # claimed before the uid was kept: this one passed the uid check
        _record_namespace(rt, req, org, owner, str(meta.get("uid") or ""))
    else:
        cache.CACHE.set_namespace_verified(req.name, owner.namespace_uid)
    if builders.applied_hash({"metadata": meta}) == builders.applied_hash(desired):
        return Held(False, 0)
    rt.kube.apply(desired)
    if rt.snapshot is not None:
        rt.snapshot.applied(desired)
    metrics.CHILD_WRITES.labels(kind="Namespace", op="apply").inc()
    return Held(False, 1)


def _refuse(rt: Runtime, req: Request, org: str, holder: str) -> NoReturn:
    """Refuses the org id to this OrgPipeline for good: recorded in PostgreSQL (so it stays refused
    after the holder is deleted, and after a restart), then raises NotOwned."""
    claims.refuse(rt.db, org, req.uid, req.name, holder)
    cache.CACHE.refuse(org, req.uid)
    raise NotOwned("OrgIdConflict", f"orgId {org} already belongs to OrgPipeline {holder}")


def _record_namespace(rt: Runtime, req: Request, org: str, owner: ownership.Owner, ns_uid: str) -> None:
    claims.record_namespace(rt.db, org, req.uid, ns_uid)
    cache.CACHE.set_org_owner(org, dataclasses.replace(owner, namespace_uid=ns_uid))
    cache.CACHE.set_namespace_verified(req.name, ns_uid)


def _not_ours(req: Request, org: str, ns_name: str, meta: Mapping[str, Any]) -> NotOwned:
    """Why the existing namespace is not this OrgPipeline's: another OrgPipeline's (an org id
    conflict) or nobody's the operator knows (someone made it by hand, labels or not)."""
    cache.CACHE.set_namespace_verified(req.name, None)
    holder = (meta.get("labels") or {}).get(naming.LABEL_PIPELINE)
    known = cache.CACHE.pipeline_snapshot(holder) if holder and holder != req.name else None
    holder_uid = str(((known or {}).get("metadata") or {}).get("uid") or "")
    recorded = cache.CACHE.org_owner_record(org)
    if known is not None and (
        (recorded is not None and recorded.uid == holder_uid)
        or ownership.namespace_owned(meta, str(holder), holder_uid, None)
    ):
        return NotOwned("OrgIdConflict", f"orgId {org} already belongs to OrgPipeline {holder}", str(holder))
    return NotOwned(
        "NamespaceNotOwned",
        f"namespace {ns_name} exists and was not made by the operator for this OrgPipeline; it is "
        "not adopted and nothing is written in it (delete it, or choose another orgId)",
    )


@dataclass(frozen=True)
class Seen:
    """What the reconcile already knows about the org's objects before asking the API server."""

    inventory: Inventory | None  # the children as listed at start-up (resume only)
    fresh: bool  # the org's namespace did not exist before this reconcile


def _apply_children(
    rt: Runtime, req: Request, target: builders.Target, obs: status.Observation, db_ready: bool, seen: Seen
) -> int:
    """Brings the children in line; returns the number of writes (applies and deletes)."""
    spec = target.spec
    desired = builders.desired_children(target, rt.credentials(spec, ""))
    desired_keys = {builders.child_key(c) for c in desired}
    provisioned = False
    fixed = builders.fixed_hash(desired)
    # Unwatched children: trusted by the status' hash, except on resume and in the deep resync,
    # which read them back (reads, not writes) to catch what a user changed behind the operator.
    # A namespace this reconcile made again holds nothing: every child is written, whatever the
    # status' hash or the cache (still emptying of the old namespace's children) say.
    fixed_ok = (
        (req.status or {}).get("childrenHash") == fixed and req.trigger not in READ_BACK and not seen.fresh
    )
    verify = req.trigger in ("resync", *READ_BACK) and not seen.fresh

    def sync(child: dict[str, Any]) -> int:
        """Brings one child to its desired state; returns the number of writes (0 or 1)."""
        nonlocal provisioned
        key = builders.child_key(child)
        digest = builders.applied_hash(child)
        if child["kind"] not in builders.WATCHED_KINDS:
            if fixed_ok or (verify and _current_hash(rt, child, seen.inventory) == digest):
                return 0
        elif req.existing.get(key) == digest and not seen.fresh:
            return 0
        elif (
            verify
            and req.existing.get(key) != cache.DRIFTED
            and _current_hash(rt, child, seen.inventory) == digest
        ):
            return 0  # the cache is still filling, or lags behind a busy watch: a read, not a write
        if child["kind"] == "Secret":
            # (Re)write the credentials: keep the password the Secret already has, else make one.
            # On create there is none (after a crash mid-create, a new password goes to the role and
            # the Secret together).
            known = req.trigger != "create" or key in req.existing
            password = rt.current_password(target.namespace) if known else None
            if password is not None:
                log.info("rewriting the credentials Secret of %s (password kept)", req.name)
            password = password or database.generate_password()
            rt.db.provision(spec.org_id, password)
            rt.db.provision_mongo(spec.org_id, [t.name for t in spec.tables], password)
            provisioned = True
            creds = rt.credentials(spec, password, rt.source_keys(spec))  # the hash: the keys' source
            child = builders.stamp(builders.build_secret(target, creds), digest)
        rt.kube.apply(child)
        if child["kind"] in builders.WATCHED_KINDS:  # read-your-writes: the watch event may lag
            cache.CACHE.child("MODIFIED", child)
        if rt.snapshot is not None:
            rt.snapshot.applied(child)
        metrics.CHILD_WRITES.labels(kind=child["kind"], op="apply").inc()
        return 1

    # The namespace is _hold's (made or checked first); everything in it at once (the reconcile
    # waits on the API server, not on the CPU, so a few requests in flight per org is what makes a
    # thousand orgs quick).
    assert desired[0]["kind"] == "Namespace"
    # The RoleBinding first: it is the operator's only access to the namespace's Secrets and Jobs.
    binding = [c for c in desired[1:] if c["kind"] == "RoleBinding"]
    writes = sum(sync(c) for c in binding)
    if writes:
        _await_access(rt, target.namespace)
    writes += sum(rt.parallel(sync, [c for c in desired[1:] if c["kind"] != "RoleBinding"]))
    if not provisioned and (req.trigger != "resync" or not db_ready):
        # Cheap and idempotent: repairs a dropped schema or role (with the Secret's password). On
        # resume, the start-up listing of the org schemas and their owners stands for it.
        listed = seen.inventory is not None and seen.inventory.provisioned(spec.org_id)
        if not listed and rt.db.provision(spec.org_id, None):
            rt.db.provision(spec.org_id, rt.current_password(target.namespace))
        if not listed:
            rt.db.provision_mongo(spec.org_id, [t.name for t in spec.tables], None)
        provisioned = True
    # The org's read-only role, its masked views and their Secret (issue 13; see reader.py).
    writes += reader.sync(rt, _reader_request(req, seen), target, seen.inventory)
    obs.database = (
        status.Check(True, "Provisioned", "role and schema in place") if provisioned or db_ready else None
    )
    for key in _prunable(rt, req, target, seen) - desired_keys:
        rt.kube.delete(kinds.api_version(key[0]), key[0], key[2], key[1])
        cache.CACHE.child("DELETED", {"kind": key[0], "metadata": _cache_meta(req.name, key)})
        if rt.snapshot is not None:
            rt.snapshot.deleted(req.name, key)
        writes += 1
        metrics.CHILD_WRITES.labels(kind=key[0], op="delete").inc()
    n = len(desired)
    obs.resources = status.Check(
        True, "Applied", f"{n} objects in namespace {target.namespace} are as desired"
    )
    if not rt.source_granted(spec, req.name):
        # Its keys would be refused the source yet: Ready once the policy writer wrote the statement
        # (it calls back for a reconcile); the worker is not held through the writer's pause.
        obs.resources = status.Check(
            False, "SourceGrantPending", "the org's statement in the source bucket's policy is being written"
        )
        writes += 1  # not quiet: the next resync reconciles it in full
    obs.children_hash = fixed
    if writes:
        log.info("%s: %d child writes (%s)", req.name, writes, req.trigger)
    return writes


def _reader_request(req: Request, seen: Seen) -> Request:
    """The request as reader.sync reads it: in a namespace made again, its Secret is new (as on a
    create); a heal reads the Secret back as the deep resync does (the cache keeps Secrets this
    process wrote, which the namespace's deletion took along, unseen: they are not watched)."""
    if seen.fresh:
        return dataclasses.replace(req, trigger="create", existing={})
    if req.trigger == "heal":
        return dataclasses.replace(req, trigger="deep")
    return req


def _prunable(rt: Runtime, req: Request, target: builders.Target, seen: Seen) -> set[ChildKey]:
    """The pipeline's existing CronJobs: those in the cache, and, unless this is the idle resync,
    those the API server lists. The cache follows watch events and may not yet have seen CronJobs
    written a moment ago (by the create or update just before this one, or before a restart): a
    table removed right then would keep its CronJob if the cache alone said what to delete. One
    LIST per spec change is the price; the idle resync stays request-free (its cache has caught up).
    No LIST either when the namespace was new to this reconcile (nothing old in it), nor on resume
    when the start-up listing holds every CronJob of the pipeline (later ones are this process's
    own writes, recorded in the cache)."""
    # Only in the org's namespace: a CronJob elsewhere that carries the pipeline's label is not ours.
    keys = {key for key in req.existing if key[0] in PRUNABLE and key[1] == target.namespace}
    if req.trigger == "resync" or (req.trigger == "create" and seen.fresh):
        return keys
    if seen.inventory is not None:
        return keys | seen.inventory.cronjobs.get(req.name, set())
    selector = f"{naming.LABEL_PIPELINE}={req.name},{naming.MANAGED_SELECTOR}"
    for kind in sorted(PRUNABLE):
        for item in rt.kube.list(kinds.api_version(kind), kind, target.namespace, selector):
            keys.add((kind, target.namespace, item["metadata"]["name"]))
    return keys


ACCESS_WAIT_SECONDS = 10.0


def _await_access(rt: Runtime, namespace: str) -> None:
    """Waits (briefly) until the API server's authorizer knows the RoleBinding just written: its
    RBAC cache follows RoleBindings by watch, so the first Secret write could otherwise be refused
    for a moment. One SelfSubjectAccessReview (allowed to everyone) per try, only after a write."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": namespace, "verb": "create", "resource": "secrets"}},
    }
    deadline = time.monotonic() + ACCESS_WAIT_SECONDS
    url = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    tries = 0
    while not (rt.kube.request("POST", url, review).get("status") or {}).get("allowed"):
        if time.monotonic() > deadline:
            raise kube.ApiError(
                403, "Forbidden", f"the operator's RoleBinding in {namespace} grants nothing yet"
            )
        tries += 1
        time.sleep(backoff.delay(tries, 0.05, 1.0))  # ~0.1 s is the authorizer's usual lag


def _cache_meta(pipeline: str, key: ChildKey) -> dict[str, Any]:
    return {"namespace": key[1], "name": key[2], "labels": {naming.LABEL_PIPELINE: pipeline}}


def _current_hash(rt: Runtime, child: dict[str, Any], inventory: Inventory | None) -> str | None:
    key = builders.child_key(child)
    if inventory is not None and key in inventory.hashes:
        return inventory.hashes[key]
    meta = child["metadata"]
    found = rt.kube.get(child["apiVersion"], child["kind"], meta["name"], meta.get("namespace"))
    return builders.applied_hash(found) if found else None


def write_status(
    rt: Runtime, req: Request, spec: OrgPipelineSpec | None, obs: status.Observation, body: Mapping[str, Any]
) -> bool:
    """Writes the new status when it differs; returns whether it wrote (or the object is gone)."""

    def compute(_obj: Mapping[str, Any], old: OrgPipelineStatus) -> OrgPipelineStatus:
        new = status.compute_status(spec, old, obs, status.now_iso())
        if spec is not None:
            metrics.set_org(spec.org_id, status.gauges(new))
        return new

    seen = {"metadata": {"name": req.name, "resourceVersion": req.resource_version}, "status": req.status}
    written = rt.patch_status(seen, compute, "write status")
    if isinstance(written, StatusWrite):
        post_events(body, written.old, written.new)
    return written != "unchanged"


def post_events(body: Mapping[str, Any], old: Any, new: Any) -> None:
    """Kubernetes Events for what changed: new alerts (Warning), Ready transitions."""
    for alert in status.new_alerts(old.alerts, new.alerts):
        runtime.warn(body, reason=alert.type, message=f"{alert.table}: {alert.message}"[:1000])
    before, after = old.condition(status.READY), new.condition(status.READY)
    if after is None or (before is None and after.status == "True"):
        return  # the first Ready of a new org is no news (and a thousand Events at scale)
    if before is None or (before.status, before.reason) != (after.status, after.reason):
        if after.status == "True":
            runtime.info(body, reason=after.reason, message=after.message[:1000])
        else:
            runtime.warn(body, reason=after.reason, message=after.message[:1000])


__all__ = ["Request", "naming", "reconcile"]
