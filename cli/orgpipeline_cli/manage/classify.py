"""`orgpipeline classify`: suggested column classifications from the stored values, as a patch.

Samples each table's stored rows with the org's own session (`Stores.org`), runs the detectors of
`orgpipeline_jobs.classify` (emails, phones, IBANs with mod-97, card numbers with Luhn, IP
addresses, dates of birth, person names) and prints, per column, the classification it has, the
one suggested and the evidence (share of sampled non-empty values that match). The changes come as
a JSON patch (RFC 6902, in YAML) against the OrgPipeline, each change guarded by a `test` of the
column's name, ready for `kubectl patch orgpipeline <name> --type json --patch-file <file>`.

The spec comes from `-f` (the manifest file), else from the cluster (KUBECONFIG), else the
classification the operator recorded (then no patch: a JSON patch needs the columns' positions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from orgpipeline_api.v1alpha1 import OrgPipelineSpec

from orgpipeline_cli.manage.common import (
    OrgRequiredOpt,
    TableOpt,
    UserError,
    command_help,
    console,
    print_json,
    resolve_orgs,
    resolve_tables,
    stores,
)
from orgpipeline_cli.output import Table

EXIT_HELP = (
    "Exit codes: 0 done (with or without suggestions); 2 usage or user error (unknown org or table,"
    " unreadable manifest); 3 a store cannot be reached."
)


def _spec(org_id: str, manifest: Path | None) -> tuple[str | None, OrgPipelineSpec | None, str]:
    """(OrgPipeline name, spec, where they came from) for the org, or (None, None, why not)."""
    from orgpipeline_api.v1alpha1 import ManifestError, load_manifest

    if manifest is not None:
        try:
            name, spec = load_manifest(manifest)
        except ManifestError as exc:
            raise UserError(str(exc)) from None
        if spec.org_id != org_id:
            raise UserError(f"{manifest}: spec.orgId is {spec.org_id}, not {org_id}")
        return name, spec, f"manifest {manifest}"
    from orgpipeline_cli.manage import cluster

    view = cluster.read_orgpipelines()
    obj = view.objects.get(org_id)
    if obj is None:
        why = view.reason or f"no OrgPipeline with orgId {org_id} in the cluster"
        return None, None, f"the recorded classification ({why}; -f gives a patch)"
    try:
        spec = OrgPipelineSpec.model_validate(obj.get("spec") or {})
    except ValueError:
        return None, None, "the recorded classification (the cluster's OrgPipeline is invalid)"
    return str(obj["metadata"]["name"]), spec, f"OrgPipeline {obj['metadata']['name']}"


def _patch(spec: OrgPipelineSpec, changes: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """RFC 6902 operations setting each changed column's classification, each after a `test` that
    the position still holds that table and column (a spec changed since fails whole, not wrongly)."""
    ops: list[dict[str, Any]] = []
    for ti, table in enumerate(spec.tables):
        for ci, column in enumerate(table.columns):
            new = changes.get(table.name, {}).get(column.name)
            if new is None:
                continue
            base = f"/spec/tables/{ti}/columns/{ci}"
            ops.append({"op": "test", "path": f"/spec/tables/{ti}/name", "value": table.name})
            ops.append({"op": "test", "path": f"{base}/name", "value": column.name})
            ops.append({"op": "add", "path": f"{base}/classification", "value": new})
    return ops


def classify(
    org_id: str = OrgRequiredOpt,
    table: str | None = TableOpt,
    sample_rows: int = typer.Option(1000, "--sample", min=10, max=100000, help="Rows sampled per table."),
    min_share: float = typer.Option(
        0.8, "--min-share", min=0.05, max=1.0, help="Share of sampled values a detector must match."
    ),
    manifest: Path | None = typer.Option(
        None, "-f", "--filename", help="The org's manifest (default: its OrgPipeline in the cluster)."
    ),
    output: str = typer.Option(
        "table", "-o", "--output", help="table (default): report and patch; yaml: the patch only; json."
    ),
) -> None:
    """Suggests each column's classification from a sample of its stored values, as a patch.

    Per column: its classification, the suggested one and the evidence (what the values look like:
    email addresses, phone numbers, IBANs (mod-97), card numbers (Luhn), IP addresses, dates of birth,
    person names; the share of sampled non-empty values that match). Card numbers and IBANs suggest
    sensitive, the others pii; a suggestion never lowers a classification. The changes are a JSON
    patch for `kubectl patch orgpipeline NAME --type json --patch-file FILE`.

    Examples: `orgpipeline classify --org-id 123`, `orgpipeline classify --org-id 123 --table
    customers -o yaml > patch.yaml`.
    """
    from orgpipeline_api.orgschema import privacy
    from orgpipeline_jobs import classify as detect

    if output not in ("table", "yaml", "json"):
        raise UserError(f"-o {output}: expected table, yaml or json")
    name, spec, source = _spec(org_id, manifest)
    tables_out: list[dict[str, Any]] = []
    changes: dict[str, dict[str, str]] = {}
    with stores(need_mongo=False) as s:
        (org,) = resolve_orgs(s.conn, org_id)
        names = resolve_tables(s.conn, org, table)
        conn = s.org(org)
        # The spec's classification when known, else what the operator recorded.
        known = privacy.from_spec(spec) if spec is not None else privacy.recorded(conn, org) or {}
        for t in names:
            current = known.get(t)
            if current is None:
                continue  # a table no longer in the spec
            found = detect.suggest_table(conn, org, t, current, sample_rows, min_share)
            sampled = max((c.values for c in found), default=0)
            tables_out.append(
                {"table": t, "values_sampled": sampled, "columns": [c.as_json() for c in found]}
            )
            for c in found:
                if c.changes:
                    changes.setdefault(t, {})[c.column] = c.suggested.value
    patch = _patch(spec, changes) if spec is not None else None
    document = {
        "org_id": org_id,
        "pipeline": name,
        "spec_source": source,
        "sample_rows": sample_rows,
        "min_share": min_share,
        "tables": tables_out,
        "patch": patch,
    }
    if output == "json":
        print_json(document)
    elif output == "yaml":
        print(_patch_text(name, patch), end="")
    else:
        _render(document)


def _patch_text(name: str | None, patch: list[dict[str, Any]] | None) -> str:
    if patch is None:
        return "# no patch: the spec is unknown (give -f MANIFEST or a KUBECONFIG)\n"
    if not patch:
        return "# no classification to change\n[]\n"
    head = f"# kubectl patch orgpipeline {name} --type json --patch-file <this file>\n"
    return head + yaml.safe_dump(patch, sort_keys=False)


def _render(document: dict[str, Any]) -> None:
    out = console()
    for t in document["tables"]:
        title = f"{document['org_id']}/{t['table']}: up to {t['values_sampled']} value(s) sampled per column"
        grid = Table(title=title)
        for header in ("column", "classification", "suggested", "evidence"):
            grid.add_column(header)
        for c in t["columns"]:
            evidence = "; ".join(
                f"{e['detector']} {e['share']:.0%} ({e['matched']}/{e['values']})" for e in c["evidence"][:3]
            )
            suggested = c["suggested"] if c["change"] else "-"
            grid.add_row(c["column"], c["classification"], suggested, evidence)
        out.print(grid)
    out.print(f"spec: {document['spec_source']}", markup=False, highlight=False)
    print(_patch_text(document["pipeline"], document["patch"]), end="")


def register(app: typer.Typer) -> None:
    app.command("classify", help=command_help(classify), epilog=EXIT_HELP)(classify)
