"""A live progress bar for a worker pool, drawn with rich.

rich is imported only when a bar is asked for, so ``import chanflow`` stays light.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from ._stats import PoolStats

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["ProgressReporter"]

_monotonic = time.monotonic

# Redraw at most this often: a terminal cannot show more, and a redraw costs far
# more than a job's bookkeeping.
REFRESH_INTERVAL = 0.1


def _check_total(total: int | None) -> int | None:
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
        raise ValueError(f"progress total must be an int >= 0 or None, not {total!r}")
    return total


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def status_text(stats: PoolStats, total: int | None) -> str:
    """One line of counts: ``90/100 done · 2 failed · 5 retried · 120.5 jobs/s · ETA 0:00:01``."""
    done = stats.completed + stats.failed
    parts = [f"{done}/{total} done" if total is not None else f"{done} done"]
    parts.append(f"{stats.failed} failed")
    parts.append(f"{stats.retried} retried")
    parts.append(f"{stats.throughput:.1f} jobs/s")
    if total is not None:
        remaining = max(total - done, 0)
        if remaining == 0:
            parts.append("ETA 0:00:00")
        elif stats.throughput > 0:
            parts.append(f"ETA {_clock(remaining / stats.throughput)}")
        else:
            parts.append("ETA ?")
    return " · ".join(parts)


def _own_progress() -> Progress:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    # auto_refresh=False: the reporter redraws on its own updates, so no refresh
    # thread runs behind the pool's back.
    return Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TextColumn("{task.fields[status]}", markup=False),
        console=Console(stderr=True),
        auto_refresh=False,
    )


class ProgressReporter:
    """Shows a pool's progress on a rich ``Progress``: done, failed, retried, rate, ETA.

    Create it with :meth:`create`. ``update`` is cheap enough to call per job: it
    redraws at most 10 times a second and otherwise costs one clock read and a
    comparison. Safe to call from several threads; ``close`` draws the final counts.
    """

    __slots__ = (
        "_closed",
        "_description",
        "_label",
        "_lock",
        "_next_draw",
        "_owns",
        "_progress",
        "_task",
        "total",
    )

    def __init__(self, progress: Progress, owns: bool, total: int | None, description: str) -> None:
        self._progress = progress
        self._owns = owns
        self.total = total
        self._description = description
        # A Progress we did not build may render descriptions as rich markup.
        self._label = description if owns else _escape(description)
        self._lock = threading.Lock()
        self._closed = False
        self._next_draw = 0.0
        self._task: TaskID = progress.add_task(
            self._label, total=total, status="", failed=0, retried=0, rate=0.0
        )

    @classmethod
    def create(
        cls, progress: bool | object, total: int | None, description: str = "jobs"
    ) -> ProgressReporter | None:
        """A reporter for a pool's ``progress=`` argument, or None for False/None.

        ``True`` makes a bar on stderr that the reporter starts now and stops in
        :meth:`close`. A ``rich.progress.Progress`` gets a task added (its owner starts
        and stops it; the finished task stays on it). ``total`` is the number of jobs
        when known (an ETA is shown), else None (an indeterminate bar). Raises
        TypeError for any other ``progress`` or a non-str ``description``, ValueError
        for a ``total`` that is not an int >= 0 or None. Never blocks.
        """
        if progress is None or progress is False:
            return None
        total = _check_total(total)
        if not isinstance(description, str):
            raise TypeError(f"progress description must be a str, not {description!r}")
        if progress is True:
            own = _own_progress()
            reporter = cls(own, True, total, description)
            own.start()
            return reporter
        from rich.progress import Progress

        if isinstance(progress, Progress):
            return cls(progress, False, total, description)
        raise TypeError(
            f"progress must be True, False, None or a rich.progress.Progress, not {progress!r}"
        )

    def due(self) -> bool:
        """True if :meth:`update` would redraw now: lets a caller skip building the stats."""
        return _monotonic() >= self._next_draw

    def update(self, stats: PoolStats) -> None:
        """Show ``stats``, unless the last redraw was under 0.1 s ago. Does nothing once closed.

        A redraw writes to the console (a few tens of microseconds); a throttled call
        costs about 0.1 us.
        """
        now = _monotonic()
        if now < self._next_draw:
            return
        with self._lock:
            if self._closed:
                return
            self._next_draw = now + REFRESH_INTERVAL
            self._draw(stats)

    def close(self, stats: PoolStats) -> None:
        """Draw ``stats`` as the final state, and stop the bar if this reporter started it.

        Idempotent: later calls (and updates) do nothing. Never blocks for long.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._draw(stats)
            if self._owns:
                self._progress.stop()

    def _draw(self, stats: PoolStats) -> None:
        status = status_text(stats, self.total)
        fields: dict[str, Any] = {
            "completed": stats.completed + stats.failed,
            "status": status,
            "failed": stats.failed,
            "retried": stats.retried,
            "rate": stats.throughput,
        }
        if not self._owns:
            # Its columns are not ours: the counts go where every layout shows them.
            fields["description"] = f"{self._label} {status}"
        self._progress.update(self._task, **fields)
        self._progress.refresh()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<ProgressReporter {self._description!r} total={self.total} {state}>"


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
