"""The command registry: a command line naming a command imports that command's module only, and
the registry lists exactly the commands each module registers."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import typer
from orgpipeline_cli import main


@pytest.mark.parametrize("module", main.COMMAND_MODULES)
def test_the_registry_names_what_each_module_registers(module: str) -> None:
    app = typer.Typer()
    importlib.import_module(module).register(app)
    names = [c.name for c in app.registered_commands] + [g.name for g in app.registered_groups]
    assert tuple(names) == main.COMMANDS[module]


def test_a_named_command_needs_its_module_only() -> None:
    assert main.modules_for(["run", "-f", "x.yaml"]) == ["orgpipeline_cli.pipeline"]
    assert main.modules_for(["health", "--org-id", "a"]) == ["orgpipeline_cli.manage.health"]
    # help, a typo or an option first: every command, so click can list or suggest them
    for argv in ([], ["--help"], ["rnu"]):
        assert main.modules_for(argv) == main.COMMAND_MODULES


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from orgpipeline_cli import main; sys.argv[0] = 'orgpipeline'; main.run()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


def test_help_lists_every_command_and_one_command_modules_stay_commands() -> None:
    listing = cli("--help")
    assert listing.returncode == 0
    for names in main.COMMANDS.values():
        for name in names:
            assert name in listing.stdout
    # `health` is its module's only command: still `orgpipeline health`, not the app itself
    one = cli("health", "--help")
    assert one.returncode == 0 and "Usage: orgpipeline health" in one.stdout
    typo = cli("rnu")
    assert typo.returncode == 2 and "No such command" in typo.stderr
