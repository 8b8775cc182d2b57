"""`orgpipeline-operator` as a user runs it: --help without any setting, bad settings -> exit 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

from orgpipeline_operator import operator_settings

BIN = Path(__file__).resolve().parents[3] / ".venv" / "bin" / "orgpipeline-operator"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args], env=env or {}, capture_output=True, text=True, timeout=60, check=False
    )


def test_help_exits_0_without_validating_the_settings() -> None:
    for flag in ("--help", "-h"):
        proc = _run(flag, env={"ORGPIPELINE_RESYNC_SECONDS": "abc", "ORGPIPELINE_WORKERS": "x"})
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("usage: orgpipeline-operator")
        assert "OrgPipeline" in proc.stdout and "invalid" not in proc.stdout + proc.stderr
        for var in ("ORGPIPELINE_POSTGRES_DSN", "ORGPIPELINE_JOB_IMAGE", "ORGPIPELINE_LOG_LEVEL"):
            assert var in proc.stdout
        assert "Traceback" not in proc.stderr


def test_help_names_every_setting() -> None:
    text = operator_settings.help_text()
    for var in operator_settings._ENV.values():
        assert var in text


def test_bad_settings_exit_2_with_one_clear_message() -> None:
    proc = _run(env={"ORGPIPELINE_RESYNC_SECONDS": "abc"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("orgpipeline-operator: invalid operator settings:")
    assert "ORGPIPELINE_POSTGRES_DSN is required" in lines[0]
    assert "ORGPIPELINE_RESYNC_SECONDS='abc' is not a float" in lines[0]


def test_unknown_argument_exits_2() -> None:
    proc = _run("--bogus")
    assert proc.returncode == 2 and "unexpected argument '--bogus'" in proc.stderr
