"""`orgpipeline run-now`: ask the operator to run a table now, saying who asks and why.

The caller's identity comes from the API server itself (a SelfSubjectReview, what `kubectl auth
whoami` sends), so the requester recorded with the run is the user the cluster authenticated. The
request is the same annotation a plain `kubectl annotate ... orgpipeline.io/run-now=<table>` sets,
plus the requester and reason annotations; the operator makes the Job and removes all three.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import typer
from orgpipeline_api import triggers
from orgpipeline_api.v1alpha1 import GROUP, PLURAL, VERSION

from orgpipeline_cli.main import CommandFailed
from orgpipeline_cli.manage import common
from orgpipeline_cli.manage.common import EXIT_UNAVAILABLE, UserError, print_json
from orgpipeline_cli.output import Format

FIELD_MANAGER = "orgpipeline-cli"
TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Request:
    """One run-now request as sent: which OrgPipeline and table, who and why."""

    pipeline: str
    org_id: str
    table: str
    requester: str | None
    reason: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "orgpipeline": self.pipeline,
            "org_id": self.org_id,
            "table": self.table,
            "requester": self.requester,
            "reason": self.reason,
        }


def find_pipeline(items: list[dict[str, Any]], org_id: str) -> dict[str, Any] | None:
    """The OrgPipeline whose spec.orgId is `org_id`."""
    return next((i for i in items if str((i.get("spec") or {}).get("orgId")) == org_id), None)


def table_names(obj: dict[str, Any]) -> list[str]:
    return [str(t.get("name")) for t in (obj.get("spec") or {}).get("tables") or []]


def annotation_patch(table: str, trigger: triggers.RunTrigger) -> dict[str, Any]:
    """A merge patch that asks for the run; an absent requester or reason removes a stale one."""
    return {
        "metadata": {
            "annotations": {
                triggers.ANNOTATION_RUN_NOW: table,
                triggers.ANNOTATION_RUN_NOW_REQUESTER: trigger.user,
                triggers.ANNOTATION_RUN_NOW_REASON: trigger.reason,
            }
        }
    }


def send_run_now(
    custom: Any, name: str, table: str, trigger: triggers.RunTrigger, field_manager: str = FIELD_MANAGER
) -> None:
    """Patches the run-now annotations onto OrgPipeline `name` through `custom` (a
    CustomObjectsApi, with whichever identity asks: the command's or a console caller's)."""
    custom.patch_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        name,
        annotation_patch(table, trigger),
        field_manager=field_manager,
        _content_type="application/merge-patch+json",
        _request_timeout=TIMEOUT_SECONDS,
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _api_error(exc: Exception, doing: str) -> CommandFailed:
    """An API failure as one line: no permission is the user's to fix (2), the rest is unavailable (3)."""
    status = getattr(exc, "status", None)
    if status in (401, 403):
        reason = getattr(exc, "reason", "") or "Forbidden"
        return UserError(f"cannot {doing}: {reason} (ask for get, list and patch on orgpipelines)")
    return CommandFailed(f"cannot {doing}: {_first_line(exc)}", EXIT_UNAVAILABLE)


def _client() -> Any:
    import kubernetes

    path = os.environ.get("KUBECONFIG", "").strip()
    try:
        return kubernetes.config.new_client_from_config(config_file=path.split(os.pathsep)[0] or None)
    except Exception as exc:
        raise UserError(
            f"cannot use the kubeconfig ({path or '~/.kube/config'}): {_first_line(exc)}"
        ) from None


def whoami(api: Any) -> str | None:
    """The user name the API server authenticated for this client (SelfSubjectReview); None when
    the server does not answer it (the request then goes on with an unknown requester)."""
    import kubernetes

    try:
        review = kubernetes.client.AuthenticationV1Api(api).create_self_subject_review(
            kubernetes.client.V1SelfSubjectReview(), _request_timeout=TIMEOUT_SECONDS
        )
    except Exception as exc:
        status = getattr(exc, "status", None)
        if status is None or status >= 500:
            raise _api_error(exc, "ask the API server who you are") from None
        print(f"orgpipeline: warning: identity unknown ({_first_line(exc)})", file=sys.stderr)
        return None
    info = review.status.user_info if review.status else None
    return info.username if info and info.username else None


def run_now(
    org_id: str = common.OrgRequiredOpt,
    table: str = typer.Option(..., "--table", help="The table to run (a name in spec.tables)."),
    reason: str | None = typer.Option(
        None, "--reason", help=f"Why, recorded with the run (at most {triggers.MAX_REASON} characters)."
    ),
    output: Format = common.OutputOpt,
) -> None:
    """Run a table now; the run records you as its requester, and your reason.

    Finds who you are as the cluster knows you (a SelfSubjectReview, as `kubectl auth whoami`),
    then sets the run-now annotation with requester and reason on the org's OrgPipeline (in the
    cluster KUBECONFIG names). The operator starts the Job; the run's trigger (`run-now`), requester
    and reason reach pipeline_runs, the change log, each version's audit trail, `orgpipeline audit`
    and the OrgPipeline's last-run status. A plain `kubectl annotate orgpipeline <name>
    orgpipeline.io/run-now=<table>` still works, with an unknown requester.

    Exit codes: 0 requested; 2 unknown org or table, unusable kubeconfig, or no permission on
    the OrgPipeline; 3 the API server cannot be reached.

    Example: `orgpipeline run-now --org-id 123 --table orders --reason "corrected file uploaded"`.
    """
    import kubernetes

    api = _client()
    try:
        custom = kubernetes.client.CustomObjectsApi(api)
        try:
            listing = custom.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, _request_timeout=TIMEOUT_SECONDS
            )
        except Exception as exc:
            raise _api_error(exc, "list OrgPipelines") from None
        items: list[dict[str, Any]] = dict(listing).get("items") or []  # type: ignore[call-overload]
        obj = find_pipeline(items, org_id)
        if obj is None:
            raise UserError(f"unknown org {org_id!r}: no OrgPipeline has spec.orgId {org_id!r}")
        name = obj["metadata"]["name"]
        tables = table_names(obj)
        if table not in tables:
            raise UserError(f"unknown table {table!r} for org {org_id}; its tables: {', '.join(tables)}")
        trigger = triggers.RunTrigger.of(triggers.Trigger.run_now, whoami(api), reason)
        try:
            send_run_now(custom, name, table, trigger)
        except Exception as exc:
            raise _api_error(exc, f"annotate OrgPipeline {name}") from None
    finally:
        api.close()
    request = Request(name, org_id, table, trigger.user, trigger.reason)
    if output == Format.json:
        print_json(request.as_json())
        return
    who = request.requester or "an unknown requester"
    why = f" ({request.reason})" if request.reason else ""
    common.console().print(
        f"Run of {table} requested on OrgPipeline {name} for {who}{why}; the operator starts its Job.",
        markup=False,
    )


def register(app: typer.Typer) -> None:
    app.command("run-now", help=common.command_help(run_now))(run_now)
