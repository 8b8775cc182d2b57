"""The operator's settings: environment variables, read and validated once at start-up.

A missing or malformed variable stops the operator before it touches the cluster, with one message
that names every problem; nothing else in the operator reads the environment.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from urllib.parse import urlparse

from psycopg.conninfo import conninfo_to_dict


@functools.lru_cache(maxsize=8)
def _dsn_fields(dsn: str) -> Mapping[str, object]:
    """The DSN's fields, parsed once: every org's credentials read them (each reconcile and resync;
    ~1% of the operator's CPU at onboarding, parsed each time)."""
    return conninfo_to_dict(dsn)


class SettingsError(ValueError):
    """The environment does not describe a usable operator (terminal: fix the Deployment)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the operator needs from its environment."""

    postgres_dsn: str
    """ORGPIPELINE_POSTGRES_DSN: admin DSN; the operator creates per-org roles and schemas with it."""
    mongo_uri: str
    """ORGPIPELINE_MONGO_URI: MongoDB URI, handed to the jobs and used to drop collections on Delete."""
    s3_endpoint: str
    """ORGPIPELINE_S3_ENDPOINT: S3 endpoint URL (http://host:port) handed to the jobs."""
    s3_access_key: str
    """ORGPIPELINE_S3_ACCESS_KEY: the operator's S3 (root) key: makes the org accounts and bucket
    policies (s3access); never handed to the jobs."""
    s3_secret_key: str
    """ORGPIPELINE_S3_SECRET_KEY: its secret."""
    mongo_db: str = "orgpipeline"
    """ORGPIPELINE_MONGO_DB: the database all orgs shared before each got its own (orgraw_<org>);
    the operator moves an org's raw_<org>_<table> collections out of it."""
    mongo_users: str = "ferretdb"
    """ORGPIPELINE_MONGO_USERS: how an org gets its MongoDB identity: ferretdb (its PostgreSQL role,
    granted its database's schema) or mongodb (createUser with readWrite on its database)."""
    ferretdb_database: str = "ferretdb"
    """ORGPIPELINE_FERRETDB_DATABASE: FerretDB's PostgreSQL database (mongo_users=ferretdb)."""
    job_image: str = "orgpipeline:dev"
    """ORGPIPELINE_JOB_IMAGE: image of the CronJobs' container (has the `orgpipeline` command)."""
    job_image_pull_policy: str = "IfNotPresent"
    """ORGPIPELINE_JOB_IMAGE_PULL_POLICY: Always, IfNotPresent or Never."""
    job_node_selector: str | None = None
    """ORGPIPELINE_JOB_NODE_SELECTOR: k=v[,k=v] nodeSelector of the jobs' pods (dedicated nodes)."""
    job_postgres_host: str | None = None
    """ORGPIPELINE_JOB_POSTGRES_HOST: host:port the jobs use for PostgreSQL, when not the operator's."""
    job_mongo_uri: str | None = None
    """ORGPIPELINE_JOB_MONGO_URI: MongoDB URI the jobs use, when not the operator's."""
    job_s3_endpoint: str | None = None
    """ORGPIPELINE_JOB_S3_ENDPOINT: S3 endpoint the jobs use, when not the operator's."""
    namespace: str = "orgpipeline-system"
    """ORGPIPELINE_NAMESPACE: the operator's namespace (where spec.source.credentialsSecret lives)."""
    label_selector: str | None = None
    """ORGPIPELINE_LABEL_SELECTOR: reconcile only the OrgPipelines with these labels (sharding, tests)."""
    resync_seconds: float = 300.0
    """ORGPIPELINE_RESYNC_SECONDS: interval of the idle resync that repairs drifted children."""
    deep_resync_seconds: float = 3600.0
    """ORGPIPELINE_DEEP_RESYNC_SECONDS: interval of the resync that reads every child back."""
    retry_seconds: float = 15.0
    """ORGPIPELINE_RETRY_SECONDS: delay before a failed reconcile is retried."""
    workers: int = 16
    """ORGPIPELINE_WORKERS: threads for blocking calls (API, PostgreSQL) and parallel reconciles."""
    metrics_port: int = 8080
    """ORGPIPELINE_METRICS_PORT: Prometheus /metrics and /readyz; 0 disables."""
    health_port: int = 8081
    """ORGPIPELINE_HEALTH_PORT: Kopf's liveness endpoint /healthz; 0 disables."""
    log_level: str = "INFO"
    """ORGPIPELINE_LOG_LEVEL: DEBUG, INFO, WARNING or ERROR."""
    webhook_port: int = 0
    """ORGPIPELINE_WEBHOOK_PORT: S3 event notifications (POST /s3/events) start runs; 0 disables."""
    webhook_token: str | None = None
    """ORGPIPELINE_WEBHOOK_TOKEN: the senders' bearer token (from a Secret); required with the port."""
    webhook_max_bytes: int = 262144
    """ORGPIPELINE_WEBHOOK_MAX_BYTES: larger notification bodies are refused (413)."""
    webhook_debounce_seconds: float = 1.0
    """ORGPIPELINE_WEBHOOK_DEBOUNCE_SECONDS: a table's run starts once no file arrived for this long."""
    webhook_max_wait_seconds: float = 30.0
    """ORGPIPELINE_WEBHOOK_MAX_WAIT_SECONDS: ... or this long after the first file of a burst."""
    webhook_job_ttl_seconds: int = 3600
    """ORGPIPELINE_WEBHOOK_JOB_TTL_SECONDS: a finished file-arrival Job is deleted after this long."""
    s3_accounts: str = "versitygw"
    """ORGPIPELINE_S3_ACCOUNTS: versitygw (an S3 account per org, made by the operator) or none
    (each org names a credentialsSecret labelled for it); see s3access.py."""
    tenant_role: str | None = None
    """ORGPIPELINE_TENANT_ROLE: the ClusterRole (the chart's `<fullname>-tenant`) the operator binds
    to its own ServiceAccount in each org namespace it makes (a RoleBinding child): its only access
    to Secrets and Job creation there. Unset: no RoleBinding (RBAC granted some other way)."""
    service_account: str | None = None
    """ORGPIPELINE_SERVICE_ACCOUNT: the operator's ServiceAccount (in ORGPIPELINE_NAMESPACE), the
    subject of those RoleBindings; required with ORGPIPELINE_TENANT_ROLE."""
    lease_name: str | None = None
    """ORGPIPELINE_LEASE_NAME: the Lease (in ORGPIPELINE_NAMESPACE) that elects the one active
    replica (leadership.py); unset: this process acts alone, at once."""
    pod_name: str | None = None
    """ORGPIPELINE_POD_NAME: names this replica in the Lease (else the host name)."""

    @property
    def jobs_postgres_hostport(self) -> tuple[str, str]:
        """host and port of PostgreSQL as the jobs reach it."""
        if self.job_postgres_host:
            host, _, port = self.job_postgres_host.rpartition(":")
            return (host, port) if host else (port, "5432")
        info = _dsn_fields(self.postgres_dsn)
        return str(info.get("host") or "localhost"), str(info.get("port") or "5432")

    @property
    def postgres_dbname(self) -> str:
        info = _dsn_fields(self.postgres_dsn)
        return str(info.get("dbname") or info.get("user") or "postgres")

    @property
    def egress_ports(self) -> list[int]:
        """TCP ports the jobs must reach: PostgreSQL, MongoDB and S3 (for the NetworkPolicy)."""
        ports = {int(self.jobs_postgres_hostport[1] or 5432)}
        for url, default in (
            (self.job_mongo_uri or self.mongo_uri, 27017),
            (self.job_s3_endpoint or self.s3_endpoint, 443),
        ):
            try:
                port = urlparse(url.split(",")[0]).port
            except ValueError:
                port = None
            ports.add(port or default)
        return sorted(ports)


_ENV = {f.name: "ORGPIPELINE_" + f.name.upper() for f in dataclasses.fields(Settings)}


def from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Reads and validates the settings; raises SettingsError naming every bad or missing variable."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    problems: list[str] = []
    for field in dataclasses.fields(Settings):
        var = _ENV[field.name]
        raw = env.get(var, "").strip()
        if not raw:
            if field.default is dataclasses.MISSING:
                problems.append(f"{var} is required")
            continue
        kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
        try:
            if kind == "int":
                values[field.name] = int(raw)
            elif kind == "float":
                values[field.name] = float(raw)
            else:
                values[field.name] = raw
        except ValueError:
            problems.append(f"{var}={raw!r} is not a {kind}")
    if not problems:
        settings = Settings(**values)  # type: ignore[arg-type]
        problems.extend(_check(settings))
    if problems:
        raise SettingsError("invalid operator settings: " + "; ".join(problems))
    return settings


def _check(s: Settings) -> list[str]:
    problems = []
    try:
        conninfo_to_dict(s.postgres_dsn)
    except Exception as exc:
        problems.append(f"ORGPIPELINE_POSTGRES_DSN is not a valid DSN: {exc}")
    for var, url in (
        ("ORGPIPELINE_S3_ENDPOINT", s.s3_endpoint),
        ("ORGPIPELINE_JOB_S3_ENDPOINT", s.job_s3_endpoint),
    ):
        if url and urlparse(url).scheme not in ("http", "https"):
            problems.append(f"{var}={url!r} must be an http(s) URL")
    for var, uri in (("ORGPIPELINE_MONGO_URI", s.mongo_uri), ("ORGPIPELINE_JOB_MONGO_URI", s.job_mongo_uri)):
        if uri and not uri.startswith(("mongodb://", "mongodb+srv://")):
            problems.append(f"{var} must start with mongodb:// or mongodb+srv://")
    if s.mongo_users not in ("ferretdb", "mongodb"):
        problems.append("ORGPIPELINE_MONGO_USERS must be ferretdb or mongodb")
    if s.job_node_selector and not all("=" in kv for kv in s.job_node_selector.split(",")):
        problems.append("ORGPIPELINE_JOB_NODE_SELECTOR must be key=value[,key=value]")
    if s.job_image_pull_policy not in ("Always", "IfNotPresent", "Never"):
        problems.append("ORGPIPELINE_JOB_IMAGE_PULL_POLICY must be Always, IfNotPresent or Never")
    if min(s.resync_seconds, s.deep_resync_seconds, s.retry_seconds) <= 0:
        problems.append(
            "ORGPIPELINE_RESYNC_SECONDS, _DEEP_RESYNC_SECONDS and _RETRY_SECONDS must be positive"
        )
    if not 1 <= s.workers <= 256:
        problems.append("ORGPIPELINE_WORKERS must be between 1 and 256")
    for var, port in (
        ("ORGPIPELINE_METRICS_PORT", s.metrics_port),
        ("ORGPIPELINE_HEALTH_PORT", s.health_port),
    ):
        if not 0 <= port <= 65535:
            problems.append(f"{var} must be a port number (0 disables)")
    if not 0 <= s.webhook_port <= 65535:
        problems.append("ORGPIPELINE_WEBHOOK_PORT must be a port number (0 disables)")
    if s.webhook_port and len(s.webhook_token or "") < 16:
        problems.append(
            "ORGPIPELINE_WEBHOOK_TOKEN of at least 16 characters is required with ORGPIPELINE_WEBHOOK_PORT"
        )
    if not 1024 <= s.webhook_max_bytes <= 16 * 1024 * 1024:
        problems.append("ORGPIPELINE_WEBHOOK_MAX_BYTES must be between 1024 and 16777216")
    if not 0 <= s.webhook_debounce_seconds <= s.webhook_max_wait_seconds:
        problems.append(
            "ORGPIPELINE_WEBHOOK_DEBOUNCE_SECONDS must be >= 0 and <= ORGPIPELINE_WEBHOOK_MAX_WAIT_SECONDS"
        )
    if not 60 <= s.webhook_job_ttl_seconds <= 30 * 86400:
        problems.append("ORGPIPELINE_WEBHOOK_JOB_TTL_SECONDS must be between 60 and 2592000")
    if s.s3_accounts not in ("versitygw", "none"):
        problems.append("ORGPIPELINE_S3_ACCOUNTS must be versitygw or none")
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        problems.append("ORGPIPELINE_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
    if s.tenant_role and not s.service_account:
        problems.append("ORGPIPELINE_SERVICE_ACCOUNT is required with ORGPIPELINE_TENANT_ROLE")
    return problems


_WHAT = {
    "postgres_dsn": "the operator's login: CREATEROLE, no superuser (creates the per-org roles and schemas)",
    "mongo_uri": "MongoDB URI for the jobs; collections dropped on deletionPolicy Delete",
    "s3_endpoint": "S3 endpoint URL (http(s)://host:port) for the jobs",
    "s3_access_key": "the operator's S3 key (org accounts and policies; never given to jobs)",
    "s3_secret_key": "its secret",
    "mongo_db": "shared database of earlier releases; orgs' collections are moved out of it",
    "mongo_users": "ferretdb (org's PostgreSQL role) or mongodb (createUser per org)",
    "ferretdb_database": "FerretDB's PostgreSQL database, where org schemas are granted",
    "job_image": "image of the CronJobs (has the `orgpipeline` command)",
    "job_image_pull_policy": "Always, IfNotPresent or Never",
    "job_node_selector": "k=v[,k=v] nodeSelector of the jobs' pods",
    "job_postgres_host": "host:port the jobs use for PostgreSQL, when not the operator's",
    "job_mongo_uri": "MongoDB URI the jobs use, when not the operator's",
    "job_s3_endpoint": "S3 endpoint the jobs use, when not the operator's",
    "namespace": "where spec.source.credentialsSecret Secrets live",
    "label_selector": "reconcile only OrgPipelines with these labels",
    "resync_seconds": "idle resync interval",
    "deep_resync_seconds": "resync that reads every child back",
    "retry_seconds": "delay before a failed reconcile is retried",
    "workers": "handler threads (x4 for parallel applies)",
    "metrics_port": "/metrics and /readyz; 0 disables",
    "health_port": "Kopf liveness /healthz; 0 disables",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
    "webhook_port": "S3 event notifications, POST /s3/events (file-arrival runs); 0 disables",
    "webhook_token": "bearer token the notification senders present (required with the port)",
    "webhook_max_bytes": "larger notification bodies are refused (413)",
    "webhook_debounce_seconds": "a table's file-arrival run starts once no file arrived for this long",
    "webhook_max_wait_seconds": "... or this long after the burst's first file",
    "webhook_job_ttl_seconds": "finished file-arrival Jobs are deleted after this long",
    "s3_accounts": "versitygw (an S3 account per org) or none (each org names a labelled credentialsSecret)",
    "tenant_role": "ClusterRole bound to the operator in each org namespace (its Secrets and Jobs)",
    "service_account": "the operator's ServiceAccount, subject of those bindings",
    "lease_name": "Lease electing the active replica (the others stand by); unset: no election",
    "pod_name": "this replica's name in the Lease (default: the host name)",
}


def help_text() -> str:
    """`orgpipeline-operator --help`: what it does and every setting (read from the environment)."""
    lines = [
        "usage: orgpipeline-operator [-h]",
        "",
        "Kopf operator reconciling cluster-scoped OrgPipelines (orgpipeline.io/v1alpha1) into one",
        "namespace per org (org-<orgId>) with a PostgreSQL role and schema, a credentials Secret and",
        "one CronJob per table; job results are written back to the OrgPipeline's status. Runs",
        "cluster-wide; with ORGPIPELINE_LEASE_NAME, the replica holding the Lease acts, the others stand by.",
        "",
        "Settings (environment variables; validated at start, exit 2 on a bad one):",
    ]
    for field in dataclasses.fields(Settings):
        default = "required" if field.default is dataclasses.MISSING else f"default {field.default}"
        if field.default is None:
            default = "optional"
        lines.append(f"  {_ENV[field.name]:<36} {_WHAT.get(field.name, '')} ({default})")
    return "\n".join(lines) + "\n"
