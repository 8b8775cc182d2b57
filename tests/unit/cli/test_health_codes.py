"""`orgpipeline health`: what the checks mean for the exit code (pure)."""

from __future__ import annotations

from orgpipeline_cli.manage import health
from orgpipeline_cli.manage.health import Check


def checks(*statuses: str) -> list[Check]:
    return [Check(f"c{i}", s, "detail") for i, s in enumerate(statuses)]


def test_ok_and_skipped_are_healthy() -> None:
    assert health.exit_code(checks("ok", "skipped", "ok")) == 0


def test_unreachable_outranks_a_wrong_setting_which_outranks_a_failed_check() -> None:
    assert health.exit_code(checks("ok", "failed")) == 1
    assert health.exit_code(checks("failed", "misconfigured")) == 2
    assert health.exit_code(checks("misconfigured", "unreachable", "failed")) == 3
