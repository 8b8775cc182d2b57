"""The reader's Secret and the hash that decides when its views are made again. No cluster."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import yaml
from orgpipeline_api import v1alpha1
from orgpipeline_operator import builders, reader

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "org-123.yaml"


def target(**column_changes: str) -> builders.Target:
    doc = yaml.safe_load(EXAMPLE.read_text())
    for table in doc["spec"]["tables"]:
        for column in table["columns"]:
            column.update(
                {k.split("__")[1]: v for k, v in column_changes.items() if k.split("__")[0] == column["name"]}
            )
    _, spec = v1alpha1.parse_manifest(doc)
    return builders.Target("org-123", "uid-1", spec, builders.JobSettings(image="img:1"))


def test_secret_holds_the_reader_connection_and_the_views_hash() -> None:
    t = target()
    creds = builders.Credentials("orgpipeline_reader_123", "pw", "pg", "5432", "db", "", "", "", "", "")
    secret = reader.build_secret(t, creds, reader.views_hash(t))
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["PGUSER"] == "orgpipeline_reader_123" and data["PGPASSWORD"] == "pw"
    assert data["ORGPIPELINE_READER_POSTGRES_DSN"] == "postgresql://orgpipeline_reader_123:pw@pg:5432/db"
    assert data["ORGPIPELINE_READER_SCHEMA"] == "orgview_123"
    assert secret["metadata"]["namespace"] == "org-123" and secret["metadata"]["name"] == reader.SECRET
    assert builders.applied_hash(secret) == reader.views_hash(t)
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    # No S3 or MongoDB keys: the reader gets PostgreSQL and nothing else.
    assert not any(k.startswith(("ORGPIPELINE_S3", "ORGPIPELINE_MONGO")) for k in data)


def test_views_hash_follows_classification_type_and_columns_only() -> None:
    base = reader.views_hash(target())
    assert reader.views_hash(target(email__classification="sensitive")) != base
    assert reader.views_hash(target(amount__type="decimal(12,2)")) != base
    assert reader.views_hash(target(email__required="true")) == base  # a quality rule: views unchanged
    t = target()
    later = dataclasses.replace(t, spec=t.spec.model_copy(update={"suspend": True}))
    assert reader.views_hash(later) == base
