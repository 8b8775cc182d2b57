"""`orgpipeline import-schemas` on the seed's schema files: its types, both file-name forms, the
metadata columns it skips, and every bad line reported with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from orgpipeline_api.v1alpha1 import parse_manifest
from orgpipeline_cli.manage import seedschemas
from orgpipeline_cli.manage.common import UserError

# The seed's own example (user_schemas/123_orders_schema.csv), verbatim.
SEED_ORDERS = """column_name,data_type
org_id,TEXT NOT NULL
order_id,TEXT
customer_id,TEXT
product_id,TEXT
order_date,DATE
amount,DECIMAL(10,2)
composite_key,TEXT NOT NULL
version,INTEGER NOT NULL DEFAULT 1
# ... enhanced metadata columns automatically added
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("TEXT", ("text", False, False)),
        ("TEXT NOT NULL", ("text", True, False)),
        ("varchar(255) null", ("text", False, False)),
        ("CHARACTER VARYING(20) NOT NULL", ("text", True, False)),
        ("DECIMAL(10,2)", ("decimal(10,2)", False, False)),
        ("numeric( 5 , 0 ) NOT NULL", ("decimal(5,0)", True, False)),
        ("NUMERIC(12)", ("decimal(12,0)", False, False)),
        ("INTEGER NOT NULL DEFAULT 1", ("integer", True, False)),
        ("SMALLINT", ("integer", False, False)),
        ("BIGINT PRIMARY KEY", ("bigint", True, True)),
        ("REAL", ("double precision", False, False)),
        ("double precision", ("double precision", False, False)),
        ("BOOLEAN DEFAULT TRUE", ("boolean", False, False)),
        ("DATE", ("date", False, False)),
        ("TIMESTAMP", ("timestamp", False, False)),
        ("TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()", ("timestamptz", True, False)),
        ("timestamptz", ("timestamptz", False, False)),
        ("TEXT DEFAULT 'it''s' UNIQUE", ("text", False, False)),
    ],
)
def test_seed_sql_types_map_to_manifest_types(text: str, expected: tuple[str, bool, bool]) -> None:
    assert seedschemas.parse_type(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("JSONB", "unknown type 'JSONB'"),
        ("MONEY", "unknown type 'MONEY'"),
        ("NUMERIC", "needs a precision and scale"),
        ("DECIMAL(40,2)", "precision must be 1..38"),
        ("TEXT[]", "array type"),
        ("TEXT CHECK (x > 0)", "cannot read"),
        ("", "no data_type"),
    ],
)
def test_types_the_manifest_cannot_hold_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        seedschemas.parse_type(text)


def test_the_seeds_example_file_becomes_a_valid_manifest(tmp_path: Path) -> None:
    (tmp_path / "123_orders_schema.csv").write_text(SEED_ORDERS)
    (tmp_path / "456_orders_schema.csv").write_text("not,for,this,org\n")  # another org: not read
    manifest, problems = seedschemas.import_schemas(tmp_path, "123")
    assert problems == []
    name, spec = parse_manifest(manifest)
    assert name == "org-123" and spec.org_id == "123"
    (orders,) = spec.tables
    assert orders.name == "orders" and orders.business_keys == []
    assert [(c.name, c.type, c.required) for c in orders.columns] == [
        ("order_id", "text", False),
        ("customer_id", "text", False),
        ("product_id", "text", False),
        ("order_date", "date", False),
        ("amount", "decimal(10,2)", False),
    ]


def test_org_wide_file_with_table_column_and_primary_keys(tmp_path: Path) -> None:
    (tmp_path / "acme_schema.csv").write_text(
        "table_name,column_name,data_type\n"
        "customers,customer_id,TEXT PRIMARY KEY\n"
        'customers,score,"NUMERIC(5,2)"\n'
        "customers,status,VARCHAR(20) DEFAULT 'active'\n"  # the seed's audit column: skipped
        "products,product_id,TEXT NOT NULL\n"
        "products,status,TEXT\n"  # a business column named status: kept
    )
    manifest, problems = seedschemas.import_schemas(tmp_path, "acme", bucket="b-acme", prefix="org-acme/in/")
    assert problems == []
    _, spec = parse_manifest(manifest)
    assert spec.source.bucket == "b-acme" and spec.source.prefix == "org-acme/in/"
    customers, products = spec.tables
    assert customers.business_keys == ["customer_id"]
    assert [c.name for c in customers.columns] == ["customer_id", "score"]
    assert [(c.name, c.required) for c in products.columns] == [("product_id", True), ("status", False)]


def test_org_wide_file_without_table_column_needs_table_option(tmp_path: Path) -> None:
    (tmp_path / "123_schema.csv").write_text("column_name,data_type\norder_id,TEXT NOT NULL\n")
    _, problems = seedschemas.import_schemas(tmp_path, "123")
    assert problems == [
        f"{tmp_path / '123_schema.csv'}:1: an org-wide schema file names no table:"
        " add a table_name column or use --table"
    ]
    manifest, problems = seedschemas.import_schemas(tmp_path, "123", table="orders")
    assert problems == [] and manifest["spec"]["tables"][0]["name"] == "orders"


def test_every_bad_line_is_reported_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "123_orders_schema.csv"
    bad.write_text(
        "column_name,data_type\n"
        "order_id,TEXT\n"
        "# a comment\n"
        "payload,JSONB\n"
        "Amount,DECIMAL(10,2)\n"
        "lonely\n"
        "order_id,TEXT\n"
    )
    (tmp_path / "123_items_schema.csv").write_text("name,type\nx,TEXT\n")
    _, problems = seedschemas.import_schemas(tmp_path, "123")
    assert problems[0].startswith(f"{tmp_path / '123_items_schema.csv'}:1: header 'name,type'")
    assert [p.split(": ", 1)[0] for p in problems[1:]] == [f"{bad}:{n}" for n in (4, 5, 6, 7)]
    assert "column payload: unknown type 'JSONB'" in problems[1]
    assert "column name 'Amount' is not valid" in problems[2]
    assert "expected column_name,data_type" in problems[3]
    assert "column order_id of table orders appears twice" in problems[4]


def test_no_file_of_the_org_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "9_orders_schema.csv").write_text(SEED_ORDERS)
    with pytest.raises(UserError, match="no schema file of org 123"):
        seedschemas.import_schemas(tmp_path, "123")
    with pytest.raises(UserError, match="not a valid org id"):
        seedschemas.import_schemas(tmp_path, "Org_1")
