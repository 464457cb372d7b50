"""A pipeline's live view: one rich table, a row per stage, redrawn by one thread.

Imported only when ``progress=True`` is asked for, so ``import chanflow`` stays light.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ._report import PipelineReport

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["PipelineProgress", "progress_table"]

# Redraw this often: a row per stage costs a snapshot of each stage's counters.
REFRESH_SECONDS = 0.25


def progress_table(report: PipelineReport) -> Table:
    """The live view of one report: done, failed, input-link fill, throughput, bottleneck."""
    from rich.table import Table

    table = Table(title=f"pipeline · {report.elapsed:.1f} s", title_justify="left")
    for column in ("stage", "done", "failed", "queue", "items/s", ""):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage in report.stages:
        rate = stage.items_in / report.elapsed if report.elapsed > 0 else 0.0
        fill = f"{stage.queued}/{stage.bound}"
        mark = "bottleneck" if stage.name == report.bottleneck else ""
        done = stage.items_in - stage.failed if stage.kind != "batch" else stage.items_in
        table.add_row(stage.name, str(done), str(stage.failed), fill, f"{rate:,.1f}", mark)
    return table


class PipelineProgress:
    """Draws a run's report on stderr until :meth:`close` (which draws it a last time)."""

    def __init__(self, run: Any) -> None:
        from rich.console import Console
        from rich.live import Live

        self._run = run
        self._live = Live(
            progress_table(run.report()), console=Console(stderr=True), auto_refresh=False
        )
        self._live.start()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._redraw, name="chanflow-pipeline-progress", daemon=True
        )
        self._thread.start()

    def _redraw(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            self._live.update(progress_table(self._run.report()), refresh=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._live.update(progress_table(self._run.report()), refresh=True)
        self._live.stop()
        if not self._live.console.is_terminal:
            self._live.console.line()  # rich leaves the last frame without its newline there
