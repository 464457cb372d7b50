"""Job functions for the process benchmarks, in a module that imports nothing heavy.

Worker processes started with forkserver or spawn import the module a job function
lives in (a forked worker inherits it instead); keeping these here means each new
worker imports a few lines, not joblib and mpire as bench_process does.
"""

from __future__ import annotations

import os
import time

CPU_JOB_SECONDS = 0.002


def noop(job: int) -> int:
    return job


def spin(turns: int) -> int:
    total = 0
    for turn in range(turns):
        total += turn * turn % 7
    return total


def calibrate_spin(seconds: float = CPU_JOB_SECONDS) -> int:
    """How many turns of ``spin`` take about ``seconds`` here.

    The median of five calibrations: the first one in a process can come out low
    (in one check 29,000 turns where the next seven found 44,000-50,000; in another,
    jobs of 1 ms instead of 2).
    """
    tries = sorted(_calibrate_once(seconds) for _ in range(5))
    return tries[2]  # the median, without importing statistics into every worker


def _calibrate_once(seconds: float) -> int:
    turns = 10_000
    while True:
        start = time.perf_counter()
        spin(turns)
        elapsed = time.perf_counter() - start
        if elapsed > 0.02:
            return max(1, int(turns * seconds / elapsed))
        turns *= 2


def crashing(job: tuple[int, bool, int]) -> int:
    index, crash, turns = job
    if crash:
        os._exit(1)
    spin(turns)
    return index


class StampedFlaky:
    """A job that fails its first ``failures`` attempts, stamping when each starts and fails.

    For the retry benchmark (bench_retry): each stamp is one line ``<what> <job>
    <time.monotonic()>`` appended to ``path`` with one ``os.write`` (a few microseconds,
    the same in a fresh worker process as in a warm one; CLOCK_MONOTONIC is one clock
    for the whole machine, so stamps from different processes compare). The attempt
    number is read back from the file (attempts of one job never overlap), between the
    start stamp and the failure stamp: outside the gap the benchmark measures.
    """

    def __init__(self, path: str, failures: int) -> None:
        self.path = path
        self.failures = failures

    def _stamp(self, what: str, job: int) -> None:
        now = time.monotonic()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{what} {job} {now!r}\n".encode())
        finally:
            os.close(fd)

    def __call__(self, job: int) -> int:
        self._stamp("start", job)  # first thing
        with open(self.path, encoding="utf-8") as file:
            attempt = sum(line.startswith(f"start {job} ") for line in file)
        if attempt <= self.failures:
            self._stamp("fail", job)  # last thing before the raise
            raise RuntimeError(f"job {job} fails attempt {attempt}")
        return job


def read_stamps(path: str) -> dict[tuple[str, int], list[float]]:
    """The stamps of ``path`` by ``(what, job)``, each list in the order written."""
    stamps: dict[tuple[str, int], list[float]] = {}
    with open(path, encoding="utf-8") as file:
        for line in file:
            what, job, when = line.split()
            stamps.setdefault((what, int(job)), []).append(float(when))
    return stamps
