"""Names derived from an org id and a table name, defined once for the operator and the jobs.

The inputs are already constrained by the patterns in `v1alpha1`; PostgreSQL names are still
quoted wherever they are used (org ids may contain dashes).
"""

from __future__ import annotations


def namespace(org_id: str) -> str:
    """The Kubernetes namespace the operator owns for the org."""
    return f"org-{org_id}"


RECORD_ORG_PREFIX = "org_"


def record_org_id(org_id: str) -> str:
    """The `org_id` value of the org's records, the seed's `org_<id>` ("org_id": "org_123"): every
    version document in MongoDB and every row of raw_T, raw_T_change_log and raw_T_quality_metrics.
    The manifest, the command line (`--org-id 123`) and every name above keep the bare id.

    A value already in this form comes back as it is: org ids match [a-z0-9-] and never hold `_`,
    so the two forms cannot be mistaken (records of older releases hold the bare id; the table's
    next run rewrites them, see `orgschema.recordorg`)."""
    return org_id if org_id.startswith(RECORD_ORG_PREFIX) else RECORD_ORG_PREFIX + org_id


def record_org_ids(org_id: str) -> list[str]:
    """What a reader matches `org_id` against: the current form, and the bare id that records of
    older releases hold until their table's next run migrates them."""
    return [record_org_id(org_id), org_id]


def mongo_collection(org_id: str, table: str) -> str:
    """The raw-landing collection: one document per record version (the seed's raw_{org}_{table})."""
    return f"raw_{org_id}_{table}"


def mongo_database(org_id: str) -> str:
    """The org's own MongoDB database, holding its raw_{org}_{table} collections: the unit its
    MongoDB identity is granted (FerretDB keeps it as the PostgreSQL schema of the same name; org ids
    match [a-z0-9-], which FerretDB takes as is, and it is apart from the warehouse's orgdata_)."""
    return f"orgraw_{org_id}"


def pg_schema(org_id: str) -> str:
    """The org's PostgreSQL schema (the seed's orgdata_{org_id})."""
    return f"orgdata_{org_id}"


def pg_role(org_id: str) -> str:
    """The org's PostgreSQL login role, owner of its schema and nothing else."""
    return f"orgpipeline_org_{org_id}"


def pg_reader_role(org_id: str) -> str:
    """The org's read-only login role: sees the org's data only through the masked views."""
    return f"orgpipeline_reader_{org_id}"


def pg_view_schema(org_id: str) -> str:
    """The schema of the org's masked views (one per table, named as the table), owned by the org's
    role and readable by its reader role."""
    return f"orgview_{org_id}"


def pg_table(table: str) -> str:
    return f"raw_{table}"


def pg_change_log(table: str) -> str:
    return f"raw_{table}_change_log"


def pg_quality_metrics(table: str) -> str:
    return f"raw_{table}_quality_metrics"


def pg_heads(table: str) -> str:
    """The latest version of every key, for change detection."""
    return f"raw_{table}_heads"


def pg_rejected_rows(table: str) -> str:
    """Every row that did not become a version, with file, line and reason."""
    return f"raw_{table}_rejected_rows"


def pg_pending_loads(table: str) -> str:
    """Batches landed in MongoDB by `ingest` and not yet loaded into PostgreSQL."""
    return f"raw_{table}_pending_loads"


def pg_outbox(table: str) -> str:
    """Version documents on their way to MongoDB (`warehouse.outbox`: committed or not yet)."""
    return f"raw_{table}_outbox"


def pg_table_relations(table: str) -> list[str]:
    """The PostgreSQL relations, each org table's own, that hold one table's data and bookkeeping."""
    return [
        pg_table(table),
        pg_change_log(table),
        pg_quality_metrics(table),
        pg_heads(table),
        pg_rejected_rows(table),
        pg_pending_loads(table),
        pg_outbox(table),
    ]


PG_RUNS_TABLE = "pipeline_runs"
"""Per-org-schema table with one row per ingest/load run, read by status, metrics and the operator."""


def cronjob(table: str) -> str:
    """The CronJob of one table, in the org's namespace (DNS-1123: underscores become dashes)."""
    return f"ingest-{table.replace('_', '-')}"


RETENTION_CRONJOB = "retention"
"""The org's retention CronJob (`orgpipeline retention` on spec.retention.schedule); no table's
CronJob can take this name (theirs start with `ingest-`)."""
