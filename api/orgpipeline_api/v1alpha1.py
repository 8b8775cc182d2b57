"""OrgPipeline v1alpha1: the spec of one tenant's pipeline, as pydantic models.

This module is the contract of the custom resource. The operator reconciles it, the jobs read it
from the same YAML that `kubectl apply` takes, and the CRD's OpenAPI schema is generated from it
(see `orgpipeline_api.crd`). Field names are the manifest's camelCase names; Python code uses the
snake_case attributes.

Every identifier that ends up in a namespace name, a MongoDB collection or a PostgreSQL schema,
table or column is constrained here by a pattern, so no manifest can smuggle quotes, dots or
another tenant's name into an identifier. Code still quotes every identifier it sends to SQL.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import re2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

GROUP = "orgpipeline.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "OrgPipeline"
PLURAL = "orgpipelines"
SINGULAR = "orgpipeline"
SHORT_NAMES = ["orgp", "op"]

# Org ids appear in namespace names (`org-<id>`), collection and schema names: a DNS-label subset.
ORG_ID_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$"
# Table and column names become PostgreSQL identifiers (max 63 bytes, with prefixes/suffixes added).
TABLE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
COLUMN_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
# A source prefix is a folder path: ASCII segments separated by `/`, none empty, `.` or `..`.
PREFIX_PATTERN = r"^([A-Za-z0-9_-][A-Za-z0-9._-]*/)*([A-Za-z0-9_-][A-Za-z0-9._-]*)?$"
# A filePattern is a glob of file names in the org's folder: it never names another folder.
FILE_PATTERN_PATTERN = r"^[^/\\\x00-\x1f]+$"
COLUMN_TYPE_PATTERN = (
    r"^(text|integer|bigint|double precision|boolean|date|timestamp|timestamptz"
    r"|decimal\((3[0-8]|[12][0-9]|[1-9]),([12][0-9]|3[0-8]|[0-9])\))$"
)
# Five-field cron (minute hour day-of-month month day-of-week) or a CronJob macro.
CRON_FIELD = r"(\*|\?|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*"
CRON_PATTERN = (
    rf"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
    rf"|{CRON_FIELD} {CRON_FIELD} {CRON_FIELD} {CRON_FIELD} {CRON_FIELD})$"
)


class _Model(BaseModel):
    """Base of every model: camelCase on the wire, unknown fields refused, values immutable."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


def _cel(rule: str, message: str, *more: tuple[str, str]) -> dict[str, Any]:
    """CEL validation rules of the CRD schema (`x-kubernetes-validations`), checked by the API server."""
    rules = [(rule, message), *more]
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


def org_folder(org_id: str) -> str:
    """The org's own folder in a source bucket; its source.prefix must be it or lie below it."""
    return f"org-{org_id}/"


PREFIX_MESSAGE = (
    "source.prefix must be a folder path (letters, digits, . _ - between /; no empty, . or .. part)"
)
OWN_PREFIX_MESSAGE = (
    "source.prefix must be the org's own folder org-<orgId>/ (or a folder below it); an empty "
    "prefix (a bucket of the org's own) needs source.credentialsSecret"
)
FILE_PATTERN_MESSAGE = (
    "filePattern must be a glob of file names in the source folder: no /, \\, .. or control characters"
)


def check_file_pattern(pattern: str) -> str:
    """The filePattern if it names only files of the org's folder (the data plane and the
    operator's file routing read it as such), else a ValueError."""
    if not re.fullmatch(FILE_PATTERN_PATTERN, pattern) or ".." in pattern:
        raise ValueError(FILE_PATTERN_MESSAGE)
    return pattern


def check_own_prefix(org_id: str, prefix: str, credentials_secret: str | None) -> None:
    """A source prefix outside the org's folder is another org's area: refused (see org_folder)."""
    own = org_folder(org_id)
    if prefix == "":
        if not credentials_secret:
            raise ValueError(OWN_PREFIX_MESSAGE)
    elif prefix != own[:-1] and not prefix.startswith(own):
        raise ValueError(OWN_PREFIX_MESSAGE)


class Tier(StrEnum):
    small = "small"
    medium = "medium"
    large = "large"


class DeletionPolicy(StrEnum):
    Retain = "Retain"
    Delete = "Delete"


class TableMode(StrEnum):
    incremental = "incremental"
    snapshot = "snapshot"


class TableTrigger(StrEnum):
    """What starts a table's runs: its cron schedule, the arrival of a file (S3 event), or both."""

    schedule = "schedule"
    fileArrival = "fileArrival"
    both = "both"


class Classification(StrEnum):
    """How sensitive a column's values are; pii and sensitive values are masked for readers."""

    public = "public"
    internal = "internal"
    pii = "pii"
    sensitive = "sensitive"


MASKED_CLASSIFICATIONS = frozenset({Classification.pii, Classification.sensitive})


def _pattern_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the reason is raised; RE2 would also print it to stderr
    return options


_PATTERN_OPTIONS = _pattern_options()

_BACKTRACKING_ONLY = [
    (r"invalid escape sequence: \\[1-9]", "backreferences (\\1..\\9)"),
    (r"invalid perl operator: \(\?(=|!|<=|<!)", "lookaround ((?=, (?!, (?<=, (?<!)"),
    (r"bad repetition operator: [*+?}]\+", "possessive repetition (*+, ++)"),
    (r"invalid repetition size", "a repetition count over 1000"),
]
"""RE2's refusals that mean a feature RE2 leaves out on purpose, in words a manifest author knows."""


def linear_pattern(pattern: str) -> Any:
    """A column pattern compiled for RE2, the linear-time engine every quality check uses (a
    backtracking engine takes time quadratic or worse in the value on patterns like the example's
    email one). Raises ValueError with the reason when RE2 cannot run it: backreferences,
    lookaround, possessive or over-1000 repetitions, a syntax error, or a program over RE2's memory.

    RE2 differs from Python's `re` where a pattern means something else: `\\d`, `\\w`, `\\s` are
    ASCII classes, and `$` matches only at the end of the value (not before a final newline)."""
    try:
        return re2.compile(pattern, options=_PATTERN_OPTIONS)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else str(exc)
        reason = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        for refusal, feature in _BACKTRACKING_ONLY:
            if re.match(refusal, reason):
                reason = f"uses {feature}, which RE2 leaves out ({reason})"
                break
        raise ValueError(f"the linear-time engine (RE2) cannot run it: {reason}") from None


class Column(_Model):
    """One column of a table: its PostgreSQL type and the record-level quality rules."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            "!has(self.min) || !has(self.max) || self.min <= self.max", "min must not be greater than max"
        )
    )

    name: Annotated[
        str,
        Field(
            max_length=63,
            pattern=COLUMN_NAME_PATTERN,
            description="Column name in the CSV header and in PostgreSQL (lower case, digits, underscores).",
        ),
    ]
    type: Annotated[
        str,
        Field(
            default="text",
            pattern=COLUMN_TYPE_PATTERN,
            description="PostgreSQL "
            "type: text, integer, bigint, double precision, boolean, date, "
            "timestamp, timestamptz or decimal(p,s).",
        ),
    ] = "text"
    required: Annotated[
        bool,
        Field(
            description="A missing or empty value fails the record's "
            "quality check; the header must contain the column."
        ),
    ] = False
    classification: Annotated[
        Classification,
        Field(
            description="public | internal (default) | pii | sensitive. The org's read-only role sees "
            "pii values hashed (a keyed SHA-256 pseudonym, equal values give equal pseudonyms) and "
            "sensitive values redacted; `orgpipeline export --mask` does the same."
        ),
    ] = Classification.internal
    min: Annotated[float | None, Field(description="Smallest allowed numeric value (warning below).")] = None
    max: Annotated[float | None, Field(description="Largest allowed numeric value (warning above).")] = None
    allowed: Annotated[
        list[str] | None, Field(max_length=256, description="The only values allowed (warning otherwise).")
    ] = None
    pattern: Annotated[
        str | None,
        Field(
            max_length=512,
            description=(
                "Regular expression every non-empty value must match (warning otherwise), in RE2 "
                "syntax: matched in time linear in the value, so no backreferences or lookaround."
            ),
        ),
    ] = None

    @model_validator(mode="after")
    def _check_rules(self) -> Column:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"column {self.name}: min {self.min} is greater than max {self.max}")
        if self.pattern is not None:
            try:
                linear_pattern(self.pattern)
            except ValueError as exc:
                raise ValueError(f"column {self.name}: invalid pattern {self.pattern!r}: {exc}") from None
        return self


class AnomalyDetection(_Model):
    """Per table: compare each run with the table's own recent successful runs (see
    `orgpipeline_api.anomaly`); outliers are VolumeAnomaly / QualityAnomaly warnings."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            "!has(self.minHistory) || !has(self.window) || self.minHistory <= self.window",
            "minHistory must not exceed window",
        )
    )

    enabled: Annotated[bool, Field(description="Compare runs with their history.")] = True
    window: Annotated[
        int, Field(ge=3, le=200, description="The last N successful runs that form the history.")
    ] = 30
    min_history: Annotated[
        int, Field(ge=2, le=200, description="No anomaly is reported before this many successful runs.")
    ] = 5
    sensitivity: Annotated[
        float,
        Field(
            gt=0,
            le=20,
            description="How many robust standard deviations (1.4826 x MAD) from the expected value "
            "make an anomaly; higher is quieter.",
        ),
    ] = 3.5

    @model_validator(mode="after")
    def _check_history(self) -> AnomalyDetection:
        if self.min_history > self.window:
            raise ValueError(f"anomalyDetection: minHistory {self.min_history} exceeds window {self.window}")
        return self


class Table(_Model):
    """One table of the org: where its files come from, when it runs, its key and its columns."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            "self.businessKeys.all(k, self.columns.exists(c, c.name == k))",
            "businessKeys must name columns declared in columns",
        )
    )

    name: Annotated[
        str,
        Field(
            max_length=40,
            pattern=TABLE_NAME_PATTERN,
            description="Table name: the MongoDB "
            "collection raw_<orgId>_<name> and the PostgreSQL table raw_<name>.",
        ),
    ]
    schedule: Annotated[
        str,
        Field(
            pattern=CRON_PATTERN,
            description="Cron schedule of the table's CronJob (five fields, or @hourly, @daily, ...).",
        ),
    ] = "0 * * * *"
    suspend: Annotated[bool, Field(description="Suspend this table's CronJob.")] = False
    trigger: Annotated[
        TableTrigger,
        Field(
            description="What starts a run: schedule (the CronJob only), fileArrival (an S3 event for "
            "a file matching filePattern, via the operator's webhook; the CronJob is suspended) or both."
        ),
    ] = TableTrigger.both
    file_pattern: Annotated[
        str | None,
        Field(
            max_length=256,
            description="Glob of the file names "
            "in the source prefix's folder that belong to this table (no /, \\ or ..: never another "
            "folder); default <name>_*.csv.",
            json_schema_extra=_cel(
                f"self.matches(r'{FILE_PATTERN_PATTERN}') && !self.contains('..')", FILE_PATTERN_MESSAGE
            ),
        ),
    ] = None
    anomaly_detection: Annotated[
        AnomalyDetection,
        Field(
            description="Alerts on runs unlike the table's recent ones (rows read, rejected share, quality)."
        ),
    ] = Field(default_factory=AnomalyDetection)
    mode: Annotated[
        TableMode,
        Field(
            description="incremental: rows absent from a file are kept; "
            "snapshot: keys absent from a file get a DELETE version."
        ),
    ] = TableMode.incremental
    business_keys: Annotated[
        list[Annotated[str, Field(max_length=63)]],
        Field(
            max_length=8,
            description="Columns whose values identify a record; empty: detected from the data and reported.",
            json_schema_extra={"x-kubernetes-list-type": "set"},
        ),
    ] = Field(default_factory=list)
    columns: Annotated[
        list[Column],
        Field(
            min_length=1,
            max_length=200,
            description="The table's columns, in any order; names are unique (a list map keyed by name).",
            # Uniqueness by the schema itself: a CEL rule comparing every pair costs too much at 200.
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        ),
    ]

    @property
    def glob(self) -> str:
        return self.file_pattern or f"{self.name}_*.csv"

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    @model_validator(mode="after")
    def _check_table(self) -> Table:
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"table {self.name}: duplicate column names: {', '.join(dupes)}")
        unknown = [k for k in self.business_keys if k not in names]
        if unknown:
            raise ValueError(f"table {self.name}: business keys not among the columns: {', '.join(unknown)}")
        if len(set(self.business_keys)) != len(self.business_keys):
            raise ValueError(f"table {self.name}: business keys repeat a column")
        if self.file_pattern is not None:
            try:
                check_file_pattern(self.file_pattern)
            except ValueError as exc:
                raise ValueError(f"table {self.name}: {exc}") from None
        return self


class Source(_Model):
    """Where the org's CSV files land."""

    bucket: Annotated[str, Field(pattern=BUCKET_PATTERN, description="S3 bucket of the org's files.")]
    prefix: Annotated[
        str,
        Field(
            max_length=512,
            description="Folder of the org's files in the bucket: org-<orgId>/ or a folder below it "
            "(org-123 means the same folder as org-123/). Empty: the whole bucket, only with a "
            "credentialsSecret (a bucket of the org's own). A table's filePattern matches the names in it.",
            json_schema_extra=_cel(f"self.matches(r'{PREFIX_PATTERN}')", PREFIX_MESSAGE),
        ),
    ] = ""
    credentials_secret: Annotated[
        str | None,
        Field(
            max_length=253,
            description="Secret in the "
            "operator's namespace with accessKey and secretKey for the bucket, labelled "
            "orgpipeline.io/org-id: <orgId> (the operator refuses it otherwise); default: the org's own "
            "S3 account, made by the operator.",
        ),
    ] = None

    @model_validator(mode="after")
    def _check_prefix(self) -> Source:
        if not re.fullmatch(PREFIX_PATTERN, self.prefix):
            raise ValueError(PREFIX_MESSAGE)
        return self


class QualityThresholds(_Model):
    """Limits below (or above) which a run raises an alert."""

    overall_quality_score: Annotated[
        float, Field(ge=0, le=1, description="Minimum overall quality score of a run (0..1).")
    ] = 0.95
    error_rate_percent: Annotated[
        float,
        Field(ge=0, le=100, description="Maximum share of failed or rejected rows in a run, in percent."),
    ] = 1.0
    completeness_score: Annotated[
        float,
        Field(ge=0, le=1, description="Minimum completeness score (share of required values present, 0..1)."),
    ] = 0.98


class Retention(_Model):
    """The seed's retention policy."""

    keep_versions: Annotated[
        int, Field(ge=1, le=1000, description="Versions per record kept active; older ones are deactivated.")
    ] = 10
    audit_log_days: Annotated[
        int, Field(ge=1, le=3650, description="Days of change-log and audit rows kept.")
    ] = 365
    schedule: Annotated[
        str,
        Field(
            pattern=CRON_PATTERN,
            description="Cron schedule of the org's retention CronJob (five fields, or @daily, ...); "
            "spec.suspend suspends it with the tables' CronJobs.",
        ),
    ] = "@daily"


class OrgPipelineSpec(_Model):
    """What one tenant's pipeline is: its org, tier, source, tables, thresholds and retention."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            "self.tables.all(t, self.tables.exists_one(u, u.name == t.name))",
            "table names must be unique",
            (
                # (a prefix that is no folder path has its own message: one error, one line)
                "!has(self.source.prefix) || self.source.prefix == '' ? has(self.source.credentialsSecret)"
                " : (self.source.prefix == 'org-' + self.orgId"
                " || self.source.prefix.startsWith('org-' + self.orgId + '/')"
                f" || !self.source.prefix.matches(r'{PREFIX_PATTERN}'))",
                OWN_PREFIX_MESSAGE,
            ),
        )
    )

    org_id: Annotated[
        str,
        Field(
            pattern=ORG_ID_PATTERN,
            description="The organization's id: lower "
            "case letters, digits and dashes, at most 32 characters. Immutable.",
            json_schema_extra=_cel("self == oldSelf", "orgId is immutable"),
        ),
    ]
    tier: Annotated[
        Tier, Field(description="Resource tier: requests, limits and quota of the org's jobs.")
    ] = Tier.medium
    suspend: Annotated[bool, Field(description="Suspend every CronJob of the org.")] = False
    deletion_policy: Annotated[
        DeletionPolicy,
        Field(
            description="Retain keeps the org's data when "
            "the OrgPipeline is deleted; Delete drops its "
            "collections, schema and role."
        ),
    ] = DeletionPolicy.Retain
    source: Annotated[Source, Field(description="Where the org's CSV files land.")]
    quality_thresholds: Annotated[QualityThresholds, Field(description="Alert thresholds.")] = Field(
        default_factory=QualityThresholds
    )
    retention: Annotated[Retention, Field(description="Retention of versions and audit rows.")] = Field(
        default_factory=Retention
    )
    tables: Annotated[list[Table], Field(min_length=1, max_length=50, description="The org's tables.")]

    def table(self, name: str) -> Table | None:
        return next((t for t in self.tables if t.name == name), None)

    @model_validator(mode="after")
    def _check_tables(self) -> OrgPipelineSpec:
        names = [t.name for t in self.tables]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate table names: {', '.join(dupes)}")
        check_own_prefix(self.org_id, self.source.prefix, self.source.credentials_secret)
        return self


class ManifestError(ValueError):
    """A manifest that cannot be read or does not validate; the message is one line for the user."""


def parse_manifest(document: dict[str, Any]) -> tuple[str, OrgPipelineSpec]:
    """Validates an OrgPipeline manifest (as a dict) and returns (metadata.name, spec)."""
    if not isinstance(document, dict):
        raise ManifestError("manifest is not a mapping")
    if document.get("apiVersion") != API_VERSION or document.get("kind") != KIND:
        raise ManifestError(f"not an {KIND} manifest: expected apiVersion {API_VERSION} and kind {KIND}")
    name = (document.get("metadata") or {}).get("name") or ""
    try:
        spec = OrgPipelineSpec.model_validate(document.get("spec") or {})
    except ValidationError as exc:
        raise ManifestError(errors_one_line(exc)) from None
    return name, spec


def load_manifest(path: str | Path) -> tuple[str, OrgPipelineSpec]:
    """Reads an OrgPipeline manifest file, the same YAML that `kubectl apply -f` takes."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        document = yaml.safe_load(text)
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    try:
        return parse_manifest(document)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from None


def errors_one_line(exc: ValidationError) -> str:
    """A spec's validation errors as one line: `spec.<field path>: <message>`, joined by `; `."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        parts.append(f"spec.{where}: {err['msg']}" if where != "spec" else err["msg"])
    return "; ".join(parts)
