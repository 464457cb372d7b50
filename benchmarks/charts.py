"""The benchmarks' charts, drawn from a file of what run.py measured.

run.py records every section it runs (machine, date, rounds, and each contestant's
samples) into a results file, ``benchmarks/results/latest.json`` for a full run, and
draws the charts from that file alone: a chart never shows a number that was not
measured, and ``run.py --charts-only`` draws them again from the file. A section run
on its own (``--only pool``) replaces that section in the file and keeps the others.

Two kinds of chart:

* **bars**, one figure per section (``<section>.svg`` and ``.png``): a panel per
  scenario, each contestant's median as a bar with its min-max whisker, chanflow in
  blue, the baseline hatched (drawn by ``chanflow._demo._chart``, which the demo's
  comparison chart uses too);
* **lines**, one figure per curve of the scaling section
  (``scaling-duration``, ``scaling-workers``): cost per job against job duration or
  worker count, one line per contestant (chanflow solid, the stdlib dashed, a colour
  per backend) with its min-max band, and on the right the same divided by a
  reference (a plain loop, or the ideal).

The results file (``FORMAT`` 1)::

    {"format": 1, "sections": {"pool": {"title", "date", "mode", "rounds", "machine",
      "panels": [{"key", "title", "unit", "kind", "baseline", "rows": [{"name",
        "chanflow", "samples", "items", "x", "group"}], ...}]}}}
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chanflow._demo._chart import (
    CHANFLOW_COLOUR,
    GREY_TEXT,
    MISSING_MATPLOTLIB,
    Bar,
    Panel,
    format_tick,
    new_figure,
    render_bars,
    save_figure,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from bench_channel import Results, Scenario

__all__ = [
    "FORMAT",
    "MISSING",
    "PanelRecord",
    "Row",
    "SectionRecord",
    "chart_stems",
    "is_chanflow",
    "load_results",
    "render_all",
    "render_section",
    "samples_panel",
    "save_results",
    "scenario_panels",
]

FORMAT = 1
MISSING = f"charts not drawn: {MISSING_MATPLOTLIB} (pip install -e '.[bench]')"
# Significant digits kept per sample: more than any table prints, fewer than a float's 17.
DIGITS = 6
# A contestant is chanflow's when its name says so: "chanflow.Channel(1024)",
# "WorkerPool(8, thread).map", "PoolExecutor(8).map", "Pipeline: ...", "Channel(1024)
# send_many...", the pipeline section's "middle map(...)"; but not "mpire.WorkerPool"
# or "ProcessPoolExecutor" (the names are matched where no letter or dot precedes).
CHANFLOW_NAME = re.compile(
    r"chanflow|(?<![\w.])(WorkerPool|PoolExecutor|Channel|Pipeline)\b|^middle map"
)
# A JSON list of numbers as json.dumps(indent=1) spreads it over lines.
NUMBER_LIST = re.compile(r"\[(?:\s*-?[\d.eE+-]+,)*\s*-?[\d.eE+-]+\s*\]")
ROW = re.compile(r'\{\n\s*"name": [^{}]*\}')  # a Row as json.dumps(indent=1) writes it
GROUP_COLOURS = {
    "thread": CHANFLOW_COLOUR,
    "async": "#059669",
    "process": "#d97706",
    "reference": "#111827",
}
IDEAL_COLOUR = GREY_TEXT
LINES_KEY = (
    "Solid lines, bold names: chanflow; dashed: the stdlib; dotted: the reference; a colour per "
    "backend. Lines: medians; bands: the lowest to the highest sample. Lower is better."
)
DURATION_TICKS = {1: "1 us", 10: "10 us", 100: "100 us", 1_000: "1 ms", 10_000: "10 ms"}


def is_chanflow(name: str) -> bool:
    """Whether the contestant called ``name`` is chanflow (drawn in colour)."""
    return CHANFLOW_NAME.search(name) is not None


# -- the record ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One contestant's samples (bars), or one point of one contestant's line (lines)."""

    name: str
    samples: list[float]
    chanflow: bool
    items: int | None = None  # jobs or items per sample, where it means something
    x: float | None = None  # lines: where the point sits on the x axis
    group: str | None = None  # lines: the backend, which picks the colour


@dataclass
class PanelRecord:
    """A scenario (bars) or a curve (lines), in one unit."""

    key: str
    title: str
    unit: str
    rows: list[Row]
    kind: str = "bars"  # or "lines"
    baseline: str | None = None  # bars: the name of the baseline's row
    x_label: str = ""  # lines
    x_unit: str = ""  # lines: "us" draws the ticks as durations
    reference: str | None = None  # lines: the row the right-hand side divides by
    ideal: float | None = None  # lines: else the ideal cost, ``ideal / x``
    ideal_label: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class SectionRecord:
    """One section of one run: where, when, how, and its panels."""

    title: str
    date: str
    mode: str  # "full" or "quick"
    rounds: int
    machine: dict[str, str]
    panels: list[PanelRecord]


def _rounded(samples: Iterable[float]) -> list[float]:
    return [float(f"{value:.{DIGITS}g}") for value in samples]


def scenario_panels(
    scenarios: Sequence[Scenario], results: Results, units: Mapping[str, str] | str
) -> list[PanelRecord]:
    """A bars panel per scenario of bench_channel's kind, its baseline's row included.

    A baseline measured in another scenario (the channel section's batches against
    scenario 1's queue.Queue) is drawn in this panel too, so the bar has its yardstick.
    """
    panels = []
    for scenario in scenarios:
        rows = [
            Row(
                contestant.name,
                _rounded(results[(scenario.key, contestant.name)]),
                is_chanflow(contestant.name),
                contestant.items or scenario.items,
            )
            for contestant in scenario.contestants
            if results.get((scenario.key, contestant.name))
        ]
        baseline = None
        if scenario.baseline is not None and results.get(scenario.baseline):
            key, baseline = scenario.baseline
            if key != scenario.key:
                samples = _rounded(results[scenario.baseline])
                rows.append(Row(baseline, samples, is_chanflow(baseline)))
        unit = units if isinstance(units, str) else units[scenario.key]
        title = f"{scenario.key}. {scenario.title}"
        panels.append(PanelRecord(scenario.key, title, unit, rows, baseline=baseline))
    return panels


def samples_panel(
    key: str,
    title: str,
    unit: str,
    samples: Mapping[str, Sequence[float]],
    baseline: str | None = None,
    chanflow: Callable[[str], bool] = is_chanflow,
) -> PanelRecord:
    """A bars panel from ``{name: samples}`` (memory, start-up, retries: not Scenarios)."""
    rows = [Row(name, _rounded(values), chanflow(name)) for name, values in samples.items()]
    return PanelRecord(key, f"{key}. {title}", unit, rows, baseline=baseline)


def save_results(path: Path, sections: Mapping[str, SectionRecord]) -> None:
    """Write ``sections`` into the results file at ``path``, keeping the other sections."""
    merged = {**load_results(path), **sections}
    document = {"format": FORMAT, "sections": {name: asdict(s) for name, s in merged.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_compact(json.dumps(document, indent=1)) + "\n", encoding="utf-8")


def _compact(text: str) -> str:
    """Each row on one line (json.dumps spreads it over a dozen): it reads, and diffs, as one."""
    text = NUMBER_LIST.sub(lambda found: "[" + " ".join(found[0][1:-1].split()) + "]", text)
    # JSON strings hold no raw newline: every newline in a row is indentation.
    return ROW.sub(lambda found: "{" + re.sub(r"\n\s*", " ", found[0][1:-1]).strip() + "}", text)


def load_results(path: Path) -> dict[str, SectionRecord]:
    """The sections recorded at ``path`` (none if there is no file yet)."""
    if not path.exists():
        return {}
    document = json.loads(path.read_text(encoding="utf-8"))
    if document.get("format") != FORMAT:
        raise ValueError(f"{path}: results format {document.get('format')!r}, not {FORMAT}")
    return {name: _section(data) for name, data in document["sections"].items()}


def _section(data: dict[str, Any]) -> SectionRecord:
    panels = [
        PanelRecord(**{**panel, "rows": [Row(**row) for row in panel["rows"]]})
        for panel in data["panels"]
    ]
    return SectionRecord(**{**data, "panels": panels})


# -- drawing ------------------------------------------------------------------------------------


def caption(section: SectionRecord) -> str:
    """The machine, the date and the run, under every chart."""
    machine = section.machine
    return (
        f"{machine.get('cpu', 'unknown CPU')}, {machine.get('cores', '?')} cores, "
        f"Python {machine.get('python', '?')} on {machine.get('system', '?')}, "
        f"chanflow {machine.get('chanflow', '?')}; measured {section.date}, "
        f"{section.mode} run of {section.rounds} rounds (benchmarks/run.py)."
    )


def chart_stems(name: str, section: SectionRecord, directory: Path) -> list[Path]:
    """The charts a section is drawn as (each a .svg and a .png), without their suffix."""
    stems = []
    if any(panel.kind == "bars" for panel in section.panels):
        stems.append(directory / name)
    stems += [directory / f"{name}-{p.key}" for p in section.panels if p.kind == "lines"]
    return stems


def render_section(name: str, section: SectionRecord, directory: Path) -> list[Path]:
    """Draw one section's charts into ``directory``; the files written."""
    written: list[Path] = []
    bars = [panel for panel in section.panels if panel.kind == "bars" and panel.rows]
    if bars:
        written += render_bars(
            [_bar_panel(panel) for panel in bars],
            title=section.title,
            caption=caption(section),
            stem=directory / name,
        )
    for panel in section.panels:
        if panel.kind == "lines":
            written += render_lines(section, panel, directory / f"{name}-{panel.key}")
    return written


def render_all(results: Path, directory: Path) -> list[Path]:
    """Draw every section recorded in ``results``; the files written."""
    written: list[Path] = []
    for name, section in load_results(results).items():
        written += render_section(name, section, directory)
    return written


def _bar_panel(panel: PanelRecord) -> Panel:
    bars = tuple(
        Bar(row.name, tuple(row.samples), row.chanflow, row.name == panel.baseline)
        for row in panel.rows
    )
    return Panel(panel.title, panel.unit, bars)


@dataclass(frozen=True)
class Curve:
    """One contestant's line: its points in x order, with medians and spreads."""

    name: str
    chanflow: bool
    group: str
    xs: list[float]
    samples: list[list[float]]  # per point, in the order measured (one a round)

    @property
    def medians(self) -> list[float]:
        return [statistics.median(samples) for samples in self.samples]

    @property
    def lows(self) -> list[float]:
        return [min(samples) for samples in self.samples]

    @property
    def highs(self) -> list[float]:
        return [max(samples) for samples in self.samples]


def curves(panel: PanelRecord) -> list[Curve]:
    """The panel's rows gathered into one curve per contestant, in first-seen order."""
    by_name: dict[str, list[Row]] = {}
    for row in panel.rows:
        by_name.setdefault(row.name, []).append(row)
    out = []
    for name, rows in by_name.items():
        rows.sort(key=lambda row: row.x or 0.0)
        out.append(
            Curve(
                name,
                rows[0].chanflow,
                rows[0].group or "reference",
                [row.x or 0.0 for row in rows],
                [row.samples for row in rows],
            )
        )
    return out


def render_lines(section: SectionRecord, panel: PanelRecord, stem: Path) -> list[Path]:
    """Cost against x on the left, the same relative to the reference on the right."""
    figure = new_figure(5.4, width=12.5)
    left, right = figure.subplots(1, 2, width_ratios=(1.1, 1))
    drawn = curves(panel)
    reference = next((curve for curve in drawn if curve.name == panel.reference), None)
    relatives: list[float] = []
    for curve in drawn:
        _plot(left, curve, curve.xs, curve.medians, (curve.lows, curve.highs))
        relative = _relative(curve, reference, panel.ideal)
        if relative is not None and curve is not reference:
            _plot(right, curve, curve.xs, relative, None)
            relatives += relative
    if panel.ideal is not None:
        xs = sorted({x for curve in drawn for x in curve.xs})
        ideal = [panel.ideal / x for x in xs]
        left.plot(xs, ideal, color=IDEAL_COLOUR, linestyle=":", lw=1.4, label=panel.ideal_label)
    _reference_lines(right, panel, section)
    _log_axes(left, panel, log_y=True)
    _log_axes(right, panel, log_y=bool(relatives) and max(relatives) / min(relatives) > 10)
    left.set_ylabel(f"{panel.unit} (log scale)")
    left.set_title("cost per job")
    right.set_title(_relative_title(panel))
    handles, labels = left.get_legend_handles_labels()
    legend = figure.legend(handles, labels, loc="outside right upper", frameon=False)
    chanflow = {curve.name for curve in drawn if curve.chanflow}
    for text in legend.get_texts():
        if text.get_text() in chanflow:
            text.set_fontweight("bold")
    figure.suptitle(
        f"{section.title}: {panel.title}", x=0.01, ha="left", fontsize=12, fontweight="bold"
    )
    figure.supxlabel(
        "\n".join([*panel.notes, caption(section), LINES_KEY]),
        x=0.01,
        ha="left",
        fontsize=8,
        color=GREY_TEXT,
    )
    return save_figure(figure, stem)


def _plot(
    ax: Axes,
    curve: Curve,
    xs: list[float],
    ys: list[float],
    band: tuple[list[float], list[float]] | None,
) -> None:
    colour = GROUP_COLOURS.get(curve.group, "#6b7280")
    if curve.group == "reference":
        style: dict[str, Any] = {"linestyle": ":", "linewidth": 1.8, "marker": "s"}
    elif curve.chanflow:
        style = {"linestyle": "-", "linewidth": 2.4, "marker": "o"}
    else:
        style = {"linestyle": "--", "linewidth": 1.4, "marker": "o", "markerfacecolor": "white"}
    ax.plot(xs, ys, color=colour, markersize=4.5, label=curve.name, **style)
    if band is not None:
        ax.fill_between(xs, band[0], band[1], color=colour, alpha=0.13, linewidth=0)


def _relative(curve: Curve, reference: Curve | None, ideal: float | None) -> list[float] | None:
    """The curve divided by the reference at each x, or by the ideal; None if it can't be.

    Against a reference, the median of the ratios of samples taken in the same round
    (a slow patch of the machine hits both alike and cancels out).
    """
    if reference is not None:
        at = dict(zip(reference.xs, reference.samples, strict=True))
        if not all(x in at for x in curve.xs):
            return None
        return [_paired(samples, at[x]) for x, samples in zip(curve.xs, curve.samples, strict=True)]
    if ideal is not None:
        return [y / (ideal / x) for x, y in zip(curve.xs, curve.medians, strict=True)]
    return None


def _paired(samples: list[float], reference: list[float]) -> float:
    """The median ratio of same-round samples, or of the medians if the rounds differ."""
    if len(samples) != len(reference):
        return statistics.median(samples) / statistics.median(reference)
    return statistics.median(value / base for value, base in zip(samples, reference, strict=True))


def _relative_title(panel: PanelRecord) -> str:
    if panel.reference is not None:
        return f"relative to the {panel.reference} (below 1: it pays off)"
    return "relative to the ideal (1: no overhead at all)"


def _reference_lines(ax: Axes, panel: PanelRecord, section: SectionRecord) -> None:
    """1 on the right-hand side; with a loop as reference, also 1 / cores: all cores busy."""
    label = f"the {panel.reference}" if panel.reference else "ideal"
    _hline(ax, 1.0, label, above=True)
    cores = int(section.machine.get("cores", "0") or 0)
    if panel.reference is not None and cores > 1:
        _hline(ax, 1 / cores, f"all {cores} cores busy: the best possible", above=False)


def _hline(ax: Axes, y: float, label: str, above: bool) -> None:
    ax.axhline(y, color=IDEAL_COLOUR, linestyle=":", linewidth=1.2)
    ax.annotate(
        label,
        (0.01, y),
        xycoords=("axes fraction", "data"),
        xytext=(0, 3 if above else -11),
        textcoords="offset points",
        fontsize=8,
        color=IDEAL_COLOUR,
    )


def _log_axes(ax: Axes, panel: PanelRecord, log_y: bool) -> None:
    """Log x (durations or worker counts labelled plainly); log y when it spans decades."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.set_xlabel(panel.x_label)
    if panel.x_unit == "us":
        ax.xaxis.set_major_formatter(
            FuncFormatter(lambda value, _: DURATION_TICKS.get(round(value), format_tick(value)))
        )
    else:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if log_y:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: format_tick(value)))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_ylim(bottom=0)
    ax.grid(which="major", color="#e5e7eb", linewidth=0.6)
    ax.set_axisbelow(True)
