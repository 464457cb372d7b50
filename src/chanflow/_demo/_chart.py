"""Horizontal bar charts of measured costs, for the demo and for the benchmarks.

One look should say who wins: each contestant's median is a bar, its spread (the
lowest and highest sample) a whisker, chanflow's rows are blue and the others grey,
the baseline is hatched with a dashed line through its median, and each bar is
labelled with its median and how it compares to the baseline. An axis whose values
span decades is logarithmic. Every cost is "lower is better".

Charts are written as SVG (text kept as text, no timestamp, fixed ids: small,
diffable, searchable) and PNG. matplotlib is imported only inside the functions that
draw, so ``import chanflow`` and a demo without a chart never import it; benchmarks/
charts.py draws its sections with the same functions.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "BARS_KEY",
    "CHANFLOW_COLOUR",
    "GREY_TEXT",
    "MISSING_MATPLOTLIB",
    "PEER_COLOUR",
    "Bar",
    "Panel",
    "format_tick",
    "format_value",
    "new_figure",
    "render_bars",
    "save_figure",
]

MISSING_MATPLOTLIB = "matplotlib is not installed"
CHANFLOW_COLOUR = "#2563eb"
PEER_COLOUR = "#9ca3af"
BASELINE_EDGE = "#374151"
BASELINE_HATCH = "///"
TEXT_COLOUR = "#111827"
GREY_TEXT = "#4b5563"
# Under every bar chart: how to read it (a legend box would fight the title for room).
BARS_KEY = (
    "Blue bars, bold names: chanflow; grey: other tools; hatched, with a dashed line at its "
    "median: the baseline. Bars: medians; whiskers: the lowest to the highest sample. "
    "Lower is better."
)
# Above this ratio of the largest to the smallest value, an axis is logarithmic: on
# a linear one the small bars would be invisible.
LOG_SPAN = 30.0
FORMATS = ("svg", "png")
PNG_DPI = 110
WIDTH_INCHES = 11.0
BAR_INCHES = 0.34  # height per bar
PANEL_INCHES = 0.85  # a panel's title and axis, beyond its bars


@dataclass(frozen=True)
class Bar:
    """One contestant: its label and its samples (one per round), in one unit."""

    label: str
    samples: tuple[float, ...]
    chanflow: bool = False
    baseline: bool = False

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)


@dataclass(frozen=True)
class Panel:
    """Contestants doing the same work, drawn on one axis in ``unit``."""

    title: str
    unit: str
    bars: tuple[Bar, ...]

    @property
    def baseline(self) -> Bar | None:
        return next((bar for bar in self.bars if bar.baseline), None)


def format_value(value: float) -> str:
    """A measurement to about three significant digits, never in scientific notation."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def format_tick(value: float) -> str:
    """An axis tick: 0.5, 1, 10, 1,000 (no trailing zeros, no powers of ten)."""
    return f"{value:,.10g}"


def _ratio_text(bar: Bar, baseline: Bar | None) -> str:
    """How ``bar`` compares with the baseline, in words a reader need not decode."""
    if baseline is None:
        return ""
    if bar is baseline:
        return "baseline"
    ratio = bar.median / baseline.median
    if ratio < 1:
        return f"{_times(1 / ratio)} lower"
    return f"{_times(ratio)} higher"


def _times(ratio: float) -> str:
    if ratio >= 10:
        return f"{ratio:.0f}x"
    return f"{ratio:.2f}x" if ratio < 1.1 else f"{ratio:.1f}x"


@contextmanager
def _style() -> Iterator[None]:
    from matplotlib import rc_context

    with rc_context(
        {
            "svg.fonttype": "none",  # text stays text: readable in a diff, found by a search
            "svg.hashsalt": "chanflow",  # the same ids on every run: a re-render diffs cleanly
            "font.family": "DejaVu Sans",  # ships with matplotlib: the same glyphs everywhere
            "font.size": 9.0,
            "axes.titlesize": 10.0,
            "axes.titleweight": "bold",
            "axes.titlelocation": "left",
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    ):
        yield


def new_figure(height: float, width: float = WIDTH_INCHES) -> Figure:
    """A figure with the charts' style, laid out by matplotlib (long labels fit).

    Made without pyplot: no GUI backend, no global list of figures to close.
    """
    from matplotlib.figure import Figure

    with _style():
        return Figure(figsize=(width, height), layout="constrained")


def save_figure(figure: Figure, stem: Path) -> list[Path]:
    """Write ``stem``.svg and ``stem``.png; the paths written."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    with _style():
        for kind in FORMATS:
            path = stem.with_suffix(f".{kind}")
            # No date or version in the files: re-rendering the same numbers changes nothing.
            metadata = {"Date": None} if kind == "svg" else {"Software": None}
            figure.savefig(path, format=kind, dpi=PNG_DPI, metadata=metadata)
            written.append(path)
    return written


def render_bars(panels: Sequence[Panel], *, title: str, caption: str, stem: Path) -> list[Path]:
    """One figure of ``panels`` stacked, titled, ``caption`` and the key under it; the files."""
    heights = [len(panel.bars) * BAR_INCHES + PANEL_INCHES for panel in panels]
    figure = new_figure(sum(heights) + 1.1)
    with _style():
        axes = figure.subplots(len(panels), 1, squeeze=False, height_ratios=heights)[:, 0]
        for ax, panel in zip(axes, panels, strict=True):
            draw_panel(ax, panel)
        figure.suptitle(title, x=0.01, ha="left", fontsize=12, fontweight="bold")
        figure.supxlabel(f"{caption}\n{BARS_KEY}", x=0.01, ha="left", fontsize=8, color=GREY_TEXT)
    return save_figure(figure, stem)


def draw_panel(ax: Axes, panel: Panel) -> None:
    """The panel's bars top to bottom in its order, whiskers, labels, the baseline's line."""
    bars = panel.bars
    positions = list(range(len(bars)))[::-1]  # the first contestant on top
    lowest = min(bar.low for bar in bars)
    highest = max(bar.high for bar in bars)
    log = lowest > 0 and highest / lowest > LOG_SPAN
    left = lowest / 2 if log else 0.0
    drawn = ax.barh(
        positions,
        [bar.median - left for bar in bars],
        left=left,
        height=0.62,
        color=[CHANFLOW_COLOUR if bar.chanflow else PEER_COLOUR for bar in bars],
    )
    for patch, bar in zip(drawn.patches, bars, strict=True):
        if bar.baseline:
            patch.set_edgecolor(BASELINE_EDGE)
            patch.set_hatch(BASELINE_HATCH)
    for position, bar in zip(positions, bars, strict=True):
        _draw_one(ax, position, bar, panel.baseline)
    baseline = panel.baseline
    if baseline is not None:
        ax.axvline(baseline.median, color=BASELINE_EDGE, linestyle="--", linewidth=0.9)
    if log:
        _log_axis(ax)
        ax.set_xlim(left, highest * 12)  # room for the labels right of the bars
    else:
        ax.set_xlim(0, highest * 1.45)
    ax.set_yticks(positions, [bar.label for bar in bars])
    for tick, bar in zip(ax.get_yticklabels(), bars, strict=True):
        if bar.chanflow:
            tick.set_fontweight("bold")
    ax.tick_params(axis="y", length=0)
    scale = ", log scale" if log else ""
    ax.set_xlabel(f"{panel.unit} (lower is better{scale})", fontsize=8, color=GREY_TEXT)
    ax.set_title(panel.title)
    ax.grid(axis="x", color="#e5e7eb", linewidth=0.6)
    ax.set_axisbelow(True)


def _log_axis(ax: Axes) -> None:
    """A logarithmic x axis labelled 0.1, 1, 10 rather than powers of ten."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: format_tick(value)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _draw_one(ax: Axes, position: int, bar: Bar, baseline: Bar | None) -> None:
    """The whisker from the lowest to the highest sample, and the label right of it."""
    if bar.high > bar.low:
        ax.errorbar(
            bar.median,
            position,
            xerr=[[bar.median - bar.low], [bar.high - bar.median]],
            fmt="none",
            ecolor=TEXT_COLOUR,
            elinewidth=0.9,
            capsize=2.5,
        )
    words = _ratio_text(bar, baseline)
    label = format_value(bar.median) + (f"  ({words})" if words else "")
    ax.annotate(
        label,
        (bar.high, position),
        xytext=(5, 0),
        textcoords="offset points",
        va="center",
        fontsize=8,
        color=TEXT_COLOUR,
        fontweight="bold" if bar.chanflow else "normal",
    )
