"""The CRD is generated from the pydantic models: the committed YAML must be exactly that output."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from orgpipeline_api import crd, v1alpha1


def test_committed_crd_is_generated_from_the_models() -> None:
    assert crd.CRD_PATH.read_text(encoding="utf-8") == crd.render(), (
        "crds/ is stale: run `python -m orgpipeline_api.crd`"
    )


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        out.extend(_walk(sub, f"{path}.{name}"))
    if "items" in schema:
        out.extend(_walk(schema["items"], f"{path}[]"))
    return out


def test_every_spec_and_status_field_has_a_description_and_a_type() -> None:
    schema = crd.openapi_schema()
    for part in ("spec", "status"):
        for path, node in _walk(schema["properties"][part], part):
            if path.endswith("[]") and node.get("type") != "object":
                continue  # scalar list items: the list's own description is what kubectl explain shows
            assert node.get("description"), f"{path} has no description"
            assert node.get("type") or "x-kubernetes-preserve-unknown-fields" in node, f"{path} has no type"


def test_schema_is_structural_no_refs_or_unions() -> None:
    text = yaml.safe_dump(crd.build_crd())
    for word in ("$ref", "anyOf", "oneOf", "allOf", "title:", "additionalProperties", "null"):
        assert word not in text, word


def test_crd_shape_cluster_scoped_with_status_and_printer_columns() -> None:
    doc = crd.build_crd()
    assert doc["spec"]["scope"] == "Cluster"
    assert doc["spec"]["names"]["shortNames"] == v1alpha1.SHORT_NAMES
    version = doc["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    cols = [c["name"] for c in version["additionalPrinterColumns"]]
    assert cols == ["Org", "Tier", "Tables", "Ready", "Quality", "Alerts", "Last Run", "Age"]


def test_enums_bounds_defaults_and_cel_rules_are_in_the_schema() -> None:
    spec = crd.openapi_schema()["properties"]["spec"]
    assert spec["properties"]["tier"]["enum"] == ["small", "medium", "large"]
    assert spec["properties"]["tier"]["default"] == "medium"
    assert spec["properties"]["qualityThresholds"]["default"] == {}
    q = spec["properties"]["qualityThresholds"]["properties"]["overallQualityScore"]
    assert (q["minimum"], q["maximum"], q["default"]) == (0, 1, 0.95)
    rules = [r["message"] for r in spec["x-kubernetes-validations"]]
    assert "table names must be unique" in rules
    table = spec["properties"]["tables"]["items"]
    assert any("businessKeys" in r["rule"] for r in table["x-kubernetes-validations"])
    assert table["properties"]["columns"]["x-kubernetes-list-map-keys"] == ["name"]
    assert spec["properties"]["orgId"]["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"


def test_a_field_without_description_is_refused() -> None:
    from pydantic import BaseModel

    class Bad(BaseModel):
        x: int

    with pytest.raises(crd.SchemaError, match="description"):
        crd._schema_of(Bad, "bad")
