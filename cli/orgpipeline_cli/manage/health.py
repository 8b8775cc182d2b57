"""`orgpipeline health`: can the platform reach what the pipelines need, and can an org's role log in?

One check per dependency: PostgreSQL, MongoDB, S3 (the operator's connection settings, as `hack/stack
env` or the chart's Secret export them) and the API server (KUBECONFIG), each with what answered and
how long it took. With `--org-id`, the org's OrgPipeline (Ready), its PostgreSQL role (exists, may
log in) and a real login with the password from the org's Secret, as its jobs log in.

The probes only talk to the servers; what the checks mean (`exit_code`) is a pure function.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import typer
from rich.text import Text

from orgpipeline_cli.manage import common
from orgpipeline_cli.manage.common import OutputOpt, UserError, console, print_json
from orgpipeline_cli.output import Format

OK, SKIPPED, FAILED, UNREACHABLE, MISCONFIGURED = "ok", "skipped", "failed", "unreachable", "misconfigured"
TIMEOUT_SECONDS = 5

EXIT_HELP = (
    "Exit codes: 0 every check ok (or skipped); 1 a check failed (reached, but refused: an org role "
    "that cannot log in, an OrgPipeline not Ready, no permission); 2 usage or user error (unknown "
    "org, a setting missing or malformed); 3 a store or the API server cannot be reached."
)


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str
    detail: str
    target: str = ""
    latency_ms: float | None = None


def exit_code(checks: list[Check]) -> int:
    """3 when something cannot be reached, else 2 when a setting is wrong, else 1 when a check
    failed, else 0."""
    statuses = {c.status for c in checks}
    for status, code in ((UNREACHABLE, 3), (MISCONFIGURED, 2), (FAILED, 1)):
        if status in statuses:
            return code
    return 0


def _timed(name: str, target: str, probe: Callable[[], str]) -> Check:
    """Runs a probe: its return value is the detail of an ok check; it raises _Outcome otherwise."""
    started = time.monotonic()
    try:
        detail, status = probe(), OK
    except _Outcome as exc:
        detail, status = exc.detail, exc.status
    latency = round((time.monotonic() - started) * 1000, 1)
    return Check(name, status, detail, target, latency if status != SKIPPED else None)


class _Outcome(Exception):
    def __init__(self, status: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, " ".join(detail.split())[:300]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _setting(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise _Outcome(MISCONFIGURED, f"{name} is not set")
    return value


def _host_of(dsn: str) -> str:
    import psycopg

    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return ""
    return f"{info.get('host', '')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


# --- the servers --------------------------------------------------------------------------------


def _postgres() -> str:
    import psycopg

    dsn = _setting("ORGPIPELINE_POSTGRES_DSN")
    try:
        with psycopg.connect(dsn, connect_timeout=TIMEOUT_SECONDS, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.ProgrammingError as exc:
        raise _Outcome(MISCONFIGURED, f"ORGPIPELINE_POSTGRES_DSN: {_first_line(exc)}") from None
    except psycopg.Error as exc:
        raise _Outcome(UNREACHABLE, _first_line(exc)) from None
    return f"PostgreSQL {row[0] if row else '?'}"


def _mongo() -> str:
    import pymongo
    import pymongo.errors

    uri = _setting("ORGPIPELINE_MONGO_URI")
    try:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            uri, serverSelectionTimeoutMS=TIMEOUT_SECONDS * 1000, connectTimeoutMS=TIMEOUT_SECONDS * 1000
        )
    except (pymongo.errors.ConfigurationError, ValueError) as exc:
        raise _Outcome(MISCONFIGURED, f"ORGPIPELINE_MONGO_URI: {_first_line(exc)}") from None
    try:
        client.admin.command("ping")
        version = client.server_info().get("version", "?")
    except pymongo.errors.PyMongoError as exc:
        raise _Outcome(UNREACHABLE, str(exc).split(",")[0]) from None
    finally:
        client.close()
    return f"MongoDB protocol {version}"


def _s3() -> str:
    from urllib.parse import urlparse

    import urllib3
    from minio import Minio
    from minio.error import S3Error

    endpoint = _setting("ORGPIPELINE_S3_ENDPOINT")
    access, secret = _setting("ORGPIPELINE_S3_ACCESS_KEY"), _setting("ORGPIPELINE_S3_SECRET_KEY")
    url = urlparse(endpoint)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise _Outcome(MISCONFIGURED, "ORGPIPELINE_S3_ENDPOINT must be http(s)://host[:port]")
    http = urllib3.PoolManager(timeout=TIMEOUT_SECONDS, retries=urllib3.Retry(total=0))
    client = Minio(
        url.netloc, access_key=access, secret_key=secret, secure=url.scheme == "https", http_client=http
    )
    try:
        buckets = client.list_buckets()
    except S3Error as exc:
        raise _Outcome(FAILED, f"{exc.code}: {exc.message}") from None
    except Exception as exc:  # urllib3's connection errors, TLS trouble
        raise _Outcome(UNREACHABLE, _first_line(exc)) from None
    finally:
        http.clear()
    return f"{len(buckets)} bucket(s) visible"


def _api_client() -> Any:
    path = os.environ.get("KUBECONFIG", "").strip()
    if not path:
        raise _Outcome(SKIPPED, "KUBECONFIG is not set")
    import kubernetes

    try:
        return kubernetes.config.new_client_from_config(config_file=path.split(os.pathsep)[0])
    except Exception as exc:
        raise _Outcome(MISCONFIGURED, f"cannot use KUBECONFIG: {_first_line(exc)}") from None


def _api_error(exc: Exception, what: str) -> _Outcome:
    status = getattr(exc, "status", None)
    if status in (401, 403):
        return _Outcome(FAILED, f"no permission to {what} (HTTP {status})")
    if isinstance(status, int) and status > 0:
        return _Outcome(FAILED, f"cannot {what}: HTTP {status} {getattr(exc, 'reason', '')}")
    return _Outcome(UNREACHABLE, _first_line(exc))


def _apiserver() -> str:
    import kubernetes

    api = _api_client()
    try:
        version = kubernetes.client.VersionApi(api).get_code(_request_timeout=TIMEOUT_SECONDS)
        from orgpipeline_api.v1alpha1 import GROUP, PLURAL, VERSION

        kubernetes.client.CustomObjectsApi(api).list_cluster_custom_object(
            GROUP, VERSION, PLURAL, limit=1, _request_timeout=TIMEOUT_SECONDS
        )
    except Exception as exc:
        raise _api_error(exc, "list OrgPipelines") from None
    finally:
        api.close()
    return f"Kubernetes {version.git_version}; OrgPipelines readable"


def _api_target() -> str:
    path = os.environ.get("KUBECONFIG", "").strip()
    return path.split(os.pathsep)[0] if path else ""


# --- one org ------------------------------------------------------------------------------------


@dataclass
class _OrgFacts:
    """What the org checks share: its role as PostgreSQL has it, and its OrgPipeline and Secret."""

    role_exists: bool = False
    role_can_login: bool = False
    schema_owner: str | None = None
    pipeline: dict[str, Any] | None = None
    password: str | None = None


def _org_facts(org_id: str) -> _OrgFacts:
    """The role and schema as the admin connection sees them (unknown org: neither exists)."""
    import psycopg
    from orgpipeline_api import store_names

    facts = _OrgFacts()
    dsn = os.environ.get("ORGPIPELINE_POSTGRES_DSN", "").strip()
    if not dsn:
        return facts
    try:
        with psycopg.connect(dsn, connect_timeout=TIMEOUT_SECONDS, autocommit=True) as conn:
            role = conn.execute(
                "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (store_names.pg_role(org_id),)
            ).fetchone()
            owner = conn.execute(
                "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s",
                (store_names.pg_schema(org_id),),
            ).fetchone()
    except psycopg.Error:
        return facts  # the PostgreSQL check reports it
    facts.role_exists, facts.role_can_login = role is not None, bool(role and role[0])
    facts.schema_owner = owner[0] if owner else None
    return facts


def _org_pipeline(org_id: str, facts: _OrgFacts) -> str:
    import base64

    import kubernetes

    api = _api_client()
    try:
        from orgpipeline_api.v1alpha1 import GROUP, PLURAL, VERSION

        listing: dict[str, Any] = kubernetes.client.CustomObjectsApi(api).list_cluster_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, PLURAL, _request_timeout=TIMEOUT_SECONDS
        )
        items = [i for i in listing.get("items") or [] if (i.get("spec") or {}).get("orgId") == org_id]
        if not items:
            raise _Outcome(FAILED, f"no OrgPipeline with orgId {org_id} in the cluster")
        facts.pipeline = items[0]
        from orgpipeline_api import store_names as api_naming

        try:
            secret = kubernetes.client.CoreV1Api(api).read_namespaced_secret(
                "orgpipeline-credentials", api_naming.namespace(org_id), _request_timeout=TIMEOUT_SECONDS
            )
            raw = (secret.data or {}).get("ORGPIPELINE_POSTGRES_PASSWORD")
            facts.password = base64.b64decode(raw).decode() if raw else None
        except Exception as exc:
            facts.password = None
            if getattr(exc, "status", None) not in (401, 403, 404):
                raise
    except _Outcome:
        raise
    except Exception as exc:
        raise _api_error(exc, "read OrgPipelines") from None
    finally:
        api.close()
    name = facts.pipeline["metadata"]["name"]
    conds = {c.get("type"): c for c in (facts.pipeline.get("status") or {}).get("conditions") or []}
    ready = conds.get("Ready") or {}
    if ready.get("status") != "True":
        raise _Outcome(
            FAILED,
            f"OrgPipeline {name}: Ready is {ready.get('status', 'not reported')} "
            f"({ready.get('reason', '')}: {ready.get('message', '')})",
        )
    return f"OrgPipeline {name} is Ready"


def _org_login(org_id: str, facts: _OrgFacts) -> str:
    import psycopg
    from orgpipeline_api import store_names

    role = store_names.pg_role(org_id)
    if not facts.role_exists:
        raise _Outcome(FAILED, f"role {role} does not exist")
    if not facts.role_can_login:
        raise _Outcome(FAILED, f"role {role} may not log in (NOLOGIN)")
    if facts.schema_owner != role:
        raise _Outcome(
            FAILED, f"schema {store_names.pg_schema(org_id)} is owned by {facts.schema_owner or 'nobody'}"
        )
    if facts.password is None:
        raise _Outcome(
            SKIPPED,
            f"role {role} exists and may log in; login not tried: the org's Secret could not be read",
        )
    dsn = psycopg.conninfo.make_conninfo(
        _setting("ORGPIPELINE_POSTGRES_DSN"), user=role, password=facts.password
    )
    try:
        with psycopg.connect(dsn, connect_timeout=TIMEOUT_SECONDS, autocommit=True) as conn:
            row = conn.execute("SELECT current_user, current_schema()").fetchone()
    except psycopg.OperationalError as exc:
        text = _first_line(exc)
        status = FAILED if "authentication" in text or "password" in text else UNREACHABLE
        raise _Outcome(status, f"{role} cannot log in: {text}") from None
    return f"logged in as {row[0] if row else role}, search_path schema {row[1] if row else '?'}"


# --- the command --------------------------------------------------------------------------------


def run_checks(org_id: str | None) -> list[Check]:
    # The clients' imports first, so that the latencies are the servers' and not Python's.
    import kubernetes  # noqa: F401
    import minio  # noqa: F401
    import psycopg  # noqa: F401
    import pymongo  # noqa: F401

    pg_target = _host_of(os.environ.get("ORGPIPELINE_POSTGRES_DSN", ""))
    checks = [
        _timed("postgresql", pg_target, _postgres),
        _timed("mongodb", _mongo_target(), _mongo),
        _timed("s3", os.environ.get("ORGPIPELINE_S3_ENDPOINT", ""), _s3),
        _timed("apiserver", _api_target(), _apiserver),
    ]
    if org_id is None:
        return checks
    facts = _org_facts(org_id)
    org_check = _timed("orgpipeline", _api_target(), lambda: _org_pipeline(org_id, facts))
    if not facts.role_exists and facts.pipeline is None and checks[0].status == OK:
        raise UserError(
            f"unknown org {org_id!r}: no OrgPipeline with this orgId and no PostgreSQL role for it"
        )
    from orgpipeline_api import store_names

    checks.append(org_check)
    checks.append(_timed("org-role-login", store_names.pg_role(org_id), lambda: _org_login(org_id, facts)))
    return checks


def _mongo_target() -> str:
    from urllib.parse import urlparse

    uri = os.environ.get("ORGPIPELINE_MONGO_URI", "")
    try:
        return urlparse(uri).hostname or "" if uri else ""
    except ValueError:
        return ""


def health(
    org_id: str | None = typer.Option(
        None,
        "--org-id",
        help="Also check this org: its OrgPipeline is Ready and its PostgreSQL role logs in.",
    ),
    output: Format = OutputOpt,
) -> None:
    """Check that PostgreSQL, MongoDB, S3 and the API server answer; with --org-id, the org too.

    Connections come from ORGPIPELINE_POSTGRES_DSN, ORGPIPELINE_MONGO_URI, ORGPIPELINE_S3_* and
    KUBECONFIG (the API server check is skipped without it). The org's role logs in with the
    password from its Secret orgpipeline-credentials in namespace org-<id>, as its jobs do.

    Example: `orgpipeline health --org-id 123 -o json`.
    """
    checks = run_checks(org_id)
    code = exit_code(checks)
    if output == Format.json:
        print_json({"healthy": code == 0, "org_id": org_id, "checks": [asdict(c) for c in checks]})
    else:
        _render(checks, code)
    if code:
        from orgpipeline_cli.main import CommandFailed

        bad = [f"{c.name}: {c.detail}" for c in checks if c.status not in (OK, SKIPPED)]
        raise CommandFailed("unhealthy: " + "; ".join(bad), code)


def _render(checks: list[Check], code: int) -> None:
    from orgpipeline_cli.output import Table

    styles = {OK: "green", SKIPPED: "yellow", FAILED: "red", UNREACHABLE: "red", MISCONFIGURED: "red"}
    table = Table(title="Health: " + ("ok" if code == 0 else "problems found"))
    for column in ("check", "status", "target", "ms", "detail"):
        table.add_column(column, justify="right" if column == "ms" else "left")
    for c in checks:
        ms = "-" if c.latency_ms is None else f"{c.latency_ms:.0f}"
        table.add_row(c.name, Text(c.status, style=styles[c.status]), c.target, ms, c.detail)
    console().print(table)


def register(app: typer.Typer) -> None:
    app.command("health", help=common.command_help(health), epilog=EXIT_HELP)(health)
