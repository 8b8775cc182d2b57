"""Small terminal charts: a sparkline for a trend, a bar for a share. Plain text, no colours.

The trend of a quality score is read at a glance only when its scale is visible, so the sparkline is
always printed next to its minimum and maximum by the callers.
"""

from __future__ import annotations

from collections.abc import Sequence

BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None], low: float | None = None, high: float | None = None) -> str:
    """One character per value, from ▁ (low) to █ (high); a gap (space) where a value is missing."""
    present = [v for v in values if v is not None]
    if not present:
        return " " * len(values)
    lo = min(present) if low is None else low
    hi = max(present) if high is None else high
    span = hi - lo
    out = []
    for value in values:
        if value is None:
            out.append(" ")
        elif span <= 0:
            out.append(BLOCKS[-1])
        else:
            clipped = min(max(value, lo), hi)
            out.append(BLOCKS[round((clipped - lo) / span * (len(BLOCKS) - 1))])
    return "".join(out)


def bar(fraction: float, width: int = 20) -> str:
    """A horizontal bar of `width` cells filled to `fraction` (0..1), in eighths of a cell."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, rest = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[rest] if rest else ""
    return ("█" * full + partial).ljust(width)
