"""Parsing CSV text into canonical values of the manifest's column types.

A canonical value is what MongoDB stores, what the data hash covers and what PostgreSQL's COPY
receives, so the three agree. Dates and timestamps are ISO strings (BSON dates lose microseconds
and time zones); decimals with at most 15 digits are doubles, as in the seed (any such decimal
round-trips exactly through a double), wider ones are strings so nothing is rounded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation

Value = str | int | float | bool | None
Parser = Callable[[str], Value]

INT_RANGES = {"integer": (-(2**31), 2**31 - 1), "bigint": (-(2**63), 2**63 - 1)}
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}
DECIMAL = re.compile(r"^decimal\((\d+),(\d+)\)$")


class ParseError(ValueError):
    """A value that does not fit its column type; the message is the reason shown to users."""


def _integer(kind: str) -> Parser:
    low, high = INT_RANGES[kind]

    def parse(text: str) -> Value:
        try:
            number = int(text.strip())
        except ValueError:
            raise ParseError(f"not an {kind}") from None
        if not low <= number <= high:
            raise ParseError(f"out of range for {kind}")
        return number

    return parse


def _double(text: str) -> Value:
    try:
        number = float(text.strip())
    except ValueError:
        raise ParseError("not a number") from None
    if not math.isfinite(number):
        raise ParseError("not a finite number")
    return number


def _boolean(text: str) -> Value:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ParseError("not a boolean")


def _date(text: str) -> Value:
    try:
        return date.fromisoformat(text.strip()).isoformat()
    except ValueError:
        raise ParseError("not a date (YYYY-MM-DD)") from None


def _timestamp(text: str) -> Value:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ParseError("not a timestamp (ISO 8601)") from None
    if moment.tzinfo is not None:
        moment = _in_utc(moment).replace(tzinfo=None)
    return moment.isoformat()


def _in_utc(moment: datetime) -> datetime:
    """The moment in UTC; one that leaves years 1-9999 there (9999-12-31T23:00-14:00) is refused
    as a value, not left to fail the file (Python raises OverflowError)."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ParseError("out of range (years 1-9999 in UTC)") from None


def _timestamptz(text: str) -> Value:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ParseError("not a timestamp (ISO 8601)") from None
    # A time without zone is taken as UTC: the only choice that does not depend on the server.
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else _in_utc(moment)
    return moment.isoformat()


def _decimal(precision: int, scale: int) -> Parser:
    quantum = Decimal(1).scaleb(-scale)
    limit = Decimal(10) ** (precision - scale)
    # Rounding to the scale needs up to precision + 1 digits; the default context's 28 made
    # quantize raise InvalidOperation (and fail the file) for a long value of decimal(38,10).
    context = Context(prec=precision + 1)

    def parse(text: str) -> Value:
        try:
            number = Decimal(text.strip())
        except InvalidOperation:
            raise ParseError(f"not a decimal({precision},{scale})") from None
        if not number.is_finite():
            raise ParseError("not a finite number")
        if number.adjusted() >= precision - scale:  # also keeps quantize from failing on 1E100
            raise ParseError(f"out of range for decimal({precision},{scale})")
        number = number.quantize(quantum, rounding=ROUND_HALF_UP, context=context)
        if abs(number) >= limit:
            raise ParseError(f"out of range for decimal({precision},{scale})")
        return float(number) if precision <= 15 else str(number)

    return parse


def parser_for(column_type: str) -> Parser:
    """The parser of a manifest column type (already validated by the manifest's pattern)."""
    if column_type == "text":
        return str
    if column_type in INT_RANGES:
        return _integer(column_type)
    match = DECIMAL.match(column_type)
    if match:
        return _decimal(int(match.group(1)), int(match.group(2)))
    simple: dict[str, Parser] = {
        "double precision": _double,
        "boolean": _boolean,
        "date": _date,
        "timestamp": _timestamp,
        "timestamptz": _timestamptz,
    }
    try:
        return simple[column_type]
    except KeyError:
        raise ValueError(f"unknown column type {column_type!r}") from None


def key_text(value: Value) -> str:
    """The text of a canonical value inside a composite key."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return str(value)
