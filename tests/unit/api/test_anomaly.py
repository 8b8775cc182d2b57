"""Anomaly detection on synthetic histories: steady, trending, weekly pattern, too little history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orgpipeline_api import anomaly
from orgpipeline_api.anomaly import AnomalyType, RunPoint

START = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)  # a Monday


def point(day: float, rows: int, rejected: float = 0.0, quality: float = 0.99) -> RunPoint:
    return RunPoint(START + timedelta(days=day), rows, rejected, quality)


def steady(n: int = 6, rows: int = 1000) -> list[RunPoint]:
    # a little noise, as real files have
    return [point(i, rows + (i % 3) * 7 - 7, 0.002 * (i % 2), 0.99 - 0.002 * (i % 2)) for i in range(n)]


def types(found: list[anomaly.Anomaly]) -> list[AnomalyType]:
    return [a.type for a in found]


def test_steady_history_then_a_tenth_of_the_rows_is_a_volume_anomaly() -> None:
    (found,) = anomaly.detect(point(6, 50), steady())
    assert found.type == AnomalyType.VolumeAnomaly and found.metric == "rowsRead"
    assert found.expected_low > 50 and found.expected_high > 1000
    assert found.message.startswith("rows read 50 is outside the expected range ")
    assert "(from the last 6 successful runs)" in found.message


def test_steady_history_accepts_ordinary_variation_and_flags_a_spike() -> None:
    assert anomaly.detect(point(6, 1100), steady()) == []
    assert anomaly.detect(point(6, 920), steady()) == []
    assert types(anomaly.detect(point(6, 10_000), steady())) == [AnomalyType.VolumeAnomaly]


def test_too_little_history_says_nothing() -> None:
    assert anomaly.detect(point(4, 1), steady(4)) == []
    assert anomaly.detect(point(4, 1), steady(4), anomaly.Settings(min_history=4)) != []
    assert anomaly.detect(point(0, 1), []) == []


def test_a_trend_is_expected_to_continue() -> None:
    growing = [point(i, 1000 + 100 * i) for i in range(20)]  # 1,000 -> 2,900 rows a day
    assert anomaly.detect(point(20, 3000), growing) == []
    # what was normal at the start is far below the trend now
    assert types(anomaly.detect(point(20, 1000), growing)) == [AnomalyType.VolumeAnomaly]


def test_a_weekly_pattern_compares_with_the_same_weekday() -> None:
    # four weeks of daily runs: weekends bring a tenth of the weekday rows
    history = [point(d, 100 if (START + timedelta(days=d)).weekday() >= 5 else 1000) for d in range(28)]
    saturday, tuesday = 33, 29
    assert (START + timedelta(days=saturday)).weekday() == 5
    assert anomaly.detect(point(saturday, 100), history, anomaly.Settings(window=28)) == []
    (found,) = anomaly.detect(point(tuesday, 100), history, anomaly.Settings(window=28))
    assert found.type == AnomalyType.VolumeAnomaly
    assert "on this weekday" in found.message


def test_a_quality_drop_and_a_rejected_share_jump_are_quality_anomalies() -> None:
    found = anomaly.detect(point(6, 1000, rejected=0.2, quality=0.80), steady())
    assert sorted((a.type, a.metric) for a in found) == [
        (AnomalyType.QualityAnomaly, "qualityScore"),
        (AnomalyType.QualityAnomaly, "rejectedShare"),
    ]
    assert any(
        a.message.startswith("rejected share 20.0% is outside the expected range 0.0% to") for a in found
    )


def test_better_quality_is_no_anomaly() -> None:
    history = [point(i, 1000, rejected=0.05, quality=0.9) for i in range(6)]
    assert anomaly.detect(point(6, 1000, rejected=0.0, quality=1.0), history) == []


def test_one_odd_run_in_the_history_does_not_move_the_expectation() -> None:
    history = steady(10)
    history[4] = point(4, 20)  # an earlier bad file
    assert anomaly.detect(point(10, 1000), history) == []
    assert types(anomaly.detect(point(10, 50), history)) == [AnomalyType.VolumeAnomaly]


def test_only_the_last_window_of_runs_counts() -> None:
    old = [point(i, 10) for i in range(20)]
    recent = [point(20 + i, 1000) for i in range(6)]
    settings = anomaly.Settings(window=6)
    assert anomaly.detect(point(26, 1000), old + recent, settings) == []
    assert anomaly.detect(point(26, 10), old + recent, settings) != []


def test_sensitivity_widens_the_range() -> None:
    assert anomaly.detect(point(6, 600), steady()) != []
    assert anomaly.detect(point(6, 600), steady(), anomaly.Settings(sensitivity=10)) == []
