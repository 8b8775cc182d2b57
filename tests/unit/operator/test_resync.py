"""The resync loop's schedule: first resync one interval after an org is seen, the next one an
interval after the previous ended, a failure's delay, resumes first, none once deletion began."""

from __future__ import annotations

import logging
import threading
from typing import cast

import pytest
from orgpipeline_operator.resync import RETRY_CAP_SECONDS, Resyncer, Schedule
from orgpipeline_operator.runtime import Runtime


def test_an_org_is_resynced_one_interval_after_it_was_handled_then_after_each_end() -> None:
    s = Schedule(30)
    assert s.take_due(["a"], now=1000) == []  # seen, not yet created: no resync beside the create
    s.handled("a", now=0)
    assert s.take_due(["a"], now=0) == []
    assert s.take_due(["a"], now=29) == []
    assert s.take_due(["a"], now=30) == [("a", "resync")]
    assert s.take_due(["a"], now=100) == []  # running: never twice at once
    s.finish("a", now=100)
    assert s.take_due(["a"], now=129) == []
    assert s.take_due(["a"], now=130) == [("a", "resync")]


def test_a_failure_comes_back_after_its_delay_and_a_failed_resume_stays_a_resume() -> None:
    s = Schedule(300)
    s.resume("a", now=0)
    assert s.take_due(["a"], now=0) == [("a", "resume")]
    s.finish("a", now=1, delay=15)
    assert s.take_due(["a"], now=15) == []
    assert s.take_due(["a"], now=16) == [("a", "resume")]
    s.finish("a", now=17)
    assert s.take_due(["a"], now=317) == [("a", "resync")]


def test_stop_waits_for_the_resync_in_flight_and_no_other_starts() -> None:
    s = Schedule(1)
    s.handled("a", now=0)
    assert s.take_due(["a"], now=1) == [("a", "resync")]
    threading.Timer(0.05, lambda: s.finish("a", now=2)).start()
    assert s.stop("a", timeout=5)
    assert s.take_due(["a"], now=100) == []
    s.forget("a")  # the object is gone; one of the same name starts anew
    s.handled("a", now=100)
    assert s.take_due(["a"], now=101) == [("a", "resync")]


def test_stop_gives_up_on_a_resync_that_does_not_end() -> None:
    s = Schedule(1)
    s.handled("a", now=0)
    s.take_due(["a"], now=1)
    assert not s.stop("a", timeout=0.01)


def test_a_heal_is_due_at_once_and_a_failed_heal_stays_a_heal() -> None:
    """A watch event that a child was deleted behind the operator: repaired now, not in 300 s."""
    s = Schedule(300)
    s.heal("a", now=0)  # not yet handled (its create makes the children): nothing to heal
    assert s.take_due(["a"], now=0) == []
    s.handled("a", now=0)
    s.heal("a", now=10)
    assert s.take_due(["a"], now=10) == [("a", "heal")]
    s.finish("a", now=11, delay=1, trigger="heal")
    assert s.take_due(["a"], now=11.5) == []
    assert s.take_due(["a"], now=12) == [("a", "heal")]
    s.finish("a", now=13, trigger="heal")
    assert s.take_due(["a"], now=312) == []
    assert s.take_due(["a"], now=313) == [("a", "resync")]


def test_a_heal_asked_for_during_a_resync_runs_right_after_it() -> None:
    s = Schedule(300)
    s.handled("a", now=0)
    assert s.take_due(["a"], now=300) == [("a", "resync")]
    s.heal("a", now=301)  # the event came while the resync ran (on what it read before)
    assert s.take_due(["a"], now=301) == []  # never twice at once
    s.finish("a", now=302)
    assert s.take_due(["a"], now=302) == [("a", "heal")]


def test_no_heal_once_deletion_began() -> None:
    s = Schedule(300)
    s.handled("a", now=0)
    assert s.stop("a", timeout=1)
    s.heal("a", now=1)
    assert s.take_due(["a"], now=1) == []


def test_a_failing_org_backs_off_doubling_to_a_cap_and_logs_once_per_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = Resyncer(cast("Runtime", None), interval=300, deep_interval=3600, workers=1)
    try:
        with caplog.at_level(logging.WARNING, logger="orgpipeline.operator"):
            delays = [r._backoff("a", 1.0, "404 namespace gone") for _ in range(8)]
            r._backoff("a", 1.0, "403 being terminated")
        assert delays[0] == 1.0
        for n, delay in enumerate(delays[1:], start=2):
            exp = min(RETRY_CAP_SECONDS, 2.0 ** (n - 1))
            assert exp / 2 <= delay <= exp
        assert max(delays) <= RETRY_CAP_SECONDS
        assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
            "resync failed, retrying with back-off (from 1.0s): 404 namespace gone",
            "resync failed, retrying with back-off (from 1.0s): 403 being terminated",
        ]
        assert r._backoff("b", 60.0, "slow") == 60.0  # an error asking for longer gets it
    finally:
        r.close()


def test_an_org_asked_for_soon_is_due_at_once_even_before_its_create_handler_ended() -> None:
    schedule = Schedule(interval=60)
    schedule.soon("early", now=0)  # its grant written while its create handler still ran
    schedule.handled("early", now=1)
    schedule.handled("later", now=1)
    schedule.soon("later", now=2)

    assert sorted(schedule.take_due(["early", "later"], now=2)) == [("early", "resync"), ("later", "resync")]
