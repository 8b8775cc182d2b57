"""Renders the chart and applies it to the real API server (shared by the chart tests)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "orgpipeline-operator"
CI_VALUES = CHART / "ci" / "test-values.yaml"


def apply_release(namespace: str, release: str, *sets: str) -> list[dict[str, Any]]:
    """`helm template` of the chart, applied server-side (the shared CRD only validated, not changed)."""
    args = ["helm", "template", release, str(CHART), "-n", namespace, "-f", str(CI_VALUES), "--include-crds"]
    for s in sets:
        args += ["--set", s]
    rendered = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    rest = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    # Dry run: the server validates the CRD without this test taking its fields from whoever applied it.
    subprocess.run(
        [
            "kubectl",
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=helm-chart-test",
            "-f",
            "-",
        ],
        input=yaml.safe_dump_all(crds),
        text=True,
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        ["kubectl", "apply", "--server-side", "--field-manager=helm-chart-test", "-f", "-"],
        input=yaml.safe_dump_all(rest),
        text=True,
        capture_output=True,
    )
    assert out.returncode == 0, out.stderr
    return docs
