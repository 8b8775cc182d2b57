"""Who and why of a run: what a Job's variables and a run-now request's annotations become."""

from __future__ import annotations

import pytest
from orgpipeline_api import triggers
from orgpipeline_api.triggers import RunTrigger, Trigger


def test_without_variables_a_run_is_manual_with_its_user_id() -> None:
    assert triggers.from_env({}, "bob") == RunTrigger(Trigger.manual, "bob", None)
    assert triggers.from_env({}) == RunTrigger(Trigger.manual, None, None)


def test_the_jobs_variables_name_trigger_user_and_reason() -> None:
    env = {e["name"]: e["value"] for e in RunTrigger(Trigger.run_now, "alice", "late file").job_env()}
    assert triggers.from_env(env) == RunTrigger(Trigger.run_now, "alice", "late file")
    schedule = {e["name"]: e["value"] for e in triggers.SCHEDULE.job_env()}
    assert triggers.from_env(schedule) == RunTrigger(Trigger.schedule, None, None)


def test_an_unknown_trigger_is_refused_with_the_known_ones() -> None:
    with pytest.raises(triggers.TriggerError, match=r"ORGPIPELINE_TRIGGER='cron' is not a trigger.*run-now"):
        triggers.from_env({triggers.ENV_TRIGGER: "cron"})


def test_blank_values_are_unknown_and_long_ones_are_cut() -> None:
    request = triggers.run_now_request(
        {triggers.ANNOTATION_RUN_NOW_REQUESTER: "  ", triggers.ANNOTATION_RUN_NOW_REASON: "x" * 5000}
    )
    assert request.user is None and request.reason == "x" * triggers.MAX_REASON
    assert request.as_document() == {"type": "run-now", "user": None, "reason": "x" * triggers.MAX_REASON}
