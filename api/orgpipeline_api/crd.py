"""Generates the OrgPipeline CustomResourceDefinition from the pydantic models.

The models in `v1alpha1` (spec) and `status` are the single contract: this module turns their JSON
schema into a structural OpenAPI v3 schema (refs inlined, optionals without `null`, bounds in the
OpenAPI 3.0 spelling) and adds what only the CRD has: the status subresource, printer columns and
short names. `tests/unit/operator/test_crd.py` proves the committed YAML is what this produces.

    python -m orgpipeline_api.crd            # rewrites crds/orgpipeline.io_orgpipelines.yaml
    python -m orgpipeline_api.crd --check    # exit 1 when the committed file is stale
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from orgpipeline_api import v1alpha1, v1alpha1_status

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / f"{v1alpha1.GROUP}_{v1alpha1.PLURAL}.yaml"

_DROP = {"title", "additionalProperties"}
# type and description first, nested properties/items last: readable YAML, stable diffs.
_KEY_ORDER = {
    "type": 0,
    "description": 1,
    "format": 2,
    "enum": 3,
    "default": 4,
    "required": 90,
    "properties": 91,
    "items": 92,
    "x-kubernetes-list-type": 95,
    "x-kubernetes-list-map-keys": 96,
    "x-kubernetes-validations": 97,
}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Org", "type": "string", "jsonPath": ".spec.orgId", "description": "The org id."},
    {"name": "Tier", "type": "string", "jsonPath": ".spec.tier", "description": "Resource tier."},
    {"name": "Tables", "type": "integer", "jsonPath": ".status.tableCount", "description": "Tables."},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Whether the org's resources and database are in place.",
    },
    {
        "name": "Quality",
        "type": "number",
        "jsonPath": ".status.qualityScore",
        "description": "Lowest quality score among the tables' last runs.",
    },
    {
        "name": "Alerts",
        "type": "integer",
        "jsonPath": ".status.activeAlerts",
        "description": "Active alerts.",
    },
    {
        "name": "Last Run",
        "type": "date",
        "jsonPath": ".status.lastRunTime",
        "description": "When the most recent run finished.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


class SchemaError(ValueError):
    """The models produce a schema the CRD cannot take (for example a field without a description)."""


def _convert(node: dict[str, Any], defs: dict[str, Any], where: str) -> dict[str, Any]:
    """One JSON-schema node of pydantic's output -> one structural OpenAPI v3 node."""
    node = copy.deepcopy(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        merged = copy.deepcopy(target)
        merged.update(node)  # the field's own description wins over the class docstring
        node = merged
    if "anyOf" in node:  # Optional[X]: the CRD says "not required" instead of "may be null"
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise SchemaError(f"{where}: unions other than Optional[X] have no structural schema")
        base = _convert(options[0], defs, where)
        base.update({k: v for k, v in node.items() if k != "default" or v is not None})
        node = base
    if node.get("default", 0) is None:
        del node["default"]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "exclusiveMinimum" or key == "exclusiveMaximum":
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "properties":
            out[key] = {name: _convert(sub, defs, f"{where}.{name}") for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs, f"{where}[]")
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" in out:
        for name, sub in out["properties"].items():
            if not sub.get("description"):
                raise SchemaError(f"{where}.{name}: every field needs a description (kubectl explain)")
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return dict(sorted(out.items(), key=lambda kv: _KEY_ORDER.get(kv[0], 50)))


def _schema_of(model: type[Any], where: str) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _convert(raw, defs, where)


def _object_defaults(schema: dict[str, Any]) -> None:
    """Nested objects with defaults everywhere inside get `default: {}` so the server fills them in."""
    for sub in schema.get("properties", {}).values():
        _object_defaults(sub)
        if (
            sub.get("type") == "object"
            and "default" not in sub
            and not sub.get("required")
            and all("default" in p for p in sub.get("properties", {}).values())
        ):
            sub["default"] = {}
    if "items" in schema:
        _object_defaults(schema["items"])


def openapi_schema() -> dict[str, Any]:
    """The whole openAPIV3Schema of the OrgPipeline resource."""
    spec = _schema_of(v1alpha1.OrgPipelineSpec, "spec")
    _object_defaults(spec)
    st = _schema_of(v1alpha1_status.OrgPipelineStatus, "status")
    return {
        "type": "object",
        "description": "One tenant's data pipeline: CSV files in S3 -> MongoDB raw landing -> "
        "PostgreSQL schema orgdata_<orgId>, run by CronJobs in the namespace org-<orgId>.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object."},
            "kind": {"type": "string", "description": "Kind of this object."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": st,
        },
    }


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition as a dict, ready for YAML or for the API."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{v1alpha1.PLURAL}.{v1alpha1.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "orgpipeline"},
        },
        "spec": {
            "group": v1alpha1.GROUP,
            "scope": "Cluster",
            "names": {
                "kind": v1alpha1.KIND,
                "listKind": f"{v1alpha1.KIND}List",
                "plural": v1alpha1.PLURAL,
                "singular": v1alpha1.SINGULAR,
                "shortNames": list(v1alpha1.SHORT_NAMES),
                "categories": ["all", "orgpipeline"],
            },
            "versions": [
                {
                    "name": v1alpha1.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


def render() -> str:
    header = "# Generated by `python -m orgpipeline_api.crd` from orgpipeline_api.v1alpha1: do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100, allow_unicode=True)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = CRD_PATH.read_text(encoding="utf-8") if CRD_PATH.exists() else ""
        if current != text:
            print(f"{CRD_PATH} is stale: run python -m orgpipeline_api.crd", file=sys.stderr)
            return 1
        return 0
    CRD_PATH.parent.mkdir(parents=True, exist_ok=True)
    CRD_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {CRD_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
