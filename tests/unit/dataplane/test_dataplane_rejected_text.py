"""A rejected row keeps its text and the file its header, so that a user can fix the row and upload it."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from orgpipeline_api.v1alpha1 import Column, Table
from orgpipeline_jobs import quality
from orgpipeline_jobs.records import BatchChecker
from orgpipeline_jobs.rowtext import MAX_RAW_TEXT, csv_record, raw_text
from orgpipeline_jobs.source.configuration import SourceConfig
from orgpipeline_jobs.source.csvstream import CsvStream, RejectedRow


def rejected_of(path: Path, config: SourceConfig | None = None) -> tuple[CsvStream, list[RejectedRow]]:
    table = Table(
        name="orders",
        schedule="* * * * *",
        filePattern="orders_*.csv",
        businessKeys=["order_id"],
        columns=[
            Column(name="order_id", type="text", required=True),
            Column(name="amount", type="decimal(10,2)", required=True),
            Column(name="note", type="text"),
        ],
    )
    checker = BatchChecker(table, ["order_id"])
    out: list[RejectedRow] = []
    with path.open("rb") as handle:
        stream = CsvStream(handle, config or SourceConfig())
        header = stream.open()
        acc = quality.QualityAccumulator(len(checker.scalar.completeness_columns))
        for batch in stream.batches():
            out += batch.rejected
            out += checker.check(header, batch, "1", acc).rejected
    return stream, sorted(out, key=lambda r: r.line)


def test_every_kind_of_rejected_row_keeps_its_text(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(
        b"Order_ID,Amount,Note\n"
        b"O1,1.00,fine\n"
        b'O2,,"needs, an amount\non two lines"\n'  # fails a check: re-written as one CSV record
        b"O3,3.00,x,extra\n"  # malformed: kept as the parser read it
        b"O4,4.00,caf\xe9\n"  # not UTF-8: the bad byte shown as U+FFFD
    )
    stream, rejected = rejected_of(path)
    assert stream.raw_header == ["Order_ID", "Amount", "Note"]
    assert stream.header == ["order_id", "amount", "note"]
    assert [(r.line, r.issue_type) for r in rejected] == [
        (3, "missing_required_field"),
        (5, "malformed_row"),
        (6, "invalid_utf8"),
    ]
    assert next(csv.reader(io.StringIO(rejected[0].text))) == ["O2", "", "needs, an amount\non two lines"]
    assert rejected[1].text == "O3,3.00,x,extra"
    assert rejected[2].text == "O4,4.00,caf\ufffd"
    assert not any(r.text_truncated for r in rejected)


def test_the_text_of_an_oversized_row_is_bounded_and_marked(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("order_id,amount,note\nO1,1," + "x" * (MAX_RAW_TEXT + 10) + "\nO2,2,ok\n")
    _, rejected = rejected_of(path, SourceConfig(block_size=1 << 20, max_field_bytes=1000))
    (big,) = rejected
    assert big.issue_type == "field_too_large" and big.text_truncated
    assert len(big.text) == MAX_RAW_TEXT and big.text.startswith("O1,1,xxx")


def test_csv_record_round_trips_through_a_csv_reader() -> None:
    values = ["a", "b,c", 'say "hi"', "two\nlines", "cr\ronly", ""]
    assert next(csv.reader(io.StringIO(csv_record(values), newline=""))) == values
    assert raw_text("short") == ("short", False)
