"""Reading CSV files: every data row is a row or a rejected row with its physical line."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from orgpipeline_jobs.source.configuration import SourceConfig
from orgpipeline_jobs.source.csvstream import Batch, CsvStream, RejectedRow, read_ahead
from orgpipeline_jobs.source.exceptions import BlockTooSmall, FileRejected

CASES = Path(__file__).parent / "cases"


@dataclass
class Rows:
    """A whole file's batches as Python lists."""

    rows: list[list[str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    blank_lines: int = 0


def read(path: Path, config: SourceConfig | None = None) -> tuple[list[str], Rows]:
    with path.open("rb") as handle:
        stream = CsvStream(handle, config or SourceConfig())
        header = stream.open()
        total = Rows()
        for batch in stream.batches():
            total.rows += batch.rows()
            total.lines += batch.lines.to_pylist()
            total.rejected += batch.rejected
            total.blank_lines += batch.blank_lines
    return header, total


def test_bom_crlf_quotes_newlines_unicode_and_bad_rows() -> None:
    header, batch = read(CASES / "mixed.csv")
    assert header == ["order_id", "amount", "note"]  # BOM gone
    assert batch.rows == [
        ["O1", "1.50", "a, b"],
        ["O2", "2.00", "line1\r\nline2"],
        ["O3", "3", "Zoë ✓ 東京"],
        ["O6", "6", 'he said "hi"'],
    ]
    assert batch.lines == [2, 3, 6, 10]
    assert [(r.line, r.issue_type) for r in batch.rejected] == [(7, "malformed_row"), (8, "malformed_row")]
    assert batch.rejected[0].reason == "expected 3 fields, found 2"
    assert batch.blank_lines == 2  # the empty line and the ",," line


def test_header_only_has_no_rows() -> None:
    header, batch = read(CASES / "header_only.csv")
    assert header == ["order_id", "amount", "note"] and batch.rows == [] and batch.rejected == []


@pytest.mark.parametrize(("name", "message"), [("empty.csv", "empty file"), ("binary.bin", "binary")])
def test_unusable_files_are_rejected_whole(name: str, message: str) -> None:
    with pytest.raises(FileRejected, match=message):
        read(CASES / name)


def test_invalid_utf8_rejects_only_its_row() -> None:
    _, batch = read(CASES / "latin1.csv")
    assert batch.rows == [["O2", "2", "fine"]]
    assert [(r.line, r.issue_type, r.field) for r in batch.rejected] == [(2, "invalid_utf8", "note")]


def test_large_fields(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("order_id,amount,note\nO1,1," + "x" * 3000 + "\nO2,2,ok\n")
    _, batch = read(path, SourceConfig(block_size=1 << 16, max_field_bytes=1000))
    assert batch.rows == [["O2", "2", "ok"]]
    assert batch.rejected[0].issue_type == "field_too_large" and batch.rejected[0].line == 2
    with pytest.raises(BlockTooSmall):
        read(path, SourceConfig(block_size=1000))


def test_lines_across_many_batches(tmp_path: Path) -> None:
    rows = ["id,v"]
    expected = []
    line = 2
    for i in range(3000):
        if i % 97 == 0:
            rows.append(f"{i}")  # too few fields
            line += 1
            continue
        value = f'"a\nb{i}"' if i % 50 == 0 else f"v{i}"
        rows.append(f"{i},{value}")
        expected.append((str(i), line))
        line += 2 if i % 50 == 0 else 1
    path = tmp_path / "many.csv"
    path.write_text("\n".join(rows) + "\n")
    _, batch = read(path, SourceConfig(block_size=4096))
    assert [(r[0], n) for r, n in zip(batch.rows, batch.lines, strict=True)] == expected
    assert len(batch.rejected) == len([i for i in range(3000) if i % 97 == 0])


def test_read_ahead_keeps_order_and_raises_in_place(tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    path.write_text("id,v\n" + "".join(f"{i},v{i}\n" for i in range(5000)))
    with path.open("rb") as handle:
        stream = CsvStream(handle, SourceConfig(block_size=4096))
        stream.open()
        ids = [row[0] for batch in read_ahead(stream.batches()) for row in batch.rows()]
    assert ids == [str(i) for i in range(5000)]

    def failing() -> Iterator[Batch]:
        yield Batch()
        raise BlockTooSmall("a row is larger than the parser block")

    got = read_ahead(failing())
    assert next(got).num_rows == 0
    with pytest.raises(BlockTooSmall):
        next(got)


def test_read_ahead_stops_its_reader_when_the_consumer_stops() -> None:
    produced = []

    def endless() -> Iterator[Batch]:
        while True:
            produced.append(1)
            yield Batch()

    reader = read_ahead(endless())
    next(reader)
    reader.close()  # the consumer gave up (an error in the caller): the thread must end
    count = len(produced)
    time.sleep(0.1)
    assert len(produced) == count
