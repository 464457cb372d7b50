"""What a pipeline run did, stage by stage: counted while it runs, read as frozen reports."""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["PipelineReport", "StageMeter", "StageReport"]


@dataclass(frozen=True, slots=True)
class StageReport:
    """One stage's counts in a :class:`PipelineReport`.

    * ``items_in``: items the stage took from its input;
    * ``items_out``: items it passed on (a filter passes fewer, a flat_map more, a
      batch one list per batch);
    * ``failed``: items whose function failed for good (after retries), whatever
      ``on_error`` then did with them; ``skipped`` and ``dead_lettered`` count
      those of them dropped or sent to dead letters;
    * ``retried``: retry attempts made;
    * ``busy``: the fraction of the stage's capacity in use over the run (its
      workers' busy time / (workers x elapsed)), 0.0 to 1.0;
    * ``mean_latency``: mean seconds per item in the stage's function (None before
      any finished);
    * ``queued``: items waiting in the stage's input link when the report was made.
    """

    name: str
    kind: str
    workers: int
    items_in: int
    items_out: int
    failed: int
    retried: int
    skipped: int
    dead_lettered: int
    busy: float
    mean_latency: float | None
    queued: int
    bound: int


@dataclass(frozen=True, slots=True)
class PipelineReport:
    """Per-stage counts of one pipeline run; ``str(report)`` is a readable table.

    ``bottleneck`` is the name of the stage with the highest busy fraction (the one
    that limits the flow's throughput; None if no stage did any work), ``elapsed``
    the seconds the run has lasted.
    """

    stages: tuple[StageReport, ...]
    elapsed: float
    bottleneck: str | None

    def stage(self, name: str) -> StageReport:
        """The report of the stage called ``name``; KeyError if there is none."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage named {name!r}; stages: {[s.name for s in self.stages]}")

    def __str__(self) -> str:
        header = ("stage", "in", "out", "failed", "retried", "dead", "busy", "latency")
        rows = [header]
        for stage in self.stages:
            mark = " *" if stage.name == self.bottleneck else ""
            rows.append(
                (
                    stage.name + mark,
                    str(stage.items_in),
                    str(stage.items_out),
                    str(stage.failed),
                    str(stage.retried),
                    str(stage.dead_lettered),
                    f"{stage.busy:.0%}",
                    _seconds(stage.mean_latency),
                )
            )
        widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
        lines = [
            "  ".join(
                cell.ljust(width) if column == 0 else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
            for row in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        footer = f"{self.elapsed:.2f} s"
        if self.bottleneck is not None:
            footer += f"; bottleneck (*): {self.bottleneck}"
        return "\n".join([*lines, footer])


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.3g} us"
    if value < 1.0:
        return f"{value * 1e3:.3g} ms"
    return f"{value:.3g} s"


class StageMeter:
    """A stage's own counters (its pool keeps the rest); written by its one thread."""

    __slots__ = ("busy_seconds", "dead_lettered", "failed", "items_out", "skipped")

    def __init__(self) -> None:
        self.items_out = 0
        self.failed = 0
        self.skipped = 0
        self.dead_lettered = 0
        self.busy_seconds = 0.0

    def timed(self) -> _Timed:
        return _Timed(self)


class _Timed:
    """``with meter.timed():`` adds the block's duration to the meter's busy time."""

    __slots__ = ("_meter", "_start")

    def __init__(self, meter: StageMeter) -> None:
        self._meter = meter
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        self._meter.busy_seconds += time.perf_counter() - self._start
