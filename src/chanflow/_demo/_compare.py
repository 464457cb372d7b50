"""The comparison: the same work done four ways (``_ways``), measured, and its table.

``python -m chanflow._demo._compare --base-url URL --settings JSON`` is the
measuring process: it imports everything once, waits for a line ``go`` on stdin,
then runs each way in a forked child under :func:`~._measure.measure` and prints
one JSON line per way as it ends. :class:`Comparison` (in the demo's own process)
starts it and reads the lines, so the numbers never include the demo's own
threads, server or pipeline.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._measure import become_subreaper, measure
from ._plan import Settings, expected_failures, expected_successes
from ._ways import WAYS

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["APPROACHES", "Comparison", "Measured", "comparison_table", "main"]

APPROACHES = tuple(WAYS)
# Seconds one way may take before the measurer stops it.
LIMIT_SECONDS = 60.0


@dataclass(frozen=True)
class Measured:
    """One way's numbers: seconds, CPU seconds (all its processes), peak KiB, outcomes."""

    approach: str
    wall: float
    cpu: float
    peak_kib: int
    done: int
    failed: int


# -- the measuring process --------------------------------------------------------------


def _run_one(approach: str, urls: list[str], out: Path, settings: Settings) -> dict[str, Any]:
    """Do the work one way (in the forked child): its wall time and its outcomes."""
    (out / "thumbnails").mkdir(parents=True)
    started = time.perf_counter()
    WAYS[approach](urls, out, settings)
    wall = time.perf_counter() - started
    letters = out / "dead_letters.jsonl"
    return {
        "wall": wall,
        "done": len(list((out / "thumbnails").iterdir())),
        "failed": len(letters.read_text().splitlines()) if letters.exists() else 0,
    }


def _measure_one(base_url: str, approach: str, settings: Settings, scratch: Path) -> str:
    """One way, measured: its JSON line."""
    # Each way has its own run name, so each meets the flaky images' first failure.
    run = "compare-" + approach.replace(" ", "-")
    urls = [f"{base_url}/{run}/{image_id}.jpg" for image_id in range(settings.compared)]
    out = scratch / run
    usage = measure(lambda: _run_one(approach, urls, out, settings), LIMIT_SECONDS)
    if usage.status != 0:
        return json.dumps({"approach": approach, "error": f"exit code {usage.status}"})
    numbers = {"cpu": usage.cpu, "peak_kib": usage.peak_kib}
    return json.dumps({"approach": approach, **usage.result, **numbers})


def main(argv: list[str] | None = None) -> int:
    """Wait for "go" on stdin, then measure the four ways; a JSON line for each on stdout."""
    parser = argparse.ArgumentParser(prog="python -m chanflow._demo._compare")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--settings", type=json.loads, required=True)
    args = parser.parse_args(argv)
    settings = Settings(**args.settings)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # the demo stopping us
    become_subreaper()
    try:
        if sys.stdin.readline() != "go\n":  # the demo ended before our turn
            return 0
        with tempfile.TemporaryDirectory(prefix="chanflow-demo-compare-") as scratch:
            for approach in APPROACHES:
                line = _measure_one(args.base_url, approach, settings, Path(scratch))
                print(line, flush=True)
    except KeyboardInterrupt:
        return 130
    finally:
        for number in (signal.SIGINT, signal.SIGTERM):  # leaving anyway: no second interrupt
            signal.signal(number, signal.SIG_IGN)
    return 0


# -- the demo's side --------------------------------------------------------------------


class Comparison:
    """The measuring process, started early (its imports overlap the demo's pipeline).

    ``with Comparison(base_url, settings) as comparison:`` starts it; it waits until
    :meth:`run` tells it to go. Leaving the block stops it if it is still running (it
    stops its run and cleans up first), so Ctrl-C leaves no process behind.
    """

    def __init__(self, base_url: str, settings: Settings) -> None:
        self._command = [
            sys.executable,
            "-m",
            "chanflow._demo._compare",
            "--base-url",
            base_url,
            "--settings",
            json.dumps(asdict(settings)),
        ]
        self._child: subprocess.Popen[str] | None = None

    def __enter__(self) -> Comparison:
        # A session of its own: a terminal's Ctrl-C reaches the demo only, which then
        # stops this process, which stops its run gently (a process just starting up
        # would print a KeyboardInterrupt traceback).
        self._child = subprocess.Popen(
            self._command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        child, self._child = self._child, None
        if child is not None:
            _stop(child)
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    stream.close()

    def run(self, starting: Callable[[str], object] = print) -> tuple[list[Measured], list[str]]:
        """Measure the four ways; their numbers, and an error message for any run that failed.

        Calls ``starting(approach)`` as each way starts.
        """
        child = self._child
        assert child is not None and child.stdin is not None and child.stdout is not None
        measured: list[Measured] = []
        errors: list[str] = []
        starting(APPROACHES[0])
        child.stdin.write("go\n")
        child.stdin.close()
        for line in child.stdout:
            _take(json.loads(line), measured, errors)
            done = len(measured) + len(errors)
            if done < len(APPROACHES):
                starting(APPROACHES[done])
        if child.wait() != 0:
            errors.append(f"the comparison ended with exit code {child.returncode}")
        return measured, errors


def _take(line: dict[str, Any], measured: list[Measured], errors: list[str]) -> None:
    if "error" in line:
        errors.append(f"the {line['approach']} run: {line['error']}")
        return
    fields = ("approach", "wall", "cpu", "peak_kib", "done", "failed")
    measured.append(Measured(**{name: line[name] for name in fields}))


def _stop(child: subprocess.Popen[str]) -> None:
    """Ask the measuring process to stop its run (it cleans up), then make sure it has."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(5.0)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def comparison_table(rows: list[Measured], settings: Settings) -> Table:
    """The rich table of the four ways; outcomes that differ from the plan are in red."""
    from rich.table import Table

    ids = range(settings.compared)
    expected = (len(expected_successes(ids)), len(expected_failures(ids)))
    table = Table(
        title=f"The first {settings.compared} image{'s' if settings.compared > 1 else ''}, "
        "four ways, each in its own processes",
        title_justify="left",
    )
    for column in ("approach", "wall", "CPU", "cores", "peak memory", "done", "failed"):
        table.add_column(column, justify="left" if column == "approach" else "right")
    for row in rows:
        table.add_row(
            row.approach,
            f"{row.wall:.2f} s",
            f"{row.cpu:.2f} s",
            f"{row.cpu / row.wall:.1f}" if row.wall > 0 else "-",
            f"{row.peak_kib / 1024:.0f} MB",
            _checked(row.done, expected[0]),
            _checked(row.failed, expected[1]),
        )
    return table


def _checked(count: int, expected: int) -> str:
    return str(count) if count == expected else f"[red]{count} (planned {expected})[/red]"


if __name__ == "__main__":
    sys.exit(main())
