"""Streaming a CSV file in batches with pyarrow, with every row accounted for by its line number.

pyarrow parses; this module only keeps books. Columns are read as binary (so one bad byte sequence
rejects one row, not the file) with generated names: the header is simply the first record, so no
second read is needed to learn it. Malformed records (too many or too few fields) reach
`invalid_row_handler` with their record number, and valid records fill the numbers in between, so
every record gets a number; a record's physical line adds the newlines quoted inside earlier ones.
Rows whose values are all empty are blank lines: counted, not data.

A rejected row keeps its text, so that a user can fix it and upload it again: a malformed record as
the parser saw it, any other row as its fields written back as one CSV record (the same values; the
quoting may differ from the original). The text is bounded (MAX_RAW_TEXT), and says when it was cut.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar

import pyarrow as pa
import pyarrow._csv as pacsv_impl
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from orgpipeline_jobs import arrowtext
from orgpipeline_jobs.rowtext import csv_record, raw_text
from orgpipeline_jobs.source.configuration import SourceConfig
from orgpipeline_jobs.source.exceptions import BlockTooSmall, FileRejected

T = TypeVar("T")


def _row_text(data: bytes, *, safe: bool = False) -> str:
    return bytes(data).decode("utf-8", "replace")


# pyarrow decodes a malformed row's text strictly before the invalid-row handler sees it: a row with
# a wrong field count that also holds bytes that are not UTF-8 raised inside the reader and rejected
# the whole file. That text only becomes the rejected row's text: decode it with U+FFFD instead.
if callable(getattr(pacsv_impl, "frombytes", None)):
    pacsv_impl.frombytes = _row_text


@dataclass(frozen=True)
class RejectedRow:
    """A data row that did not become a record: where it was, why, and its text."""

    line: int
    issue_type: str
    reason: str
    field: str | None = None
    text: str = ""
    text_truncated: bool = False


def rejected_row(
    line: int, issue_type: str, reason: str, field: str | None, values: Sequence[str]
) -> RejectedRow:
    """A rejected row whose fields were parsed: its text is those fields as one CSV record."""
    text, truncated = raw_text(csv_record(values))
    return RejectedRow(line, issue_type, reason, field, text, truncated)


@dataclass
class Batch:
    """Data rows of one parsed block, column by column, with their physical lines and the rejected rows.

    `columns` holds one UTF-8 string array per header position; `lines` the physical line of each row.
    """

    columns: list[pa.Array] = field(default_factory=list)
    lines: pa.Array = field(default_factory=lambda: pa.array([], pa.int64()))
    rejected: list[RejectedRow] = field(default_factory=list)
    blank_lines: int = 0

    @property
    def num_rows(self) -> int:
        return len(self.lines)

    def rows(self) -> list[list[str]]:
        """The rows as Python lists (for tests and small inspections; the pipeline stays columnar)."""
        values = [col.to_pylist() for col in self.columns]
        return [list(row) for row in zip(*values, strict=True)] if values else []

    def slice(self, start: int, length: int) -> Batch:
        """Rows [start, start+length); the rejected rows and blank lines go with the first slice."""
        first = start == 0
        return Batch(
            [col.slice(start, length) for col in self.columns],
            self.lines.slice(start, length),
            self.rejected if first else [],
            self.blank_lines if first else 0,
        )


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
        """Column names as the pipeline matches them: stripped, lower case."""
        self.raw_header: list[str] = []
        """Column names as the file spells them (what a corrected file must repeat)."""
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
        if b"\x00" in head.split(b"\n", 1)[0].split(b"\r", 1)[0]:  # the first line, whatever its end
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
            self.raw_header = [v.decode("utf-8") for v in header_values]
        except UnicodeDecodeError:
            raise FileRejected("header is not UTF-8 text") from None
        if any("\x00" in name for name in self.raw_header):  # a header past the sniffed bytes
            raise FileRejected("binary file (contains NUL bytes), not a CSV")
        self.header = [v.strip().lower() for v in self.raw_header]
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
        if self._invalid:  # malformed records after the last parsed one
            self._block_lines(pa.array([], pa.int64()), list(self._invalid), tail)
            self._invalid.clear()
        if tail.rejected:
            yield tail

    def _take_invalid(self, valid: int) -> list[_Invalid]:
        """The malformed records interleaved with the block's `valid` records (record numbers below the
        block's last one); a record with no number is taken as the next one."""
        taken: list[_Invalid] = []
        while self._invalid:
            bad = self._invalid[0]
            if bad.number is not None and bad.number >= self._next_record + valid + len(taken):
                break
            taken.append(self._invalid.popleft())
        return taken

    def _block_lines(self, newlines: pa.Array, invalid: list[_Invalid], batch: Batch) -> pa.Array:
        """The physical line of each valid record; books the interleaved malformed records."""
        n = len(newlines)
        first_line = self._next_line
        if not invalid:
            before = pc.subtract(pc.cumulative_sum(newlines), newlines)
            lines = pc.add(pc.add(pa.array(range(n), pa.int64()), before), first_line)
            self._next_line += n + (pc.sum(newlines).as_py() or 0)
            self._next_record += n
            return lines
        # Rare: walk the block's records in order, each malformed one before the first valid record
        # whose number is not below its own (a record without a number comes next).
        pending = list(invalid)
        line = first_line
        record = self._next_record
        out: list[int] = []

        def book(bad: _Invalid) -> None:
            nonlocal line
            text, truncated = raw_text(bad.text)
            batch.rejected.append(
                RejectedRow(
                    line=line,
                    issue_type="malformed_row",
                    reason=f"expected {bad.expected} fields, found {bad.actual}",
                    text=text,
                    text_truncated=truncated,
                )
            )
            line += 1 + bad.text.count("\n")

        for count in newlines.to_pylist():
            while pending and (pending[0].number is None or pending[0].number <= record):
                book(pending.pop(0))
                record += 1
            out.append(line)
            line += 1 + count
            record += 1
        for bad in pending:
            book(bad)
        self._next_line = line
        self._next_record = record + len(pending)
        return pa.array(out, pa.int64())

    def _convert(self, record_batch: pa.RecordBatch, skip_header: bool) -> Batch:
        """Vectorised: lines by cumulative newline counts, checks by column; Python only for bad rows."""
        batch = Batch()
        n = record_batch.num_rows
        columns = list(record_batch.columns)
        lines = self._block_lines(_newline_counts(columns, n), self._take_invalid(n), batch)
        names = self.header
        reasons: dict[int, RejectedRow] = {}
        for j, col in enumerate(columns):  # too large first, the lowest column names the row
            too_large = pc.greater(pc.binary_length(col), self.config.max_field_bytes)
            for i in _true_indices(too_large):
                reasons.setdefault(
                    i,
                    RejectedRow(
                        0,
                        "field_too_large",
                        f"{names[j]}: value larger than {self.config.max_field_bytes} bytes",
                        names[j],
                    ),
                )
        total = _total_length(columns, n)
        limit = self.config.max_record_bytes
        for i in _true_indices(pc.greater(total, limit)):
            reasons.setdefault(
                i, RejectedRow(0, "record_too_large", f"row larger than {_size(limit)} (all values together)")
            )
        for j, col in enumerate(columns):  # PostgreSQL text cannot hold a NUL: the row, not the file
            if arrowtext.holds_any(col, b"\x00"):
                for i in _true_indices(pc.match_substring(col, b"\x00")):
                    reasons.setdefault(
                        i,
                        RejectedRow(0, "nul_byte", f"{names[j]}: contains a NUL byte (0x00)", names[j]),
                    )
        text_columns = []
        for j, col in enumerate(columns):
            text, bad_rows = _decode(col)
            text_columns.append(text)
            for i in bad_rows:
                if i not in reasons:
                    reasons[i] = RejectedRow(0, "invalid_utf8", f"{names[j]}: not UTF-8 text", names[j])
        blank = pc.equal(total, 0)
        keep = pc.invert(blank)
        if skip_header and n:
            keep = pc.and_(keep, pa.array([False] + [True] * (n - 1)))
            blank = pc.and_(blank, pa.array([False] + [True] * (n - 1)))
        if reasons:
            bad = [False] * n
            for i in reasons:
                bad[i] = True
            bad_mask = pa.array(bad)
            keep = pc.and_(keep, pc.invert(bad_mask))
            blank = pc.and_(blank, pc.invert(bad_mask))
            line_list = lines.to_pylist()
            for i in sorted(reasons):
                if skip_header and i == 0:
                    continue
                r = reasons[i]
                # Bytes that are not UTF-8 become U+FFFD: the user sees where the bad bytes were.
                fields = [bytes(col[i].as_py()).decode("utf-8", "replace") for col in columns]
                batch.rejected.append(rejected_row(line_list[i], r.issue_type, r.reason, r.field, fields))
            batch.rejected.sort(key=lambda r: r.line)
        batch.blank_lines = pc.sum(blank).as_py() or 0
        batch.columns = [pc.filter(col, keep) for col in text_columns]
        batch.lines = pc.filter(lines, keep)
        return batch


def read_ahead(batches: Iterator[T], depth: int = 1) -> Iterator[T]:
    """The same items, with the next `depth` produced in a thread while the caller works on the
    current one (pyarrow and the S3 socket release the GIL). Errors arrive in order."""
    done = object()
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                slots.put(batch)
            slots.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put(exc)

    worker = threading.Thread(target=produce, name="csv-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                slots.get(timeout=0.05)
        worker.join()


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
    # pyarrow ends a parse error with the row's text: the reason is kept, the values are not (the
    # error reaches the run's result and the resource's status).
    first = text.splitlines()[0] if text.strip() else type(exc).__name__
    reason = _PARSE_REASON.match(first)
    return FileRejected(f"not a readable CSV: {reason.group(1) if reason else first[:200]}")


_PARSE_REASON = re.compile(r"(CSV parse error: (?:Row #\d+: )?Expected \d+ columns, got \d+)")


def _newline_counts(columns: list[pa.Array], n: int) -> pa.Array:
    """Newlines quoted inside each row's values (counted only in columns that hold any)."""
    total: pa.Array = pa.repeat(pa.scalar(0, pa.int64()), n)
    for col in columns:
        if arrowtext.holds_any(col, b"\n"):
            total = pc.add(total, pc.cast(pc.count_substring(col, "\n"), pa.int64()))
    return total


def _total_length(columns: list[pa.Array], n: int) -> pa.Array:
    total: pa.Array = pa.repeat(pa.scalar(0, pa.int64()), n)
    for col in columns:
        total = pc.add(total, pc.cast(pc.binary_length(col), pa.int64()))
    return total


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"


def _true_indices(mask: pa.Array) -> list[int]:
    if not pc.any(mask).as_py():
        return []
    return [i for i, flag in enumerate(mask.to_pylist()) if flag]


def _decode(col: pa.Array) -> tuple[pa.Array, list[int]]:
    """UTF-8 text of a binary column and the rows that are not valid UTF-8 (their text emptied)."""
    try:
        return col.cast(pa.string()), []
    except pa.ArrowInvalid:
        out: list[str] = []
        bad: list[int] = []
        for i, raw in enumerate(col.to_pylist()):
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                out.append("")
                bad.append(i)
        return pa.array(out, pa.string()), bad
