"""Dask backend benchmarks: chanflow on a Dask cluster against Dask's own client.map.

Each cluster is a ``LocalCluster`` of 1, 2 or 4 worker processes of one thread each,
started once per size (its start-up is not measured); on it, rounds alternate the
contestants:

* **D1 overhead**: no-op jobs, pool start-up (a round trip to the scheduler) and
  shutdown included, in microseconds per job. chanflow with its own chunking
  (``WorkerPool(backend=DaskBackend(client)).map``), chanflow with ``chunksize=1``
  (one Dask task per job: chanflow's per-task cost next to Dask's own), and Dask's
  ``client.map`` over the whole list with results taken from ``as_completed``
  (one task per job; it takes no iterator and has no bound on what it submits).
* **D2 throughput**: 1,000 jobs of about 2 ms of pure Python, in jobs per second,
  with a plain loop in the same round for scale. On a 2-core machine 4 workers
  cannot beat 2: the point is overhead, not scaling.

Run through ``run.py --only dask`` (about 4 minutes on 2 cores).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import chanflow as cf
from bench_channel import Contestant, Results, Scenario, loop, measure_all, median, timed
from jobs import calibrate_spin, noop, spin

__all__ = ["CLUSTER_SIZES", "dask_lines", "measure_dask"]

CLUSTER_SIZES = (1, 2, 4)

CHANFLOW = "WorkerPool(DaskBackend(client)).map"
CHANFLOW_ONE = "WorkerPool(DaskBackend(client)).map(chunksize=1)"
DASK_MAP = "client.map + as_completed(with_results=True)"
LOOP = "plain loop"


def chanflow_map(
    client: Any, fn: Callable[[int], int], arg: Callable[[int], int], chunksize: int | None = None
) -> Callable[[int], float]:
    def seconds(n: int) -> float:
        def run() -> None:
            with cf.WorkerPool(backend=cf.DaskBackend(client)) as pool:
                for _ in pool.map(fn, (arg(job) for job in range(n)), chunksize=chunksize):
                    pass

        return timed(run)

    return seconds


def dask_map(
    client: Any, fn: Callable[[int], int], arg: Callable[[int], int]
) -> Callable[[int], float]:
    from distributed import as_completed

    def seconds(n: int) -> float:
        def run() -> None:
            futures = client.map(fn, [arg(job) for job in range(n)], pure=False)
            for _ in as_completed(futures, loop=client.loop, with_results=True):
                pass
            del futures

        return timed(run)

    return seconds


def _per_job(seconds: Callable[[int], float]) -> Callable[[int], float]:
    return lambda n: seconds(n) / n * 1e6


def _build(client: Any, scale: float, turns: int) -> list[Scenario]:
    def count(jobs: int) -> int:
        return max(100, int(jobs * scale))

    def work(job: int) -> int:
        return turns

    d1 = [
        Contestant(CHANFLOW, _per_job(chanflow_map(client, noop, noop))),
        Contestant(CHANFLOW_ONE, _per_job(chanflow_map(client, noop, noop, 1)), count(2_000)),
        Contestant(DASK_MAP, _per_job(dask_map(client, noop, noop)), count(2_000)),
    ]
    d2 = [
        Contestant(LOOP, loop(spin, work)),
        Contestant(CHANFLOW, chanflow_map(client, spin, work)),
        Contestant(DASK_MAP, dask_map(client, spin, work)),
    ]
    return [
        Scenario("D1", "no-op jobs", count(50_000), d1, ("D1", DASK_MAP)),
        Scenario("D2", "~2 ms CPU jobs", count(1_000), d2, ("D2", LOOP)),
    ]


def measure_dask(
    rounds: int, scale: float, progress: Callable[[str], None]
) -> dict[int, tuple[list[Scenario], Results]]:
    """For each cluster size: its scenarios and their interleaved measurements."""
    import distributed

    logging.getLogger("distributed").setLevel(logging.ERROR)
    turns = calibrate_spin()
    measured: dict[int, tuple[list[Scenario], Results]] = {}
    for workers in CLUSTER_SIZES:
        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
        client = distributed.Client(cluster, set_as_default=False)
        try:
            client.wait_for_workers(workers)
            client.run(calibrate_spin, 0.0001)  # workers import the job module before timing
            scenarios = _build(client, scale, turns)
            progress(f"{workers} worker(s):")
            measured[workers] = (scenarios, measure_all(scenarios, rounds, progress))
        finally:
            client.close()
            cluster.close()
    return measured


def dask_lines(measured: dict[int, tuple[list[Scenario], Results]]) -> list[str]:
    lines = [
        "D1. no-op jobs, pool start-up included (us/job, median of rounds; jobs per run)",
        f"  {'workers':<8}"
        + "".join(f"{name:>{len(name) + 3}}" for name in (CHANFLOW, CHANFLOW_ONE, DASK_MAP)),
    ]
    for workers, (scenarios, results) in measured.items():
        d1 = scenarios[0]
        cells = []
        for contestant in d1.contestants:
            value = median(results, ("D1", contestant.name))
            jobs = contestant.items or d1.items
            text = "-" if value is None else f"{value:,.1f} ({jobs:,})"
            cells.append(f"{text:>{len(contestant.name) + 3}}")
        lines.append(f"  {workers:<8}" + "".join(cells))
    lines.append("")
    lines.append("D2. ~2 ms CPU jobs (jobs/s, median of rounds; speedup over the loop)")
    lines.append(f"  {'workers':<8}{LOOP:>14}{CHANFLOW:>44}{DASK_MAP:>52}")
    for workers, (scenarios, results) in measured.items():
        d2 = scenarios[1]
        loop_s = median(results, ("D2", LOOP)) or 1.0
        cells = []
        for name, width in ((LOOP, 14), (CHANFLOW, 44), (DASK_MAP, 52)):
            value = median(results, ("D2", name))
            text = "-" if value is None else f"{d2.items / value:,.0f}/s ({loop_s / value:.2f}x)"
            cells.append(f"{text:>{width}}")
        lines.append(f"  {workers:<8}" + "".join(cells))
    return lines
