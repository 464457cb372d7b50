"""Retry latency: what a retry costs on top of its backoff's delay, on every backend.

**T1.** On each backend, a *fresh* pool per round runs ``JOBS`` jobs that each fail
twice, then succeed, with a constant backoff given as a callable
(``backoff=lambda attempt: DELAY``), so the delay is known. Each attempt stamps the
time it starts (its first thing) and the time it fails (its last thing before the
``raise``) into a file (``jobs.StampedFlaky``: one ``os.write`` a stamp, the same few
microseconds in any process); a retry's overhead is

    (start of attempt n + 1) - (failure of attempt n) - DELAY

so nothing but the pool is in the figure: handing the failure back, the backoff's
timer, resubmitting, and starting the attempt (on a worker process or a Dask worker
that has not run the function before, loading it: a fresh pool is a new call, and on
the process backend new worker processes). Reported per backend over all retries of
all rounds: median, p90 and max, in milliseconds.

Backends: ``thread`` (4 workers), ``async`` (4 worker tasks, from ``async with`` and
``aresults``), ``process`` (2 worker processes), ``dask`` (a LocalCluster of 2 worker
processes of 1 thread each, started and closed here, its start-up not measured; the
rows are skipped with a note when distributed is missing). Rounds interleave the
backends in a rotating order.

Targets (issue 15), on the max: at most 5 ms on threads, asyncio and processes, at
most 50 ms on Dask. The max is what a busy neighbour spoils first (one thread that
waits for a core is in it), so the section prints the load average next to it.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import itertools
import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chanflow as cf
from jobs import StampedFlaky, read_stamps

__all__ = [
    "BACKENDS",
    "DELAY",
    "RetryRow",
    "load_line",
    "measure_retry",
    "retry_lines",
    "retry_target_lines",
]

DELAY = 0.01  # the backoff: a constant, known delay
FAILURES = 2  # each job fails twice, then succeeds
JOBS = 20  # jobs per round (per fresh pool)
QUICK_JOBS = 5
BACKENDS = ("thread", "async", "process", "dask")
WORKERS = {"thread": 4, "async": 4, "process": 2}
DASK_WORKERS = 2  # LocalCluster worker processes, 1 thread each
TARGET_MS = {"thread": 5.0, "async": 5.0, "process": 5.0, "dask": 50.0}
LABELS = {
    "thread": f"{WORKERS['thread']} threads",
    "async": f"{WORKERS['async']} tasks",
    "process": f"{WORKERS['process']} processes",
    "dask": f"{DASK_WORKERS} processes x 1 thread",
}


@dataclass
class RetryRow:
    """One backend's retry overheads (ms), over every retry of every round."""

    backend: str
    workers: str
    overheads: list[float] = field(default_factory=list)
    note: str = ""

    def quantile(self, q: float) -> float:
        """Nearest-rank quantile of the overheads (q = 0.5: median, 1.0: max)."""
        ordered = sorted(self.overheads)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    @property
    def met(self) -> bool:
        return bool(self.overheads) and self.quantile(1.0) <= TARGET_MS[self.backend]


def _overheads(path: Path, jobs: int) -> list[float]:
    """Each retry's gap from the failure to the next start, minus DELAY, in ms."""
    stamps = read_stamps(str(path))
    out = []
    for job in range(jobs):
        starts, failures = stamps[("start", job)], stamps[("fail", job)]
        if (len(starts), len(failures)) != (FAILURES + 1, FAILURES):
            raise RuntimeError(f"job {job}: {len(starts)} starts, {len(failures)} failures")
        for failed, start in zip(failures, starts[1:], strict=True):
            out.append((start - failed - DELAY) * 1e3)
    return out


def _check(results: list[Any], jobs: int) -> None:
    bad = [r for r in results if not r.ok or r.attempts != FAILURES + 1]
    if len(results) != jobs or bad:
        raise RuntimeError(f"retry benchmark: {len(results)} results of {jobs}, unexpected: {bad}")


def _pool(backend: Any, workers: int | None) -> cf.WorkerPool:
    return cf.WorkerPool(
        workers=workers, backend=backend, retries=FAILURES, backoff=lambda attempt: DELAY
    )


def one_round(name: str, backend: Any, workers: int | None, jobs: int, path: Path) -> list[float]:
    """A fresh pool of ``backend`` runs ``jobs`` flaky jobs: their retries' overheads (ms)."""
    flaky = StampedFlaky(str(path), FAILURES)
    if name == "async":

        async def job(item: int) -> int:
            return flaky(item)

        async def run() -> list[Any]:
            async with _pool(backend, workers) as pool:
                return [result async for result in pool.aresults(job, range(jobs))]

        results = asyncio.run(run())
    else:
        with _pool(backend, workers) as pool:
            results = list(pool.results(flaky, range(jobs)))
    _check(results, jobs)
    return _overheads(path, jobs)


def _dask_cluster() -> tuple[Any, Callable[[], None]] | str:
    """A client to a fresh LocalCluster and how to close both, or why there is none."""
    if importlib.util.find_spec("distributed") is None:
        return "skipped: distributed is not installed (pip install 'chanflow[dask]')"
    import distributed

    logging.getLogger("distributed").setLevel(logging.ERROR)
    cluster = distributed.LocalCluster(
        n_workers=DASK_WORKERS, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    client = distributed.Client(cluster, set_as_default=False)
    client.wait_for_workers(DASK_WORKERS)

    def close() -> None:
        client.close()
        cluster.close()

    return client, close


def measure_retry(rounds: int, quick: bool, progress: Callable[[str], None]) -> list[RetryRow]:
    """Every backend's retry overheads over ``rounds`` interleaved rounds."""
    jobs = QUICK_JOBS if quick else JOBS
    rows = {name: RetryRow(name, LABELS[name]) for name in BACKENDS}
    backends: dict[str, tuple[Any, int | None]] = {
        name: (name, WORKERS[name]) for name in ("thread", "async", "process")
    }
    cluster = _dask_cluster()
    close: Callable[[], None] = lambda: None  # noqa: E731
    if isinstance(cluster, str):
        rows["dask"].note = cluster
    else:
        client, close = cluster
        backends["dask"] = (cf.DaskBackend(client), None)
    counter = itertools.count()
    try:
        with tempfile.TemporaryDirectory(prefix="chanflow-retry-") as directory:
            names = list(backends)
            for turn in range(rounds):
                progress(f"round {turn + 1}/{rounds}")
                shift = turn % len(names)
                for name in names[shift:] + names[:shift]:
                    backend, workers = backends[name]
                    gc.collect()
                    path = Path(directory) / f"{name}-{next(counter)}.stamps"
                    rows[name].overheads += one_round(name, backend, workers, jobs, path)
    finally:
        close()
    return list(rows.values())


def load_line() -> str:
    """The machine's load averages (1, 5, 15 min), where the OS tells them."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:  # pragma: no cover - not on Linux or macOS
        return "load average: unknown"
    return f"load average: {one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min)"


def retry_lines(rows: list[RetryRow], rounds: int, jobs: int) -> list[str]:
    lines = [
        f"T1. retry overhead: (start of attempt n+1) - (failure of attempt n) - backoff "
        f"({DELAY * 1e3:.0f} ms)",
        f"    {jobs} jobs x {FAILURES} retries on a fresh pool per round, {rounds} rounds (ms)",
        f"  {'backend':<9}{'workers':<27}{'retries':>8}{'median':>9}{'p90':>9}{'max':>9}"
        f"{'target':>12}",
    ]
    for row in rows:
        if not row.overheads:
            lines.append(f"  {row.backend:<9}{row.workers:<27}  {row.note or 'not measured'}")
            continue
        lines.append(
            f"  {row.backend:<9}{row.workers:<27}{len(row.overheads):>8}"
            f"{row.quantile(0.5):>9.2f}{row.quantile(0.9):>9.2f}{row.quantile(1.0):>9.2f}"
            f"{'<= ' + format(TARGET_MS[row.backend], '.0f') + ' ms':>12}"
        )
    return lines


def retry_target_lines(rows: list[RetryRow]) -> list[str]:
    out = ["RETRY TARGETS (the max over every retry above):"]
    for row in rows:
        target = f"{row.backend}: a retry costs its backoff + <= {TARGET_MS[row.backend]:.0f} ms"
        if not row.overheads:
            out.append(f"  [n/a ] {target}: {row.note or 'not measured'}")
            continue
        out.append(
            f"  [{'MET ' if row.met else 'MISS'}] {target}: max {row.quantile(1.0):.2f} ms "
            f"(median {row.quantile(0.5):.2f}, p90 {row.quantile(0.9):.2f})"
        )
    return out


if __name__ == "__main__":  # pragma: no cover - run benchmarks/run.py instead
    sys.exit("run benchmarks/run.py --only retry")
