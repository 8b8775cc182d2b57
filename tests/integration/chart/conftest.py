"""Fixtures of the chart tests: a release of the chart applied to the real API server."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def release(stack: Any) -> Iterator[dict[str, str]]:
    """A namespace and release name of the chart, removed with its cluster-scoped objects afterwards."""
    uid = uuid.uuid4().hex[:8]
    ns, name = f"orgpipeline-chart-{uid}", f"chart-{uid}"
    subprocess.run(["kubectl", "create", "namespace", ns], check=True, capture_output=True)
    yield {"namespace": ns, "release": name}
    for kind, suffix in (
        ("clusterrolebinding", ""),
        ("clusterrole", ""),
        ("clusterrole", "-tenant"),
        ("validatingadmissionpolicybinding", "-tenant-bounds"),
        ("validatingadmissionpolicy", "-tenant-bounds"),
    ):
        subprocess.run(
            ["kubectl", "delete", kind, f"{name}-orgpipeline-operator{suffix}", "--ignore-not-found"],
            capture_output=True,
        )
    subprocess.run(["kubectl", "delete", "namespace", ns, "--wait=false"], capture_output=True)
