"""One command line in a process of its own, timed as a pod sees it: the process wall from start
to exit, its own CPU time and peak RSS (`os.wait4`: this child's, not every child's so far), and
what it printed. Shared by bench/runcost.py, bench/dataplane.py and bench/landing_readers.py."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Timed:
    wall: float
    """Seconds from start to exit."""
    cpu: float
    """User + system CPU seconds of the process."""
    rss_mb: float
    """Its peak resident set, MB."""
    code: int
    stdout: str
    stderr: str


def run_process(argv: list[str], env: dict[str, str], check: bool = True) -> Timed:
    """Runs `argv`; with `check`, a non-zero exit ends the benchmark with the command's stderr."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if check and code != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed ({code}): {stderr[-3000:]}")
    return Timed(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, code, stdout, stderr)
