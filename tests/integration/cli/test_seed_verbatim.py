"""The seed's own command lines and SQL, as its users paste them, against org 123 set up as `make demo`
sets it up.

The seed (the user's design document) is read as text, not restated in code: every
`python data_pipeline_manager.py ...` line in it runs as `orgpipeline ...`, word for word after the
program name, so a line the product can no longer run fails here. Its version-conflict query
(Troubleshooting) and keep-last-10 archive statement (Retention) run unchanged, as the org's own
role with search_path set to the org's schema, and are compared with `orgpipeline audit` and
`orgpipeline retention --dry-run`.

The seed is found in ORGPIPELINE_SEEDS (a folder), else in `shared/seeds/` beside the checkout (the
main checkout's `../shared/seeds/`, or a worktree's nearest ancestor holding one), else in the
project's own copy, docs/seed/ (checked against the shared one where both are at hand).

Org 123 is made as the operator makes it (its PostgreSQL role and MongoDB identity), and loaded with
the demo's manifest and files, run with the org's own credentials (what its Jobs get), plus ten
more changes of the seed's example record so that one key has more versions than retention keeps.
Org 123's data in this stack is replaced (`make demo-down` would drop it too).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from orgpipeline_api import store_names
from orgpipeline_api.v1alpha1 import load_manifest
from orgpipeline_jobs import pipeline
from orgpipeline_jobs.settings import Settings
from orgpipeline_operator import database, operator_settings, runtime
from psycopg import sql

REPO = Path(__file__).resolve().parents[3]
CLI = str(Path(sys.executable).parent / "orgpipeline")
SEED_NAME = "000_88f192a4f1f56ef4.txt"
PROGRAM = "python data_pipeline_manager.py"
ORG = "123"
MANIFEST = REPO / "examples" / "org-123.yaml"
SAMPLES = REPO / "examples" / "data" / "org-123"
SEED_KEY = "org_123_orders_ORD001_CUST456_2024-01-15"
EXTRA_VERSIONS = 10
"""Changes of the seed's record beyond the demo's two: 12 versions, 2 over keepVersions (10)."""

EXIT_CODES = {"alerts": {0, 1}}
"""What each verb may exit with on this org: `alerts` exits 1 when alerts exist (the demo's bad file
raises some); every other line must exit 0 (validate's 1 would be a difference between the stores)."""


REPO_SEED = REPO / "docs" / "seed" / SEED_NAME
"""The project's copy of the seed, so a clone anywhere runs these tests; a shared copy beside the
checkout must be the same text (`test_the_projects_copy_of_the_seed_is_the_shared_one`)."""


def shared_seed_path() -> Path | None:
    env = os.environ.get("ORGPIPELINE_SEEDS")
    folders = [Path(env)] if env else [parent / "shared" / "seeds" for parent in REPO.parents]
    return next((f / SEED_NAME for f in folders if (f / SEED_NAME).is_file()), None)


def seed_path() -> Path | None:
    return shared_seed_path() or (REPO_SEED if REPO_SEED.is_file() else None)


SEED = seed_path()
SEED_TEXT = SEED.read_text(encoding="utf-8") if SEED else ""
NO_SEED = (
    f"the seed {SEED_NAME} is not in ORGPIPELINE_SEEDS, a shared/seeds/ beside the checkout nor docs/seed/"
)


def test_the_projects_copy_of_the_seed_is_the_shared_one() -> None:
    """Where the user's shared seed is at hand, the project's copy is its text word for word."""
    shared = shared_seed_path()
    if shared is None:
        pytest.skip("no shared seed beside the checkout to compare with")
    assert REPO_SEED.read_bytes() == shared.read_bytes(), f"copy {shared} to {REPO_SEED}"


def command_lines(text: str) -> list[list[str]]:
    """The distinct command lines of the seed after the program name, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found: list[list[str]] = []
    for line in joined.splitlines():
        line = line.strip()
        if line == PROGRAM or line.startswith(PROGRAM + " "):
            args = shlex.split(line, comments=True)[2:]
            if args not in found:
                found.append(args)
    return found


def sql_block(text: str, heading: str) -> str:
    """The seed's ```sql block under the heading that contains `heading`."""
    for title, body in re.findall(r"####\s*\*\*(.+?)\*\*\s*\n```sql\n(.*?)```", text, re.S):
        if heading in title:
            return str(body)
    raise AssertionError(f"no SQL under a heading {heading!r} in the seed")


LINES = command_lines(SEED_TEXT)
LINE_PARAMS = [pytest.param(args, id=" ".join(args)) for args in LINES] or [
    pytest.param([], marks=pytest.mark.skip(reason=NO_SEED))
]


@dataclass
class Demo:
    env: dict[str, str]
    """The org's own credentials (its Secret's, as its Jobs get them)."""
    manifest: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The command as a platform user runs it (the stack's environment)."""
        return subprocess.run([CLI, *args], capture_output=True, text=True, env=dict(os.environ), timeout=180)

    def json(self, *args: str, codes: tuple[int, ...] = (0,)) -> Any:
        done = self.cli(*args, "-o", "json")
        assert done.returncode in codes, done.stderr
        return json.loads(done.stdout)

    @contextmanager
    def as_org(self) -> Iterator[psycopg.Connection[Any]]:
        """The org's own login (its Secret's DSN), search_path set to the org's schema, as the
        seed's SQL expects; rolled back at the end."""
        with psycopg.connect(self.env["ORGPIPELINE_POSTGRES_DSN"]) as conn:
            assert conn.info.user == store_names.pg_role(ORG)
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(store_names.pg_schema(ORG))))
            try:
                yield conn
            finally:
                conn.rollback()


def seed_sql(conn: psycopg.Connection[Any], statement: str) -> psycopg.Cursor[Any]:
    """The seed's SQL, unchanged (as bytes: no placeholder parsing)."""
    return conn.execute(statement.encode())


def active_versions(conn: psycopg.Connection[Any]) -> set[tuple[str, int]]:
    rows = conn.execute("SELECT composite_key, version FROM raw_orders WHERE is_active")
    return {(str(k), int(v)) for k, v in rows}


def _drop(db: database.Databases) -> None:
    db.drop_collections(ORG)  # first: it takes the role's grants in FerretDB's database
    db.drop_postgres(ORG)


@pytest.fixture(scope="module")
def demo(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    if SEED is None:
        pytest.skip(NO_SEED)
    settings = operator_settings.from_env({**stack.as_environ(), "ORGPIPELINE_NAMESPACE": "default"})
    db = database.Databases(settings.postgres_dsn, settings.mongo_uri, settings.mongo_db)
    rt = runtime.Runtime(settings, cast(Any, None), db)  # credentials() needs no API server
    _, spec = load_manifest(MANIFEST)
    try:
        _drop(db)
        password = database.generate_password()
        db.provision(ORG, password)
        db.provision_mongo(ORG, [t.name for t in spec.tables], password)
        env = rt.credentials(spec, password, ("unused", "unused")).env()
        source = tmp_path_factory.mktemp("org-123")
        # The demo's files, in its order: the good ones, then the bad one in a later run.
        good, bad = _demo_files()
        for name in good:
            shutil.copy(SAMPLES / name, source / name)
        header = (SAMPLES / "orders_2024_01_15.csv").read_text().splitlines()[0]
        for n in range(1, EXTRA_VERSIONS + 1):
            (source / f"orders_2024_01_17_{n:02}.csv").write_text(
                f"{header}\nORD001,CUST456,PROD789,2024-01-15,{90 + n}.00,shipped,cust456@example.com,"
                f"change {n}\n"
            )
        jobs = Settings.from_env({**os.environ, **env})
        for table in ("orders", "customers"):
            assert pipeline.run_table(jobs, spec, table, None, str(source)).result == "Succeeded"
        shutil.copy(SAMPLES / bad, source / bad)
        pipeline.run_table(jobs, spec, "orders", None, str(source))
        yield Demo(env, MANIFEST)
    finally:
        _drop(db)
        rt.pool.shutdown()
        db.close()


def _demo_files() -> tuple[list[str], str]:
    """GOOD and BAD of hack/demo: the files `make demo` uploads."""
    text = (REPO / "hack" / "demo").read_text()
    good = re.search(r"^GOOD=\(([^)]*)\)", text, re.M)
    bad = re.search(r"^BAD=(\S+)", text, re.M)
    assert good and bad, "hack/demo no longer names its GOOD and BAD files"
    return good.group(1).split(), bad.group(1)


@pytest.mark.skipif(SEED is None, reason=NO_SEED)
def test_the_seed_is_read_whole() -> None:
    assert len(LINES) >= 20, LINES
    assert {args[0] for args in LINES} == {"status", "quality", "audit", "metrics", "alerts", "validate"}
    assert ["audit", "--org-id", "123", "--composite-key", SEED_KEY] in LINES  # a continued line
    assert "WHERE org_id = 'org_123'" in sql_block(SEED_TEXT, "Version Conflicts")
    assert "version_rank > 10" in sql_block(SEED_TEXT, "Automatic Archival")


@pytest.mark.parametrize("args", LINE_PARAMS)
def test_every_seed_command_line_runs_and_reports(demo: Demo, args: list[str]) -> None:
    done = demo.cli(*args)
    output = done.stdout + done.stderr
    assert done.returncode in EXIT_CODES.get(args[0], {0}), output
    assert "Traceback" not in output and done.stdout.strip(), output


def test_the_seeds_record_has_its_history(demo: Demo) -> None:
    history = demo.json("audit", "--org-id", ORG, "--composite-key", SEED_KEY)
    versions = history["versions"]
    assert [v["version"] for v in versions] == list(range(1, EXTRA_VERSIONS + 3))
    assert versions[1]["changes"]["amount"] == {"old": 99.99, "new": 89.99}


def test_version_conflict_query_answers_as_audit(demo: Demo) -> None:
    with demo.as_org() as conn:
        rows = seed_sql(conn, sql_block(SEED_TEXT, "Version Conflicts")).fetchall()
    found = {str(key): (list(versions), int(count)) for key, versions, count in rows}
    assert found[SEED_KEY] == (list(range(1, EXTRA_VERSIONS + 3)), EXTRA_VERSIONS + 2)
    changes = demo.json("audit", "--org-id", ORG, "--table", "orders", "--limit", "100000")["changes"]
    per_key = Counter(c["composite_key"] for c in changes)
    assert {k: n for k, n in per_key.items() if n > 1} == {k: c for k, (_, c) in found.items()}
    for key, (versions, _) in found.items():
        history = demo.json("audit", "--org-id", ORG, "--composite-key", key)["versions"]
        assert [v["version"] for v in history] == versions


def test_archive_statement_agrees_with_retention_dry_run(demo: Demo) -> None:
    """The seed's statement and the product's retention pick the same keys: those with more than 10
    versions. The product deactivates only the versions beyond the 10 (README, "The seed, as its
    users read it"); the seed's `composite_key IN (...)` deactivates every version of them."""
    with demo.as_org() as conn:
        before = active_versions(conn)
        counts = dict(conn.execute("SELECT composite_key, count(*) FROM raw_orders GROUP BY 1").fetchall())
        updated = seed_sql(conn, sql_block(SEED_TEXT, "Automatic Archival")).rowcount
        archived = before - active_versions(conn)
    over = {k for k, n in counts.items() if n > 10}
    assert over == {SEED_KEY} and {k for k, _ in archived} == over and updated == counts[SEED_KEY]
    dry = demo.json("retention", "--org-id", ORG, "-f", str(demo.manifest), "--dry-run")
    orders = next(t for t in dry["tables"] if t["table"] == "orders")
    assert orders["versions_deactivated"] == sum(counts[k] - 10 for k in over) == 2
    with demo.as_org() as conn:  # the seed's statement was rolled back, the dry run changed nothing
        assert active_versions(conn) == before
