"""`orgpipeline console`: serves the org admin console (registered in the CLI's command registry)."""

from __future__ import annotations

import typer


def console(
    host: str = typer.Option("0.0.0.0", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="Port to listen on."),
) -> None:
    """Serve the org admin console: each org's runs, quality trend, alerts, rejected rows and record
    history, for whoever the cluster's RBAC lets see the org.

    Callers sign in with a Kubernetes token (checked with a TokenReview); an org is visible to
    whoever may `get` its OrgPipeline, run-now to whoever may `patch` it. The console's own identity
    is its ServiceAccount in a cluster, KUBECONFIG outside one; the data is read with the
    ORGPIPELINE_* settings of the other commands, in each org's own PostgreSQL session.
    ORGPIPELINE_CONSOLE_SECRET (optional) keys the forms' CSRF tokens, so that several replicas
    accept each other's forms.

    Example: `orgpipeline console --port 8080`.
    """
    import logging

    from aiohttp import web

    from orgpipeline_console import app, kube

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        k = kube.Kube()
    except Exception as exc:
        from orgpipeline_cli.manage.common import UserError

        raise UserError(f"cannot use the Kubernetes configuration: {exc}") from None
    print(f"console: http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}", flush=True)
    web.run_app(app.make_app(k), host=host, port=port, print=None, access_log=None)


def register(app: typer.Typer) -> None:
    from orgpipeline_cli.manage import common

    app.command("console", help=common.command_help(console))(console)
