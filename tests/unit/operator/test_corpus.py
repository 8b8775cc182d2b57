"""The invalid corpus (also sent to the real API server by the integration tests) is refused by the
pydantic model too: the CRD and the model are one contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from orgpipeline_api import v1alpha1

CASES = Path(__file__).resolve().parents[2] / "integration" / "operator" / "cases"
INVALID = sorted((CASES / "invalid").glob("*.yaml"))


def test_corpus_has_at_least_twenty_cases() -> None:
    assert len(INVALID) >= 20


def test_base_case_is_valid() -> None:
    name, spec = v1alpha1.load_manifest(CASES / "base.yaml")
    assert name == "base" and spec.tables[0].name == "orders"


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_model_refuses_each_invalid_manifest(path: Path) -> None:
    assert path.read_text().startswith("# expect: "), "each case names the API server's message"
    with pytest.raises(v1alpha1.ManifestError):
        v1alpha1.load_manifest(path)
