"""The org's read-only access (issue 13): a PostgreSQL role that sees the org's data only through
views in which pii and sensitive columns are masked, and a Secret with its credentials.

Separate from the job's credentials on purpose: analysts and BI tools get `orgpipeline-reader`,
never `orgpipeline-credentials`. The Secret carries the hash of what the views are made from (the
tables, their columns, keys and classification), so an unchanged spec costs nothing: no query, no
request. A changed one re-makes the views; a resume or deep resync checks with one query that the
role and the views are still there (a dropped schema takes its views with it).
"""

from __future__ import annotations

import base64
import dataclasses
from typing import TYPE_CHECKING, Any

from orgpipeline_api import store_names

from orgpipeline_operator import builders, cache, database, metrics
from orgpipeline_operator.request import Request

if TYPE_CHECKING:
    from orgpipeline_operator.runtime import Runtime
    from orgpipeline_operator.snapshot import Inventory

SECRET = "orgpipeline-reader"


def views_hash(target: builders.Target) -> str:
    """What the views are made from: a change re-makes them."""
    tables = [
        {
            "name": t.name,
            "keys": list(t.business_keys),
            "columns": [[c.name, c.type, str(c.classification)] for c in t.columns],
        }
        for t in target.spec.tables
    ]
    return builders.content_hash({"org": target.org, "tables": tables, "secret": target.meta(SECRET)})


def build_secret(target: builders.Target, creds: builders.Credentials, digest: str) -> dict[str, Any]:
    """The reader's connection: a DSN and the libpq variables (PGHOST, ...), so psql works as is."""
    env = {
        "ORGPIPELINE_READER_POSTGRES_DSN": creds.postgres_dsn,
        "PGHOST": creds.postgres_host,
        "PGPORT": creds.postgres_port,
        "PGDATABASE": creds.postgres_db,
        "PGUSER": creds.postgres_user,
        "PGPASSWORD": creds.postgres_password,
        "ORGPIPELINE_READER_SCHEMA": store_names.pg_view_schema(target.org),
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": target.meta(SECRET, component="reader"),
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in env.items()},
    }
    return builders.stamp(secret, digest)


def sync(rt: Runtime, req: Request, target: builders.Target, inventory: Inventory | None = None) -> int:
    """Brings the reader role, its views and its Secret to the spec; returns the writes (0 or 1)."""
    key = ("Secret", target.namespace, SECRET)
    digest = views_hash(target)
    known = req.existing.get(key)
    # Secrets are not watched (the operator may not read them cluster-wide): the cache holds what
    # this process wrote or read back, so a resume or deep resync reads the Secret again (it may
    # have been changed or deleted behind the operator), a resync only when the cache has nothing.
    if req.trigger in ("resume", "deep") or (known is None and req.trigger == "resync"):
        if inventory is not None and key in inventory.hashes:
            known = inventory.hashes[key]
        else:
            found = rt.kube.get("v1", "Secret", SECRET, target.namespace)
            known = builders.applied_hash(found) if found else None
            if found is not None:
                cache.CACHE.child("MODIFIED", found)
    if known == digest and (req.trigger not in ("resume", "deep") or _ready(rt, target, inventory)):
        return 0
    password = (
        _current_password(rt, target.namespace) if known is not None or req.trigger != "create" else None
    )
    password = password or database.generate_password()
    rt.db.provision_reader(target.spec, password)
    creds = dataclasses.replace(
        rt.credentials(target.spec, password),
        postgres_user=store_names.pg_reader_role(target.org),
        postgres_password=password,
    )
    secret = build_secret(target, creds, digest)
    rt.kube.apply(secret)
    cache.CACHE.child("MODIFIED", secret)
    metrics.CHILD_WRITES.labels(kind="Secret", op="apply").inc()
    return 1


def _ready(rt: Runtime, target: builders.Target, inventory: Inventory | None) -> bool:
    """The reader role and views are in place: as listed at start-up, else one query."""
    listed = inventory.reader_ready(target.spec) if inventory is not None else None
    return rt.db.reader_ready(target.spec) if listed is None else listed


def _current_password(rt: Runtime, namespace: str) -> str | None:
    secret = rt.kube.get("v1", "Secret", SECRET, namespace)
    value = ((secret or {}).get("data") or {}).get("PGPASSWORD")
    return base64.b64decode(value).decode() if value else None
