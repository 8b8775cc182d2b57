"""Pure parts of export and masking: times, targets, Parquet types, column names, what is masked."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest
from orgpipeline_api.orgschema import privacy, retype
from orgpipeline_jobs import export

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01T10:00:00Z", datetime(2026, 11, 1, 10, tzinfo=UTC)),
        ("2026-11-01T11:00:00+01:00", datetime(2026, 11, 1, 10, tzinfo=UTC)),
        ("2026-11-01T10:00:00", datetime(2026, 11, 1, 10, tzinfo=UTC)),  # no zone: UTC
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),  # a date: its midnight
    ],
)
def test_as_of_times(text: str, expected: datetime) -> None:
    assert export.parse_as_of(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "not an ISO-8601 time"),
        ("2026-13-01", "not an ISO-8601 time"),
        ("2027-01-01", "in the future"),
    ],
)
def test_bad_as_of_times(text: str, message: str) -> None:
    with pytest.raises(export.ExportError, match=message):
        export.parse_as_of(text, NOW)


def test_targets() -> None:
    t = export.parse_target("s3://exports/org/orders.parquet")
    assert t.is_s3 and (t.bucket, t.key) == ("exports", "org/orders.parquet")
    assert export.parse_target("out/orders.csv").path is not None
    for bad in ("s3://exports/", "s3://exports", "s3://Bad_Bucket/x", ""):
        with pytest.raises(export.ExportError):
            export.parse_target(bad)


def test_parquet_types_follow_the_columns() -> None:
    assert export.arrow_type("numeric(10,2)") == pa.decimal128(10, 2)
    assert export.arrow_type("timestamp with time zone") == pa.timestamp("us", tz="UTC")
    assert export.arrow_type("timestamp without time zone") == pa.timestamp("us")
    assert export.arrow_type("date") == pa.date32() and export.arrow_type("bigint") == pa.int64()
    assert export.arrow_type("numeric") == pa.string()  # unconstrained: exact as text
    masked = export.Col("email", "integer", "pii", True)
    assert masked.arrow() == pa.string()  # a pseudonym is text whatever the column's type


def test_a_data_column_named_like_a_metadata_column_keeps_its_name() -> None:
    cols = export.plan_columns([("valid_from", "date"), ("x", "text")], None, mask=False)
    assert export.output_names(cols) == [
        "composite_key",
        "version",
        "change_type",
        "export_valid_from",
        "valid_to",
        "source_file",
        "valid_from",
        "x",
    ]


def test_what_is_masked() -> None:
    classes = {"id": "internal", "email": "pii", "note": "sensitive", "country": "public"}
    cols = export.plan_columns(list((n, "text") for n in classes), classes, mask=True)
    assert [c.name for c in cols if c.masked] == ["email", "note"]
    assert not any(
        c.masked for c in export.plan_columns(list((n, "text") for n in classes), classes, mask=False)
    )
    assert privacy.key_is_masked(classes, ["id"]) is False
    assert privacy.key_is_masked(classes, ["id", "email"]) is True
    assert privacy.key_is_masked(classes, None) is True  # keys unknown and a column is pii: mask
    assert privacy.key_is_masked({"id": "internal"}, None) is False


def test_manifest_types_as_postgresql_names_them() -> None:
    assert retype.pg_type_name("decimal(10,2)") == "numeric(10,2)"
    assert retype.pg_type_name("timestamptz") == "timestamp with time zone"
    assert retype.pg_type_name("timestamp") == "timestamp without time zone"
    assert retype.pg_type_name("double precision") == "double precision"


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+1", "'=1+1"),
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-5", "-5"),  # a plain number runs nothing
        ("+1.5e3", "+1.5e3"),
        ("-.5", "-.5"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_formula_leading_cells_are_neutralised(cell: str, written: str) -> None:
    assert export.neutralise_formula(cell) == written
