"""A scheduled `orgpipeline run` that finds nothing new stays light: it imports neither the ingest
engine (pyarrow), nor MongoDB's driver, nor the tables of the reporting commands (rich), nor the
command-line framework (typer, click), nor the minio client (its S3 listing is `source.s3`), and
still prints its whole result and exits 0. Behaviour checked through `sys.modules` of a real command
line; the time it saves is measured by bench/runcost.py, not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import Org, order, orders_csv

HEAVY = (
    "pyarrow",
    "pymongo",
    "bson",
    "rich",
    "orgpipeline_jobs.ingest",
    "orgpipeline_cli.manage",
    "typer",
    "click",
    "minio",
    "urllib3",
)

PROBE = """
import json, sys
from orgpipeline_cli import main
sys.argv = ["orgpipeline", *sys.argv[1:]]
try:
    main._main()
finally:
    heavy = sorted({m for m in sys.modules for h in HEAVY if m == h or m.startswith(h + ".")})
    print(json.dumps({"heavy": heavy}), file=sys.stderr)
"""


def probe(org: Org, *args: str) -> tuple[dict[str, object], list[str]]:
    """(the result `-o json` printed, the heavy modules the process imported)."""
    code = f"HEAVY = {HEAVY!r}\n{PROBE}"
    done = subprocess.run(
        [sys.executable, "-c", code, *args, "-f", str(org.path), "-o", "json"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    heavy = json.loads(done.stderr.strip().splitlines()[-1])["heavy"]
    return json.loads(done.stdout), heavy


def test_a_run_with_nothing_new_imports_no_engine_driver_or_tables(org: Org) -> None:
    org.upload("orders_1.csv", orders_csv([order(1), order(2)]))
    first, heavy = probe(org, "run", "--table", "orders")
    assert first["result"] == "Succeeded" and first["inserted"] == 2
    assert "pyarrow" in heavy and "pymongo" in heavy  # the probe sees what a run with work imports
    assert not {"typer", "click", "minio", "urllib3"} & {m.split(".")[0] for m in heavy}

    again, heavy = probe(org, "run", "--table", "orders")
    assert again["result"] == "NoNewFiles" and again["rows_read"] == 0
    assert heavy == []


def test_the_script_prints_the_whole_result_and_its_exit_status(org: Org) -> None:
    """The entry point ends the process itself (no interpreter teardown): output still complete."""
    org.upload("orders_1.csv", orders_csv([order(i) for i in range(300)]))
    done = org.cli("run", "-f", str(org.path), "-o", "json")  # every table: one larger document
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [r["table"] for r in result["runs"]] == ["orders", "customers"]
    assert result["runs"][0]["inserted"] == 300
    missing = org.cli("run", "-f", str(org.path), "--table", "nope", "-o", "json")
    assert missing.returncode == 1 and missing.stderr.startswith("orgpipeline: error: ")
    usage = org.cli("run", "--no-such-option")
    assert usage.returncode == 2 and "No such option" in usage.stderr


def test_run_reads_its_options_as_typer_does_and_leaves_the_rest_to_typer(org: Org) -> None:
    """`run`'s plain options skip typer (`quickrun`); every other form, and help, still reach typer."""
    org.upload("orders_1.csv", orders_csv([order(1)]))
    done = org.cli("run", f"--filename={org.path}", "--table=orders", "--output", "json", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["inserted"] == 1
    table = org.cli("run", "-f", str(org.path), "--table", "orders")  # -o table: for people
    assert table.returncode == 0 and "NoNewFiles" in table.stdout
    bad = org.cli("run", "-f", str(org.path), "-o", "yaml")
    assert bad.returncode == 2 and "Invalid value for '-o' / '--output'" in bad.stderr
    missing = org.cli("run", "--table", "orders")
    assert missing.returncode == 2 and "Missing option '-f' / '--filename'" in missing.stderr
    helped = org.cli("run", "--help")
    assert helped.returncode == 0 and "Usage: orgpipeline run" in helped.stdout
