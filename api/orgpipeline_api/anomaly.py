"""Pure: is a run an outlier against its table's own recent history?

Static thresholds miss a file with a tenth of the usual rows, or a quality drop that stays above
the floor. Here a run's rows read, rejected share and quality score are compared with the same
table's last successful runs, with statistics that a few odd runs in the history do not move:

- the expectation is a Theil-Sen line through the history over time (the median of the pairwise
  slopes, then the median intercept), so a table that grows steadily is not flagged for growing;
- its spread is the median absolute deviation of the history from that line (x 1.4826, which
  makes it comparable with a standard deviation), floored so that a perfectly steady history does
  not turn a 1% change into an alert;
- when the history holds enough runs of the same weekday, only those are the reference: a table
  whose weekend files are small is compared with its other weekends;
- a value more than `sensitivity` spreads away from the expectation (in the direction that is bad:
  volume either way, rejected share up, quality down) is an anomaly; the message gives the range.

Nothing is said until the history holds `min_history` successful runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from orgpipeline_api.run_report import AlertType

MAD_TO_SIGMA = 1.4826
SAME_WEEKDAY_MIN = 3
"""Runs of the same weekday the history needs before they alone are the reference."""


class AnomalyType(StrEnum):
    VolumeAnomaly = AlertType.VolumeAnomaly.value
    QualityAnomaly = AlertType.QualityAnomaly.value


@dataclass(frozen=True)
class RunPoint:
    """What the detector needs of one successful run."""

    at: datetime
    rows_read: int
    rejected_share: float
    """Rejected rows / rows read, 0..1."""
    quality_score: float


@dataclass(frozen=True)
class Settings:
    window: int = 30
    """The last N successful runs that form the history."""
    min_history: int = 5
    """No verdict with fewer successful runs than this."""
    sensitivity: float = 3.5
    """How many robust standard deviations away is an anomaly (3.5: Iglewicz and Hoaglin)."""


@dataclass(frozen=True)
class Anomaly:
    type: AnomalyType
    metric: str
    """rowsRead, rejectedShare or qualityScore."""
    value: float
    expected_low: float
    expected_high: float
    message: str


@dataclass(frozen=True)
class Expectation:
    center: float
    spread: float
    runs: int


@dataclass(frozen=True)
class _Metric:
    name: str
    label: str
    type: AnomalyType
    value: Callable[[RunPoint], float]
    floor: Callable[[float], float]
    """The smallest spread, given the expected value."""
    high_is_bad: bool
    low_is_bad: bool
    bounds: tuple[float, float | None]
    fmt: str


METRICS = (
    _Metric(
        "rowsRead",
        "rows read",
        AnomalyType.VolumeAnomaly,
        lambda p: float(p.rows_read),
        lambda center: max(abs(center) * 0.1, 1.0),
        high_is_bad=True,
        low_is_bad=True,
        bounds=(0.0, None),
        fmt="{:,.0f}",
    ),
    _Metric(
        "rejectedShare",
        "rejected share",
        AnomalyType.QualityAnomaly,
        lambda p: p.rejected_share,
        lambda _center: 0.01,
        high_is_bad=True,
        low_is_bad=False,
        bounds=(0.0, 1.0),
        fmt="{:.1%}",
    ),
    _Metric(
        "qualityScore",
        "quality score",
        AnomalyType.QualityAnomaly,
        lambda p: p.quality_score,
        lambda _center: 0.01,
        high_is_bad=False,
        low_is_bad=True,
        bounds=(0.0, 1.0),
        fmt="{:.3f}",
    ),
)


def expectation(
    history: Sequence[tuple[float, float]], at: float, floor: Callable[[float], float]
) -> Expectation:
    """The robust expectation at time `at` (days) from (time in days, value) points, and its spread."""
    xs = [t for t, _ in history]
    ys = [v for _, v in history]
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i])
        for i in range(len(xs))
        for j in range(i + 1, len(xs))
        if xs[j] != xs[i]
    ]
    slope = statistics.median(slopes) if slopes else 0.0
    intercept = statistics.median(y - slope * x for x, y in zip(xs, ys, strict=True))
    residuals = [y - (intercept + slope * x) for x, y in zip(xs, ys, strict=True)]
    mad = statistics.median(abs(r) for r in residuals)
    center = intercept + slope * at
    return Expectation(center, max(MAD_TO_SIGMA * mad, floor(center)), len(history))


def reference(history: Sequence[RunPoint], at: datetime) -> list[RunPoint]:
    """The runs to compare with: those of the same weekday when there are enough, else all."""
    same_day = [p for p in history if p.at.weekday() == at.weekday()]
    spans_weeks = bool(history) and (max(p.at for p in history) - min(p.at for p in history)).days >= 7
    return same_day if spans_weeks and len(same_day) >= SAME_WEEKDAY_MIN else list(history)


def detect(run: RunPoint, history: Sequence[RunPoint], settings: Settings = Settings()) -> list[Anomaly]:
    """The anomalies of `run` against `history` (successful runs of the same table, any order)."""
    recent = sorted(history, key=lambda p: p.at)[-settings.window :] if settings.window else []
    if len(recent) < settings.min_history:
        return []
    ref = reference(recent, run.at)
    origin = ref[0].at

    def days(t: datetime) -> float:
        return (t - origin).total_seconds() / 86400

    found = []
    for m in METRICS:
        exp = expectation([(days(p.at), m.value(p)) for p in ref], days(run.at), m.floor)
        value = m.value(run)
        low, high = (
            exp.center - settings.sensitivity * exp.spread,
            exp.center + settings.sensitivity * exp.spread,
        )
        low = max(low, m.bounds[0])
        high = min(high, m.bounds[1]) if m.bounds[1] is not None else high
        if (m.high_is_bad and value > high) or (m.low_is_bad and value < low):
            seasonal = " on this weekday" if len(ref) < len(recent) else ""
            message = (
                f"{m.label} {m.fmt.format(value)} is outside the expected range "
                f"{m.fmt.format(low)} to {m.fmt.format(high)} "
                f"(from the last {len(ref)} successful runs{seasonal})"
            )
            found.append(Anomaly(m.type, m.name, value, low, high, message))
    return found
