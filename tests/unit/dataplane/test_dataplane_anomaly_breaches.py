"""A run's anomalies as report breaches: one per type, off when the table says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orgpipeline_api.anomaly import RunPoint
from orgpipeline_api.v1alpha1 import AnomalyDetection
from orgpipeline_jobs import anomalies

START = datetime(2026, 11, 2, tzinfo=UTC)
HISTORY = [RunPoint(START + timedelta(days=i), 1000 + i, 0.0, 0.99) for i in range(6)]


def test_one_breach_per_type_with_the_violated_bound() -> None:
    run = RunPoint(START + timedelta(days=6), 50, 0.3, 0.7)
    found = anomalies.breaches(run, HISTORY, AnomalyDetection())
    assert [b.type for b in found] == ["VolumeAnomaly", "QualityAnomaly"]
    volume, quality = found
    assert volume.value == 50 and volume.threshold is not None and 50 < volume.threshold < 1000
    assert volume.severity == "warning"
    assert quality.message.startswith("rejected share 30.0% is outside the expected range")
    assert "; quality score 0.700 is outside the expected range" in quality.message


def test_turned_off_or_nothing_read_is_no_breach() -> None:
    run = RunPoint(START + timedelta(days=6), 50, 0.0, 0.99)
    assert anomalies.breaches(run, HISTORY, AnomalyDetection(enabled=False)) == []
    assert anomalies.breaches(RunPoint(run.at, 0, 0.0, 0.99), HISTORY, AnomalyDetection()) == []
    assert anomalies.breaches(run, HISTORY, AnomalyDetection(min_history=7, window=30)) == []
