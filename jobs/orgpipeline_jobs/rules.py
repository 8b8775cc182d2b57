"""The business rules of a manifest column (min, max, allowed, pattern), each written once with
its two forms: the scalar form gives a row's issue and message (`quality.RecordChecker`), the
columnar form marks the rows of a whole Arrow column that break it (`records.BatchChecker`). A new
rule is one entry of RULES; tests hold the two forms equal over a hypothesis corpus.

Patterns run on RE2, linear in the value (see `orgpipeline_api.v1alpha1.linear_pattern`): the
scalar form through `google-re2`, the columnar form through pyarrow's regex kernel, which is RE2
too (200k e-mail addresses of the benchmark's shape, this machine: pyarrow 0.018 s, Python `re`
per distinct value 0.25 s, google-re2 per value 1.1 s, so the columns use pyarrow and only the
few flagged rows meet google-re2)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from orgpipeline_api.v1alpha1 import Column, linear_pattern

from orgpipeline_jobs.issues import Issue

__all__ = ["RULES", "ColumnRules", "Issue", "Pattern", "Rule"]


class Pattern:
    """A column's pattern on the linear-time engine, for one value or a whole column."""

    def __init__(self, pattern: str) -> None:
        self.text = pattern
        self._scalar = linear_pattern(pattern)
        self._columnar = True

    def search(self, text: str) -> bool:
        return self._scalar.search(text) is not None

    def matches(self, raw: pa.Array) -> pa.Array:
        """Whether each value of a string column holds a match (pyarrow's RE2 kernel; per distinct
        value through google-re2 should pyarrow's RE2 refuse a pattern google-re2 takes)."""
        if self._columnar:
            try:
                return pc.match_substring_regex(raw, self.text)
            except pa.ArrowInvalid:
                self._columnar = False
        encoded = pc.dictionary_encode(raw)
        hits = [self.search(t) for t in encoded.dictionary.to_pylist()]
        return pa.array(hits, pa.bool_()).take(encoded.indices)


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    """One rule: when a column has it, its scalar form (the message of a value that breaks it,
    None when kept) and its columnar form (rows broken; None when it cannot tell from the column
    as given, e.g. min/max of a text column, whose values are not numbers)."""

    issue_type: str
    applies: Callable[[Column], bool]
    scalar: Callable[[ColumnRules, Any, str], str | None]
    columnar: Callable[[ColumnRules, pa.Array, pa.Array | None], pa.Array | None]


def _below_min(r: ColumnRules, value: Any, _text: str) -> str | None:
    if _numeric(value) and value < r.column.min:
        return f"{r.name}: {value} below min {r.column.min}"
    return None


def _above_max(r: ColumnRules, value: Any, _text: str) -> str | None:
    if _numeric(value) and value > r.column.max:
        return f"{r.name}: {value} above max {r.column.max}"
    return None


def _not_allowed(r: ColumnRules, _value: Any, text: str) -> str | None:
    return None if text in r.allowed else f"{r.name}: {text[:40]!r} not allowed"


def _mismatch(r: ColumnRules, _value: Any, text: str) -> str | None:
    assert r.pattern is not None
    return None if r.pattern.search(text) else f"{r.name}: {text[:40]!r} does not match"


def _mismatches(r: ColumnRules, raw: pa.Array, _numbers: pa.Array | None) -> pa.Array:
    assert r.pattern is not None
    return pc.invert(r.pattern.matches(raw))


RULES: tuple[Rule, ...] = (
    Rule(
        "below_min",
        lambda c: c.min is not None,
        _below_min,
        lambda r, _raw, numbers: None if numbers is None else pc.less(numbers, r.column.min),
    ),
    Rule(
        "above_max",
        lambda c: c.max is not None,
        _above_max,
        lambda r, _raw, numbers: None if numbers is None else pc.greater(numbers, r.column.max),
    ),
    Rule(
        "not_allowed",
        lambda c: c.allowed is not None,
        _not_allowed,
        lambda r, raw, _numbers: pc.invert(pc.is_in(raw, r.allowed_array)),
    ),
    Rule("pattern_mismatch", lambda c: c.pattern is not None, _mismatch, _mismatches),
)
"""Checked in this order: a row's warnings are listed in it."""


class ColumnRules:
    """The rules of one column, compiled once."""

    column: Column
    name: str
    rules: list[Rule]
    allowed: frozenset[str]
    allowed_array: pa.Array
    pattern: Pattern | None

    def __init__(self, column: Column) -> None:
        self.column = column
        self.name = column.name
        self.rules = [rule for rule in RULES if rule.applies(column)]
        self.allowed = frozenset(column.allowed or ())
        self.allowed_array = pa.array(column.allowed or [], pa.string())
        self.pattern = Pattern(column.pattern) if column.pattern else None

    def issues(self, value: Any, text: str) -> list[Issue]:
        """The rules a present, parsed value breaks (`text`: the value as the file wrote it)."""
        out = []
        for rule in self.rules:
            message = rule.scalar(self, value, text)
            if message is not None:
                out.append(Issue(rule.issue_type, self.name, message))
        return out

    def broken(self, raw: pa.Array, numbers: pa.Array | None = None) -> pa.Array | None:
        """Rows of a column whose value breaks a rule (None: none can). `raw` holds the texts,
        `numbers` the parsed values of a numeric column; absent values are the caller's to mask."""
        mask: pa.Array | None = None
        for rule in self.rules:
            broken = rule.columnar(self, raw, numbers)
            if broken is not None:
                mask = broken if mask is None else pc.or_(mask, broken)
        return mask
