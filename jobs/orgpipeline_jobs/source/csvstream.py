"""Streaming a CSV file in batches with pyarrow, with every row accounted for by its line number.

pyarrow parses; this module only keeps books. Columns are read as binary (so one bad byte sequence
rejects one row, not the file) with generated names: the header is simply the first record, so no
second read is needed to learn it. Malformed records (too many or too few fields) reach
`invalid_row_handler` with their record number, and valid records fill the numbers in between, so
every record gets a number; a record's physical line adds the newlines quoted inside earlier ones.
Rows whose values are all empty are blank lines: counted, not data.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from orgpipeline_jobs.source.configuration import SourceConfig
from orgpipeline_jobs.source.exceptions import BlockTooSmall, FileRejected

MAX_REJECTED_TEXT = 500


@dataclass(frozen=True)
class RejectedRow:
    """A data row that did not become a record: where it was and why."""

    line: int
    issue_type: str
    reason: str
    field: str | None = None
    text: str = ""


@dataclass
class Batch:
    """Rows of one parsed block: values by header position, their lines, and the rejected rows."""

    rows: list[list[str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    blank_lines: int = 0


@dataclass
class _Invalid:
    number: int | None
    text: str
    expected: int
    actual: int


class CsvStream:
    """One CSV file read in batches; `header` is known once `open()` returned."""

    def __init__(self, stream: BinaryIO, config: SourceConfig, block_size: int | None = None) -> None:
        self.config = config
        self.block_size = block_size or config.block_size
        self._stream = stream
        self._invalid: collections.deque[_Invalid] = collections.deque()
        self._next_record = 1
        self._next_line = 1
        self.header: list[str] = []
        self._reader: pacsv.CSVStreamingReader | None = None
        self._first: pa.RecordBatch | None = None

    def _on_invalid(self, row: pacsv.InvalidRow) -> str:
        self._invalid.append(_Invalid(row.number, row.text, row.expected_columns, row.actual_columns))
        return "skip"

    def open(self) -> list[str]:
        """Reads the header; raises FileRejected for empty, binary or unusable files."""
        head = _peek(self._stream, self.config.sniff_bytes)
        if not head:
            raise FileRejected("empty file (no header)")
        if b"\x00" in head:
            raise FileRejected("binary file (contains NUL bytes), not a CSV")
        columns = {f"f{i}": pa.binary() for i in range(self.config.max_columns)}
        try:
            self._reader = pacsv.open_csv(
                self._stream,
                read_options=pacsv.ReadOptions(
                    use_threads=False, block_size=self.block_size, autogenerate_column_names=True
                ),
                parse_options=pacsv.ParseOptions(
                    newlines_in_values=True, ignore_empty_lines=False, invalid_row_handler=self._on_invalid
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=columns, strings_can_be_null=False, quoted_strings_can_be_null=False
                ),
            )
        except pa.ArrowInvalid as exc:
            raise _file_error(exc) from None
        if len(self._reader.schema) > self.config.max_columns:
            raise FileRejected(f"header has more than {self.config.max_columns} columns")
        self._first = self._read_next()
        if self._first is None or self._first.num_rows == 0:
            raise FileRejected("empty file (no header)")
        header_values = [self._first.column(i)[0].as_py() for i in range(self._first.num_columns)]
        try:
            self.header = [v.decode("utf-8").strip().lower() for v in header_values]
        except UnicodeDecodeError:
            raise FileRejected("header is not UTF-8 text") from None
        seen: set[str] = set()
        for name in self.header:
            if name in seen:
                raise FileRejected(f"column {name!r} appears twice in the header")
            seen.add(name)
        return self.header

    def _read_next(self) -> pa.RecordBatch | None:
        assert self._reader is not None
        try:
            return self._reader.read_next_batch()
        except StopIteration:
            return None
        except pa.ArrowInvalid as exc:
            raise _file_error(exc) from None

    def batches(self) -> Iterator[Batch]:
        if self._reader is None:
            self.open()
        record_batch, skip_header = self._first, True
        while record_batch is not None:
            yield self._convert(record_batch, skip_header)
            record_batch, skip_header = self._read_next(), False
        tail = Batch()
        self._flush_invalid(tail, final=True)
        if tail.rejected:
            yield tail

    def _flush_invalid(self, batch: Batch, final: bool) -> None:
        """Books the malformed records that come next in the file (all that remain when final)."""
        while self._invalid:
            bad = self._invalid[0]
            if not final and bad.number is not None and bad.number != self._next_record:
                return
            self._invalid.popleft()
            batch.rejected.append(
                RejectedRow(
                    line=self._next_line,
                    issue_type="malformed_row",
                    reason=f"expected {bad.expected} fields, found {bad.actual}",
                    text=bad.text[:MAX_REJECTED_TEXT],
                )
            )
            self._next_line += 1 + bad.text.count("\n")
            self._next_record += 1

    def _convert(self, record_batch: pa.RecordBatch, skip_header: bool) -> Batch:
        batch = Batch()
        n = record_batch.num_rows
        columns = record_batch.columns
        newlines = _newline_counts(columns, n)
        too_large = _large_cells(columns, self.config.max_field_bytes)
        decoded = [_decode(col) for col in columns]
        names = self.header
        for i in range(n):
            self._flush_invalid(batch, final=False)
            line = self._next_line
            self._next_line += 1 + (newlines[i] if newlines else 0)
            self._next_record += 1
            if skip_header and i == 0:
                continue
            values = [col[i] for col in decoded]
            if i in too_large:
                name = names[too_large[i]]
                batch.rejected.append(
                    RejectedRow(
                        line,
                        "field_too_large",
                        f"{name}: value larger than {self.config.max_field_bytes} bytes",
                        name,
                    )
                )
                continue
            bad = next((j for j, v in enumerate(values) if v is None), None)
            if bad is not None:
                raw = columns[bad][i].as_py()
                batch.rejected.append(
                    RejectedRow(
                        line, "invalid_utf8", f"{names[bad]}: not UTF-8 text", names[bad], repr(raw[:100])
                    )
                )
                continue
            if not any(values):
                batch.blank_lines += 1
                continue
            batch.rows.append(values)  # type: ignore[arg-type]
            batch.lines.append(line)
        return batch


def _peek(stream: BinaryIO, size: int) -> bytes:
    peek = getattr(stream, "peek", None)
    if peek is None:
        raise TypeError("stream must support peek(); wrap it in io.BufferedReader")
    data: bytes = peek(size)
    return data[:size]


def _file_error(exc: pa.ArrowInvalid) -> Exception:
    text = str(exc)
    if "straddl" in text:
        return BlockTooSmall("a row is larger than the parser block")
    if "Empty CSV" in text:
        return FileRejected("empty file (no header)")
    return FileRejected(f"not a readable CSV: {text.splitlines()[0]}")


def _newline_counts(columns: list[pa.Array], n: int) -> list[int] | None:
    total: pa.Array | None = None
    for col in columns:
        counts = pc.count_substring(col, "\n")
        total = counts if total is None else pc.add(total, counts)
    if total is None or pc.sum(total).as_py() in (0, None):
        return None
    return total.to_pylist()


def _large_cells(columns: list[pa.Array], limit: int) -> dict[int, int]:
    found: dict[int, int] = {}
    for j, col in enumerate(columns):
        lengths = pc.binary_length(col)
        if (pc.max(lengths).as_py() or 0) > limit:
            for i, length in enumerate(lengths.to_pylist()):
                if length > limit:
                    found.setdefault(i, j)
    return found


def _decode(col: pa.Array) -> list[str | None]:
    """UTF-8 text of a binary column; None marks the values that are not valid UTF-8."""
    try:
        return col.cast(pa.string()).to_pylist()
    except pa.ArrowInvalid:
        out: list[str | None] = []
        for raw in col.to_pylist():
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(None)
        return out
