"""Bar charts drawn on the server as SVG, so they need no script in the browser.

This module computes the geometry; ``templates/_bar_chart.html`` writes the
markup with autoescaping, a ``<title>`` and a ``<desc>`` for screen readers,
and a ``<title>`` on every bar. The page shows each chart's numbers in a table
beside it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relay.statistics import Bar

WIDTH = 640
# Space for the axis labels, in SVG user units.
LEFT = 48
BOTTOM = 36
TOP = 12
COLUMN_HEIGHT = 220
ROW_HEIGHT = 22
LABEL_WIDTH = 200
# At most this many labels along a time axis, so that they never overlap.
MAX_AXIS_LABELS = 8


@dataclass(frozen=True)
class DrawnBar:
    """One bar: its rectangle, its axis label (or '') and its accessible title."""

    x: float
    y: float
    width: float
    height: float
    label: str
    title: str
    label_x: float
    label_y: float


@dataclass(frozen=True)
class Chart:
    """A bar chart ready for ``_bar_chart.html``."""

    id: str
    title: str
    description: str
    width: int
    height: int
    horizontal: bool
    bars: list[DrawnBar]
    maximum: float
    axis_x: float
    axis_y: float


def _format(value: float) -> str:
    return f"{value:g}"


def column_chart(
    chart_id: str, title: str, description: str, bars: Sequence[Bar], unit: str
) -> Chart:
    """Lay out vertical bars over time, labelling at most ``MAX_AXIS_LABELS``."""
    height = TOP + COLUMN_HEIGHT + BOTTOM
    maximum = max((bar.value for bar in bars), default=0.0) or 1.0
    slot = (WIDTH - LEFT) / max(len(bars), 1)
    step = max(1, -(-len(bars) // MAX_AXIS_LABELS))
    drawn = []
    for index, bar in enumerate(bars):
        bar_height = COLUMN_HEIGHT * bar.value / maximum
        x = LEFT + index * slot + slot * 0.1
        drawn.append(
            DrawnBar(
                x=round(x, 2),
                y=round(TOP + COLUMN_HEIGHT - bar_height, 2),
                width=round(slot * 0.8, 2),
                height=round(bar_height, 2),
                label=bar.label if index % step == 0 else "",
                title=f"{bar.label}: {_format(bar.value)} {unit}",
                label_x=round(x, 2),
                label_y=TOP + COLUMN_HEIGHT + 16,
            )
        )
    return Chart(
        id=chart_id,
        title=title,
        description=description,
        width=WIDTH,
        height=height,
        horizontal=False,
        bars=drawn,
        maximum=maximum,
        axis_x=LEFT,
        axis_y=TOP + COLUMN_HEIGHT,
    )


def row_chart(
    chart_id: str, title: str, description: str, bars: Sequence[Bar], unit: str
) -> Chart:
    """Lay out horizontal bars, one row per label, for named categories."""
    height = TOP + ROW_HEIGHT * max(len(bars), 1) + BOTTOM
    maximum = max((bar.value for bar in bars), default=0.0) or 1.0
    span = WIDTH - LABEL_WIDTH - 40
    drawn = []
    for index, bar in enumerate(bars):
        y = TOP + index * ROW_HEIGHT
        drawn.append(
            DrawnBar(
                x=LABEL_WIDTH,
                y=y + 3,
                width=round(span * bar.value / maximum, 2),
                height=ROW_HEIGHT - 6,
                label=bar.label,
                title=f"{bar.label}: {_format(bar.value)} {unit}",
                label_x=LABEL_WIDTH - 8,
                label_y=y + ROW_HEIGHT - 7,
            )
        )
    return Chart(
        id=chart_id,
        title=title,
        description=description,
        width=WIDTH,
        height=height,
        horizontal=True,
        bars=drawn,
        maximum=maximum,
        axis_x=LABEL_WIDTH,
        axis_y=TOP + ROW_HEIGHT * max(len(bars), 1),
    )
