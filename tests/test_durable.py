"""Journaled pool calls (``journal=``/``resume=``): on every backend, and killed for real."""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import sqlite3
import subprocess
import sys
import textwrap
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import chanflow as cf
from helpers import kill_and_resume

BACKENDS = ["thread", "async", "process", "dask"]
METHODS = ["map", "results", "amap", "aresults"]

# -- jobs: they log each start to a file, so runs are counted across processes ----------


def _log_start(log: str, x: int) -> None:
    descriptor = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, f"{x}\n".encode())
    finally:
        os.close(descriptor)


def logged_square(log: str, x: int) -> int:
    _log_start(log, x)
    if x % 10 == 7:
        raise ValueError(f"job {x} fails")
    return x * x


async def alogged_square(log: str, x: int) -> int:
    return logged_square(log, x)


def square(x: int) -> int:
    if x % 10 == 7:
        raise ValueError(f"job {x} fails")
    return x * x


async def asquare(x: int) -> int:
    return square(x)


def runs(log: Path) -> Counter[int]:
    if not log.exists():
        return Counter()
    return Counter(int(line) for line in log.read_text().split())


_LOG: list[Path] = []


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Path]:
    """Where the jobs of this test log their starts (from any process)."""
    _LOG.append(tmp_path / "runs.log")
    yield _LOG[-1]
    _LOG.pop()


def _fn(backend: str) -> Callable[[int], Any]:
    if not _LOG:
        return asquare if backend == "async" else square
    return functools.partial(alogged_square if backend == "async" else logged_square, str(_LOG[-1]))


def _consume(
    backend: str, method: str, jobs: Any, stop_after: int | None = None, **options: Any
) -> list[Any]:
    """Run one call the way a user would; the values or Results it gave, in order."""
    kind = "dask" if backend == "dask" else backend
    fn = _fn(backend)
    out: list[Any] = []
    if method in ("map", "results"):
        with cf.WorkerPool(4, backend=kind) as pool:
            iterator = getattr(pool, method)(fn, jobs, **options)
            for item in iterator:
                out.append(item)
                if stop_after is not None and len(out) >= stop_after:
                    break
        return out

    async def main() -> None:
        async with cf.WorkerPool(4, backend=kind) as pool:
            async for item in getattr(pool, method)(fn, jobs, **options):
                out.append(item)
                if stop_after is not None and len(out) >= stop_after:
                    break

    asyncio.run(main())
    return out


# -- resuming ------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_resume_replays_every_finished_job_and_runs_only_the_rest(
    backend: str, method: str, tmp_path: Path, log: Path
) -> None:
    journal = tmp_path / "run.db"
    first = _consume(backend, "results", range(30), journal=journal)
    assert len(first) == 30
    assert runs(log) == Counter(range(30))

    options: dict[str, Any] = {"journal": journal, "resume": True}
    if method in ("map", "amap"):
        dead: list[cf.Result[int]] = []
        options["dead_letters"] = dead.append  # so the stored failures do not stop the map
        out = _consume(backend, method, range(40), **options)
        assert out == [x * x for x in range(40) if x % 10 != 7]
        assert sorted(r.index for r in dead) == [7, 17, 27, 37]
        assert [r.replayed for r in sorted(dead, key=lambda r: r.index)] == [1, 1, 1, 0]
    else:
        out = _consume(backend, method, range(40), ordered=True, **options)
        assert [r.index for r in out] == list(range(40))
        assert [r.replayed for r in out] == [True] * 30 + [False] * 10
        assert all(r.job == r.index for r in out)
        assert [r.value for r in out if r.ok] == [x * x for x in range(40) if x % 10 != 7]
        failed = [r for r in out if not r.ok]
        assert [type(r.error) for r in failed] == [ValueError] * 4
        assert str(failed[0].error) == "job 7 fails"
    assert runs(log) == Counter(range(40)), "a finished job ran again"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_call_left_halfway_resumes_to_every_job_exactly_once(
    backend: str, tmp_path: Path, log: Path
) -> None:
    journal = tmp_path / "run.db"
    jobs = [x for x in range(200) if x % 10 != 7]
    handed = _consume(backend, "map", jobs, stop_after=50, journal=journal)
    assert handed == [x * x for x in jobs[:50]]
    with cf.Journal(journal) as stored:
        finished = {row.idx for row in stored.stored(0, 10_000)}
    assert set(range(50)) <= finished  # what was handed out was committed first
    before = runs(log)
    out = _consume(backend, "results", jobs, ordered=True, journal=journal, resume=True)
    assert [r.value for r in out] == [x * x for x in jobs]
    assert {r.index for r in out if r.replayed} == finished
    after = runs(log) - before
    assert not {jobs[i] for i in finished} & set(after), "a committed job ran again"
    assert set(after) | {jobs[i] for i in finished} == set(jobs)


@pytest.mark.parametrize("method", METHODS)
def test_a_journal_with_finished_jobs_needs_resume_and_runs_nothing(
    method: str, tmp_path: Path, log: Path
) -> None:
    journal = tmp_path / "run.db"
    _consume("thread", "results", range(5), journal=journal)
    before = runs(log)
    with pytest.raises(cf.JournalError, match="already holds 5 finished jobs") as caught:
        _consume("thread", method, range(5), journal=journal)
    assert str(journal) in str(caught.value)
    assert runs(log) == before


@pytest.mark.parametrize("method", METHODS)
def test_a_changed_input_is_refused_before_anything_runs(
    method: str, tmp_path: Path, log: Path
) -> None:
    journal = tmp_path / "run.db"
    _consume("thread", "results", range(100), journal=journal)
    before = runs(log)
    changed = [*range(60), 1000, *range(61, 120)]
    with pytest.raises(cf.JournalError, match=r"job 60 .*1000.* is not the job it finished"):
        _consume("thread", method, changed, journal=journal, resume=True)
    with pytest.raises(cf.JournalError, match="it has 50 jobs, and the journal finished job 99"):
        _consume("thread", method, range(50), journal=journal, resume=True)
    assert runs(log) == before


def test_a_different_function_is_refused(tmp_path: Path, log: Path) -> None:
    journal = tmp_path / "run.db"
    _consume("thread", "results", range(5), journal=journal)
    with cf.WorkerPool(2) as pool, pytest.raises(cf.JournalError, match="different run"):
        list(pool.map(abs, range(5), journal=journal, resume=True))


def test_map_raises_a_stored_failure_when_it_reaches_it(tmp_path: Path, log: Path) -> None:
    journal = tmp_path / "run.db"
    _consume("thread", "results", range(10), journal=journal)
    got: list[int] = []
    with cf.WorkerPool(2) as pool:
        values = pool.map(_fn("thread"), range(10), journal=journal, resume=True)
        with pytest.raises(ValueError, match="job 7 fails") as caught:
            got.extend(values)
    assert got == [x * x for x in range(7)]
    # The original traceback is kept: as the cause, or as the error's own traceback
    # where a library (tblib, with Dask) makes tracebacks pickle.
    printed = "".join(traceback.format_exception(caught.value))
    assert "in logged_square" in printed
    assert runs(log) == Counter(range(10))


def test_a_resumed_run_of_a_finished_journal_runs_nothing(tmp_path: Path, log: Path) -> None:
    journal = tmp_path / "run.db"
    _consume("thread", "results", range(20), journal=journal)
    for _ in range(2):
        out = _consume("thread", "results", range(20), ordered=True, journal=journal, resume=True)
        assert all(r.replayed for r in out) and len(out) == 20
    assert runs(log) == Counter(range(20))


def test_resume_on_an_empty_or_missing_journal_just_runs(tmp_path: Path, log: Path) -> None:
    out = _consume("thread", "map", [1, 2, 3], journal=tmp_path / "new.db", resume=True)
    assert out == [1, 4, 9]


def test_a_pool_wide_journal_applies_to_its_calls(tmp_path: Path, log: Path) -> None:
    journal = tmp_path / "run.db"
    with cf.WorkerPool(2, journal=journal) as pool:
        assert list(pool.map(_fn("thread"), [1, 2])) == [1, 4]
    with cf.WorkerPool(2, journal=journal, resume=True) as pool:
        assert [r.replayed for r in pool.results(_fn("thread"), [1, 2, 3], ordered=True)] == [
            True,
            True,
            False,
        ]


def test_a_journal_object_is_left_open_for_its_owner(tmp_path: Path, log: Path) -> None:
    with cf.Journal(tmp_path / "run.db") as journal, cf.WorkerPool(2) as pool:
        assert list(pool.map(_fn("thread"), [1, 2], journal=journal)) == [1, 4]
        assert len(journal) == 2
        again = pool.map(_fn("thread"), [1, 2, 3], journal=journal, resume=True)
        assert list(again) == [1, 4, 9]
        assert len(journal) == 3


def test_a_value_that_cannot_be_stored_fails_its_job_and_runs_again_on_resume(
    tmp_path: Path,
) -> None:
    import threading

    journal = tmp_path / "run.db"

    def make(x: int) -> Any:
        return threading.Lock() if x == 3 else x

    with cf.WorkerPool(2) as pool:
        # One chunk: its values are stored job by job once one of them cannot be.
        out = list(pool.results(make, range(6), journal=journal, ordered=True, chunksize=6))
    assert [r.ok for r in out] == [True, True, True, False, True, True]
    assert isinstance(out[3].error, cf.JournalError)
    assert "value of job 3 cannot be stored" in str(out[3].error)
    assert str(journal) in str(out[3].error)
    with cf.Journal(journal) as stored:
        assert [row.idx for row in stored.stored(0, 10)] == [0, 1, 2, 4, 5]
    with cf.WorkerPool(2) as pool:  # the stored jobs kept their digests: the same input
        again = list(pool.results(make, range(6), journal=journal, resume=True, ordered=True))
    assert [r.replayed for r in again] == [True, True, True, False, True, True]


def test_large_values_travel_through_the_journal(tmp_path: Path) -> None:
    journal = tmp_path / "run.db"

    def big(x: int) -> bytes:
        return bytes([x]) * (10 * 1024 * 1024)

    with cf.WorkerPool(2) as pool:
        assert [len(v) for v in pool.map(big, range(2), journal=journal)] == [10485760] * 2
    with cf.WorkerPool(2) as pool:
        again = list(pool.results(big, range(2), journal=journal, resume=True, ordered=True))
    assert [r.value == bytes([r.index]) * 10485760 and r.replayed for r in again] == [True, True]


def test_bad_journal_settings_are_refused_naming_them(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="journal must be a path"):
        cf.WorkerPool(journal=42)
    with pytest.raises(TypeError, match="resume must be True or False"):
        cf.WorkerPool(resume="yes")  # type: ignore[arg-type]
    with cf.WorkerPool(2) as pool, pytest.raises(TypeError, match="journal must be a path"):
        pool.map(abs, [1], journal=[])
    with pytest.raises(TypeError, match="an executor does not journal"):
        cf.PoolExecutor(journal=tmp_path / "x.db")  # type: ignore[call-arg]


# -- real crashes ----------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import chanflow as cf

    journal, log, total = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def job(x):
        with open(log, "a") as file:
            file.write(f"{os.getpid()} start {x}\\n")
        time.sleep(0.006)
        return x * 3

    with cf.WorkerPool(8) as pool:
        got = [r.value for r in pool.results(job, range(total), journal=journal, resume=True,
                                             ordered=True)]
    assert got == [x * 3 for x in range(total)], "a resumed run lost or reordered a job"
    print("complete", flush=True)
    """
)


def _committed(journal: Path) -> dict[int, Any]:
    if not journal.exists():
        return {}
    with closing(sqlite3.connect(journal)) as db, db:  # a reader beside no writer: the run is dead
        return dict(db.execute("SELECT idx, outcome FROM jobs"))


def _starts(log: Path) -> list[tuple[int, int]]:
    if not log.exists():
        return []
    pairs = []
    for line in log.read_text().splitlines():
        pid, _, index = line.split()
        pairs.append((int(pid), int(index)))
    return pairs


@pytest.mark.timeout(300)
def test_a_pool_killed_at_fifty_random_moments_resumes_to_each_job_exactly_once(
    tmp_path: Path,
) -> None:
    journal, log, total = tmp_path / "run.db", tmp_path / "starts.log", 10_000
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    pids, committed_before, out = kill_and_resume(
        [sys.executable, str(script), str(journal), str(log), str(total)],
        kills=50,
        seed=1234,
        longest_delay=0.2,
        progress=lambda: log.stat().st_size if log.exists() else 0,
        committed=lambda: set(_committed(journal)),
    )
    assert "complete" in out

    stored = _committed(journal)
    assert sorted(stored) == list(range(total))
    assert all(stored[index] == index * 3 for index in stored)
    kills_that_landed = sum(
        1 for before, after in itertools.pairwise(committed_before) if after != before
    )
    assert kills_that_landed >= 40, "most kills should land while jobs run"
    # Only jobs not yet committed run again: never one a run found in the journal.
    starts = _starts(log)
    for run, pid in enumerate(pids):
        started = {index for p, index in starts if p == pid}
        assert not started & committed_before[run], f"run {run} re-ran committed jobs"
    # Each job ran once, plus once per kill that caught it before its commit.
    per_job = Counter(index for _, index in starts)
    assert set(per_job) == set(range(total))
    assert sum(per_job.values()) - total <= 50 * 8 * 4


# -- a full disk ------------------------------------------------------------------------

_FULL_DISK_CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    import chanflow as cf

    def fill(x):
        return "v" * 2000

    journal, limited = sys.argv[1], sys.argv[2] == "limited"
    if limited:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))
    handed = replayed = 0
    try:
        with cf.WorkerPool(4) as pool:
            for result in pool.results(fill, range(2000), journal=journal, resume=not limited):
                handed += 1
                replayed += result.replayed
    except cf.JournalError as error:
        print("JournalError", handed, error, flush=True)
    else:
        print("done", handed, replayed, flush=True)
    """
)


def _full_disk_child(journal: Path, mode: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_CHILD, str(journal), mode],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split(" ", 2)


@pytest.mark.timeout(120)
def test_a_full_disk_stops_the_run_with_a_clear_error_and_loses_no_commit(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "run.db"
    outcome, handed, message = _full_disk_child(journal, "limited")
    assert outcome == "JournalError", message
    assert str(journal) in message
    kept = _committed(journal)
    assert int(handed) <= len(kept) < 2000  # every value handed out had been committed
    assert all(value == "v" * 2000 for value in kept.values())
    outcome, handed, replayed = _full_disk_child(journal, "free")  # room again: resume
    assert (outcome, int(handed), int(replayed)) == ("done", 2000, len(kept))


# -- typing and iteration shapes --------------------------------------------------------


def test_a_resumed_async_iterable_is_read_once(tmp_path: Path) -> None:
    journal = tmp_path / "run.db"

    async def source(n: int) -> AsyncIterator[int]:
        for x in range(n):
            yield x

    async def main(n: int) -> list[cf.Result[int]]:
        async with cf.WorkerPool(4) as pool:
            return [
                r
                async for r in pool.aresults(
                    asquare, source(n), journal=journal, resume=True, ordered=True
                )
            ]

    asyncio.run(main(15))
    out = asyncio.run(main(25))
    assert [r.index for r in out] == list(range(25))
    assert sum(r.replayed for r in out) == 15


def _ints(n: int) -> Iterator[int]:
    yield from range(n)


def test_a_generator_input_is_closed_when_a_resume_is_refused(tmp_path: Path) -> None:
    journal = tmp_path / "run.db"
    _consume("thread", "results", range(5), journal=journal)
    source = _ints(3)
    with pytest.raises(cf.JournalError):
        _consume("thread", "map", source, journal=journal, resume=True)
    assert list(source) == []  # closed
