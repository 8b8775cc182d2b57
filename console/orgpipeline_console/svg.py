"""Server-made SVG charts: 30 days of a table's quality (a line) and volume (bars), with the
range anomaly detection expects of the next run hatched where it is on. No script, no colour
carries meaning alone: the band is hatched and named in the legend, points are marked, and the
page gives the same figures in a table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 720, 200
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 16, 28


def _fmt(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 1_000:
        return f"{value / 1_000:.1f}k"
    return f"{value:.0f}"


def chart(
    chart_id: str,
    title: str,
    days: Sequence[str],
    values: Sequence[float | None],
    kind: str,
    low: float = 0.0,
    high: float | None = None,
    band: tuple[float, float] | None = None,
    percent: bool = False,
) -> str:
    """One panel: `kind` "line" (missing days leave a gap) or "bars"; `band` (low, high) hatched."""
    present = [v for v in values if v is not None]
    top = high if high is not None else max([*present, *(band or ()), 1.0])
    top = top if top > low else low + 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = max(len(days), 1)
    step = plot_w / n

    def x(i: int) -> float:
        return LEFT + step * (i + 0.5)

    def y(v: float) -> float:
        clipped = min(max(v, low), top)
        return TOP + plot_h * (1 - (clipped - low) / (top - low))

    def label(v: float) -> str:
        return f"{v:.0%}" if percent else _fmt(v)

    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-labelledby="{chart_id}-title {chart_id}-desc" class="chart" id="{chart_id}">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(_describe(days, values, band, label))}</desc>',
        f'<defs><pattern id="{chart_id}-hatch" width="8" height="8" patternUnits="userSpaceOnUse"'
        ' patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="8" class="hatch"/></pattern></defs>',
    ]
    for frac in (0.0, 0.5, 1.0):
        v = low + (top - low) * frac
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>')
        parts.append(
            f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" class="axis" text-anchor="end">{label(v)}</text>'
        )
    if band is not None:
        y1, y2 = y(band[1]), y(band[0])
        parts.append(
            f'<rect x="{LEFT}" y="{y1:.1f}" width="{plot_w}" height="{max(y2 - y1, 1):.1f}"'
            f' fill="url(#{chart_id}-hatch)" class="band"><title>expected range {label(band[0])}'
            f" to {label(band[1])}</title></rect>"
        )
    if kind == "bars":
        for i, bar in enumerate(values):
            if bar:
                v = bar
                parts.append(
                    f'<rect x="{x(i) - step * 0.35:.1f}" y="{y(v):.1f}" width="{step * 0.7:.1f}"'
                    f' height="{y(low) - y(v):.1f}" class="bar">'
                    f"<title>{escape(days[i])}: {label(v)}</title></rect>"
                )
    else:
        segment: list[str] = []
        for i, point in enumerate([*values, None]):
            if point is None:
                if len(segment) > 1:
                    parts.append(f'<polyline points="{" ".join(segment)}" class="line"/>')
                segment = []
                continue
            segment.append(f"{x(i):.1f},{y(point):.1f}")
            parts.append(
                f'<circle cx="{x(i):.1f}" cy="{y(point):.1f}" r="3.5" class="point">'
                f"<title>{escape(days[i])}: {label(point)}</title></circle>"
            )
    for i in (0, len(days) // 2, len(days) - 1):
        if 0 <= i < len(days):
            parts.append(
                f'<text x="{x(i):.1f}" y="{HEIGHT - 8}" class="axis"'
                f' text-anchor="middle">{days[i][5:]}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _describe(days: Sequence[str], values: Sequence[float | None], band: Any, label: Any) -> str:
    present = [(d, v) for d, v in zip(days, values, strict=True) if v is not None and v != 0]
    text = f"{len(present)} of {len(days)} days with data"
    if present:
        lo = min(present, key=lambda p: p[1])
        hi = max(present, key=lambda p: p[1])
        text += f"; lowest {label(lo[1])} on {lo[0]}, highest {label(hi[1])} on {hi[0]}"
    if band is not None:
        text += f"; expected range of the next run {label(band[0])} to {label(band[1])} (hatched)"
    return text + "."
