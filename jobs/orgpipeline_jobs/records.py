"""Checking, typing, keying and hashing a whole batch of rows, column by column.

The scalar functions stay the definition: `values.parser_for` (canonical values),
`quality.RecordChecker` (issues and their messages; the business rules are `rules.RULES`, each
with its scalar and its columnar form), `keys.composite_key` and `hashing.data_hash`.
This module computes the same results on whole pyarrow columns, so that the bulk of a file never
meets per-row Python:

- a text column needs no parsing; a typed column is parsed once per distinct value (dates, codes,
  statuses repeat), or, for integers and decimals of the plain shape (`-12`, `12.50`), by a pyarrow
  cast;
- every column-wise check marks the rows it cannot pass (a missing required value, a value that does
  not parse, a min/max/allowed/pattern rule broken, by the rule's columnar form); only those rows
  are checked again by `RecordChecker`, so their messages and scores are exactly the scalar ones;
- composite keys are escaped and joined with pyarrow string kernels, data hashes are SHA-256 over
  the same JSON text `hashing.data_hash` builds (the JSON is joined column-wise, then hashed).

Tests hold the two paths equal over the hypothesis corpus and the fixtures, byte for byte.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from orgpipeline_api.v1alpha1 import Column, Table

from orgpipeline_jobs import arrowtext, keys, quality, values
from orgpipeline_jobs.rules import ColumnRules
from orgpipeline_jobs.source.csvstream import Batch, RejectedRow, rejected_row

_JSON_ESCAPE = r'["\\\x00-\x1f]'
"""Characters json.dumps escapes (with ensure_ascii=False): a text holding one is encoded by it."""

_JSON_ESCAPE_BYTES = bytes(b for b in range(128) if re.fullmatch(_JSON_ESCAPE, chr(b)))
"""The same characters as bytes, for `arrowtext.holds_any`."""

_HEXDIGEST = operator.methodcaller("hexdigest")

_KEY_ESCAPE_BYTES = "".join(keys.ESCAPES).encode()

_PLAIN_INT = r"^-?[0-9]{1,18}$"


@dataclass
class TypedColumn:
    """One manifest column of a batch: canonical values, their JSON and key texts, and flags."""

    values: pa.Array
    """Canonical values (int64, float64, bool or string; null where absent or unparsed)."""
    json: pa.Array
    """`json.dumps` of each canonical value ("null" for none)."""
    text: pa.Array
    """`values.key_text` of each canonical value (null for none)."""
    flagged: pa.Array
    """Rows this column cannot pass as PASSED: missing required, not parsed, or a rule broken."""
    bare: bool = False
    """`json` holds the texts without their quotes (none is empty or needs an escape): the row's
    JSON is joined with the quotes around them, one pass over the column fewer."""


@dataclass
class CheckedBatch:
    """A batch after the checks: the rows that became records and those rejected.

    Lines, keys and JSON stay Arrow columns (what the change detection stages and the writers
    take); Python values are taken only for the rows that become versions."""

    line_array: pa.Array
    """Physical lines of the records (rows not rejected), in file order (int64)."""
    columns: dict[str, pa.Array]
    """Canonical values of the records by manifest column."""
    key_array: pa.Array
    """Composite key of each record (string)."""
    data_hashes: list[str]
    json_array: pa.Array
    """The JSON text each data hash covers (sorted keys), also the heads' `data` (string)."""
    checks: dict[int, quality.RecordCheck] = field(default_factory=dict)
    """The scalar check of each record that has warnings, by record index."""
    rejected: list[RejectedRow] = field(default_factory=list)
    """Rows that failed their checks (the parser's rejected rows are not repeated here)."""

    def __len__(self) -> int:
        return len(self.line_array)

    @functools.cached_property
    def hash_array(self) -> pa.Array:
        return pa.array(self.data_hashes, pa.string())

    def python_values(self, index: Sequence[int]) -> list[dict[str, values.Value]]:
        """The canonical values of the given records as dicts (only for versions to be written)."""
        taken = pa.array(index, pa.int64())
        names = list(self.columns)
        lists = [self.columns[n].take(taken).to_pylist() for n in names]
        return [dict(zip(names, row, strict=True)) for row in zip(*lists, strict=True)]


def _all(value: bool, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.bool_()), n)


def _nulls(n: int, kind: pa.DataType) -> pa.Array:
    return pa.nulls(n, kind)


def _value_type(column_type: str) -> pa.DataType:
    if column_type in values.INT_RANGES:
        return pa.int64()
    if column_type in ("double precision",):
        return pa.float64()
    if column_type == "boolean":
        return pa.bool_()
    match = values.DECIMAL.match(column_type)
    if match and int(match.group(1)) <= 15:
        return pa.float64()
    return pa.string()


def _json_text(raw: pa.Array, may_escape: bool) -> pa.Array:
    """JSON strings of texts: quoted as they are unless json.dumps would escape a character
    (`may_escape`: `arrowtext.holds_any` of those characters, already asked by the caller)."""
    quoted = pc.binary_join_element_wise('"', raw, '"', "")
    if not may_escape:
        return quoted
    special = pc.match_substring_regex(raw, _JSON_ESCAPE)
    if not pc.any(special).as_py():
        return quoted
    encoded = [
        json.dumps(text, ensure_ascii=False) if flag else q
        for text, flag, q in zip(raw.to_pylist(), special.to_pylist(), quoted.to_pylist(), strict=True)
    ]
    return pa.array(encoded, pa.string())


def _float_repr(plain: pa.Array, numbers: pa.Array) -> pa.Array:
    """`repr(float(t))` of decimal texts of the plain shape with at most 15 digits, column-wise.

    Such a value round-trips through a double (15 digits is what a double holds), so its shortest
    repr is the decimal itself, normalised: no leading zeros in the whole part, no trailing zeros in
    the fraction, at least one digit on each side of the point, the sign kept ("-0.00" -> "-0.0").
    Python switches to exponent notation below 1e-4: those few values are repr'd one by one."""
    parts = pc.extract_regex(plain, r"^(?P<sign>-?)(?P<whole>[0-9]+)(?:\.(?P<fraction>[0-9]*))?$")
    whole = pc.utf8_ltrim(parts.field("whole"), "0")
    fraction = pc.utf8_rtrim(parts.field("fraction"), "0")
    whole = pc.if_else(pc.equal(whole, ""), "0", whole)
    fraction = pc.if_else(pc.equal(fraction, ""), "0", fraction)
    text: pa.Array = pc.binary_join_element_wise(parts.field("sign"), whole, ".", fraction, "")
    absolute = pc.abs(numbers)
    tiny = pc.and_(pc.less(absolute, 1e-4), pc.greater(absolute, 0.0))
    if pc.any(tiny).as_py():
        rows = zip(numbers.to_pylist(), tiny.to_pylist(), text.to_pylist(), strict=True)
        exact = [repr(x) if flag else t for x, flag, t in rows]
        text = pa.array(exact, pa.string())
    return text


DISTINCT_MEMORY = 20_000
"""Distinct texts of one column whose parse a checker remembers (~3 MB per column at most)."""


class BatchChecker:
    """The manifest's rules of one table, applied to whole batches (see the module docstring)."""

    def __init__(self, table: Table, business_keys: list[str]) -> None:
        self.table = table
        self.business_keys = list(business_keys)
        self.scalar = quality.RecordChecker(table, extra_required=business_keys)
        self.parsers = {c.name: values.parser_for(c.type) for c in table.columns}
        self.rules = {c.name: ColumnRules(c) for c in table.columns}
        self.sorted_names = sorted(c.name for c in table.columns)
        self._distinct: dict[str, dict[str, tuple[values.Value, str, str | None, bool]]] = {}
        """What each distinct text of a typed column gave (`_per_distinct`), by column."""

    # ---- per column -------------------------------------------------------------------------

    def _typed_text(self, column: Column, text: str) -> tuple[values.Value, str, str | None, bool]:
        """One text of a typed column: (canonical value, its JSON, its key text, flagged)."""
        if text == "":
            return None, "null", None, column.name in self.scalar.required
        try:
            value = self.parsers[column.name](text)
        except values.ParseError:
            return None, "null", None, True
        json_ = json.dumps(value, ensure_ascii=False, allow_nan=False)
        return value, json_, values.key_text(value), bool(self.rules[column.name].issues(value, text))

    def _per_distinct(self, column: Column, raw: pa.Array) -> TypedColumn:
        """Parses each distinct text once with the scalar parser; exact by construction. What a text
        gave is remembered for the next batches (dates and codes repeat across a file), up to
        DISTINCT_MEMORY texts per column."""
        encoded = pc.dictionary_encode(raw)
        distinct = encoded.dictionary.to_pylist()
        known = self._distinct.setdefault(column.name, {})
        vals: list[values.Value] = []
        jsons: list[str] = []
        texts: list[str | None] = []
        flags: list[bool] = []
        for text in distinct:
            typed = known.get(text)
            if typed is None:
                typed = self._typed_text(column, text)
                if len(known) < DISTINCT_MEMORY:
                    known[text] = typed
            vals.append(typed[0])
            jsons.append(typed[1])
            texts.append(typed[2])
            flags.append(typed[3])
        index = encoded.indices
        kind = _value_type(column.type)
        return TypedColumn(
            pa.array(vals, kind).take(index),
            pa.array(jsons, pa.string()).take(index),
            pa.array(texts, pa.string()).take(index),
            pa.array(flags, pa.bool_()).take(index),
        )

    def _text(self, column: Column, raw: pa.Array) -> TypedColumn:
        empty = pc.equal(raw, "")
        may_escape = arrowtext.holds_any(raw, _JSON_ESCAPE_BYTES)
        bare = not may_escape and not pc.any(empty).as_py()
        if bare:  # the usual column: every value present and plain
            values_, json_ = raw, raw
        else:
            values_ = pc.if_else(empty, pa.scalar(None, pa.string()), raw)
            json_ = pc.if_else(empty, "null", _json_text(raw, may_escape))
        flagged = empty if column.name in self.scalar.required else _all(False, len(raw))
        broken = self.rules[column.name].broken(raw)
        if broken is not None:
            flagged = pc.or_(flagged, pc.and_(pc.invert(empty), broken))
        return TypedColumn(values_, json_, values_, flagged, bare)

    def _fast_numbers(self, column: Column, raw: pa.Array) -> TypedColumn | None:
        """Integers and narrow decimals of the plain shape by pyarrow casts; the rest per distinct."""
        match = values.DECIMAL.match(column.type)
        if column.type in values.INT_RANGES:
            shape = _PLAIN_INT
        elif match and int(match.group(2)) < int(match.group(1)) <= 15:
            whole, scale = int(match.group(1)) - int(match.group(2)), int(match.group(2))
            shape = rf"^-?[0-9]{{1,{whole}}}" + (rf"(\.[0-9]{{1,{scale}}})?$" if scale else "$")
        else:
            return None
        plain = pc.match_substring_regex(raw, shape)
        if not pc.all(plain).as_py():
            if (pc.sum(plain).as_py() or 0) < len(raw) // 2:
                return None  # mostly other shapes: per distinct value is as good
            rest = self._per_distinct(column, pc.if_else(plain, "", raw))
        else:
            rest = None
        safe = pc.if_else(plain, raw, "0")
        if column.type in values.INT_RANGES:
            numbers = pc.cast(safe, pa.int64())
            low, high = values.INT_RANGES[column.type]
            broken = pc.or_(pc.less(numbers, low), pc.greater(numbers, high))
            json_ = pc.cast(numbers, pa.string())
            text = json_
        else:
            numbers = pc.cast(safe, pa.float64())
            broken = _all(False, len(raw))
            json_ = _float_repr(safe, numbers)
            text = json_
        rules_broken = self.rules[column.name].broken(safe, numbers)
        if rules_broken is not None:
            broken = pc.or_(broken, rules_broken)
        if rest is None:
            return TypedColumn(numbers, json_, text, broken)
        return TypedColumn(
            pc.if_else(plain, numbers, rest.values),
            pc.if_else(plain, json_, rest.json),
            pc.if_else(plain, text, rest.text),
            pc.if_else(plain, broken, rest.flagged),
        )

    def typed(self, column: Column, raw: pa.Array | None, n: int) -> TypedColumn:
        """The column's canonical values; `raw` None: the column is not in the file's header."""
        if raw is None:
            missing = _all(column.name in self.scalar.required, n)
            kind = _value_type(column.type)
            return TypedColumn(
                _nulls(n, kind), pa.repeat(pa.scalar("null", pa.string()), n), _nulls(n, pa.string()), missing
            )
        if column.type == "text":
            return self._text(column, raw)
        return self._fast_numbers(column, raw) or self._per_distinct(column, raw)

    # ---- per batch --------------------------------------------------------------------------

    def check(
        self, header: list[str], batch: Batch, org_id: str, acc: quality.QualityAccumulator
    ) -> CheckedBatch:
        """Checks a parsed batch; adds its records to `acc` (the parser's rejected rows too)."""
        n = batch.num_rows
        for bad in batch.rejected:
            acc.add_rejected(bad.issue_type, bad.field)
        if n == 0:
            empty = pa.array([], pa.string())
            return CheckedBatch(
                pa.array([], pa.int64()),
                {c.name: _nulls(0, _value_type(c.type)) for c in self.table.columns},
                empty,
                [],
                empty,
            )
        position = {name: i for i, name in enumerate(header)}
        columns = {
            c.name: self.typed(c, batch.columns[position[c.name]] if c.name in position else None, n)
            for c in self.table.columns
        }
        flagged = _all(False, n)
        for typed in columns.values():
            flagged = pc.or_(flagged, typed.flagged)
        # Columns that count towards completeness, present when their raw text is not empty.
        present = pa.repeat(pa.scalar(0, pa.int64()), n)
        for name in self.scalar.completeness_columns:
            if name in position:
                present = pc.add(
                    present, pc.cast(pc.not_equal(batch.columns[position[name]], ""), pa.int64())
                )
        flagged_rows = [i for i, f in enumerate(flagged.to_pylist()) if f] if pc.any(flagged).as_py() else []
        lines = batch.lines.to_pylist() if flagged_rows else []
        checks: dict[int, quality.RecordCheck] = {}
        rejected: list[RejectedRow] = []
        rejected_rows: set[int] = set()
        for i in flagged_rows:
            raw = {name: batch.columns[j][i].as_py() for name, j in position.items()}
            check = self.scalar.check(raw)
            if check.errors:
                first = check.errors[0]
                reason = "; ".join(e.message for e in check.errors)
                fields = [batch.columns[j][i].as_py() for j in range(len(header))]
                rejected.append(rejected_row(lines[i], first.issue_type, reason, first.field, fields))
                rejected_rows.add(i)
            checks[i] = check
        flagged_present = sum(pc.take(present, pa.array(flagged_rows, pa.int64())).to_pylist())
        acc.add_clean(n - len(flagged_rows), (pc.sum(present).as_py() or 0) - flagged_present)
        for i in flagged_rows:
            acc.add_record(checks[i])

        json_columns = {name: t.json for name, t in columns.items()}
        key_texts = [columns[k].text for k in self.business_keys]
        value_columns = {name: t.values for name, t in columns.items()}
        warned = checks
        line_array = batch.lines
        if rejected_rows:
            keep = pa.array([i not in rejected_rows for i in range(n)], pa.bool_())
            json_columns = {name: pc.filter(a, keep) for name, a in json_columns.items()}
            key_texts = [pc.filter(a, keep) for a in key_texts]
            value_columns = {name: pc.filter(a, keep) for name, a in value_columns.items()}
            line_array = pc.filter(line_array, keep)
            kept = [i for i in range(n) if i not in rejected_rows]
            renumber = {old: new for new, old in enumerate(kept)}
            warned = {renumber[i]: c for i, c in checks.items() if i not in rejected_rows}
        kept_rows = len(line_array)
        data_json = self.data_json(json_columns, kept_rows, {name for name, t in columns.items() if t.bare})
        return CheckedBatch(
            line_array,
            value_columns,
            self.composite_keys(org_id, key_texts, kept_rows),
            list(map(_HEXDIGEST, map(hashlib.sha256, data_json.cast(pa.binary()).to_pylist()))),
            data_json,
            warned,
            rejected,
        )

    def composite_keys(self, org_id: str, key_texts: list[pa.Array], n: int) -> pa.Array:
        """`keys.composite_key` of every row, escaped and joined column-wise."""
        if not n or not key_texts:
            return pa.repeat(pa.scalar(keys.composite_key(org_id, self.table.name, []), pa.string()), n)
        escaped = []
        for text in key_texts:
            if arrowtext.holds_any(text, _KEY_ESCAPE_BYTES):
                for char, code in keys.ESCAPES.items():
                    text = pc.replace_substring(text, char, code)
            escaped.append(text)
        body = pc.binary_join_element_wise(*escaped, "_")
        full: pa.Array = pc.binary_join_element_wise(keys.prefix(org_id, self.table.name), body, "")
        too_long = pc.greater(pc.utf8_length(full), keys.MAX_KEY_LENGTH)
        if not pc.any(too_long).as_py():
            return full
        result = full.to_pylist()
        columns = [t.to_pylist() for t in key_texts]
        for i, flag in enumerate(too_long.to_pylist()):
            if flag:
                result[i] = keys.composite_key(org_id, self.table.name, [c[i] for c in columns])
        return pa.array(result, pa.string())

    def data_json(self, json_columns: dict[str, pa.Array], n: int, bare: Collection[str] = ()) -> pa.Array:
        """`json.dumps(values, sort_keys=True, separators=(",", ":"))` of every row, column-wise;
        the columns named in `bare` hold texts to be quoted as they are (see `TypedColumn.bare`)."""
        if not n:
            return pa.array([], pa.string())
        parts: list[Any] = []
        close = ""
        for k, name in enumerate(self.sorted_names):
            quote = '"' if name in bare else ""
            parts.append(close + ("{" if k == 0 else ",") + json.dumps(name) + ":" + quote)
            parts.append(json_columns[name])
            close = quote
        parts.append(close + "}")
        joined: pa.Array = pc.binary_join_element_wise(*parts, "")
        return joined
