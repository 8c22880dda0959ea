"""Figures: grouped bars of ratios, one PNG per workload (matplotlib, Agg)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["Panel", "save_panels"]


class Panel:
    """One axes of grouped bars: ``values[s][g]`` is series ``s`` in group
    ``g``; ``goal`` draws a dashed line (with ``goal_label``)."""

    def __init__(
        self,
        title: str,
        groups: Sequence[str],
        series: dict[str, Sequence[float]],
        *,
        ylabel: str,
        goal: float | None = None,
        goal_label: str = "goal",
        log: bool = False,
    ) -> None:
        self.title = title
        self.groups = list(groups)
        self.series = series
        self.ylabel = ylabel
        self.goal = goal
        self.goal_label = goal_label
        self.log = log

    def draw(self, ax: Any) -> None:
        count = max(len(self.series), 1)
        width = 0.8 / count
        for index, (name, values) in enumerate(self.series.items()):
            offsets = [g + (index - (count - 1) / 2) * width for g in range(len(self.groups))]
            bars = ax.bar(offsets, values, width, label=name)
            ax.bar_label(bars, labels=[_label(v) for v in values], fontsize=6, padding=2)
        if self.goal is not None:
            ax.axhline(self.goal, color="black", linestyle="--", linewidth=1, label=self.goal_label)
        ax.axhline(1.0, color="grey", linewidth=0.6)
        ax.set_xticks(range(len(self.groups)), self.groups, fontsize=8)
        ax.set_ylabel(self.ylabel, fontsize=8)
        ax.set_title(self.title, fontsize=9)
        if self.log:
            ax.set_yscale("log")
        ax.margins(y=0.15)
        ax.legend(fontsize=7)


def _label(value: float) -> str:
    if math.isnan(value):  # nothing measured
        return ""
    return f"{value:.3g}x"


def save_panels(path: Path, title: str, panels: Sequence[Panel], columns: int = 0) -> Path:
    """Draw the panels in a grid of ``columns`` (default: one row) and write
    the PNG; return its path."""
    columns = columns or len(panels)
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(5.2 * columns, 3.8 * rows))
    FigureCanvasAgg(figure)  # render with Agg, whatever pyplot's backend is
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for panel, ax in zip(panels, axes, strict=False):
        panel.draw(ax)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
