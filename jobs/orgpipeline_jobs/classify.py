"""Classification suggestions: which stored columns look like personal or sensitive data.

The seed's Data Governance roadmap: sample a table's stored values and say, per column, what they
look like, with the evidence (the share of the sampled non-empty values that match). Detectors:
email addresses, phone numbers, IBANs (ISO 13616 mod-97 check), card numbers (Luhn check), IP
addresses, dates of birth and person names. Card numbers and IBANs suggest `sensitive`, the others
`pii`; a suggestion never lowers a column's classification.

Used by `orgpipeline classify` (the report and a manifest patch) and after each run that wrote
versions (`unclassified_breaches`: a pii-looking column classified public or internal is a
`UnclassifiedPersonalData` warning, once per column, see `warehouse.notices`). Sampling reads the
org's own table with the org's session; values never leave the function (evidence is counts).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg
from orgpipeline_api import store_names
from orgpipeline_api.orgschema.ddl import qualified
from orgpipeline_api.run_report import AlertType, Breach
from orgpipeline_api.v1alpha1 import Classification
from psycopg import sql

from orgpipeline_jobs.warehouse import notices

MIN_SHARE = 0.8
"""Share of a column's sampled non-empty values a detector must match to suggest its class."""
MIN_VALUES = 3
"""Non-empty sampled values below which a column gets no suggestion (too little evidence)."""
RUN_SAMPLE_ROWS = 200
"""Rows a run samples (pages picked at random: bounded cost whatever the table's size)."""

LEVEL = {
    Classification.public: 0,
    Classification.internal: 1,
    Classification.pii: 2,
    Classification.sensitive: 3,
}

_EMAIL = re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
_PHONE = re.compile(r"^(\+|00|\()?[0-9][0-9 ().\-/]{5,22}[0-9]$")
_NUMBER = re.compile(r"^-?[0-9]+([.,][0-9]+)?$")
_IBAN = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")
_NAME_WORD = re.compile(r"^[^\W\d_][^\W\d_'\u2019.\-]*(['\u2019\-][^\W\d_]+)*\.?$")
_NAME_HINT = re.compile(r"(^|_)(name|first|last|surname|given|family|full|middle|maiden|contact|person)(_|$)")
_NOT_PERSON = re.compile(
    r"(^|_)(product|company|business|brand|file|table|city|country|street|store|shop|item|"
    r"category|org|organisation|organization|host|domain|user|account|display|event|plan|team)(_|$)"
)
_BIRTH_HINT = re.compile(r"(birth|dob|born)")
_DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d")
_DATE_SHAPE = re.compile(r"^[0-9]{1,4}[-/.][0-9]{1,2}[-/.][0-9]{1,4}([ T].*)?$")
_IP_SHAPE = re.compile(r"^[0-9A-Fa-f:.]{2,45}$")
"""Cheap shapes tried before the parsers (strptime, ipaddress): most values are neither."""


def is_email(value: str) -> bool:
    return len(value) <= 254 and _EMAIL.match(value) is not None


def is_phone(value: str) -> bool:
    """7 to 15 digits (E.164) written as a phone number: a leading `+`/`00` or separators between
    digit groups; a bare run of digits is more often an id and does not count, nor does a number,
    a date or an IP address."""
    number = _NUMBER.match(value) and not value.startswith("00")  # 0049...: the international prefix
    if not _PHONE.match(value) or number or parse_date(value) or is_ip_address(value):
        return False
    digits = sum(ch.isdigit() for ch in value)
    formatted = value.startswith(("+", "00", "(")) or any(ch in value for ch in " ()-./")
    return 7 <= digits <= 15 and formatted


def is_iban(value: str) -> bool:
    """An IBAN whose check digits hold (ISO 13616: the rearranged number mod 97 is 1)."""
    compact = value.replace(" ", "").upper()
    if not _IBAN.match(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def is_card_number(value: str) -> bool:
    """13 to 19 digits (spaces and dashes allowed) passing the Luhn check, not all one digit."""
    digits = value.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and digits.isdigit() and len(set(digits)) > 1 and luhn(digits)


def is_ip_address(value: str) -> bool:
    if not _IP_SHAPE.match(value):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def parse_date(value: str) -> date | None:
    if not _DATE_SHAPE.match(value):
        return None
    text = value[:10] if len(value) >= 10 and value[10:11] in ("", " ", "T") else value
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None


def is_person_name(value: str) -> bool:
    """One to four capitalised words of letters (with ' or - inside, an initial with a dot)."""
    words = value.split()
    return 1 <= len(words) <= 4 and all(w[0].isupper() and _NAME_WORD.match(w) for w in words)


@dataclass(frozen=True)
class Detector:
    name: str
    """What the values look like, as the report says it."""
    classification: Classification
    matches: Callable[[str], bool]


DETECTORS = (
    Detector("card numbers (Luhn)", Classification.sensitive, is_card_number),
    Detector("IBANs (mod-97)", Classification.sensitive, is_iban),
    Detector("email addresses", Classification.pii, is_email),
    Detector("IP addresses", Classification.pii, is_ip_address),
    Detector("phone numbers", Classification.pii, is_phone),
)
"""Value-only detectors, most sensitive first; dates of birth and names also weigh the column."""


@dataclass(frozen=True)
class Evidence:
    detector: str
    classification: Classification
    matched: int
    values: int
    """Non-empty values sampled."""

    @property
    def share(self) -> float:
        return self.matched / self.values if self.values else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "classification": self.classification.value,
            "matched": self.matched,
            "values": self.values,
            "share": round(self.share, 4),
        }


def _birth_dates(column: str, values: Sequence[str]) -> int:
    """How many values are plausible birth dates, when the column is one: its name says so
    (birth, dob, born), or its dates spread over 20 years or more, all 10 or more years ago
    (order and event dates cluster near now)."""
    today = date.today()
    dates = [d for d in (parse_date(v) for v in values) if d is not None]
    plausible = [d for d in dates if date(1900, 1, 1) <= d <= today.replace(year=today.year - 10)]
    if not plausible:
        return 0
    if _BIRTH_HINT.search(column.lower()):
        return len(plausible)
    spread_years = (max(plausible) - min(plausible)).days / 365.25
    return len(plausible) if spread_years >= 20 else 0


def _person_names(column: str, values: Sequence[str]) -> int:
    """How many values look like person names, when the column's name says it holds them (`name`,
    `first_name`, `contact`, ...; not `product_name`, `company_name`, `user_name`, ...): capitalised
    words alone are as often products or places."""
    lowered = column.lower()
    if not _NAME_HINT.search(lowered) or _NOT_PERSON.search(lowered):
        return 0
    return sum(1 for v in values if is_person_name(v))


def evidence(column: str, values: Iterable[str | None]) -> list[Evidence]:
    """What a column's sampled values look like: every detector that matched any, best first."""
    present = [v.strip() for v in values if v is not None and v.strip()]
    if not present:
        return []
    found = [
        Evidence(d.name, d.classification, sum(1 for v in present if d.matches(v)), len(present))
        for d in DETECTORS
    ]
    found.append(Evidence("dates of birth", Classification.pii, _birth_dates(column, present), len(present)))
    found.append(Evidence("person names", Classification.pii, _person_names(column, present), len(present)))
    found = [e for e in found if e.matched]
    return sorted(found, key=lambda e: (-e.share, -LEVEL[e.classification]))


@dataclass(frozen=True)
class ColumnSuggestion:
    column: str
    current: Classification
    suggested: Classification
    evidence: list[Evidence]
    values: int
    """Non-empty values sampled."""

    @property
    def changes(self) -> bool:
        return self.suggested != self.current

    def as_json(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "classification": self.current.value,
            "suggested": self.suggested.value,
            "change": self.changes,
            "values_sampled": self.values,
            "evidence": [e.as_json() for e in self.evidence],
        }


def suggest(
    column: str, current: Classification, values: Iterable[str | None], min_share: float = MIN_SHARE
) -> ColumnSuggestion:
    """The column's suggested classification: the most sensitive class whose detector matched at
    least `min_share` of MIN_VALUES or more values; never lower than `current`."""
    sampled = [v for v in values if v is not None and v.strip()]
    found = evidence(column, sampled)
    suggested = current
    if len(sampled) >= MIN_VALUES:
        for e in found:
            if e.share >= min_share and LEVEL[e.classification] > LEVEL[suggested]:
                suggested = e.classification
    return ColumnSuggestion(column, current, suggested, found, len(sampled))


def stored_columns(conn: psycopg.Connection[Any], org_id: str, table: str) -> list[str]:
    """The columns the table's raw table has (the manifest's, as the runs made them)."""
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
        " ORDER BY ordinal_position",
        (store_names.pg_schema(org_id), store_names.pg_table(table)),
    ).fetchall()
    return [str(r[0]) for r in rows]


def sample(
    conn: psycopg.Connection[Any],
    org_id: str,
    table: str,
    columns: Sequence[str],
    rows: int,
    spread: bool = True,
) -> dict[str, list[str | None]]:
    """Up to `rows` stored rows of the columns, as text. `spread`: from all over a large table
    (PostgreSQL's SYSTEM sampling: random pages holding about four times `rows`, read without a scan
    of the table), else the first rows in storage."""
    present = set(stored_columns(conn, org_id, table))
    wanted = [c for c in columns if c in present]
    if not wanted:
        return {}
    target = qualified(org_id, store_names.pg_table(table))
    sampling: sql.Composable = sql.SQL("")
    if spread:
        estimate = conn.execute(
            "SELECT reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s",
            (store_names.pg_schema(org_id), store_names.pg_table(table)),
        ).fetchone()
        total = float(estimate[0]) if estimate else 0.0
        if total > rows * 4:
            percent = min(100.0, 400.0 * rows / total)
            sampling = sql.SQL(" TABLESAMPLE SYSTEM ({})").format(sql.Literal(percent))
    statement = sql.SQL("SELECT {} FROM {}{} LIMIT {}").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in wanted),
        target,
        sampling,
        sql.Literal(rows),
    )
    fetched = conn.execute(statement).fetchall()
    return {c: [r[i] for r in fetched] for i, c in enumerate(wanted)}


def suggest_table(
    conn: psycopg.Connection[Any],
    org_id: str,
    table: str,
    classification: Mapping[str, str],
    rows: int,
    min_share: float = MIN_SHARE,
    spread: bool = True,
) -> list[ColumnSuggestion]:
    """Each column's suggestion from a sample of the stored table; `classification`: column ->
    its current class (the spec's or the recorded one, `internal` by default)."""
    values = sample(conn, org_id, table, list(classification), rows, spread)
    return [
        suggest(column, Classification(classification[column]), values[column], min_share)
        for column in classification
        if column in values
    ]


def run_suggestions(
    conn: psycopg.Connection[Any], org_id: str, table: str, classification: Mapping[str, str]
) -> list[ColumnSuggestion]:
    """What `unclassified_breaches` judges: the suggestions for the columns classified public or
    internal, from a sample of the stored table (a read only)."""
    open_columns = {
        c: k for c, k in classification.items() if k in (Classification.public, Classification.internal)
    }
    if not open_columns:
        return []
    return suggest_table(conn, org_id, table, open_columns, RUN_SAMPLE_ROWS)


def unclassified_breaches(
    conn: psycopg.Connection[Any],
    org_id: str,
    table: str,
    classification: Mapping[str, str],
    suggestions: list[ColumnSuggestion] | None = None,
) -> list[Breach]:
    """After a run: each column classified public or internal whose stored values look like pii or
    sensitive data, the first time it does (`warehouse.notices`). `suggestions`: `run_suggestions`
    of the same stored rows, when the caller has them already."""
    if suggestions is None:
        suggestions = run_suggestions(conn, org_id, table, classification)
    breaches = []
    for s in suggestions:
        if not s.changes or not s.evidence:
            continue
        best = next(e for e in s.evidence if e.classification == s.suggested)
        message = (
            f"column {s.column} is classified {s.current.value} but its values look like {best.detector}"
            f" ({best.share:.0%} of {best.values} sampled): classify it {s.suggested.value}"
            f" (orgpipeline classify --org-id {org_id} --table {table})"
        )[:1024]
        if notices.first_time(conn, org_id, table, AlertType.UnclassifiedPersonalData, s.column, message):
            breaches.append(
                Breach(type=AlertType.UnclassifiedPersonalData, message=message, value=best.share)
            )
    return breaches
