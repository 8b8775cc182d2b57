"""Deletion behind the finalizer: the org's data per deletionPolicy, then its namespace.

Retain keeps the MongoDB collections, the PostgreSQL schema and the role (a re-created OrgPipeline
for the same org finds its data again and gets a fresh password). Delete drops them. The namespace
(and with it the CronJobs, Jobs and the credentials Secret) goes either way. Nothing is touched
unless this OrgPipeline is the org's recorded owner (claims.py): one refused the org id (a second
OrgPipeline with the same orgId, even after the first is gone), or stopped by a namespace someone
else made, never drops data or deletes a namespace. The owner's deletion releases the org id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import kopf
from orgpipeline_api import store_names, v1alpha1

from orgpipeline_operator import (
    backoff,
    cache,
    claims,
    database,
    kube,
    metrics,
    naming,
    ownership,
    runtime,
    s3access,
)
from orgpipeline_operator.runtime import Runtime, log

RETRIES = backoff.Streak(first=1.0, cap=30.0)
"""Tries of the finalizer that failed in a row, per OrgPipeline: each retry waits longer (from
ORGPIPELINE_RETRY_SECONDS, doubling to 30 s, jittered)."""


def finalize(rt: Runtime, name: str, spec_raw: Mapping[str, Any], body: Mapping[str, Any]) -> None:
    """The clean-up; a failure is retried by Kopf with back-off, logged once per change of error."""
    try:
        _finalize(rt, name, spec_raw, body)
    except kopf.TemporaryError as exc:
        base = rt.settings.retry_seconds if exc.delay is None else exc.delay
        wait, new = RETRIES.failed(name, str(exc), first=base)
        if new:
            log.warning("%s: clean-up failed, retrying with back-off: %s", name, exc)
        raise kopf.TemporaryError(str(exc), delay=wait) from exc
    RETRIES.succeeded(name)


def _finalize(rt: Runtime, name: str, spec_raw: Mapping[str, Any], body: Mapping[str, Any]) -> None:
    org_id = str(spec_raw.get("orgId") or "")
    if not org_id or not _matches(org_id):
        return  # never reconciled: nothing of ours exists
    uid = str((body.get("metadata") or {}).get("uid") or "")
    ns = naming.namespace(org_id)
    try:
        owner = claims.owner(rt.db, org_id)
        current = rt.kube.get("v1", "Namespace", ns)
    except (kube.ApiError, database.DatabaseError) as exc:
        raise kopf.TemporaryError(
            f"cannot read who owns orgId {org_id}: {exc}", delay=rt.settings.retry_seconds
        ) from exc
    meta = (current or {}).get("metadata") or {}
    if owner is None and current is not None and ownership.namespace_owned(meta, name, uid, None):
        # An org claimed before owners were recorded (never reconciled since): its namespace names
        # this OrgPipeline's uid, which nobody could write before it existed.
        owner = ownership.Owner(uid, name)
    if owner is None or owner.uid != uid:
        held = f"it belongs to OrgPipeline {owner.name}" if owner else "no owner is recorded for it"
        log.info("%s: not the owner of orgId %s (%s); leaving the org alone", name, org_id, held)
        runtime.info(body, reason="DataKept", message=f"orgId {org_id} left as it is: {held}"[:1000])
        _release(rt, org_id, uid)
        return
    policy = str(spec_raw.get("deletionPolicy") or v1alpha1.DeletionPolicy.Retain.value)
    if policy == v1alpha1.DeletionPolicy.Delete.value:
        try:
            dropped = rt.db.drop_collections(org_id)  # first: it takes the role's FerretDB grants
            rt.db.drop_postgres(org_id)
        except database.DatabaseError as exc:
            runtime.warn(body, reason="CleanupFailed", message=str(exc)[:1000])
            raise kopf.TemporaryError(str(exc), delay=rt.settings.retry_seconds) from exc
        runtime.info(
            body,
            reason="DataDeleted",
            message=f"dropped schema {store_names.pg_schema(org_id)}, its role and "
            f"{len(dropped)} collections",
        )
    try:  # the org's S3 account and its bucket-policy statements go with it, whatever the policy
        s3access.remove_account(rt.settings, org_id)
    except s3access.SourceAccessError as exc:
        raise kopf.TemporaryError(str(exc), delay=rt.settings.retry_seconds) from exc
    try:
        if current is not None and ownership.namespace_owned(meta, name, uid, owner.namespace_uid):
            rt.kube.delete("v1", "Namespace", ns)
    except kube.ApiError as exc:
        raise kopf.TemporaryError(
            f"cannot delete namespace {ns}: {exc}", delay=rt.settings.retry_seconds
        ) from exc
    _release(rt, org_id, uid)
    metrics.forget_org(org_id)


def _release(rt: Runtime, org_id: str, uid: str) -> None:
    """The OrgPipeline's claim (or refusal) goes with it: after the owner, the next OrgPipeline
    created for the org id takes it (one refused before stays refused until it is deleted too)."""
    try:
        claims.release(rt.db, org_id, uid)
    except database.DatabaseError as exc:
        raise kopf.TemporaryError(str(exc), delay=rt.settings.retry_seconds) from exc
    cache.CACHE.release_org(org_id, uid)


def _matches(org_id: str) -> bool:
    return re.fullmatch(v1alpha1.ORG_ID_PATTERN.strip("^$"), org_id) is not None
