"""Charts drawn on the server: the geometry of an SVG bar chart, computed here and drawn by
a template (``chart.html``), so a chart needs no script and every label is escaped text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from salesmgr.cli.views import money_text
from salesmgr.reports import ForecastRow, money_2dp

WIDTH = 640
LABEL = 150  # room for the group's name on the left
FIGURES = 190  # room for the amounts on the right
ROW = 40
BAR = 14


def amount(value: Decimal) -> str:
    return money_text(f"{money_2dp(value):f}")


@dataclass(frozen=True)
class Bar:
    label: str
    count: int
    value: str  # the amounts as shown
    weighted: str
    y: int
    value_width: float
    weighted_width: float


@dataclass(frozen=True)
class BarChart:
    """Value (light) and weighted value (dark) per group of one currency, on one scale."""

    currency: str
    bars: list[Bar]
    width: int = WIDTH
    label_width: int = LABEL
    bar_room: int = WIDTH - LABEL - FIGURES
    row: int = ROW
    bar: int = BAR

    @property
    def height(self) -> int:
        return self.row * len(self.bars) + 8


def bar_chart(currency: str, rows: Sequence[ForecastRow], empty: str = "(none)") -> BarChart:
    room = WIDTH - LABEL - FIGURES
    largest = max((row.value for row in rows), default=Decimal(0)) or Decimal(1)
    bars = [
        Bar(
            row.group or empty, row.count, amount(row.value), amount(row.weighted),
            index * ROW + 4,
            float(row.value / largest) * room,
            float(row.weighted / largest) * room,
        )
        for index, row in enumerate(rows)
    ]
    return BarChart(currency, bars)
