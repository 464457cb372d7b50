"""Worker pool benchmarks: chanflow.WorkerPool against ThreadPoolExecutor, asyncio and aiometer.

Three questions, one run:

* **Overhead** (P1 threads, P2 asyncio): what does a pool cost per no-op job?
* **I/O** (P3): 20,000 jobs sleeping 20 ms at concurrency 1,000; the ideal wall
  time is 20,000 / 1,000 x 20 ms = 0.4 s, the rest is the pool's doing.
* **Memory** (P4): peak RSS of ``map`` over a lazy input of 500,000 and of
  5,000,000 items, each in a fresh subprocess; flat means the pool never reads
  ahead of its buffer. ``ThreadPoolExecutor.map`` submits its whole input first.

P1-P3 are measured like the channel benchmarks (``bench_channel.measure_all``):
interleaved rounds in a rotating order, ``gc.collect()`` before each sample,
medians. P4 runs each subprocess once (peak RSS barely varies). ``run.py`` prints
the tables and the targets.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chanflow as cf
from bench_channel import Contestant, Measure, Results, Scenario, median, timed

try:
    import aiometer
except ImportError:  # an optional bench extra: its rows are skipped with a note
    aiometer = None  # type: ignore[assignment]

__all__ = [
    "IO_CONCURRENCY",
    "IO_SLEEP",
    "MemoryRow",
    "PoolTarget",
    "build_pool_scenarios",
    "measure_memory",
    "memory_lines",
    "pool_table_lines",
    "pool_target_lines",
]

THREAD_WORKERS = 8  # as ThreadPoolExecutor(8), the thread baseline
ASYNC_WORKERS = 100  # as Semaphore(100), the asyncio baseline
IO_CONCURRENCY = 1_000
IO_SLEEP = 0.02
SRC = Path(__file__).resolve().parent.parent / "src"

# Thread and asyncio baselines: the names the targets refer to.
TPE_MAP = f"ThreadPoolExecutor({THREAD_WORKERS}).map"
POOL_MAP = f"WorkerPool({THREAD_WORKERS}, thread).map"
GATHER = f"asyncio.gather + Semaphore({ASYNC_WORKERS})"
POOL_AMAP = "WorkerPool(async).amap (100 workers)"
IO_POOL_ASYNC = f"WorkerPool({IO_CONCURRENCY}, async).amap"
IO_POOL_THREAD = f"WorkerPool({IO_CONCURRENCY}, thread).map"
IO_TPE = f"ThreadPoolExecutor({IO_CONCURRENCY}).map"


def noop(job: int) -> int:
    return job


async def anoop(job: int) -> int:
    return job


def sleeper(job: int) -> int:
    time.sleep(IO_SLEEP)
    return job


async def asleeper(job: int) -> int:
    await asyncio.sleep(IO_SLEEP)
    return job


async def _atimed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    await run()
    return time.perf_counter() - start


def _per_job(seconds: Callable[[int], float]) -> Measure:
    """Turn a wall-time measurement of n jobs into microseconds per job."""

    def measure(n: int) -> float:
        return seconds(n) / n * 1e6

    return measure


# -- threads ------------------------------------------------------------------------------


def pool_map(
    workers: int, fn: Callable[[int], int], buffer: int | None = None
) -> Callable[[int], float]:
    """Wall seconds of ``WorkerPool(workers, thread).map(fn, range(n))``, pool start included.

    With the default window unless ``buffer`` is given.
    """

    def seconds(n: int) -> float:
        def run() -> None:
            with cf.WorkerPool(workers=workers, backend="thread", buffer=buffer) as pool:
                for _ in pool.map(fn, range(n)):
                    pass

        return timed(run)

    return seconds


def pool_results_unordered(n: int) -> float:
    def run() -> None:
        with cf.WorkerPool(workers=THREAD_WORKERS, backend="thread") as pool:
            for _ in pool.results(noop, range(n), ordered=False):
                pass

    return timed(run)


def executor_map(workers: int, fn: Callable[[int], int]) -> Callable[[int], float]:
    """Wall seconds of ``ThreadPoolExecutor(workers).map(fn, range(n))``, shutdown included."""

    def seconds(n: int) -> float:
        def run() -> None:
            with ThreadPoolExecutor(workers) as executor:
                for _ in executor.map(fn, range(n)):
                    pass

        return timed(run)

    return seconds


# -- asyncio --------------------------------------------------------------------------------


def pool_amap(workers: int, afn: Callable[[int], Any]) -> Callable[[int], float]:
    """Wall seconds of ``async with WorkerPool(workers, async)`` + ``amap(afn, range(n))``."""

    async def main(n: int) -> float:
        async def run() -> None:
            async with cf.WorkerPool(workers=workers, backend="async") as pool:
                async for _ in pool.amap(afn, range(n)):
                    pass

        return await _atimed(run)

    return lambda n: asyncio.run(main(n))


def gather_semaphore(limit: int, afn: Callable[[int], Any]) -> Callable[[int], float]:
    """Wall seconds of ``asyncio.gather`` over n coroutines, each under a Semaphore(limit)."""

    async def main(n: int) -> float:
        semaphore = asyncio.Semaphore(limit)

        async def limited(job: int) -> Any:
            async with semaphore:
                return await afn(job)

        async def run() -> None:
            await asyncio.gather(*(limited(job) for job in range(n)))

        return await _atimed(run)

    return lambda n: asyncio.run(main(n))


def aiometer_amap(limit: int, afn: Callable[[int], Any]) -> Callable[[int], float]:
    async def main(n: int) -> float:
        async def run() -> None:
            async with aiometer.amap(afn, range(n), max_at_once=limit) as results:
                async for _ in results:
                    pass

        return await _atimed(run)

    return lambda n: asyncio.run(main(n))


def queue_workers(workers: int, afn: Callable[[int], Any]) -> Callable[[int], float]:
    """Wall seconds of the hand-written pool: ``workers`` tasks, a jobs and a results Queue.

    The Go program in asyncio: a producer task feeds a bounded jobs queue, each
    worker task loops get -> afn -> put, the caller reads n results (in completion
    order, with no error handling, retries or cancellation on early exit).
    """

    async def main(n: int) -> float:
        async def run() -> None:
            jobs: asyncio.Queue[int | None] = asyncio.Queue(2 * workers)
            results: asyncio.Queue[Any] = asyncio.Queue(2 * workers)

            async def worker() -> None:
                while (job := await jobs.get()) is not None:
                    await results.put(await afn(job))

            async def produce() -> None:
                for job in range(n):
                    await jobs.put(job)
                for _ in range(workers):
                    await jobs.put(None)

            tasks = [asyncio.create_task(worker()) for _ in range(workers)]
            tasks.append(asyncio.create_task(produce()))
            for _ in range(n):
                await results.get()
            await asyncio.gather(*tasks)

        return await _atimed(run)

    return lambda n: asyncio.run(main(n))


# -- the timed scenarios ----------------------------------------------------------------------


def build_pool_scenarios(scale: float) -> list[Scenario]:
    """P1-P3 with job counts multiplied by ``scale`` (1.0 for a full run)."""

    def count(jobs: int) -> int:
        return max(1_000, int(jobs * scale))

    noop_jobs = count(200_000)
    threads = Scenario(
        "P1",
        "no-op jobs, threads",
        noop_jobs,
        [
            Contestant(POOL_MAP, _per_job(pool_map(THREAD_WORKERS, noop))),
            Contestant(
                f"WorkerPool({THREAD_WORKERS}, thread, buffer=256).map",
                _per_job(pool_map(THREAD_WORKERS, noop, buffer=256)),
            ),
            Contestant(
                f"WorkerPool({THREAD_WORKERS}, thread).results(ordered=False)",
                _per_job(pool_results_unordered),
            ),
            Contestant(TPE_MAP, _per_job(executor_map(THREAD_WORKERS, noop))),
        ],
        ("P1", TPE_MAP),
    )
    coroutines = Scenario(
        "P2",
        "no-op jobs, asyncio",
        noop_jobs,
        [
            Contestant(POOL_AMAP, _per_job(pool_amap(ASYNC_WORKERS, anoop))),
            Contestant(GATHER, _per_job(gather_semaphore(ASYNC_WORKERS, anoop))),
            Contestant(
                f"{ASYNC_WORKERS} asyncio tasks + asyncio.Queue",
                _per_job(queue_workers(ASYNC_WORKERS, anoop)),
            ),
        ],
        ("P2", GATHER),
    )
    if aiometer is not None:
        coroutines.contestants.append(
            Contestant(
                f"aiometer.amap(max_at_once={ASYNC_WORKERS})",
                _per_job(aiometer_amap(ASYNC_WORKERS, anoop)),
                count(50_000),
            )
        )
        coroutines.notes.append(f"aiometer runs {count(50_000):,} jobs per sample (slow)")
    else:
        coroutines.notes.append("aiometer rows skipped: aiometer is not installed")
    io = Scenario(
        "P3",
        f"{IO_SLEEP * 1000:.0f} ms sleeps, concurrency {IO_CONCURRENCY:,}",
        count(20_000),
        [
            Contestant(IO_POOL_ASYNC, pool_amap(IO_CONCURRENCY, asleeper)),
            Contestant(
                f"asyncio.gather + Semaphore({IO_CONCURRENCY})",
                gather_semaphore(IO_CONCURRENCY, asleeper),
            ),
            Contestant(IO_POOL_THREAD, pool_map(IO_CONCURRENCY, sleeper)),
            Contestant(IO_TPE, executor_map(IO_CONCURRENCY, sleeper)),
        ],
        ("P3", IO_TPE),
    )
    return [threads, coroutines, io]


def ideal_io_seconds(scenarios: list[Scenario]) -> float:
    """Wall time of P3 with zero overhead: batches of IO_CONCURRENCY jobs, IO_SLEEP each."""
    io = next(scenario for scenario in scenarios if scenario.key == "P3")
    return -(-io.items // IO_CONCURRENCY) * IO_SLEEP


UNITS = {"P1": "us/job", "P2": "us/job", "P3": "s wall"}


# -- memory (P4): fresh subprocesses -----------------------------------------------------------

# The source of ``peak_kib()`` for a memory child script (which prints "before peak").
PEAK_KIB_SOURCE = """
import resource, sys
def peak_kib():
    # On Linux, VmHWM is this process image's own high-water mark. ru_maxrss is not:
    # it keeps the peak of the parent's forked copy from before exec, which would
    # hide any growth below the size of the (large) benchmark parent.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss  # bytes on macOS, KiB on Linux
"""

_CHILD = (
    PEAK_KIB_SOURCE
    + """
import itertools
kind, n, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def noop(job):
    return job
import chanflow as cf
from concurrent.futures import ThreadPoolExecutor
items = itertools.islice(itertools.count(), n)  # lazy, no len()
before = peak_kib()
if kind == "pool":
    with cf.WorkerPool(workers=workers, backend="thread") as pool:
        for _ in pool.map(noop, items):
            pass
else:
    with ThreadPoolExecutor(workers) as executor:
        for _ in executor.map(noop, items):
            pass
print(before, peak_kib())
"""
)


@dataclass(frozen=True)
class MemoryRow:
    """Peak RSS (KiB) of one child process that mapped a no-op over ``items`` jobs."""

    kind: str  # "pool" or "executor"
    items: int
    before_kib: int  # peak RSS after imports, before the map
    peak_kib: int
    seconds: float


MEMORY_NAMES = {"pool": POOL_MAP, "executor": TPE_MAP}


def memory_counts(scale: float) -> dict[str, tuple[int, int]]:
    """(small, large) lazy input lengths per kind, scaled."""

    def count(items: int) -> int:
        return max(10_000, int(items * scale))

    return {
        "pool": (count(500_000), count(5_000_000)),
        # ThreadPoolExecutor.map holds a Future per item: 1M items is ~1.7 GB already.
        "executor": (count(500_000), count(1_000_000)),
    }


def run_memory_child(script: str, *args: str) -> tuple[int, int, float]:
    """Run a memory child in a fresh interpreter: its two peak RSS (KiB) and its seconds."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
        env=env,
    )
    before, peak = (int(word) for word in done.stdout.split())
    return before, peak, time.perf_counter() - start


def measure_memory(scale: float, progress: Callable[[str], None] | None = None) -> list[MemoryRow]:
    """Run each (kind, items) child once; small and large runs alternate."""
    rows: list[MemoryRow] = []
    for kind, sizes in memory_counts(scale).items():
        for items in sizes:
            before, peak, seconds = run_memory_child(_CHILD, kind, str(items), str(THREAD_WORKERS))
            rows.append(MemoryRow(kind, items, before, peak, seconds))
            if progress is not None:
                progress(f"memory: {MEMORY_NAMES[kind]} over {items:,} items: {peak / 1024:.1f} MB")
    return rows


def _memory_pair(rows: list[MemoryRow], kind: str) -> tuple[MemoryRow, MemoryRow]:
    small, large = sorted((row for row in rows if row.kind == kind), key=lambda row: row.items)
    return small, large


def memory_lines(rows: list[MemoryRow]) -> list[str]:
    header = ("contestant", "lazy input", "peak RSS MB", "after import MB", "child s", "growth")
    table: list[tuple[str, ...]] = []
    for kind in MEMORY_NAMES:
        small, large = _memory_pair(rows, kind)
        per_item = (large.peak_kib - small.peak_kib) * 1024 / (large.items - small.items)
        for row in (small, large):
            table.append(
                (
                    MEMORY_NAMES[kind] if row is small else "",
                    f"{row.items:,} items",
                    f"{row.peak_kib / 1024:.1f}",
                    f"{row.before_kib / 1024:.1f}",
                    f"{row.seconds:.1f}",
                    f"{large.peak_kib / small.peak_kib:.2f}x, {per_item:.0f} B/item"
                    if row is large
                    else "",
                )
            )
    return ["P4. peak RSS of map over a lazy input (fresh subprocess each)", *_grid(header, table)]


# -- tables and targets -------------------------------------------------------------------------


def _grid(header: tuple[str, ...], rows: list[tuple[str, ...]], left: int = 2) -> list[str]:
    """Columns padded to width: the first ``left`` left-aligned, the rest right-aligned."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        padded = [
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    rule = "-" * len(line(header))
    out = [line(header), rule]
    for row in rows:
        if row[0] and len(out) > 2:
            out.append("")
        out.append(line(row))
    out.append(rule)
    return out


def pool_table_lines(scenarios: list[Scenario], results: Results) -> list[str]:
    """P1-P3: median and min per contestant, and its cost relative to the baseline."""
    return cost_table_lines(scenarios, results, units=UNITS, count="jobs", digits=2)


def cost_table_lines(
    scenarios: list[Scenario],
    results: Results,
    *,
    units: dict[str, str],
    count: str,
    digits: int,
    notes: tuple[str, ...] = (),
) -> list[str]:
    """A section's table: median and min per contestant, its cost against the baseline.

    ``count`` heads the column of items per sample, ``digits`` rounds the times, and
    ``notes`` follow the scenarios' own notes.
    """
    header = ("scenario", "contestant", count, "median", "min", "unit", "cost vs baseline")
    rows: list[tuple[str, ...]] = []
    all_notes: list[str] = []
    for scenario in scenarios:
        label = f"{scenario.key}. {scenario.title}"
        baseline = median(results, scenario.baseline) if scenario.baseline else None
        for contestant in scenario.contestants:
            key = (scenario.key, contestant.name)
            value = median(results, key)
            assert value is not None
            ratio = "-" if baseline is None else f"{value / baseline:.{digits}f}x"
            if key == scenario.baseline:
                ratio = "1.00x (baseline)"
            rows.append(
                (
                    label,
                    contestant.name,
                    f"{contestant.items or scenario.items:,}",
                    f"{value:.{digits}f}",
                    f"{min(results[key]):.{digits}f}",
                    units[scenario.key],
                    ratio,
                )
            )
            label = ""
        all_notes.extend(f"  [{scenario.key}] {note}" for note in scenario.notes)
    all_notes.extend(notes)
    out = _grid(header, rows)
    out.append("cost vs baseline: this median / baseline median (below 1 = cheaper than it)")
    if all_notes:
        out.append("notes:")
        out.extend(all_notes)
    return out


@dataclass(frozen=True)
class PoolTarget:
    """``contestant``'s median must be at most ``limit`` times ``baseline``'s."""

    label: str
    contestant: tuple[str, str]
    baseline: tuple[str, str] | None  # None: against ``ideal`` seconds instead
    limit: float


def pool_targets() -> list[PoolTarget]:
    return [
        PoolTarget(
            f"no-op jobs: {POOL_MAP} <= 0.25x {TPE_MAP} per job",
            ("P1", POOL_MAP),
            ("P1", TPE_MAP),
            0.25,
        ),
        PoolTarget(
            f"no-op jobs: {POOL_AMAP} <= 0.2x {GATHER} per job",
            ("P2", POOL_AMAP),
            ("P2", GATHER),
            0.2,
        ),
        PoolTarget(
            f"I/O: {IO_POOL_ASYNC} <= 1.15x the ideal wall time",
            ("P3", IO_POOL_ASYNC),
            None,
            1.15,
        ),
        PoolTarget(
            f"I/O: {IO_POOL_THREAD} <= 0.75x {IO_TPE} wall time",
            ("P3", IO_POOL_THREAD),
            ("P3", IO_TPE),
            0.75,
        ),
    ]


def _verdict(met: bool) -> str:
    return "MET " if met else "MISS"


def pool_target_lines(
    scenarios: list[Scenario], results: Results | None, memory: list[MemoryRow] | None
) -> list[str]:
    """Each target's ratio from this run's medians, with the same-round spread."""
    out = ["POOL TARGETS (from the medians above; ratio = cost / baseline cost):"]
    if results is not None:
        ideal = ideal_io_seconds(scenarios)
        for target in pool_targets():
            samples = results[target.contestant]
            base = [ideal] * len(samples) if target.baseline is None else results[target.baseline]
            ratio = statistics.median(samples) / statistics.median(base)
            paired = [value / b for value, b in zip(samples, base, strict=True)]
            against = f" (ideal {ideal:.2f} s)" if target.baseline is None else ""
            out.append(
                f"  [{_verdict(ratio <= target.limit)}] {target.label}{against}: {ratio:.3f}x "
                f"(same-round ratios {min(paired):.3f}x to {max(paired):.3f}x)"
            )
    if memory is not None:
        small, large = _memory_pair(memory, "pool")
        ratio = large.peak_kib / small.peak_kib
        out.append(
            f"  [{_verdict(ratio <= 1.10)}] memory: {POOL_MAP} peak RSS over {large.items:,} "
            f"items <= 1.10x over {small.items:,}: {ratio:.3f}x "
            f"({small.peak_kib / 1024:.1f} -> {large.peak_kib / 1024:.1f} MB)"
        )
    return out


if __name__ == "__main__":  # pragma: no cover - run benchmarks/run.py instead
    sys.exit("run benchmarks/run.py --only pool")
