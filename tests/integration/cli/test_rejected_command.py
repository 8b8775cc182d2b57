"""`orgpipeline rejected` against the real servers: the rows a run refused, ready to fix and upload.

The data plane reads small CSV files from a local folder for a fresh org; the command runs as a user
runs it (the console script, in a subprocess).
"""

# ruff: noqa: F811  (the `org` fixture is imported from test_manage_commands and named by the tests)
from __future__ import annotations

import csv
import io

import pytest
from orgpipeline_api import store_names
from orgpipeline_api.run_report import RunReport
from orgpipeline_api.v1alpha1 import load_manifest
from orgpipeline_jobs import pipeline
from orgpipeline_jobs.settings import Settings
from test_manage_commands import Org, org  # noqa: F401 (the fixture)

HEADER = "Order_ID,Customer_ID,Product_ID,Order_Date,Amount,Status,Email,Note\n"
BAD_FILE = HEADER + (
    "O1,C1,P1,2024-01-15,10.00,pending,a@x.com,fine\n"
    'O2,,P2,2024-01-15,20.50,shipped,b@x.com,"no customer, two\nlines"\n'  # missing customer_id
    "O3,C3,P3,2024-01-16,7,pending,c@x.com,n,extra\n"  # malformed: one field too many
    "O4,C4,P4,not-a-date,7,pending,d@x.com,n\n"  # invalid date
)


def run_file(org: Org, name: str, text: str) -> RunReport:
    (org.source / name).write_text(text)
    _, spec = load_manifest(org.path)
    return pipeline.run_table(Settings.from_env(), spec, "orders", None, str(org.source))


def test_rejected_rows_with_file_line_reason_and_text(org: Org) -> None:
    result = run_file(org, "orders_1.csv", BAD_FILE)
    assert result.rejected == 3
    doc = org.json("rejected", "--org-id", org.org_id, "--table", "orders")
    assert doc["total"] == 3
    by_line = {r["line"]: r for r in doc["rows"]}
    assert sorted(by_line) == [3, 5, 6]
    assert {r["file"] for r in doc["rows"]} == {"orders_1.csv"}
    assert "customer_id" in by_line[3]["reason"] and "date" in by_line[6]["reason"]
    assert by_line[5]["raw"] == "O3,C3,P3,2024-01-16,7,pending,c@x.com,n,extra"
    assert next(csv.reader(io.StringIO(by_line[3]["raw"], newline=""))) == [
        "O2", "", "P2", "2024-01-15", "20.50", "shipped", "b@x.com", "no customer, two\nlines"
    ]  # fmt: skip
    assert {r["run_id"] for r in doc["rows"]} == {result.run_id}

    limited = org.json("rejected", "--org-id", org.org_id, "--table", "orders", "--limit", "1")
    assert limited["total"] == 3 and [r["line"] for r in limited["rows"]] == [3]
    table = org.cli("rejected", "--org-id", org.org_id, "--table", "orders")
    assert table.returncode == 0 and "orders_1.csv" in table.stdout and "not-a-date" in table.stdout


def test_csv_output_is_a_file_to_fix_and_upload_again(org: Org) -> None:
    run_file(org, "orders_1.csv", BAD_FILE)
    done = org.cli("rejected", "--org-id", org.org_id, "--table", "orders", "-o", "csv")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(HEADER)  # the header as the file spells it
    rows = list(csv.reader(io.StringIO(done.stdout, newline="")))
    assert [r[0] for r in rows[1:]] == ["O2", "O3", "O4"]
    fixed = HEADER + "".join(
        line
        for line in [
            'O2,C2,P2,2024-01-15,20.50,shipped,b@x.com,"no customer, two\nlines"\n',
            "O3,C3,P3,2024-01-16,7,pending,c@x.com,n\n",
            "O4,C4,P4,2024-01-17,7,pending,d@x.com,n\n",
        ]
    )
    assert len(done.stdout.splitlines()) == 5  # header, O2 (two lines), O3, O4
    result = run_file(org, "orders_1_fixed.csv", fixed)
    assert (result.inserted, result.rejected) == (3, 0)
    again = org.json("rejected", "--org-id", org.org_id, "--table", "orders", "--file", "orders_1_fixed.csv")
    assert again == {**again, "total": 0, "rows": []}


def test_filters_by_file_and_run(org: Org) -> None:
    first = run_file(org, "orders_1.csv", BAD_FILE)
    second = run_file(org, "orders_2.csv", HEADER + "O9,,P9,2024-01-15,1,pending,z@x.com,n\n")
    by_file = org.json("rejected", "--org-id", org.org_id, "--table", "orders", "--file", "orders_2.csv")
    assert by_file["total"] == 1 and by_file["rows"][0]["raw"].startswith("O9,,")
    by_run = org.json("rejected", "--org-id", org.org_id, "--table", "orders", "--run", first.run_id)
    assert by_run["total"] == 3 and {r["run_id"] for r in by_run["rows"]} == {first.run_id}
    assert second.run_id != first.run_id
    both = org.json("rejected", "--org-id", org.org_id, "--table", "orders")
    assert both["total"] == 4 and both["rows"][0]["file"] == "orders_2.csv"  # newest file first
    # Two files with one header make one CSV.
    done = org.cli("rejected", "--org-id", org.org_id, "--table", "orders", "-o", "csv")
    assert done.returncode == 0 and done.stdout.count(HEADER) == 1


def test_no_rejected_rows_is_an_empty_result(org: Org) -> None:
    run_file(org, "orders_1.csv", HEADER + "O1,C1,P1,2024-01-15,10.00,pending,a@x.com,fine\n")
    doc = org.json("rejected", "--org-id", org.org_id, "--table", "orders")
    assert (doc["total"], doc["rows"]) == (0, [])
    table = org.cli("rejected", "--org-id", org.org_id, "--table", "orders")
    assert table.returncode == 0 and "No rejected rows" in table.stdout
    as_csv = org.cli("rejected", "--org-id", org.org_id, "--table", "orders", "-o", "csv")
    assert (as_csv.returncode, as_csv.stdout) == (0, "") and "no rejected rows" in as_csv.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--org-id", "nosuchorg", "--table", "orders"], "unknown org"),
        (["--table", "nosuch"], "unknown table"),
        (["--table", "orders", "--file", "orders_9.csv"], "no file"),
        (["--table", "orders", "--run", "nosuchrun"], "no run"),
    ],
)
def test_unknown_org_table_file_or_run_is_one_line_and_exit_2(
    org: Org, args: list[str], message: str
) -> None:
    run_file(org, "orders_1.csv", BAD_FILE)
    full = args if args[0] == "--org-id" else ["--org-id", org.org_id, *args]
    done = org.cli("rejected", *full)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr


def test_a_schema_made_before_raw_text_gains_its_columns(org: Org) -> None:
    run_file(org, "orders_1.csv", HEADER + "O1,C1,P1,2024-01-15,10.00,pending,a@x.com,fine\n")
    schema = store_names.pg_schema(org.org_id)
    org.pg.execute(f'ALTER TABLE "{schema}".raw_orders_rejected_rows DROP COLUMN text_truncated')
    org.pg.execute(f'ALTER TABLE "{schema}".pipeline_files DROP COLUMN header')
    assert org.json("rejected", "--org-id", org.org_id, "--table", "orders")["total"] == 0  # read as it is
    run_file(org, "orders_2.csv", BAD_FILE)
    doc = org.json("rejected", "--org-id", org.org_id, "--table", "orders")
    assert doc["total"] == 3 and all(r["raw"] for r in doc["rows"])
    # Rows of a file read before the header was kept: JSON still works, CSV says why it cannot.
    org.pg.execute(f'UPDATE "{schema}".pipeline_files SET header = NULL')
    done = org.cli("rejected", "--org-id", org.org_id, "--table", "orders", "-o", "csv")
    assert done.returncode == 2 and "header of orders_2.csv was not recorded" in done.stderr


def test_csv_output_neutralises_cells_that_start_like_a_formula(org: Org) -> None:
    """A rejected row is the uploader's text: fields a spreadsheet would run (=, +, -, @) come out
    with a leading ' by default; --raw-formulas gives the row as it was; other rows are untouched."""
    formula = 'O7,,P7,2024-01-15,-5,pending,"=HYPERLINK(""http://evil.example"",""x"")",@SUM(A1)\n'
    run_file(org, "orders_1.csv", HEADER + formula + "O8,,P8,2024-01-15,5,pending,b@x.com,a - b\n")
    args = ("rejected", "--org-id", org.org_id, "--table", "orders", "-o", "csv")
    done = org.cli(*args)
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout, newline="")))
    link = '\'=HYPERLINK("http://evil.example","x")'
    assert rows[1] == ["O7", "", "P7", "2024-01-15", "-5", "pending", link, "'@SUM(A1)"]  # -5: a number
    other = "O8,,P8,2024-01-15,5,pending,b@x.com,a - b"
    assert done.stdout.splitlines()[2] == other
    raw = org.cli(*args, "--raw-formulas")
    assert raw.returncode == 0 and raw.stdout == HEADER + formula + other + "\n"
