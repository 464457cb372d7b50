"""The seeds' JavaScript worker pool (bounded parallelism) as a chanflow program.

The JavaScript original (JS2GO EP.41, "Worker Pool in JavaScript") runs each job in a
new ``worker_thread``, at most ``maxWorkers`` at a time, by polling a counter::

    const jobs = [1, 2, 3, 4, 5];
    const maxWorkers = 3;
    let active = 0;
    async function runPool() {
      const results = [];
      for (const job of jobs) {
        while (active >= maxWorkers) await new Promise((r) => setTimeout(r, 10));
        active++;
        startWorker(job).then((res) => { results.push(res); active--; });
      }
      while (results.length < jobs.length) await new Promise((r) => setTimeout(r, 10));
      console.log("Results:", results);
    }

It polls every 10 ms, and if a worker throws or dies, its promise never settles and
the last loop waits forever. Here the same bound three ways, none of which polls:

1. The JavaScript program line for line, with ``cf.Semaphore(3)`` in place of the
   ``active`` counter: a coroutine waits for a permit without blocking its loop and
   the job runs in a thread (``asyncio.to_thread``), as the job ran in a worker thread.
2. Go's way, an errgroup with a limit: ``cf.Group(limit=3)`` runs each job in a
   thread, and ``g.go`` waits for one of the 3 slots to be free.
3. Real parallelism, as ``worker_threads`` give JavaScript: ``cf.WorkerPool(3,
   backend="process")`` reuses 3 worker processes instead of starting one per job,
   and a job that kills its worker fails alone with ``cf.WorkerCrashed`` (the worker
   is replaced) instead of leaving the loop waiting forever.

Each section measures how many jobs ran at once; the bound is never exceeded.
Run it with ``.venv/bin/python examples/bounded_parallelism.py`` (about half a second).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from dataclasses import dataclass

import chanflow as cf

JOBS = [1, 2, 3, 4, 5]
MAX_WORKERS = 3
CRASH = 6  # in section 3, this job kills the worker process running it


def say(line: str) -> None:
    """Print one line in one write, so lines from several threads never interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Gauge:
    """Counts the jobs running right now and remembers the most at once (any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self.active -= 1


def double(job: int) -> int:
    """The job: 50 ms of work, then the number doubled (JS: parentPort.postMessage(job * 2))."""
    time.sleep(0.05)
    return job * 2


# -- 1. JavaScript's runPool with a semaphore ----------------------------------------------------


async def run_pool(jobs: list[int], max_workers: int) -> tuple[list[int], int]:
    slots = cf.Semaphore(max_workers)  # JS: let active = 0 and the polling loop
    gauge = Gauge()
    results: list[int] = []

    async def start_worker(job: int) -> None:
        try:
            with gauge:
                results.append(await asyncio.to_thread(double, job))
        finally:
            slots.release()  # JS: active-- (here also when the job fails)

    tasks = []
    for job in jobs:
        await slots.aacquire()  # JS: while (active >= maxWorkers) await sleep(10)
        tasks.append(asyncio.create_task(start_worker(job)))
    await asyncio.gather(*tasks)  # JS: while (results.length < jobs.length) await sleep(10)
    return results, gauge.peak


def with_semaphore() -> None:
    say(f"1. JavaScript's runPool: asyncio tasks under cf.Semaphore({MAX_WORKERS})")
    results, peak = asyncio.run(run_pool(JOBS, MAX_WORKERS))
    say(f"   Results: {sorted(results)} (sorted; they arrive as jobs finish)")
    say(f"   at most {peak} jobs at once (limit {MAX_WORKERS})")


# -- 2. Go's errgroup with a limit ----------------------------------------------------------------


def with_group() -> None:
    say(f"2. Go's errgroup with SetLimit({MAX_WORKERS}): cf.Group(limit={MAX_WORKERS}), threads")
    gauge = Gauge()
    results: cf.Channel[int] = cf.Channel(len(JOBS))

    def worker(job: int) -> None:
        with gauge:
            results.send(double(job))

    with cf.Group(limit=MAX_WORKERS) as group:
        for job in JOBS:
            group.go(worker, job)  # waits while 3 jobs run
    results.close()
    say(f"   Results: {sorted(results)} (sorted)")
    say(f"   at most {gauge.peak} jobs at once (limit {MAX_WORKERS})")


# -- 3. worker processes -----------------------------------------------------------------------


@dataclass(frozen=True)
class Doubled:
    value: int
    pid: int
    start: float  # time.monotonic(): one clock for every process of the machine
    end: float


def double_elsewhere(job: int) -> Doubled:
    """Double ``job`` in a worker process; which process, and when."""
    if job == CRASH:
        os._exit(1)  # the worker dies, as a worker thread that crashes
    start = time.monotonic()
    value = double(job)
    return Doubled(value, os.getpid(), start, time.monotonic())


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most (start, end) spans that overlap at one instant."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak


def with_processes() -> None:
    say(
        f"3. worker processes: cf.WorkerPool({MAX_WORKERS}, backend='process'), job {CRASH} crashes"
    )
    parent = os.getpid()
    with cf.WorkerPool(MAX_WORKERS, backend="process") as pool:
        results = sorted(pool.results(double_elsewhere, [*JOBS, CRASH]), key=lambda r: r.index)
    spans = []
    for result in results:
        if result.ok:
            done = result.unwrap()
            spans.append((done.start, done.end))
            say(f"   job {result.job} -> {done.value}, in a worker process: {done.pid != parent}")
        else:
            say(f"   job {result.job} failed: {type(result.error).__name__}")
    say(f"   at most {most_at_once(spans)} jobs at once (limit {MAX_WORKERS})")


def main() -> None:
    started = time.perf_counter()
    with_semaphore()
    with_group()
    with_processes()
    say(f"\nall done in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
