"""Pipeline benchmarks: chanflow.Pipeline against pypeln, a plain loop and Go.

Four questions, one run:

* **Overhead** (F1): what does a 3-stage flow of no-op thread stages cost per item,
  next to pypeln's thread pipeline of the same shape and a plain ``for`` loop that
  calls the three functions?
* **The seeds' generate -> square -> print** (F2) over 1,000,000 ints, with the
  printing replaced by a sum: the source generates, one thread stage squares, the
  consumer sums; next to the seeds' Go program (``go/pipeline.go``, unbuffered
  channels, one goroutine a stage), pypeln and a plain loop.
* **Memory** (F3): peak RSS of the F1 flow over an endless ``itertools.count()``,
  the consumer leaving after 500,000 and after 5,000,000 items, each in a fresh
  subprocess; flat means no stage reads ahead of its buffer.
* **CPU** (F4): a thread stage -> a stage of about 2 ms of pure Python per item ->
  a thread stage, the middle one on ``backend="process"`` and on ``"thread"``.

F1, F2 and F4 are measured like the channel benchmarks (``bench_channel.measure_all``):
interleaved rounds in a rotating order, ``gc.collect()`` before each sample,
medians. F3 runs each subprocess once (peak RSS barely varies). ``run.py`` prints
the tables and the targets.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chanflow as cf
from bench_channel import Contestant, GoBench, Measure, Results, Scenario, timed
from bench_pool import PEAK_KIB_SOURCE, _grid, cost_table_lines, run_memory_child
from jobs import calibrate_spin, noop, spin

try:
    import pypeln as pl
except ImportError:  # an optional bench extra: its rows are skipped with a note
    pl = None

__all__ = [
    "GO_PIPELINE",
    "PipelineMemoryRow",
    "build_pipeline_scenarios",
    "measure_pipeline_memory",
    "pipeline_memory_lines",
    "pipeline_table_lines",
    "pipeline_target_lines",
]

GO_PIPELINE = Path(__file__).with_name("go") / "pipeline.go"
PYPELN_SHARE = 20  # pypeln runs 1/20 of the items: about 20-40 us an item for 3 stages

# The names the targets refer to.
FLOW = "Pipeline: 3 x map(thread), defaults"
FLOW_ONE = "Pipeline: 3 x map(thread, workers=1)"
PYPELN = "pypeln: 3 x pl.thread.map(workers=1)"
LOOP = "plain loop: f(f(f(x)))"
SQUARE_FLOW = "Pipeline(range(n)).map(square, thread)"
SQUARE_GO = "Go: generate -> square, unbuffered chans"
SQUARE_PYPELN = "pypeln: pl.thread.map(square, workers=1)"
SQUARE_LOOP = "plain loop: total += square(x)"
CPU_PROCESS = "middle map(spin, backend=process)"
CPU_THREAD = "middle map(spin, backend=thread)"

UNITS = {"F1": "us/item", "F2": "us/item", "F4": "s wall"}


def square(n: int) -> int:
    return n * n


def _sum_of_squares(n: int) -> int:
    """0**2 + 1**2 + ... + (n - 1)**2: what every F2 contestant must sum to."""
    return (n - 1) * n * (2 * n - 1) // 6


def _check(total: int, n: int) -> None:
    if total != _sum_of_squares(n):
        raise RuntimeError(f"generate -> square summed to {total}, not {_sum_of_squares(n)}")


def _per_item(seconds: Callable[[int], float]) -> Measure:
    """Turn a wall-time measurement of n items into microseconds per item."""
    return lambda n: seconds(n) / n * 1e6


# -- F1: three no-op stages ----------------------------------------------------------------


def three_stages(source: Any, **stage: Any) -> cf.Pipeline[Any]:
    """``Pipeline(source)`` with three ``map(noop, backend="thread", **stage)`` stages."""
    flow: cf.Pipeline[Any] = cf.Pipeline(source)
    for _ in range(3):
        flow = flow.map(noop, backend="thread", **stage)
    return flow


def flow_three(**stage: Any) -> Callable[[int], float]:
    """Wall seconds of iterating the 3-stage flow over ``range(n)``, building it included."""

    def seconds(n: int) -> float:
        def run() -> None:
            for _ in three_stages(range(n), **stage):
                pass

        return timed(run)

    return seconds


def pypeln_three(n: int) -> float:
    def run() -> None:
        stages = pl.thread.map(
            noop,
            pl.thread.map(noop, pl.thread.map(noop, range(n), workers=1), workers=1),
            workers=1,
        )
        for _ in stages:
            pass

    return timed(run)


def loop_three(n: int) -> float:
    def run() -> None:
        for x in range(n):
            noop(noop(noop(x)))

    return timed(run)


# -- F2: generate -> square -> sum ---------------------------------------------------------


def flow_square(n: int) -> float:
    def run() -> None:
        total = 0
        for value in cf.Pipeline(range(n)).map(square, backend="thread"):
            total += value
        _check(total, n)

    return timed(run)


def pypeln_square(n: int) -> float:
    def run() -> None:
        total = 0
        for value in pl.thread.map(square, range(n), workers=1):
            total += value
        _check(total, n)

    return timed(run)


def loop_square(n: int) -> float:
    def run() -> None:
        total = 0
        for x in range(n):
            total += square(x)
        _check(total, n)

    return timed(run)


# -- F4: a CPU-bound middle stage ------------------------------------------------------------


def cpu_flow(backend: str, turns: int, reports: dict[str, cf.PipelineReport]) -> Measure:
    """Wall seconds of ``.run()`` on thread -> spin on ``backend`` -> thread over n items.

    The first stage turns each index into the job (``turns`` of ``spin``), the last
    passes results on; ``reports[backend]`` keeps the latest run's report.
    """

    def job(index: int) -> int:
        return turns

    def seconds(n: int) -> float:
        start = time.perf_counter()
        report = (
            cf.Pipeline(range(n))
            .map(job, backend="thread")
            .map(spin, backend=backend)
            .map(noop, backend="thread")
            .run()
        )
        elapsed = time.perf_counter() - start
        reports[backend] = report
        return elapsed

    return seconds


def calibrate_cpu_job() -> tuple[int, float]:
    """Turns of ``spin`` for about 2 ms of work, and the milliseconds they take."""
    turns = calibrate_spin()
    start = time.perf_counter()
    for _ in range(20):
        spin(turns)
    return turns, (time.perf_counter() - start) / 20 * 1e3


# -- the timed scenarios ----------------------------------------------------------------------


def build_pipeline_scenarios(
    scale: float, go: GoBench | None
) -> tuple[list[Scenario], dict[str, cf.PipelineReport]]:
    """F1, F2 and F4 with item counts multiplied by ``scale`` (1.0 for a full run).

    The dict returned is filled while F4 runs: the latest report per backend.
    """

    def count(items: int) -> int:
        return max(1_000, int(items * scale))

    items = count(1_000_000)
    overhead = Scenario(
        "F1",
        "3 no-op thread stages",
        items,
        [
            Contestant(FLOW, _per_item(flow_three())),
            Contestant(FLOW_ONE, _per_item(flow_three(workers=1))),
            Contestant(LOOP, _per_item(loop_three)),
        ],
        ("F1", PYPELN) if pl is not None else ("F1", LOOP),
    )
    squares = Scenario(
        "F2",
        "generate -> square -> sum",
        items,
        [
            Contestant(SQUARE_FLOW, _per_item(flow_square)),
            Contestant(SQUARE_LOOP, _per_item(loop_square)),
        ],
        ("F2", SQUARE_LOOP),
        ["the seeds' last stage prints each square; every contestant sums them instead"],
    )
    if pl is not None:
        few = max(200, items // PYPELN_SHARE)
        overhead.contestants.insert(2, Contestant(PYPELN, _per_item(pypeln_three), few))
        squares.contestants.insert(1, Contestant(SQUARE_PYPELN, _per_item(pypeln_square), few))
        for scenario in (overhead, squares):
            scenario.notes.append(f"pypeln runs {few:,} items per sample (slow), normalised")
    else:
        for scenario in (overhead, squares):
            scenario.notes.append("pypeln rows skipped: pypeln is not installed")
    if go is not None and go.available:
        squares.contestants.insert(1, Contestant(SQUARE_GO, go.measure()))
        squares.baseline = ("F2", SQUARE_GO)
        squares.notes.append(
            "Go: go/pipeline.go, the seeds' generate and square, timed inside the program"
        )
    elif go is not None:
        squares.notes.append(go.note)
    turns, job_ms = calibrate_cpu_job()
    reports: dict[str, cf.PipelineReport] = {}
    cpu = Scenario(
        "F4",
        "~2 ms CPU middle stage",
        max(100, int(1_000 * scale)),
        [
            Contestant(CPU_PROCESS, cpu_flow("process", turns, reports)),
            Contestant(CPU_THREAD, cpu_flow("thread", turns, reports)),
        ],
        ("F4", CPU_THREAD),
        [f"spin({turns:,}) per item: {job_ms:.2f} ms here in one thread; default workers"],
    )
    return [overhead, squares, cpu], reports


# -- memory (F3): fresh subprocesses -----------------------------------------------------------

_CHILD = (
    PEAK_KIB_SOURCE
    + """
import itertools
n = int(sys.argv[1])
def noop(job):
    return job
import chanflow as cf
flow = cf.Pipeline(itertools.count())  # endless
for _ in range(3):
    flow = flow.map(noop, backend="thread")
before = peak_kib()
seen = 0
for _ in flow:
    seen += 1
    if seen >= n:
        break
print(before, peak_kib())
"""
)


@dataclass(frozen=True)
class PipelineMemoryRow:
    """Peak RSS (KiB) of one child that took ``items`` items from the endless flow."""

    items: int
    before_kib: int  # peak RSS after imports, before the flow ran
    peak_kib: int
    seconds: float


def memory_counts(scale: float) -> tuple[int, int]:
    def count(items: int) -> int:
        return max(10_000, int(items * scale))

    return count(500_000), count(5_000_000)


def measure_pipeline_memory(
    scale: float, progress: Callable[[str], None] | None = None
) -> list[PipelineMemoryRow]:
    """Run one child per item count, small then large."""
    rows: list[PipelineMemoryRow] = []
    for items in memory_counts(scale):
        before, peak, seconds = run_memory_child(_CHILD, str(items))
        rows.append(PipelineMemoryRow(items, before, peak, seconds))
        if progress is not None:
            progress(f"memory: {FLOW} over {items:,} items of count(): {peak / 1024:.1f} MB")
    return rows


def pipeline_memory_lines(rows: list[PipelineMemoryRow]) -> list[str]:
    header = ("contestant", "endless input", "peak RSS MB", "after import MB", "child s", "growth")
    small, large = rows
    per_item = (large.peak_kib - small.peak_kib) * 1024 / (large.items - small.items)
    table = [
        (
            FLOW if row is small else "",
            f"first {row.items:,} items",
            f"{row.peak_kib / 1024:.1f}",
            f"{row.before_kib / 1024:.1f}",
            f"{row.seconds:.1f}",
            f"{large.peak_kib / small.peak_kib:.2f}x, {per_item:.0f} B/item"
            if row is large
            else "",
        )
        for row in (small, large)
    ]
    return [
        "F3. peak RSS over itertools.count(), consumer leaves after n (fresh subprocess each)",
        *_grid(header, table),
    ]


# -- tables and targets -------------------------------------------------------------------------


def pipeline_table_lines(
    scenarios: list[Scenario], results: Results, reports: dict[str, cf.PipelineReport]
) -> list[str]:
    """F1, F2, F4: median and min per contestant, and its cost relative to the baseline."""
    notes = []
    for backend, report in reports.items():
        busy = ", ".join(
            f"{stage.name} x{stage.workers} {stage.busy:.0%}" for stage in report.stages
        )
        notes.append(
            f"  [F4] last run, middle on {backend}: PipelineReport.bottleneck = "
            f"{report.bottleneck!r} (workers and busy: {busy})"
        )
    return cost_table_lines(
        scenarios, results, units=UNITS, count="items", digits=3, notes=tuple(notes)
    )


@dataclass(frozen=True)
class PipelineTarget:
    """``contestant``'s median must be at most ``limit`` times ``baseline``'s.

    With ``speedup``, the other way round: ``baseline / contestant`` at least ``limit``.
    """

    label: str
    contestant: tuple[str, str]
    baseline: tuple[str, str]
    limit: float
    speedup: bool = False


def pipeline_targets() -> list[PipelineTarget]:
    return [
        PipelineTarget(
            f"3 no-op stages: {FLOW} <= 0.1x {PYPELN} per item",
            ("F1", FLOW),
            ("F1", PYPELN),
            0.1,
        ),
        PipelineTarget(
            f"3 no-op stages: {FLOW} <= 10x the {LOOP} per item",
            ("F1", FLOW),
            ("F1", LOOP),
            10.0,
        ),
        PipelineTarget(
            f"CPU: {CPU_PROCESS} >= 1.8x faster than {CPU_THREAD}",
            ("F4", CPU_PROCESS),
            ("F4", CPU_THREAD),
            1.8,
            speedup=True,
        ),
    ]


def _verdict(met: bool) -> str:
    return "MET " if met else "MISS"


def pipeline_target_lines(
    results: Results | None, memory: list[PipelineMemoryRow] | None
) -> list[str]:
    """Each target's ratio from this run's medians, with the same-round spread."""
    out = ["PIPELINE TARGETS (from the medians above):"]
    if results is not None:
        for target in pipeline_targets():
            samples, base = results.get(target.contestant), results.get(target.baseline)
            if not samples or not base:
                out.append(f"  [n/a ] {target.label}: not measured")
                continue
            if target.speedup:
                ratio = statistics.median(base) / statistics.median(samples)
                paired = [b / value for value, b in zip(samples, base, strict=True)]
                met = ratio >= target.limit
            else:
                ratio = statistics.median(samples) / statistics.median(base)
                paired = [value / b for value, b in zip(samples, base, strict=True)]
                met = ratio <= target.limit
            out.append(
                f"  [{_verdict(met)}] {target.label}: {ratio:.3f}x "
                f"(same-round ratios {min(paired):.3f}x to {max(paired):.3f}x)"
            )
    if memory is not None:
        small, large = memory
        ratio = large.peak_kib / small.peak_kib
        out.append(
            f"  [{_verdict(ratio <= 1.10)}] memory: {FLOW} peak RSS over the first "
            f"{large.items:,} items of count() <= 1.10x over {small.items:,}: {ratio:.3f}x "
            f"({small.peak_kib / 1024:.1f} -> {large.peak_kib / 1024:.1f} MB)"
        )
    return out


def go_pipeline() -> GoBench:
    """go/pipeline.go, built like chanbench.go (see bench_channel.GoBench)."""
    return GoBench(GO_PIPELINE)


if __name__ == "__main__":  # pragma: no cover - run benchmarks/run.py instead
    sys.exit("run benchmarks/run.py --only pipeline")
