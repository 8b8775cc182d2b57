"""`orgpipeline import-schemas`: the seed's schema CSV files turned into an OrgPipeline manifest.

The seed keeps one file per table, `user_schemas/{org_id}_{table}_schema.csv`, or one per org,
`user_schemas/{org_id}_schema.csv`, with the columns `column_name,data_type` and SQL types such as
`TEXT NOT NULL`, `DECIMAL(10,2)` or `INTEGER NOT NULL DEFAULT 1`. The org-wide form names no
table, so it carries a third column `table_name` (`table_name,column_name,data_type`), or the one
table it describes is given with `--table`.

What is read:
- the SQL type, mapped to the manifest's types (VARCHAR/CHAR -> text, NUMERIC(p,s) -> decimal(p,s),
  ...); a type the manifest cannot hold is an error with file and line;
- `NOT NULL` -> `required: true`; `PRIMARY KEY` -> a business key; `NULL`, `UNIQUE` and `DEFAULT x`
  are accepted and dropped (the pipeline fills no defaults);
- the seed's own metadata columns (org_id, composite_key, version, data_hash, ... and its
  `status VARCHAR(20) DEFAULT 'active'`) are skipped: the pipeline adds them itself;
- `#` comment lines and blank lines are skipped. The seed writes `amount,DECIMAL(10,2)` without
  quotes, so everything after the first comma of a line is the type.

The manifest is validated with the same model as the CRD before it is printed.
"""

from __future__ import annotations

import csv
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
import yaml
from orgpipeline_api import v1alpha1
from orgpipeline_api.orgschema.ddl import AUDIT_COLUMN_NAMES
from orgpipeline_api.v1alpha1 import COLUMN_NAME_PATTERN, ORG_ID_PATTERN, TABLE_NAME_PATTERN

from orgpipeline_cli.manage.common import UserError, command_help

EXIT_HELP = "Exit codes: 0 manifest printed; 2 a file is malformed or names a type the manifest cannot hold."

# The seed's metadata columns: the pipeline adds them to every table itself.
SEED_METADATA = frozenset(
    {
        "org_id",
        "composite_key",
        "table",
        "version",
        "data_hash",
        "change_type",
        "changed_fields",
        "changed_by_user_id",
        "previous_version",
        "audit_trail",
        "ingested_at",
        "last_modified",
        "postgres_status",
        "is_active",
        "data_quality",
        "source_file_metadata",
        "processing_metadata",
        *AUDIT_COLUMN_NAMES,
    }
)
# The seed's `status` audit column; a business column `status` of another type is kept.
SEED_STATUS = re.compile(r"^varchar\s*\(\s*20\s*\)\s+default\s+'active'$", re.IGNORECASE)

_SIMPLE_TYPES = {
    "text": "text",
    "varchar": "text",
    "character varying": "text",
    "char": "text",
    "character": "text",
    "bpchar": "text",
    "uuid": "text",
    "citext": "text",
    "integer": "integer",
    "int": "integer",
    "int4": "integer",
    "smallint": "integer",
    "int2": "integer",
    "bigint": "bigint",
    "int8": "bigint",
    "double precision": "double precision",
    "float8": "double precision",
    "float": "double precision",
    "real": "double precision",
    "float4": "double precision",
    "boolean": "boolean",
    "bool": "boolean",
    "date": "date",
    "timestamp": "timestamp",
    "timestamp without time zone": "timestamp",
    "timestamptz": "timestamptz",
    "timestamp with time zone": "timestamptz",
}
_TEXT_WITH_LENGTH = re.compile(r"^(varchar|character varying|char|character)\s*\(\s*\d+\s*\)$")
_DECIMAL = re.compile(r"^(decimal|numeric)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)$")
_TYPE_HEAD = re.compile(
    r"^(timestamp\s+with(?:out)?\s+time\s+zone|double\s+precision"
    r"|(?:decimal|numeric|varchar|character\s+varying|character|char)\s*\([^)]*\)"
    r"|character\s+varying|[a-z][a-z0-9_]*(?:\[\])?)",
)
_CONSTRAINT = re.compile(
    r"^(not\s+null|null|primary\s+key|unique|default\s+('([^']|'')*'|[^\s]+(\s*\([^)]*\))?))\s*",
)


class SchemaFileError(ValueError):
    """One problem of one schema file, with its place: `file:line: message`."""

    def __init__(self, path: Path, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}")


@dataclass
class ColumnDef:
    name: str
    type: str
    required: bool = False
    key: bool = False


@dataclass
class TableDef:
    name: str
    columns: list[ColumnDef] = field(default_factory=list)
    source: str = ""


def parse_type(text: str) -> tuple[str, bool, bool]:
    """A seed SQL column definition -> (manifest type, required, primary key); ValueError when the
    manifest cannot hold the type or a modifier is not understood."""
    spec = " ".join(text.strip().lower().split())
    if not spec:
        raise ValueError("no data_type")
    head = _TYPE_HEAD.match(spec)
    if head is None:
        raise ValueError(f"cannot read the type {text.strip()!r}")
    sql_type, rest = head.group(1), spec[head.end() :].strip()
    if sql_type.endswith("[]") or rest.startswith("[]"):
        raise ValueError(f"array type {text.strip()!r} is not supported")
    if sql_type in _SIMPLE_TYPES:
        mapped = _SIMPLE_TYPES[sql_type]
    elif _TEXT_WITH_LENGTH.match(sql_type):
        mapped = "text"
    elif m := _DECIMAL.match(sql_type):
        precision, scale = int(m.group(2)), int(m.group(3) or 0)
        if not 1 <= precision <= 38 or scale > precision or scale > 38:
            raise ValueError(f"{sql_type.upper()}: precision must be 1..38 and scale 0..precision")
        mapped = f"decimal({precision},{scale})"
    elif sql_type in ("decimal", "numeric"):
        raise ValueError(f"{sql_type.upper()} needs a precision and scale, e.g. {sql_type.upper()}(10,2)")
    else:
        raise ValueError(
            f"unknown type {sql_type.upper()!r}: the manifest takes TEXT, VARCHAR(n), INTEGER, BIGINT,"
            " SMALLINT, DOUBLE PRECISION, REAL, BOOLEAN, DATE, TIMESTAMP, TIMESTAMPTZ, DECIMAL(p,s)"
        )
    required = key = False
    while rest:
        m = _CONSTRAINT.match(rest)
        if m is None:
            raise ValueError(f"cannot read {rest!r} after the type {sql_type.upper()}")
        word = " ".join(m.group(1).split())
        if word == "not null":
            required = True
        elif word == "primary key":
            required = key = True
        rest = rest[m.end() :]
    return mapped, required, key


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of the file's data lines, header included; comments and blanks out."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise SchemaFileError(path, None, "is not UTF-8 text") from None
    except OSError as exc:
        raise SchemaFileError(path, None, f"cannot be read: {exc.strerror or exc}") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            fields = next(csv.reader([line]))
        except csv.Error as exc:
            raise SchemaFileError(path, number, f"not a CSV line: {exc}") from None
        rows.append((number, [f.strip() for f in fields]))
    return rows


def read_file(path: Path, table: str | None) -> tuple[list[TableDef], list[str]]:
    """(tables, problems) of one schema file: every line is read, each bad one is a problem.
    `table` is the file name's table, or the --table of an org-wide file; a SchemaFileError when
    the file as a whole cannot be read (no file, no header)."""
    rows = _rows(path)
    if not rows:
        raise SchemaFileError(path, None, "has no header: expected column_name,data_type")
    number, header = rows[0]
    names = [h.lower() for h in header]
    with_table = names[:3] == ["table_name", "column_name", "data_type"]
    if not with_table and names[:2] != ["column_name", "data_type"]:
        raise SchemaFileError(
            path,
            number,
            f"header {','.join(header)!r}: expected column_name,data_type"
            " (or table_name,column_name,data_type)",
        )
    if with_table and table is not None:
        raise SchemaFileError(path, number, "a per-table file has no table_name column")
    if not with_table and table is None:
        raise SchemaFileError(
            path, number, "an org-wide schema file names no table: add a table_name column or use --table"
        )
    tables: dict[str, TableDef] = {}
    problems: list[str] = []
    for number, fields in rows[1:]:
        try:
            _read_line(path, number, fields, table, with_table, tables)
        except SchemaFileError as exc:
            problems.append(str(exc))
    if not tables and not problems:
        problems.append(
            str(SchemaFileError(path, None, "has no business columns (only the seed's metadata)"))
        )
    return list(tables.values()), problems


def _read_line(
    path: Path,
    number: int,
    fields: list[str],
    table: str | None,
    with_table: bool,
    tables: dict[str, TableDef],
) -> None:
    if with_table:
        if len(fields) < 3:
            raise SchemaFileError(path, number, "expected table_name,column_name,data_type")
        name_of_table, fields = fields[0], fields[1:]
        if not re.match(TABLE_NAME_PATTERN, name_of_table):
            raise SchemaFileError(path, number, f"table name {name_of_table!r} is not valid" + _NAME_RULE)
    else:
        name_of_table = table or ""
    if len(fields) < 2 or not fields[1]:
        raise SchemaFileError(path, number, "expected column_name,data_type")
    column, type_text = fields[0], ",".join(fields[1:])  # the seed writes DECIMAL(10,2) unquoted
    if not re.match(COLUMN_NAME_PATTERN, column):
        raise SchemaFileError(path, number, f"column name {column!r} is not valid" + _NAME_RULE)
    if column in SEED_METADATA or (column == "status" and SEED_STATUS.match(type_text.strip())):
        return
    try:
        mapped, required, key = parse_type(type_text)
    except ValueError as exc:
        raise SchemaFileError(path, number, f"column {column}: {exc}") from None
    entry = tables.setdefault(name_of_table, TableDef(name_of_table, source=str(path)))
    if any(c.name == column for c in entry.columns):
        raise SchemaFileError(path, number, f"column {column} of table {name_of_table} appears twice")
    entry.columns.append(ColumnDef(column, mapped, required, key))


_NAME_RULE = " (lower case letters, digits and underscores, starting with a letter)"


def find_files(directory: Path, org_id: str) -> list[tuple[Path, str | None]]:
    """The org's schema files in `directory`: (path, table from the file name or None), sorted."""
    found: list[tuple[Path, str | None]] = []
    for path in sorted(directory.iterdir()):
        name = path.name
        if not path.is_file() or not name.endswith("_schema.csv"):
            continue
        stem = name[: -len("_schema.csv")]
        if stem == org_id:
            found.append((path, None))
        elif stem.startswith(f"{org_id}_"):
            found.append((path, stem[len(org_id) + 1 :]))
    return found


def build_manifest(org_id: str, tables: list[TableDef], bucket: str, prefix: str | None) -> dict[str, Any]:
    """The OrgPipeline manifest (a dict in `kubectl apply` form) of the tables."""
    spec_tables = []
    for t in tables:
        columns: list[dict[str, Any]] = []
        for c in t.columns:
            col: dict[str, Any] = {"name": c.name, "type": c.type}
            if c.required:
                col["required"] = True
            columns.append(col)
        entry: dict[str, Any] = {
            "name": t.name,
            "filePattern": f"{t.name}_*.csv",
            "mode": "incremental",
            "businessKeys": [c.name for c in t.columns if c.key],
            "columns": columns,
        }
        spec_tables.append(entry)
    return {
        "apiVersion": v1alpha1.API_VERSION,
        "kind": v1alpha1.KIND,
        "metadata": {"name": f"org-{org_id}"},
        "spec": {
            "orgId": org_id,
            "source": {"bucket": bucket, "prefix": f"org-{org_id}/" if prefix is None else prefix},
            "tables": spec_tables,
        },
    }


def import_schemas(
    directory: Path, org_id: str, table: str | None = None, bucket: str = "uploads", prefix: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """(manifest, problems): the manifest of every readable file; each problem `file:line: ...`."""
    if not re.match(ORG_ID_PATTERN, org_id):
        raise UserError(f"--org-id {org_id!r} is not a valid org id (lower case letters, digits, dashes)")
    if table is not None and not re.match(TABLE_NAME_PATTERN, table):
        raise UserError(f"--table {table!r} is not a valid table name{_NAME_RULE}")
    if not directory.is_dir():
        raise UserError(f"{directory} is not a directory")
    files = find_files(directory, org_id)
    if not files:
        raise UserError(
            f"no schema file of org {org_id} in {directory}: expected {org_id}_<table>_schema.csv"
            f" or {org_id}_schema.csv"
        )
    problems: list[str] = []
    tables: dict[str, TableDef] = {}
    for path, from_name in files:
        if from_name is not None and not re.match(TABLE_NAME_PATTERN, from_name):
            problems.append(
                str(SchemaFileError(path, None, f"table name {from_name!r} is not valid{_NAME_RULE}"))
            )
            continue
        try:
            found, file_problems = read_file(path, from_name if from_name is not None else table)
        except SchemaFileError as exc:
            problems.append(str(exc))
            continue
        problems.extend(file_problems)
        for t in found:
            if t.name in tables:
                problems.append(
                    str(
                        SchemaFileError(
                            path, None, f"table {t.name} is also described by {tables[t.name].source}"
                        )
                    )
                )
                continue
            tables[t.name] = t
    manifest = build_manifest(org_id, list(tables.values()), bucket, prefix)
    if tables and not problems:
        try:
            v1alpha1.parse_manifest(manifest)
        except v1alpha1.ManifestError as exc:
            problems.append(f"{directory}: the manifest does not validate: {exc}")
    return manifest, problems


def import_schemas_command(
    directory: Path = typer.Argument(..., help="Folder of the seed's schema files (user_schemas/)."),
    org_id: str = typer.Option(..., "--org-id", help="The org whose files are read: <org>_*_schema.csv."),
    table: str | None = typer.Option(
        None, "--table", help="The table of an org-wide <org>_schema.csv without a table_name column."
    ),
    bucket: str = typer.Option("uploads", "--bucket", help="spec.source.bucket of the manifest."),
    prefix: str | None = typer.Option(None, "--prefix", help="spec.source.prefix; default org-<org>/."),
) -> None:
    """Prints the OrgPipeline manifest of the seed's schema CSV files.

    Reads `<org>_<table>_schema.csv` (one table) and `<org>_schema.csv` (columns
    table_name,column_name,data_type, or one table named by --table) in DIR. SQL types map to the
    manifest's (VARCHAR(n) -> text, NUMERIC(p,s) -> decimal(p,s), ...); NOT NULL becomes required;
    PRIMARY KEY columns become the business keys (none: detected at the first run); the seed's
    metadata columns are skipped. Every problem is reported as file:line on stderr and nothing is
    printed on stdout.

    Example: `orgpipeline import-schemas user_schemas --org-id 123 > org-123.yaml && kubectl apply -f
    org-123.yaml`.
    """
    manifest, problems = import_schemas(directory, org_id, table, bucket, prefix)
    if problems:
        for problem in problems[:-1]:
            print(f"orgpipeline: error: {problem}", file=sys.stderr)
        raise UserError(problems[-1])
    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True))


def register(app: typer.Typer) -> None:
    app.command("import-schemas", help=command_help(import_schemas_command), epilog=EXIT_HELP)(
        import_schemas_command
    )
