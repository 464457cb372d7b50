"""Process backend benchmarks: against multiprocessing, concurrent.futures, joblib, mpire.

* **R1 overhead**: 50,000 no-op jobs on 2 workers, pool start-up and shutdown
  included, each library with its default start method. chanflow chunks by itself;
  ``multiprocessing.Pool`` and ``ProcessPoolExecutor`` are given a hand-tuned
  ``chunksize=1000`` (and the executor also runs with its default of 1, on fewer
  jobs, normalised per job).
* **R2 CPU-bound**: 1,000 jobs of about 2 ms of pure Python; the speedup over a plain
  loop, measured in the same round.
* **R3 start-up**: seconds from ``WorkerPool(...)`` to the first result of a trivial
  job, per start method, each in a fresh interpreter (the forkserver persists once
  started, so only a fresh process shows its cost).
* **R4 crashes**: 10,000 jobs of about 0.2 ms, 2% of which call ``os._exit(1)``:
  wall time against the same run without crashes, and a check that exactly the
  crashing jobs failed and every other result came once.

Run through ``run.py --only process``.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import chanflow as cf
from bench_channel import Contestant, Results, Scenario, loop, median, timed
from jobs import calibrate_spin, crashing, noop, spin

try:
    import joblib
except ImportError:  # an optional bench extra: its rows are skipped with a note
    joblib = None
try:
    import mpire
except ImportError:
    mpire = None

__all__ = [
    "CrashRun",
    "build_process_scenarios",
    "measure_crashes",
    "measure_startup",
    "process_lines",
]

WORKERS = 2
SRC = Path(__file__).resolve().parent.parent / "src"

CHANFLOW = "WorkerPool(2, process).map"
MP_POOL = "multiprocessing.Pool(2).imap_unordered(chunksize=1000)"
PPE_TUNED = "ProcessPoolExecutor(2).map(chunksize=1000)"
PPE_DEFAULT = "ProcessPoolExecutor(2).map (chunksize=1)"
JOBLIB = "joblib.Parallel(n_jobs=2)"
MPIRE = "mpire.WorkerPool(2).map"
LOOP = "plain loop"


def _per_job(seconds: Callable[[int], float]) -> Callable[[int], float]:
    return lambda n: seconds(n) / n * 1e6


def chanflow_map(fn: Callable[[int], int], arg: Callable[[int], int]) -> Callable[[int], float]:
    def seconds(n: int) -> float:
        def run() -> None:
            with cf.WorkerPool(WORKERS, "process") as pool:
                for _ in pool.map(fn, (arg(job) for job in range(n))):
                    pass

        return timed(run)

    return seconds


def mp_pool(
    fn: Callable[[int], int], arg: Callable[[int], int], chunk: int
) -> Callable[[int], float]:
    def seconds(n: int) -> float:
        def run() -> None:
            with multiprocessing.Pool(WORKERS) as pool:
                for _ in pool.imap_unordered(fn, (arg(job) for job in range(n)), chunksize=chunk):
                    pass

        return timed(run)

    return seconds


def ppe(fn: Callable[[int], int], arg: Callable[[int], int], chunk: int) -> Callable[[int], float]:
    def seconds(n: int) -> float:
        def run() -> None:
            with ProcessPoolExecutor(WORKERS) as executor:
                for _ in executor.map(fn, (arg(job) for job in range(n)), chunksize=chunk):
                    pass

        return timed(run)

    return seconds


def joblib_parallel(fn: Callable[[int], int], arg: Callable[[int], int]) -> Callable[[int], float]:
    def seconds(n: int) -> float:
        def run() -> None:
            parallel = joblib.Parallel(n_jobs=WORKERS)
            parallel(joblib.delayed(fn)(arg(job)) for job in range(n))

        return timed(run)

    return seconds


def mpire_map(fn: Callable[[int], int], arg: Callable[[int], int]) -> Callable[[int], float]:
    def seconds(n: int) -> float:
        def run() -> None:
            with mpire.WorkerPool(n_jobs=WORKERS) as pool:
                pool.map(fn, [arg(job) for job in range(n)])

        return timed(run)

    return seconds


def build_process_scenarios(scale: float) -> tuple[list[Scenario], list[str]]:
    """R1 and R2 with job counts multiplied by ``scale``; notes on skipped peers."""
    notes: list[str] = []

    def count(jobs: int) -> int:
        return max(200, int(jobs * scale))

    same = noop  # R1 jobs take their index
    r1 = [
        Contestant(CHANFLOW, _per_job(chanflow_map(noop, same))),
        Contestant(MP_POOL, _per_job(mp_pool(noop, same, 1000))),
        Contestant(PPE_TUNED, _per_job(ppe(noop, same, 1000))),
        Contestant(PPE_DEFAULT, _per_job(ppe(noop, same, 1)), count(5_000)),
    ]
    turns = calibrate_spin()

    def work(job: int) -> int:
        return turns

    r2 = [
        Contestant(LOOP, loop(spin, work)),
        Contestant(CHANFLOW, chanflow_map(spin, work)),
        Contestant(MP_POOL.replace("1000", "1"), mp_pool(spin, work, 1)),
        Contestant(PPE_DEFAULT, ppe(spin, work, 1)),
    ]
    if joblib is not None:
        r1.append(Contestant(JOBLIB, _per_job(joblib_parallel(noop, same))))
        r2.append(Contestant(JOBLIB, joblib_parallel(spin, work)))
    else:
        notes.append("joblib rows skipped: joblib is not installed")
    if mpire is not None:
        r1.append(Contestant(MPIRE, _per_job(mpire_map(noop, same))))
        r2.append(Contestant(MPIRE, mpire_map(spin, work)))
    else:
        notes.append("mpire rows skipped: mpire is not installed")
    return [
        Scenario("R1", "no-op jobs, 2 processes", count(50_000), r1, ("R1", MP_POOL)),
        Scenario("R2", "~2 ms CPU jobs, 2 processes", count(1_000), r2, ("R2", LOOP)),
    ], notes


# -- R3: start-up, in fresh interpreters ------------------------------------------------------

_STARTUP = """
import sys, time
import chanflow as cf
def noop(job):
    return job
if __name__ == "__main__":
    start = time.perf_counter()
    with cf.WorkerPool(2, "process", mp_context=sys.argv[1]) as pool:
        next(iter(pool.map(noop, [1])))
        print(time.perf_counter() - start)
"""


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env


def measure_startup(rounds: int) -> dict[str, list[float]]:
    """Seconds to the first result, per start method, ``rounds`` fresh runs each."""
    script = Path(os.environ.get("TMPDIR", "/tmp")) / "chanflow_startup_bench.py"
    script.write_text(_STARTUP)
    timings: dict[str, list[float]] = {}
    for _ in range(rounds):
        for method in multiprocessing.get_all_start_methods():
            done = subprocess.run(
                [sys.executable, str(script), method],
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
                env=_child_env(),
            )
            timings.setdefault(method, []).append(float(done.stdout))
    return timings


# -- R4: crashes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrashRun:
    crashes: int
    seconds: float
    exact: bool  # exactly the crashing jobs failed, every other result once


def _crash_run(jobs: int, every: int, turns: int) -> CrashRun:
    items = [(index, every > 0 and index % every == every // 2, turns) for index in range(jobs)]
    start = time.perf_counter()
    with cf.WorkerPool(WORKERS, "process") as pool:
        results = list(pool.results(crashing, items))
    seconds = time.perf_counter() - start
    counts = Counter(result.index for result in results)
    failed = {result.index for result in results if not result.ok}
    expected = {index for index, crash, _ in items if crash}
    exact = counts == Counter(range(jobs)) and failed == expected
    return CrashRun(len(expected), seconds, exact)


def measure_crashes(rounds: int, scale: float) -> list[tuple[CrashRun, CrashRun]]:
    """(without, with) crash runs, paired, ``rounds`` times."""
    jobs = max(500, int(10_000 * scale))
    turns = max(1, calibrate_spin() // 10)  # about 0.2 ms
    return [(_crash_run(jobs, 0, turns), _crash_run(jobs, 50, turns)) for _ in range(rounds)]


# -- tables --------------------------------------------------------------------------------------


def process_lines(
    scenarios: list[Scenario],
    results: Results,
    startup: dict[str, list[float]],
    crashes: list[tuple[CrashRun, CrashRun]],
) -> list[str]:
    lines = ["R1. no-op jobs, 2 processes, start-up included (us/job, median of rounds)"]
    r1, r2 = scenarios
    baseline = median(results, ("R1", MP_POOL)) or 1.0
    for contestant in r1.contestants:
        value = median(results, ("R1", contestant.name))
        if value is not None:
            jobs = contestant.items or r1.items
            lines.append(
                f"  {contestant.name:<58} {jobs:>7,} jobs {value:9.2f} us/job"
                f"  {value / baseline:6.2f}x mp.Pool"
            )
    lines.append("")
    lines.append("R2. ~2 ms CPU jobs x 1,000, 2 processes (wall s, median; speedup over the loop)")
    loop_s = median(results, ("R2", LOOP)) or 1.0
    for contestant in r2.contestants:
        value = median(results, ("R2", contestant.name))
        if value is not None:
            lines.append(f"  {contestant.name:<58} {value:8.3f} s   speedup {loop_s / value:5.2f}x")
    lines.append("")
    lines.append("R3. WorkerPool(2, process) to its first result, fresh interpreter (s)")
    for method, values in startup.items():
        ordered = sorted(values)
        lines.append(
            f"  {method:<12} median {ordered[len(ordered) // 2]:.3f}   min {ordered[0]:.3f}"
        )
    lines.append("")
    lines.append("R4. 10,000 jobs of ~0.2 ms, 2% call os._exit(1) (wall s)")
    for without, with_crashes in crashes:
        ratio = with_crashes.seconds / without.seconds
        lines.append(
            f"  no crashes {without.seconds:6.2f}   {with_crashes.crashes} crashes "
            f"{with_crashes.seconds:6.2f}   {ratio:5.2f}x   exactly once: "
            f"{without.exact and with_crashes.exact}"
        )
    return lines


def process_target_lines(results: Results, crashes: list[tuple[CrashRun, CrashRun]]) -> list[str]:
    def med(scenario: str, name: str) -> float | None:
        return median(results, (scenario, name))

    lines = ["PROCESS TARGETS:"]
    ours, pool_ = med("R1", CHANFLOW), med("R1", MP_POOL)
    if ours is not None and pool_ is not None:
        lines.append(
            _verdict(
                ours / pool_ <= 1.5, f"no-op: {CHANFLOW} <= 1.5x {MP_POOL}: {ours / pool_:.2f}x"
            )
        )
    job = med("R1", JOBLIB)
    if ours is not None and job is not None:
        lines.append(
            _verdict(ours / job <= 0.5, f"no-op: {CHANFLOW} <= 0.5x joblib: {ours / job:.2f}x")
        )
    loop_s, cpu = med("R2", LOOP), med("R2", CHANFLOW)
    if loop_s is not None and cpu is not None:
        lines.append(_verdict(loop_s / cpu >= 1.9, f"CPU: speedup >= 1.9x: {loop_s / cpu:.2f}x"))
        peers = [
            value
            for name in (MP_POOL.replace("1000", "1"), PPE_DEFAULT, JOBLIB, MPIRE)
            if (value := med("R2", name)) is not None
        ]
        if peers:
            best = min(peers)
            lines.append(
                _verdict(
                    best / cpu >= 0.97, f"CPU: >= 0.97x the best peer's speed: {best / cpu:.2f}x"
                )
            )
    if crashes:
        ratios = sorted(
            with_ / without.seconds for without, with_ in ((w, c.seconds) for w, c in crashes)
        )
        exact = all(a.exact and b.exact for a, b in crashes)
        mid = ratios[len(ratios) // 2]
        lines.append(
            _verdict(
                mid <= 2.0 and exact,
                f"crashes: within 2x of no crashes, exactly once: {mid:.2f}x, {exact}",
            )
        )
    return lines


def _verdict(met: bool, text: str) -> str:
    return f"  [{'MET ' if met else 'MISS'}] {text}"
