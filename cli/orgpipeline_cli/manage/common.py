"""What every management command shares: options, exit codes, connections, output.

Exit codes (the same for every management command, printed in each `--help`):
  0  done (validate: no difference; alerts: no alert)
  1  validate found a difference; alerts found an active alert
  2  usage or user error: bad flag, unknown org or table, no retention policy
  3  a store (PostgreSQL, MongoDB) cannot be reached or read
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import typer
from orgpipeline_api import store_names
from rich.console import Console

from orgpipeline_cli.main import CommandFailed
from orgpipeline_cli.output import Format

EXIT_OK, EXIT_FOUND, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 differences (validate) or active alerts (alerts) found; "
    "2 usage or user error (bad flag, unknown org or table); 3 a store cannot be reached."
)

OrgOpt = typer.Option(None, "--org-id", help="The org's id (spec.orgId); every org when omitted.")
OrgRequiredOpt = typer.Option(..., "--org-id", help="The org's id (spec.orgId).")
TableOpt = typer.Option(None, "--table", help="One table of the org; every table when omitted.")
OutputOpt = typer.Option(
    Format.table, "-o", "--output", help="table: readable tables (default); json: one JSON document."
)


def command_help(function: Any) -> str:
    """The function's docstring with each paragraph on one line, so that the terminal wraps it."""
    text = inspect.cleandoc(function.__doc__ or "")
    return "\n\n".join(" ".join(p.split()) for p in text.split("\n\n"))


def register(app: typer.Typer, name: str, function: Any) -> None:
    app.command(name, help=command_help(function), epilog=EXIT_CODES_HELP)(function)


def days_option(default: int, what: str) -> Any:
    return typer.Option(default, "--days", min=1, max=3650, help=f"Period in days, ending now, {what}.")


class UserError(CommandFailed):
    """A mistake the user can fix (unknown org or table): exit 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


@dataclass
class Stores:
    """Open connections: PostgreSQL (autocommit) and MongoDB (each org's raw landing is a database
    of its own: `mongo(org_id)`).

    `conn` is logged in with ORGPIPELINE_POSTGRES_DSN and is for the catalog (which orgs and tables
    exist); everything that reads or writes inside an org's schema goes through `org(org_id)`."""

    conn: Any
    client: Any
    settings: Any
    dsn: str = ""
    _org: tuple[str, Any, ExitStack] | None = field(default=None, repr=False)

    def mongo(self, org_id: str) -> Any:
        """The org's MongoDB database, holding its raw-landing collections."""
        return self.client[self.settings.mongo_database(org_id)]

    def org(self, org_id: str) -> Any:
        """A connection whose most privileged identity is the org's role (`tenant.session`): `conn`
        itself when it is logged in as that role, else a delegate's. The org's tables, triggers,
        functions and views are the tenant's: an administrator's session must never run them.
        One org's session at a time (the commands go org by org): asking for another closes it."""
        from orgpipeline_api import stores as connections
        from orgpipeline_api.orgschema import tenant

        if self._org is not None and self._org[0] == org_id:
            return self._org[1]
        self.close_org()
        stack = ExitStack()
        try:
            conn = stack.enter_context(tenant.session(self.dsn, org_id, admin=self.conn))
        except tenant.TenantSessionRefused as exc:
            stack.close()
            raise UserError(str(exc)) from None
        except connections.StoreUnavailable as exc:
            stack.close()
            raise CommandFailed(str(exc), EXIT_UNAVAILABLE) from None
        self._org = (org_id, conn, stack)
        return conn

    def close_org(self) -> None:
        if self._org is not None:
            stack, self._org = self._org[2], None
            stack.close()


@contextmanager
def stores(need_mongo: bool = True) -> Iterator[Stores]:
    """Connects with the data plane's settings (ORGPIPELINE_* variables); a store that cannot be
    reached ends the command with one line and exit code 3."""
    from orgpipeline_api.errors import ConfigurationError, ServerUnavailable
    from orgpipeline_jobs import pipeline
    from orgpipeline_jobs.settings import Settings

    try:
        settings = Settings.from_env()
        conn = pipeline.connect_postgres(settings)
    except ConfigurationError as exc:
        raise UserError(str(exc)) from None
    except ServerUnavailable as exc:
        raise CommandFailed(str(exc), EXIT_UNAVAILABLE) from None
    client = None
    try:
        if need_mongo:
            try:
                client = pipeline.connect_mongo(settings)
            except (ConfigurationError, ServerUnavailable) as exc:
                code = EXIT_USAGE if isinstance(exc, ConfigurationError) else EXIT_UNAVAILABLE
                raise CommandFailed(str(exc), code) from None
        s = Stores(
            conn,
            client,
            settings,
            settings.postgres_dsn or "",
        )
        try:
            yield s
        finally:
            s.close_org()
    finally:
        if client is not None:
            client.close()
        conn.close()


def resolve_orgs(conn: Any, org_id: str | None) -> list[str]:
    """The org asked for (which must have a schema), or every org."""
    from orgpipeline_cli.manage import queries

    if org_id is None:
        return queries.list_orgs(conn)
    if not queries.org_exists(conn, org_id):
        raise UserError(f"unknown org {org_id!r}: no schema {store_names.pg_schema(org_id)} in PostgreSQL")
    return [org_id]


def resolve_tables(conn: Any, org_id: str, table: str | None) -> list[str]:
    from orgpipeline_cli.manage import queries

    tables = queries.list_tables(conn, org_id)
    if table is None:
        return tables
    if table not in tables:
        known = ", ".join(tables) or "none yet"
        raise UserError(f"unknown table {table!r} for org {org_id}; its tables: {known}")
    return [table]


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def print_json(document: Any) -> None:
    print(json.dumps(document, default=_default, ensure_ascii=False))


def console() -> Console:
    """stdout; when it is not a terminal (a pipe, a log file), wide enough not to wrap rows."""
    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=160)
    return out


def fmt_time(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


def fmt_num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | Decimal):
        return f"{float(value):.{digits}g}"
    return str(value)


def fmt_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)
