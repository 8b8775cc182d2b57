"""Deletion behind the finalizer: the org's data per deletionPolicy, then its namespace.

Retain keeps the MongoDB collections, the PostgreSQL schema and the role (a re-created OrgPipeline
for the same org finds its data again and gets a fresh password). Delete drops them. The namespace
(and with it the CronJobs, Jobs and the credentials Secret) goes either way. Nothing is touched
when this OrgPipeline never owned the org (an orgId conflict).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import kopf
from orgpipeline_api import store_names, v1alpha1

from orgpipeline_operator import database, kube, metrics, naming, runtime, s3access
from orgpipeline_operator.runtime import Runtime, log


def finalize(rt: Runtime, name: str, spec_raw: Mapping[str, Any], body: Mapping[str, Any]) -> None:
    org_id = str(spec_raw.get("orgId") or "")
    if not org_id or not _matches(org_id):
        return  # never reconciled: nothing of ours exists
    ns = naming.namespace(org_id)
    try:
        current = rt.kube.get("v1", "Namespace", ns)
    except kube.ApiError as exc:
        raise kopf.TemporaryError(
            f"cannot read namespace {ns}: {exc}", delay=rt.settings.retry_seconds
        ) from exc
    owner = ((current or {}).get("metadata", {}).get("labels") or {}).get(naming.LABEL_PIPELINE)
    if current is not None and owner != name:
        log.info("%s: namespace %s belongs to %s; leaving the org alone", name, ns, owner)
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
        if current is not None:
            rt.kube.delete("v1", "Namespace", ns)
    except kube.ApiError as exc:
        raise kopf.TemporaryError(
            f"cannot delete namespace {ns}: {exc}", delay=rt.settings.retry_seconds
        ) from exc
    metrics.forget_org(org_id)


def _matches(org_id: str) -> bool:
    return re.fullmatch(v1alpha1.ORG_ID_PATTERN.strip("^$"), org_id) is not None
