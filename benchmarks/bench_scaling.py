"""Scaling: where each backend pays off, as two curves.

* **S1 job duration**: jobs of 1 us to 10 ms of pure-Python CPU work
  (``jobs.spin``, calibrated here), and the wall time per job of a plain loop, of
  ``WorkerPool`` on threads (8), asyncio (100 tasks) and processes (one per core),
  and of their stdlib peers: ``ThreadPoolExecutor(8).map``, ``asyncio.gather`` under
  a ``Semaphore(100)``, ``ProcessPoolExecutor.map`` (its default ``chunksize=1``) and
  ``multiprocessing.Pool.map`` (its own chunking). Below the loop, a backend pays off;
  on 2 cores the best possible is half the loop.
* **S2 workers**: jobs sleeping 20 ms (I/O) on 1 to 1,000 workers: ``WorkerPool`` on
  threads and on asyncio against ``ThreadPoolExecutor(k).map`` and ``asyncio.gather``
  under a ``Semaphore(k)``; each sample is 10 waves of ``k`` jobs, so the ideal is
  20 ms / k per job.

Unlike the other sections, the clock here measures a pool that is already running:
each sample starts its pool, runs one untimed warm-up call (which starts the threads
or processes; the pool sections measure start-up), then times one call over its jobs.
Job counts shrink as jobs grow (about 0.2 s of job time per sample, 40 to 20,000
jobs), and ``ProcessPoolExecutor``, with one round trip per job, gets at most 2,000.
Rounds interleave every contestant of every point, as in the other sections. Run
through ``run.py --only scaling`` (about two minutes on 2 cores).
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import chanflow as cf
from bench_channel import Contestant, Measure, Results, Scenario
from bench_pool import IO_SLEEP, asleeper, sleeper
from charts import PanelRecord, Row, is_chanflow
from jobs import calibrate_spin, spin

__all__ = [
    "DURATION",
    "WORKERS",
    "Point",
    "build_scaling_scenarios",
    "scaling_lines",
    "scaling_panels",
    "scaling_rounds",
    "warm_up",
]

DURATION = "S1"
WORKERS = "S2"
THREADS = 8  # as ThreadPoolExecutor(8), the thread baseline of the pool section
TASKS = 100  # as Semaphore(100), the asyncio baseline of the pool section
PROCESSES = os.cpu_count() or 2
DURATIONS_US = (1, 3, 10, 30, 100, 300, 1_000, 3_000, 10_000)
QUICK_DURATIONS_US = (1, 100, 10_000)
WORKER_COUNTS = (1, 3, 10, 30, 100, 300, 1_000)
QUICK_WORKER_COUNTS = (1, 30, 1_000)
WORK_SECONDS = 0.2  # job time per sample in S1 (before the job counts' bounds)
MIN_JOBS, MAX_JOBS = 40, 20_000
WARM_JOBS = 8  # untimed, before the clock: starts every thread or process
PPE_MAX_JOBS = 2_000  # one round trip a job: about 0.1 ms each even for a 1 us job
WAVES = 10  # S2: jobs per sample = WAVES x workers
MAX_ROUNDS = 3

LOOP = "plain loop"
CF_THREAD = f"WorkerPool({THREADS}, thread).map"
TPE = f"ThreadPoolExecutor({THREADS}).map"
CF_ASYNC = f"WorkerPool({TASKS}, async).amap"
GATHER = f"asyncio.gather + Semaphore({TASKS})"
CF_PROCESS = f"WorkerPool({PROCESSES}, process).map"
PPE = f"ProcessPoolExecutor({PROCESSES}).map"
MP_POOL = f"multiprocessing.Pool({PROCESSES}).map"
IO_CF_THREAD = "WorkerPool(k, thread).map"
IO_TPE = "ThreadPoolExecutor(k).map"
IO_CF_ASYNC = "WorkerPool(k, async).amap"
IO_GATHER = "asyncio.gather + Semaphore(k)"

# Each contestant's line on the chart: its backend's colour ("reference": the loop).
GROUPS = {
    LOOP: "reference",
    CF_THREAD: "thread",
    TPE: "thread",
    CF_ASYNC: "async",
    GATHER: "async",
    CF_PROCESS: "process",
    PPE: "process",
    MP_POOL: "process",
    IO_CF_THREAD: "thread",
    IO_TPE: "thread",
    IO_CF_ASYNC: "async",
    IO_GATHER: "async",
}


class _Mapper(Protocol):
    """What every synchronous pool here offers: ``map(fn, iterable)`` in a ``with``."""

    def map(self, fn: Callable[[Any], Any], iterable: Iterable[Any], /) -> Iterable[Any]: ...


@dataclass(frozen=True)
class Point:
    """One point of a curve: the scenario's key, where it sits on the x axis."""

    key: str
    curve: str  # DURATION or WORKERS
    x: float  # us of work per job, or workers


def _drain(results: Iterable[Any]) -> None:
    for _ in results:
        pass


def _items(arg: int, n: int) -> Iterator[int]:
    return itertools.repeat(arg, n)


def loop_of(fn: Callable[[int], Any], arg: int) -> Measure:
    """Microseconds per job of calling ``fn(arg)`` n times in a plain loop."""

    def measure(n: int) -> float:
        start = time.perf_counter()
        for item in _items(arg, n):
            fn(item)
        return (time.perf_counter() - start) / n * 1e6

    return measure


def warm_pool(
    make: Callable[[], AbstractContextManager[_Mapper]],
    fn: Callable[[int], Any],
    arg: int,
    warm: int,
) -> Measure:
    """Microseconds per job of ``pool.map(fn, ...)`` on a pool started and warmed up first.

    The warm-up (``warm`` jobs, untimed) starts the pool's threads or processes; the
    clock then times one ``map`` over n jobs, results read, shutdown excluded.
    """

    def measure(n: int) -> float:
        with make() as pool:
            _drain(pool.map(fn, _items(arg, warm)))
            start = time.perf_counter()
            _drain(pool.map(fn, _items(arg, n)))
            return (time.perf_counter() - start) / n * 1e6

    return measure


def warm_async_pool(workers: int, afn: Callable[[int], Any], arg: int, warm: int) -> Measure:
    """Microseconds per job of ``amap`` on an async-backend pool, warmed up first."""

    async def main(n: int) -> float:
        async with cf.WorkerPool(workers, "async") as pool:
            async for _ in pool.amap(afn, _items(arg, warm)):
                pass
            start = time.perf_counter()
            async for _ in pool.amap(afn, _items(arg, n)):
                pass
            return (time.perf_counter() - start) / n * 1e6

    return lambda n: asyncio.run(main(n))


def gather_semaphore(limit: int, afn: Callable[[int], Any], arg: int, warm: int) -> Measure:
    """Microseconds per job of ``asyncio.gather`` over n coroutines under a Semaphore(limit).

    In a running event loop, after an untimed gather of ``warm`` jobs, as the pools.
    """

    async def main(n: int) -> float:
        semaphore = asyncio.Semaphore(limit)

        async def limited(item: int) -> Any:
            async with semaphore:
                return await afn(item)

        await asyncio.gather(*(limited(item) for item in _items(arg, warm)))
        start = time.perf_counter()
        await asyncio.gather(*(limited(item) for item in _items(arg, n)))
        return (time.perf_counter() - start) / n * 1e6

    return lambda n: asyncio.run(main(n))


async def aspin(turns: int) -> int:
    """``spin`` in a coroutine: CPU work that holds the event loop, as any would."""
    return spin(turns)


def _chanflow(workers: int, backend: str) -> Callable[[], AbstractContextManager[_Mapper]]:
    return lambda: cf.WorkerPool(workers, backend)


def _thread_executor(workers: int) -> Callable[[], AbstractContextManager[_Mapper]]:
    return lambda: ThreadPoolExecutor(workers)


def _process_executor() -> AbstractContextManager[_Mapper]:
    return ProcessPoolExecutor(PROCESSES)


def _mp_pool() -> AbstractContextManager[_Mapper]:
    return multiprocessing.Pool(PROCESSES)


# -- the scenarios ------------------------------------------------------------------------------


def duration_jobs(seconds: float, scale: float) -> int:
    """S1's jobs per sample for jobs of ``seconds``: about WORK_SECONDS x scale of work."""
    wanted = int(WORK_SECONDS * scale / seconds)
    return max(MIN_JOBS, min(int(MAX_JOBS * scale) or MIN_JOBS, wanted))


def duration_scenario(us: float, turns_per_second: float, scale: float) -> tuple[Scenario, Point]:
    """S1 at jobs of ``us`` microseconds of CPU work."""
    turns = max(1, round(turns_per_second * us / 1e6))
    jobs = duration_jobs(us / 1e6, scale)
    warm = WARM_JOBS
    contestants = [
        Contestant(LOOP, loop_of(spin, turns)),
        Contestant(CF_THREAD, warm_pool(_chanflow(THREADS, "thread"), spin, turns, warm)),
        Contestant(TPE, warm_pool(_thread_executor(THREADS), spin, turns, warm)),
        Contestant(CF_ASYNC, warm_async_pool(TASKS, aspin, turns, warm)),
        Contestant(GATHER, gather_semaphore(TASKS, aspin, turns, warm)),
        Contestant(CF_PROCESS, warm_pool(_chanflow(PROCESSES, "process"), spin, turns, warm)),
        Contestant(PPE, warm_pool(_process_executor, spin, turns, warm), min(jobs, PPE_MAX_JOBS)),
        Contestant(MP_POOL, warm_pool(_mp_pool, spin, turns, warm)),
    ]
    key = f"{DURATION} {us:g} us"
    title = f"jobs of {us:g} us of CPU work ({turns:,} turns of spin)"
    return Scenario(key, title, jobs, contestants, (key, LOOP)), Point(key, DURATION, us)


def workers_scenario(workers: int, waves: int) -> tuple[Scenario, Point]:
    """S2 on ``workers`` workers: ``waves`` x workers jobs sleeping IO_SLEEP."""
    contestants = [
        Contestant(IO_CF_THREAD, warm_pool(_chanflow(workers, "thread"), sleeper, 0, workers)),
        Contestant(IO_TPE, warm_pool(_thread_executor(workers), sleeper, 0, workers)),
        Contestant(IO_CF_ASYNC, warm_async_pool(workers, asleeper, 0, workers)),
        Contestant(IO_GATHER, gather_semaphore(workers, asleeper, 0, workers)),
    ]
    key = f"{WORKERS} {workers} workers"
    title = f"{IO_SLEEP * 1e3:.0f} ms sleeps on {workers:,} workers"
    return Scenario(key, title, waves * workers, contestants, None), Point(key, WORKERS, workers)


def build_scaling_scenarios(quick: bool, scale: float) -> tuple[list[Scenario], list[Point]]:
    """S1 and S2 (fewer points and jobs with ``quick``); where each scenario sits."""
    rate = calibrate_spin() / 0.002  # turns of spin per second here, in one thread
    durations = QUICK_DURATIONS_US if quick else DURATIONS_US
    counts = QUICK_WORKER_COUNTS if quick else WORKER_COUNTS
    built = [duration_scenario(us, rate, scale) for us in durations]
    built += [workers_scenario(workers, 2 if quick else WAVES) for workers in counts]
    return [scenario for scenario, _ in built], [point for _, point in built]


def scaling_rounds(rounds: int) -> int:
    """At most MAX_ROUNDS: the points are many, and each is its own scenario."""
    return max(1, min(rounds, MAX_ROUNDS))


def warm_up() -> None:
    """Start chanflow's forkserver (once per parent process), untimed."""
    with cf.WorkerPool(PROCESSES, "process") as pool:
        _drain(pool.map(spin, _items(1, 10)))


# -- the table ----------------------------------------------------------------------------------


def _curve_lines(
    scenarios: list[Scenario], points: list[Point], results: Results, curve: str, heading: str
) -> list[str]:
    chosen = [(s, p) for s, p in zip(scenarios, points, strict=True) if p.curve == curve]
    names = list(dict.fromkeys(c.name for s, _ in chosen for c in s.contestants))
    width = max(len(name) for name in names)
    xs = [f"{p.x:g}" for _, p in chosen]
    lines = [heading, f"  {'':<{width}}" + "".join(f"{x:>10}" for x in xs)]
    for name in names:
        cells = []
        for scenario, _ in chosen:
            samples = results.get((scenario.key, name))
            cells.append(f"{statistics.median(samples):>10.2f}" if samples else f"{'-':>10}")
        lines.append(f"  {name:<{width}}" + "".join(cells))
    return lines


def scaling_lines(scenarios: list[Scenario], points: list[Point], results: Results) -> list[str]:
    """Both curves as tables: median us per job, one column per point."""
    s1 = _curve_lines(
        scenarios,
        points,
        results,
        DURATION,
        "S1. us per job (median) against us of CPU work per job; warm pools",
    )
    s2 = _curve_lines(
        scenarios,
        points,
        results,
        WORKERS,
        f"S2. us per job (median) against workers, {IO_SLEEP * 1e3:.0f} ms sleeps; "
        f"ideal = {IO_SLEEP * 1e6:,.0f} / workers",
    )
    return [*s1, "", *s2]


# -- the record the charts are drawn from ---------------------------------------------------------


def _rows(
    scenarios: list[Scenario], points: list[Point], results: Results, curve: str
) -> list[Row]:
    rows = []
    for scenario, point in zip(scenarios, points, strict=True):
        if point.curve != curve:
            continue
        for contestant in scenario.contestants:
            samples = results.get((scenario.key, contestant.name))
            if samples:
                rows.append(
                    Row(
                        contestant.name,
                        [float(f"{value:.6g}") for value in samples],
                        is_chanflow(contestant.name),
                        contestant.items or scenario.items,
                        point.x,
                        GROUPS[contestant.name],
                    )
                )
    return rows


def scaling_panels(
    scenarios: list[Scenario], points: list[Point], results: Results
) -> list[PanelRecord]:
    """S1 and S2 as line panels: one point per contestant and scenario."""
    duration = PanelRecord(
        "duration",
        "cost per job against job duration (CPU-bound jobs)",
        "us per job",
        _rows(scenarios, points, results, DURATION),
        kind="lines",
        x_label="CPU work per job (pure Python, jobs.spin)",
        x_unit="us",
        reference=LOOP,
        notes=[
            f"{THREADS} threads, {TASKS} tasks, {PROCESSES} processes; pools started and "
            "warmed up before the clock starts; about 0.2 s of work per sample "
            f"({MIN_JOBS:,} to {MAX_JOBS:,} jobs)."
        ],
    )
    workers = PanelRecord(
        "workers",
        f"cost per job against workers ({IO_SLEEP * 1e3:.0f} ms sleeps, I/O-bound jobs)",
        "us per job",
        _rows(scenarios, points, results, WORKERS),
        kind="lines",
        x_label="workers (threads, or tasks at once)",
        ideal=IO_SLEEP * 1e6,
        ideal_label=f"ideal: {IO_SLEEP * 1e3:.0f} ms / workers",
        notes=[
            f"{WAVES} waves of k jobs per sample (k = workers); pools started and warmed "
            "up (one wave) before the clock starts."
        ],
    )
    return [duration, workers]


if __name__ == "__main__":  # pragma: no cover - run benchmarks/run.py instead
    sys.exit("run benchmarks/run.py --only scaling")
