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
