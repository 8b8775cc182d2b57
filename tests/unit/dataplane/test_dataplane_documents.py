"""Version documents: the BSON of a document built for encoding (shared sub-documents encoded once)
is byte for byte that of the plain document, so MongoDB and the outbox get the seed's record."""

from __future__ import annotations

from datetime import UTC, datetime

import bson
import pytest
from orgpipeline_jobs.landing import documents
from orgpipeline_jobs.quality import Issue, RecordCheck

pytestmark = pytest.mark.unit

CONTEXT = documents.VersionContext(
    "acme",
    "orders",
    "run-1",
    "alice",
    {"file_id": "f_1", "bucket": "b", "key": "org-acme/orders.csv", "size": 10},
    datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
)


@pytest.mark.parametrize(
    "check",
    [
        None,
        RecordCheck({"id": "1"}, warnings=[Issue("range", "amount", "amount below 0")]),
        RecordCheck({"id": "1"}, errors=[Issue("required", "id", "id is required")]),
    ],
)
def test_a_document_built_for_bson_encodes_to_the_same_bytes(check: RecordCheck | None) -> None:
    part = documents.Part.of(CONTEXT, "f_1:000001", "loaded")
    fields = dict(
        composite_key="org_acme_orders_1",
        values={"id": "1", "amount": -2.5, "note": 'naïve "quoted"\n'},
        version=2,
        data_hash="ab" * 32,
        change_type="UPDATE",
        changed_fields=["amount"],
        previous_version=1,
        previous_data_hash="cd" * 32,
        line=7,
        check=check,
    )
    plain = documents.build(part, **fields)  # type: ignore[arg-type]
    shared = documents.build(part, **fields, for_bson=True)  # type: ignore[arg-type]
    assert documents.encode([shared])[0].raw == bson.encode(plain)
