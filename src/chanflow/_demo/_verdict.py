"""The comparison's conclusion: which way is better and why, and its chart.

The seeds end with "benchmark two approaches and explain which is better and why";
:func:`verdict_lines` answers for the demo's four ways from the numbers just
measured. :func:`save_comparison` writes those numbers to ``comparison.json`` next to
the thumbnails, and :func:`draw_comparison` draws ``comparison.svg`` and ``.png`` from
that file alone (the same kind of chart as the benchmarks': chanflow in blue, the
sequential loop as the hatched baseline). Drawing needs matplotlib (the ``demo``
extra); without it the demo says so in one line and goes on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

from ._chart import Bar, Panel, render_bars
from ._compare import Measured
from ._plan import Settings

__all__ = [
    "CHART_MISSING",
    "RECORD_NAME",
    "chart_line",
    "draw_comparison",
    "save_comparison",
    "verdict_lines",
]

RECORD_NAME = "comparison.json"
CHART_STEM = "comparison"
WIDTH = 88  # as the comparison's notes above
_NUMBER_UNIT = re.compile(r"(\d) (s|MB)\b")
CHART_MISSING = "not drawn: matplotlib is not installed (pip install 'chanflow[demo]')"
BASELINE = "sequential"
BOUNDED = ("worker pool", "pipeline")  # the ways that hold a bounded number of images
TITLES = {
    "sequential": "sequential (a plain loop)",
    "fan-out": "fan-out (a task per image)",
    "worker pool": "worker pool (threads, whole images)",
    "pipeline": "pipeline (fetch, resize, save)",
}


def _mb(row: Measured) -> float:
    return row.peak_kib / 1024


def verdict_lines(rows: list[Measured], settings: Settings) -> list[str]:
    """Which way is better for this work, and why, from ``rows`` (empty if too few)."""
    paragraphs = _verdict(rows, settings)
    if not paragraphs:
        return []
    lines = [paragraphs[0]]
    for paragraph in paragraphs[1:]:
        lines += _wrap(paragraph)
    return lines


def _wrap(paragraph: str) -> list[str]:
    """The paragraph in lines of at most WIDTH, never between a number and its unit."""
    glued = _NUMBER_UNIT.sub("\\1\N{NO-BREAK SPACE}\\2", paragraph)
    lines = textwrap.wrap(glued, WIDTH, initial_indent="  ", subsequent_indent="    ")
    return [line.replace("\N{NO-BREAK SPACE}", " ") for line in lines]


def _verdict(rows: list[Measured], settings: Settings) -> list[str]:
    """The heading, then one paragraph each: speed, memory, CPU (the pipeline's), choice."""
    loop = next((row for row in rows if row.approach == BASELINE), None)
    others = [row for row in rows if row is not loop and row.wall > 0]
    if loop is None or not others:
        return []
    fastest = min(others, key=lambda row: row.wall)
    speedups = ", ".join(f"{row.approach} {loop.wall / row.wall:.1f}x" for row in others)
    memory = ", ".join(f"{row.approach} {_mb(row):.0f} MB" for row in rows)
    hanging = (settings.retries + 1) * settings.timeout
    lines = [
        "Which is better, and why (from the numbers above):",
        f"Speed: the {fastest.approach} is fastest, {fastest.wall:.2f} s; against the "
        f"sequential loop's {loop.wall:.2f} s: {speedups}. The loop waits for each answer "
        f"in turn (the slow images, and {hanging:.1f} s of attempts at the one that never "
        "answers); the others wait for many at once, so each ends near its slowest image.",
        f"Memory at its peak: {memory}. Fan-out holds every image at once (it grows "
        "with --images); the worker pool and the pipeline hold a bounded number.",
    ]
    pipeline = next((row for row in others if row.approach == "pipeline"), None)
    if pipeline is not None:
        lines.append(
            f"CPU: the pipeline used {pipeline.cpu:.2f} s of CPU in {pipeline.wall:.2f} s "
            f"({pipeline.cpu / pipeline.wall:.1f} cores): it starts worker processes and "
            "moves each image to one; in exchange its resizing runs on every core whatever "
            "the GIL does, and each stage has its own workers, retries and rate."
        )
    lines.append(_choice(others, loop))
    return lines


def _choice(others: list[Measured], loop: Measured) -> str:
    """The answer: the fastest way whose memory stays bounded, and when to pick another."""
    bounded = [row for row in others if row.approach in BOUNDED]
    if not bounded:
        best = min(others, key=lambda row: row.wall)
        return f"Better here: {best.approach}, {loop.wall / best.wall:.1f}x the loop's speed."
    best = min(bounded, key=lambda row: row.wall)
    text = (
        f"Better here: the {best.approach}, {loop.wall / best.wall:.1f}x the loop's speed "
        "with bounded memory"
    )
    if best.approach == "worker pool":
        return text + (
            "; the pipeline is the better design when a stage is pure-Python CPU work "
            "(Pillow releases the GIL, so threads resize nearly as well here)."
        )
    return text + "."


# -- the record and the chart -----------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def save_comparison(rows: list[Measured], settings: Settings, out_dir: Path) -> Path:
    """Write the measured rows, the machine and the date to ``comparison.json``; its path."""
    from .. import __version__

    record = {
        "compared": settings.compared,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpu": _cpu_model(),
            "cores": str(os.cpu_count()),
            "python": sys.version.split()[0],
            "system": platform.system(),
            "chanflow": __version__,
        },
        "rows": [asdict(row) for row in rows],
    }
    path = out_dir / RECORD_NAME
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return path


def draw_comparison(record: Path) -> list[Path]:
    """Draw ``comparison.svg`` and ``.png`` beside ``record`` from its numbers alone."""
    data = json.loads(record.read_text(encoding="utf-8"))
    rows = [Measured(**row) for row in data["rows"]]
    machine = data["machine"]

    def bars(value: str) -> tuple[Bar, ...]:
        return tuple(
            Bar(
                TITLES.get(row.approach, row.approach),
                (getattr(row, value) / (1024 if value == "peak_kib" else 1),),
                chanflow=row.approach != BASELINE,
                baseline=row.approach == BASELINE,
            )
            for row in rows
        )

    panels = [
        Panel("Wall time: from the first request to the last thumbnail", "s", bars("wall")),
        Panel("CPU time: user + system, all its processes", "s", bars("cpu")),
        Panel("Peak memory: total PSS of its processes", "MB", bars("peak_kib")),
    ]
    caption = (
        f"{machine['cpu']}, {machine['cores']} cores, Python {machine['python']} on "
        f"{machine['system']}, chanflow {machine['chanflow']}; measured {data['date']} by "
        "`chanflow demo`, one run each, each in its own processes."
    )
    title = f"chanflow demo: the first {data['compared']} images, four ways"
    return render_bars(panels, title=title, caption=caption, stem=record.with_name(CHART_STEM))


def chart_line(rows: list[Measured], settings: Settings, out_dir: Path) -> str:
    """Record the numbers, draw the chart if matplotlib is there; the line saying which."""
    record = save_comparison(rows, settings, out_dir)
    if importlib.util.find_spec("matplotlib") is None:
        return f"Chart:        {CHART_MISSING}; the numbers are in {record}"
    svg, png = draw_comparison(record)
    return f"Chart:        {svg} and {png.name}"
