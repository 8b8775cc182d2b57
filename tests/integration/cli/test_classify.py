"""`orgpipeline classify`: suggestions from stored values, a patch kubectl applies, and the run's
warning about a pii-looking column classified internal (once)."""

# ruff: noqa: F811  (the `org` fixture is imported from test_manage_commands and named by the tests)
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml
from orgpipeline_api.v1alpha1 import load_manifest
from orgpipeline_jobs import pipeline
from orgpipeline_jobs.settings import Settings
from test_manage_commands import Org, org  # noqa: F401 (the fixture)

HEADER = "order_id,customer_id,product_id,order_date,amount,status,email,note\n"
ROWS = "".join(f"O{i},C{i},P{i},2024-01-{10 + i},10.00,pending,user{i}@example.org,\n" for i in range(8))
PHONES = "".join(
    f"O{i},C{i},P{i},2024-01-{10 + i},10.00,pending,user{i}@example.org,+49 30 123456{i}\n"
    for i in range(8, 16)
)


def _unclassify_email(org: Org) -> None:
    doc = yaml.safe_load(org.path.read_text())
    for column in doc["spec"]["tables"][0]["columns"]:
        if column["name"] == "email":
            column.pop("classification", None)  # internal: the default
    org.path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _run(org: Org, name: str, text: str) -> dict[str, object]:
    (org.source / name).write_text(text)
    _, spec = load_manifest(org.path)
    return pipeline.run_table(Settings.from_env(), spec, "orders", None, str(org.source)).as_json()


def test_a_run_warns_once_about_a_pii_looking_column_classified_internal(org: Org) -> None:
    _unclassify_email(org)
    first = _run(org, "orders_1.csv", HEADER + ROWS)
    (breach,) = [b for b in first["breaches"] if b["type"] == "UnclassifiedPersonalData"]  # type: ignore[union-attr]
    assert (
        "column email is classified internal" in breach["message"] and "email addresses" in breach["message"]
    )
    assert "100%" in breach["message"] and breach["value"] == 1.0
    again = _run(org, "orders_2.csv", HEADER + PHONES)
    assert [b["type"] for b in again["breaches"]] == ["UnclassifiedPersonalData"]  # type: ignore[union-attr]
    assert "column note" in again["breaches"][0]["message"]  # type: ignore[index]  # new finding: phones
    quiet = _run(org, "orders_3.csv", HEADER + ROWS.replace("10.00", "11.00"))
    assert quiet["breaches"] == []  # said once per column


def test_classify_suggests_with_evidence_and_prints_a_patch_kubectl_applies(org: Org, tmp_path: Path) -> None:
    _unclassify_email(org)
    _run(org, "orders_1.csv", HEADER + PHONES)
    doc = org.json("classify", "--org-id", org.org_id, "-f", str(org.path))
    (table,) = doc["tables"]
    columns = {c["column"]: c for c in table["columns"]}
    assert (columns["email"]["classification"], columns["email"]["suggested"]) == ("internal", "pii")
    assert columns["email"]["evidence"][0] == {
        "detector": "email addresses", "classification": "pii", "matched": 8, "values": 8, "share": 1.0,
    }  # fmt: skip
    assert (
        columns["note"]["suggested"] == "pii"
        and columns["note"]["evidence"][0]["detector"] == "phone numbers"
    )
    assert not columns["amount"]["change"] and not columns["order_id"]["change"]
    patch = tmp_path / "patch.yaml"
    done = org.cli("classify", "--org-id", org.org_id, "-f", str(org.path), "-o", "yaml")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"# kubectl patch orgpipeline org-{org.org_id} --type json")
    patch.write_text(done.stdout)
    applied = subprocess.run(
        ["kubectl", "patch", "--local", "-f", str(org.path), "--type", "json", "--patch-file", str(patch),
         "-o", "json"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    patched = json.loads(applied.stdout)
    classes = {c["name"]: c.get("classification") for c in patched["spec"]["tables"][0]["columns"]}
    assert classes["email"] == "pii" and classes["note"] == "pii" and classes.get("amount") is None
    table_text = org.cli("classify", "--org-id", org.org_id, "-f", str(org.path)).stdout
    assert "email addresses 100% (8/8)" in table_text and "op: add" in table_text


def test_without_a_manifest_the_spec_and_patch_come_from_the_cluster(org: Org) -> None:
    """The OrgPipeline as the API server has it (no operator here: it only has to exist); the patch
    applies to it there."""
    _unclassify_email(org)
    _run(org, "orders_1.csv", HEADER + PHONES)
    name = f"org-{org.org_id}"
    kubectl = ["kubectl", "--request-timeout=30s"]
    subprocess.run([*kubectl, "apply", "-f", str(org.path)], check=True, capture_output=True, timeout=60)
    try:
        doc = org.json("classify", "--org-id", org.org_id)
        assert doc["spec_source"] == f"OrgPipeline {name}" and doc["patch"]
        done = org.cli("classify", "--org-id", org.org_id, "-o", "yaml")
        patch = Path(org.source) / "patch.yaml"
        patch.write_text(done.stdout)
        subprocess.run(
            [*kubectl, "patch", "orgpipeline", name, "--type", "json", "--patch-file", str(patch)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        got = subprocess.run(
            [*kubectl, "get", "orgpipeline", name, "-o", "json"], check=True, capture_output=True, timeout=60
        )
        columns = json.loads(got.stdout)["spec"]["tables"][0]["columns"]
        assert {c["name"]: c.get("classification") for c in columns}["email"] == "pii"
        again = org.json("classify", "--org-id", org.org_id)  # classified now: nothing left to change
        assert again["patch"] == []
    finally:
        subprocess.run(
            [*kubectl, "delete", "orgpipeline", name, "--wait=false"], capture_output=True, timeout=60
        )
