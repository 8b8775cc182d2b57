"""Who and why of a run: what a Job's variables and a run-now request's annotations become."""

from __future__ import annotations

import socket

import pytest
from orgpipeline_api import triggers
from orgpipeline_api.triggers import RunTrigger, Trigger


def test_without_variables_a_run_is_manual_by_its_user_id_or_its_caller() -> None:
    assert triggers.from_env({}, "bob") == RunTrigger(Trigger.manual, "bob", None)
    caller = triggers.from_env({}).user
    assert caller == triggers.caller() and caller.endswith("@" + socket.gethostname())


def test_the_jobs_variables_name_trigger_user_and_reason() -> None:
    env = {e["name"]: e["value"] for e in RunTrigger(Trigger.run_now, "alice", "late file").job_env()}
    assert triggers.from_env(env) == RunTrigger(Trigger.run_now, "alice", "late file")
    schedule = {e["name"]: e["value"] for e in triggers.scheduled("ingest-orders").job_env()}
    assert triggers.from_env(schedule) == RunTrigger(Trigger.schedule, "system:schedule:ingest-orders", None)


@pytest.mark.parametrize(
    ("trigger", "user"),
    [
        ("schedule", "system:schedule"),
        ("file-arrival", "system:file-arrival"),
        ("run-now", "unknown:run-now"),
    ],
)
def test_a_job_that_names_no_user_still_records_one(trigger: str, user: str) -> None:
    """Jobs an older operator made carry an empty ORGPIPELINE_TRIGGERED_BY: never a null user."""
    env = {triggers.ENV_TRIGGER: trigger, triggers.ENV_TRIGGERED_BY: ""}
    assert triggers.from_env(env).user == user


def test_a_file_arrival_names_each_files_uploader() -> None:
    one = triggers.file_arrival({"in/a.csv": "alice"}, "new object")
    assert one.user == "alice"
    both = triggers.file_arrival({"in/a.csv": "alice", "in/b.csv": "bob"}, "2 new objects")
    assert both.user == "alice, bob"
    env = {e["name"]: e["value"] for e in both.job_env()}
    read = triggers.from_env(env)
    assert read.for_file("in/b.csv") == RunTrigger(Trigger.file_arrival, "bob", "2 new objects")
    assert read.for_file("in/other.csv").user == "alice, bob"  # a file no event named
    assert triggers.file_arrival({}, "new object").user == "system:file-arrival"
    broken = {**env, triggers.ENV_TRIGGER_UPLOADERS: "[not an object"}
    assert triggers.from_env(broken).for_file("in/b.csv").user == "alice, bob"


def test_a_run_now_without_requester_says_it_is_unknown_and_who_wrote_it() -> None:
    assert triggers.run_now_request({}).user == "unknown:run-now"
    assert triggers.run_now_request({}, "kubectl-annotate").user == "unknown:run-now:kubectl-annotate"
    named = {triggers.ANNOTATION_RUN_NOW_REQUESTER: "alice"}
    assert triggers.run_now_request(named, "kubectl-annotate").user == "alice"


def test_an_unknown_trigger_is_refused_with_the_known_ones() -> None:
    with pytest.raises(triggers.TriggerError, match=r"ORGPIPELINE_TRIGGER='cron' is not a trigger.*run-now"):
        triggers.from_env({triggers.ENV_TRIGGER: "cron"})


def test_blank_values_are_unknown_and_long_ones_are_cut() -> None:
    request = triggers.run_now_request(
        {triggers.ANNOTATION_RUN_NOW_REQUESTER: "  ", triggers.ANNOTATION_RUN_NOW_REASON: "x" * 5000}
    )
    assert request.user == "unknown:run-now" and request.reason == "x" * triggers.MAX_REASON
    assert request.as_document() == {
        "type": "run-now",
        "user": "unknown:run-now",
        "reason": "x" * triggers.MAX_REASON,
    }


def test_the_uploaders_of_a_file_arrival_job_are_bounded() -> None:
    many = {f"in/{'k' * 1000}_{i}.csv": f"user{i}" for i in range(100)}
    trigger = triggers.file_arrival(many, "100 new objects")
    (env,) = [e["value"] for e in trigger.job_env() if e["name"] == triggers.ENV_TRIGGER_UPLOADERS]
    assert len(env) <= triggers.MAX_UPLOADERS_BYTES and 20 < len(trigger.uploaders) < 100
