"""A night's batch that survives SIGKILL: ``journal=`` and ``resume=True``.

The program runs 2,000 jobs (each sleeps 2 ms, standing for an HTTP call or a
database write) on 8 threads with a journal. It runs the batch in a child process
and kills that child with SIGKILL half-way, as an OOM killer or a rescheduled
container would; then it runs the same batch again with ``resume=True``:

1. the killed run: how many jobs the journal holds after the kill;
2. the resumed run: how many outcomes came back from the journal (``replayed``)
   and how many jobs ran; every job's outcome is present exactly once, and only
   the jobs that were running at the kill (or whose batch was being committed)
   ran twice.

Run it with ``.venv/bin/python examples/durable_run.py`` (about two seconds).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import chanflow as cf

JOBS = 2000


def fetch(n: int) -> int:
    """A job: record that it ran (to count re-runs), wait like I/O, return a value."""
    with open(os.environ["RUNS_LOG"], "a") as log:
        log.write(f"{n}\n")
    time.sleep(0.002)
    return n * n


def batch(journal: Path, resume: bool) -> list[cf.Result[int]]:
    with cf.WorkerPool(8) as pool:
        return list(pool.results(fetch, range(JOBS), journal=journal, resume=resume))


def killed_run(journal: Path) -> None:
    """Run the batch in a child process and SIGKILL it once it is half done."""
    child = subprocess.Popen([sys.executable, __file__, "--child", str(journal)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and child.poll() is None:
        if len(_lines(os.environ["RUNS_LOG"])) >= JOBS // 2:
            break
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()


def _lines(path: str) -> list[str]:
    return Path(path).read_text().split() if Path(path).exists() else []


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        journal = Path(directory) / "batch.journal"
        os.environ["RUNS_LOG"] = str(Path(directory) / "runs.log")

        print("1. the killed run")
        killed_run(journal)
        with cf.Journal(journal) as stored:
            print(f"   killed with SIGKILL; the journal holds {len(stored):,} finished jobs")

        print("2. the resumed run")
        results = batch(journal, resume=True)
        replayed = sum(result.replayed for result in results)
        print(f"   {replayed:,} outcomes came back from the journal, {JOBS - replayed:,} jobs ran")
        assert sorted(result.index for result in results) == list(range(JOBS))
        assert all(result.value == result.index**2 for result in results)
        runs = Counter(int(line) for line in _lines(os.environ["RUNS_LOG"]))
        twice = sum(1 for count in runs.values() if count > 1)
        print(f"   every job's outcome exactly once; {twice} jobs ran twice (running at the kill)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        batch(Path(sys.argv[2]), resume=False)
    else:
        main()
