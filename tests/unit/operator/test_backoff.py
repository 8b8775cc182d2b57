"""The one back-off of the operator's retry loops: exponential, capped, jittered; logged once per
change of error."""

from __future__ import annotations

from orgpipeline_operator import backoff


def test_the_delay_doubles_to_its_cap_with_the_upper_half_random() -> None:
    low = [backoff.delay(n, 0.5, 30.0, rand=lambda: 0.0) for n in range(1, 12)]
    high = [backoff.delay(n, 0.5, 30.0, rand=lambda: 1.0) for n in range(1, 12)]
    assert high[:4] == [0.5, 1.0, 2.0, 4.0]
    assert low == [h / 2 for h in high]
    assert max(high) == 30.0 and high[-1] == 30.0


def test_a_streak_grows_per_key_says_when_the_error_changed_and_ends_on_success() -> None:
    s = backoff.Streak(first=1.0, cap=8.0)
    waits, news = zip(*(s.failed("a", "404 gone") for _ in range(6)), strict=True)
    assert news == (True, False, False, False, False, False)  # logged once, not per try
    assert all(w <= 8.0 for w in waits) and waits[-1] >= 4.0
    assert s.failed("a", "403 forbidden")[1] is True  # a new error is news
    assert s.failed("b", "404 gone")[0] <= 1.0  # another key starts afresh
    assert s.succeeded("a") == 7
    wait, new = s.failed("a", "404 gone")  # after a success, a streak starts afresh
    assert wait <= 1.0 and new
    assert s.failed("d", "slow", first=60.0)[0] >= 30.0  # an error asking for longer gets it
