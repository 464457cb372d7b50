"""Executor benchmarks: chanflow.PoolExecutor against the executors it replaces.

Code written for ``concurrent.futures`` swaps ``ThreadPoolExecutor(8)`` for
``cf.PoolExecutor(8)`` or ``ProcessPoolExecutor()`` for
``cf.PoolExecutor(backend="process")``; what does that cost, or save, per job?

* **E1 map on threads**: ``executor.map(noop, range(200_000))`` with 8 workers,
  ``cf.PoolExecutor(8)`` (defaults only) against ``ThreadPoolExecutor(8)``; and
  ``WorkerPool(8, thread).map``, to show what the executor layer adds.
* **E2 submit + result, one at a time**: 50,000 no-op jobs, each
  ``executor.submit(noop, i).result()`` before the next is submitted: the latency of
  one job through an idle executor, 8 workers each; ``WorkerPool(8).submit`` too.
* **E3 map on processes**: 100,000 no-op jobs on 2 workers, ``cf.PoolExecutor(2,
  "process")`` (defaults: chanflow chunks by itself) against
  ``multiprocessing.Pool(2).imap(chunksize=1000)`` (hand-tuned, in input order as
  ``map`` is), ``ProcessPoolExecutor(2).map`` with its default ``chunksize=1`` (on
  fewer jobs: about 80 us a job, normalised per job) and with ``chunksize=1000``, and
  ``WorkerPool(2, process).map``.
* **E4 submit on processes** (informative, no target): 2,000 no-op jobs on 2
  workers, all submitted, then every ``result()`` taken, against
  ``ProcessPoolExecutor(2)``: a ``submit`` is one job sent on its own, never chunked.

Every sample times the whole ``with`` block: the executor's start, the jobs, and its
shutdown. Measured like the other sections (``bench_channel.measure_all``):
interleaved rounds in a rotating order, ``gc.collect()`` before each sample, medians.
chanflow's forkserver is started before the rounds (R3 of the process section
measures its start), so that the first round's process sample is not an outlier.
Run through ``run.py --only executor``.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

import chanflow as cf
from bench_channel import Contestant, Measure, Results, Scenario, median, timed
from bench_pool import PoolTarget, _grid
from jobs import noop

__all__ = [
    "build_executor_scenarios",
    "executor_table_lines",
    "executor_target_lines",
    "warm_up",
]

THREADS = 8  # as ThreadPoolExecutor(8), the thread baseline
PROCESSES = 2
PPE_SLOW_JOBS = 10_000  # ProcessPoolExecutor.map(chunksize=1): about 80 us a job here

CF_MAP = f"PoolExecutor({THREADS}).map"
TPE_MAP = f"ThreadPoolExecutor({THREADS}).map"
POOL_MAP = f"WorkerPool({THREADS}, thread).map"
CF_SUBMIT = f"PoolExecutor({THREADS}): submit(noop, i).result()"
TPE_SUBMIT = f"ThreadPoolExecutor({THREADS}): submit(noop, i).result()"
POOL_SUBMIT = f"WorkerPool({THREADS}, thread): submit(noop, i).result()"
CF_PROCESS = f"PoolExecutor({PROCESSES}, process).map"
MP_IMAP = f"multiprocessing.Pool({PROCESSES}).imap(chunksize=1000)"
PPE_DEFAULT = f"ProcessPoolExecutor({PROCESSES}).map (chunksize=1)"
PPE_TUNED = f"ProcessPoolExecutor({PROCESSES}).map(chunksize=1000)"
POOL_PROCESS = f"WorkerPool({PROCESSES}, process).map"
CF_PROCESS_SUBMIT = f"PoolExecutor({PROCESSES}, process): submit all, then results"
PPE_SUBMIT = f"ProcessPoolExecutor({PROCESSES}): submit all, then results"


def _per_job(seconds: Callable[[int], float]) -> Measure:
    """Turn a wall-time measurement of n jobs into microseconds per job."""
    return lambda n: seconds(n) / n * 1e6


def executor_map(make: Callable[[], Executor], chunksize: int = 1) -> Measure:
    """Microseconds per job of ``with make() as e: e.map(noop, range(n))``, all timed."""

    def seconds(n: int) -> float:
        def run() -> None:
            with make() as executor:
                for _ in executor.map(noop, range(n), chunksize=chunksize):
                    pass

        return timed(run)

    return _per_job(seconds)


def executor_submit(make: Callable[[], Executor]) -> Measure:
    """Microseconds per job of ``submit(noop, i).result()``, one job at a time, all timed."""

    def seconds(n: int) -> float:
        def run() -> None:
            with make() as executor:
                submit = executor.submit
                for job in range(n):
                    submit(noop, job).result()

        return timed(run)

    return _per_job(seconds)


def executor_submit_all(make: Callable[[], Executor]) -> Measure:
    """Microseconds per job of n ``submit(noop, i)``, then every ``result()``, all timed."""

    def seconds(n: int) -> float:
        def run() -> None:
            with make() as executor:
                futures = [executor.submit(noop, job) for job in range(n)]
                for future in futures:
                    future.result()

        return timed(run)

    return _per_job(seconds)


def pool_map(workers: int, backend: str) -> Measure:
    def seconds(n: int) -> float:
        def run() -> None:
            with cf.WorkerPool(workers, backend) as pool:
                for _ in pool.map(noop, range(n)):
                    pass

        return timed(run)

    return _per_job(seconds)


def pool_submit(n: int) -> float:
    def run() -> None:
        with cf.WorkerPool(THREADS, "thread") as pool:
            submit = pool.submit
            for job in range(n):
                submit(noop, job).result()

    return timed(run) / n * 1e6


def mp_imap(n: int) -> float:
    def run() -> None:
        with multiprocessing.Pool(PROCESSES) as pool:
            for _ in pool.imap(noop, range(n), chunksize=1000):
                pass

    return timed(run) / n * 1e6


def chanflow_threads() -> Executor:
    return cf.PoolExecutor(THREADS)


def stdlib_threads() -> Executor:
    return ThreadPoolExecutor(THREADS)


def chanflow_processes() -> Executor:
    return cf.PoolExecutor(PROCESSES, "process")


def stdlib_processes() -> Executor:
    return ProcessPoolExecutor(PROCESSES)


def warm_up() -> None:
    """Start chanflow's forkserver (once per parent process), untimed."""
    with chanflow_processes() as executor:
        list(executor.map(noop, range(10)))


def build_executor_scenarios(scale: float) -> list[Scenario]:
    """E1-E4 with job counts multiplied by ``scale`` (1.0 for a full run)."""

    def count(jobs: int) -> int:
        return max(1_000, int(jobs * scale))

    slow = count(PPE_SLOW_JOBS)
    return [
        Scenario(
            "E1",
            "map, no-op jobs, 8 threads",
            count(200_000),
            [
                Contestant(CF_MAP, executor_map(chanflow_threads)),
                Contestant(TPE_MAP, executor_map(stdlib_threads)),
                Contestant(POOL_MAP, pool_map(THREADS, "thread")),
            ],
            ("E1", TPE_MAP),
        ),
        Scenario(
            "E2",
            "submit + result, one at a time",
            count(50_000),
            [
                Contestant(CF_SUBMIT, executor_submit(chanflow_threads)),
                Contestant(TPE_SUBMIT, executor_submit(stdlib_threads)),
                Contestant(POOL_SUBMIT, pool_submit),
            ],
            ("E2", TPE_SUBMIT),
        ),
        Scenario(
            "E3",
            "map, no-op jobs, 2 processes",
            count(100_000),
            [
                Contestant(CF_PROCESS, executor_map(chanflow_processes)),
                Contestant(MP_IMAP, mp_imap),
                Contestant(PPE_DEFAULT, executor_map(stdlib_processes), slow),
                Contestant(PPE_TUNED, executor_map(stdlib_processes, chunksize=1000)),
                Contestant(POOL_PROCESS, pool_map(PROCESSES, "process")),
            ],
            ("E3", MP_IMAP),
            [
                f"{PPE_DEFAULT} runs {slow:,} jobs per sample (one round trip a job), "
                "normalised per job"
            ],
        ),
        Scenario(
            "E4",
            "submit on 2 processes (informative)",
            max(200, int(2_000 * scale)),
            [
                Contestant(CF_PROCESS_SUBMIT, executor_submit_all(chanflow_processes)),
                Contestant(PPE_SUBMIT, executor_submit_all(stdlib_processes)),
            ],
            ("E4", PPE_SUBMIT),
        ),
    ]


UNITS = {"E1": "us/job", "E2": "us/job", "E3": "us/job", "E4": "us/job"}


def executor_table_lines(scenarios: list[Scenario], results: Results) -> list[str]:
    """E1-E4: median, min-max over the rounds, cost relative to the scenario's baseline."""
    header = ("scenario", "contestant", "jobs", "median", "min-max", "unit", "cost vs baseline")
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for scenario in scenarios:
        label = f"{scenario.key}. {scenario.title}"
        baseline = median(results, scenario.baseline) if scenario.baseline else None
        for contestant in scenario.contestants:
            key = (scenario.key, contestant.name)
            samples = results[key]
            value = statistics.median(samples)
            ratio = "-" if baseline is None else f"{value / baseline:.2f}x"
            if key == scenario.baseline:
                ratio = "1.00x (baseline)"
            rows.append(
                (
                    label,
                    contestant.name,
                    f"{contestant.items or scenario.items:,}",
                    f"{value:.2f}",
                    f"{min(samples):.2f}-{max(samples):.2f}",
                    UNITS[scenario.key],
                    ratio,
                )
            )
            label = ""
        notes.extend(f"  [{scenario.key}] {note}" for note in scenario.notes)
    out = _grid(header, rows)
    out.append("cost vs baseline: this median / baseline median (below 1 = cheaper than it)")
    out.append("every sample times the whole `with` block: start, jobs, shutdown")
    if notes:
        out.append("notes:")
        out.extend(notes)
    return out


def executor_targets() -> list[PoolTarget]:
    return [
        PoolTarget(f"threads: {CF_MAP} <= 0.25x {TPE_MAP}", ("E1", CF_MAP), ("E1", TPE_MAP), 0.25),
        PoolTarget(
            f"threads: {CF_SUBMIT} <= 1.0x {TPE_SUBMIT}",
            ("E2", CF_SUBMIT),
            ("E2", TPE_SUBMIT),
            1.0,
        ),
        PoolTarget(
            f"processes: {CF_PROCESS} <= 1.5x {MP_IMAP}", ("E3", CF_PROCESS), ("E3", MP_IMAP), 1.5
        ),
        PoolTarget(
            f"processes: {CF_PROCESS} <= 0.1x {PPE_DEFAULT}",
            ("E3", CF_PROCESS),
            ("E3", PPE_DEFAULT),
            0.1,
        ),
    ]


def executor_target_lines(results: Results) -> list[str]:
    """Each target's ratio from this run's medians, with the same-round spread."""
    out = ["EXECUTOR TARGETS (from the medians above; ratio = cost / baseline cost, per job):"]
    for target in executor_targets():
        assert target.baseline is not None
        samples, base = results[target.contestant], results[target.baseline]
        ratio = statistics.median(samples) / statistics.median(base)
        paired = [value / b for value, b in zip(samples, base, strict=True)]
        verdict = "MET " if ratio <= target.limit else "MISS"
        out.append(
            f"  [{verdict}] {target.label}: {ratio:.3f}x "
            f"(same-round ratios {min(paired):.3f}x to {max(paired):.3f}x)"
        )
    return out


if __name__ == "__main__":  # pragma: no cover - run benchmarks/run.py instead
    sys.exit("run benchmarks/run.py --only executor")
