"""Journal benchmarks: what ``journal=`` costs a pool call, and how fast a resume starts.

* **J1 no-op jobs with a journal**: ``WorkerPool(8).map(noop, range(200_000),
  journal=path)`` on threads (defaults otherwise), finished jobs a second, against
  the same call without a journal, and against the journal a user writes by hand:
  ``ThreadPoolExecutor(8).map`` with an ``INSERT`` and a ``COMMIT`` per result in
  SQLite's WAL mode (what "commit each job as it finishes" costs without batching).
  Target: at least 50,000 jobs a second with the journal.
* **J2 1 ms jobs on 8 threads**: 4,000 jobs of ``time.sleep(0.001)``, with and
  without a journal. Target: the journal costs at most 5%.
* **J3 resume of a 1,000,000-job journal with 999,000 done**: the seconds from the
  call to the start of the first job that runs (the journal is read and the
  999,000 finished inputs are checked against their digests first). Target: 2 s.

Every J1/J2 sample times the whole ``with`` block, a fresh journal file each time;
contestants are measured in interleaved rounds, in a rotating order, medians with
min-max. Run it alone (``.venv/bin/python benchmarks/bench_journal.py``) or through
``run.py --only journal``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

try:
    import chanflow as cf
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    import chanflow as cf

__all__ = [
    "J1_HAND",
    "J1_PLAIN",
    "J1_POOL",
    "J2_PLAIN",
    "J2_POOL",
    "J3",
    "JournalResults",
    "journal_lines",
    "measure_journal",
]

THREADS = 8
NOOP_JOBS = 200_000
SLOW_JOBS = 4_000
RESUME_TOTAL = 1_000_000
RESUME_DONE = 999_000

J1_POOL = f"WorkerPool({THREADS}).map, journal="
J1_PLAIN = f"WorkerPool({THREADS}).map, no journal"
J1_HAND = f"ThreadPoolExecutor({THREADS}).map + sqlite COMMIT per result"
J2_POOL = f"WorkerPool({THREADS}).map(sleep 1 ms), journal="
J2_PLAIN = f"WorkerPool({THREADS}).map(sleep 1 ms), no journal"
J3 = "WorkerPool(8).map resume: first new job starts after"

JournalResults = dict[str, list[float]]  # contestant -> seconds per round (J3: to first job)


def noop(x: int) -> int:
    return x


def sleep_1ms(x: int) -> int:
    time.sleep(0.001)
    return x


def _fresh(directory: Path) -> Path:
    path = directory / f"j{time.monotonic_ns()}.db"
    return path


def pool_map(fn: Callable[[int], int], n: int, directory: Path | None) -> float:
    journal = None if directory is None else _fresh(directory)
    started = time.perf_counter()
    with cf.WorkerPool(THREADS) as pool:
        for _ in pool.map(fn, range(n), journal=journal):
            pass
    return time.perf_counter() - started


def hand_written(n: int, directory: Path) -> float:
    started = time.perf_counter()
    db = sqlite3.connect(_fresh(directory), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE jobs (idx INTEGER PRIMARY KEY, value)")
    with ThreadPoolExecutor(THREADS) as executor:
        for index, value in enumerate(executor.map(noop, range(n))):
            db.execute("INSERT INTO jobs VALUES (?, ?)", (index, value))  # autocommit
    db.close()
    return time.perf_counter() - started


def time_to_first_new_job(directory: Path) -> float:
    """Resume a journal of RESUME_TOTAL jobs with RESUME_DONE finished (built once)."""
    journal = directory / "resume.db"
    if not journal.exists():
        with cf.WorkerPool(THREADS) as pool:
            for _ in pool.map(_mark_start, range(RESUME_DONE), journal=journal):
                pass
    _first.clear()
    started = time.perf_counter()
    with cf.WorkerPool(THREADS) as pool:
        outputs = pool.map(_mark_start, range(RESUME_TOTAL), journal=journal, resume=True)
        for _ in outputs:
            if _first:
                break  # only the start matters; the run is not finished (no new rows kept)
    return _first[0] - started


_first: list[float] = []


def _mark_start(x: int) -> int:
    if x >= RESUME_DONE and not _first:
        _first.append(time.perf_counter())
    return x


def measure_journal(rounds: int, scale: float) -> JournalResults:
    noop_jobs, slow_jobs = max(1000, int(NOOP_JOBS * scale)), max(100, int(SLOW_JOBS * scale))
    results: JournalResults = {}
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        contestants: list[tuple[str, Callable[[], float], int]] = [
            (J1_POOL, lambda: pool_map(noop, noop_jobs, directory), noop_jobs),
            (J1_PLAIN, lambda: pool_map(noop, noop_jobs, None), noop_jobs),
            (J1_HAND, lambda: hand_written(noop_jobs, directory), noop_jobs),
            (J2_POOL, lambda: pool_map(sleep_1ms, slow_jobs, directory), slow_jobs),
            (J2_PLAIN, lambda: pool_map(sleep_1ms, slow_jobs, None), slow_jobs),
        ]
        for round_ in range(rounds):
            shift = round_ % len(contestants)
            for label, run, jobs in contestants[shift:] + contestants[:shift]:
                gc.collect()
                results.setdefault(label, []).append(run() / jobs)
        if scale >= 1.0:
            resume = [time_to_first_new_job(directory) for _ in range(rounds)]
            results[J3] = resume
    return results


def _cell(values: list[float], per_job: bool) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    if per_job:
        spread = f"({low * 1e6:.2f}-{high * 1e6:.2f})"
        return f"{mid * 1e6:8.2f} us/job {spread}  {1 / mid:>10,.0f} jobs/s"
    return f"{mid:8.2f} s ({low:.2f}-{high:.2f})"


def journal_lines(results: JournalResults) -> list[str]:
    lines = ["Journal (journal=): median per job (min-max over rounds)", ""]
    for label, values in results.items():
        per_job = label != J3
        lines.append(f"  {label:<62} {_cell(values, per_job)}")
    lines.append("")
    pool = statistics.median(results[J1_POOL])
    overhead = statistics.median(results[J2_POOL]) / statistics.median(results[J2_PLAIN]) - 1
    lines.append(f"  target J1: >= 50,000 jobs/s with a journal: {1 / pool:,.0f}")
    lines.append(f"  target J2: journal costs <= 5% on 1 ms jobs: {overhead:+.1%}")
    if J3 in results:
        first = statistics.median(results[J3])
        lines.append(f"  target J3: first new job of a 1M-job resume within 2 s: {first:.2f} s")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke test")
    arguments = parser.parse_args()
    scale = 0.05 if arguments.quick else 1.0
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    for line in journal_lines(measure_journal(arguments.rounds, scale)):
        print(line)


if __name__ == "__main__":
    main()
