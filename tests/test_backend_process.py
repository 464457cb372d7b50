"""The process backend: real worker processes, real crashes, real signals.

The backend-parametrised suite (tests/test_pool.py) runs on processes too. These
tests cover what is particular to processes; the jobs report back through their
return values or the filesystem.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import multiprocessing.context
import os
import pickle
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any, cast

import cloudpickle
import pytest

import chanflow as cf
from chanflow._backend import Job
from chanflow._backend_process import ProcessBackend
from chanflow._process_worker import JobScope, _dumps, _run, decode_outcomes
from chanflow._result import Result
from helpers import call_of, fork_while_held, interrupt, process_running, results_into
from probes import Stamps


class Boom(Exception):
    pass


def no_backoff(attempt: int) -> float:
    return 0.0


def square(job: int) -> int:
    return job * job


def crash_on(bad: set[int]) -> Any:
    def job(index: int) -> int:
        if index in bad:
            os._exit(3)
        return index

    return job


def pids_alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if process_running(pid)}


def wait_until_gone(pids: set[int], seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    while (alive := pids_alive(pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


@pytest.fixture
def pool() -> Any:
    with cf.WorkerPool(workers=2, backend="process") as shared:
        yield shared


# -- basics ---------------------------------------------------------------------------------


def test_map_keeps_input_order_with_lambdas_and_closures(pool: cf.WorkerPool) -> None:
    offset = 7
    assert list(pool.map(lambda job: job + offset, range(2_000))) == [
        job + offset for job in range(2_000)
    ]
    assert sorted(result.value for result in pool.results(square, range(100))) == sorted(
        job * job for job in range(100)
    )


def test_jobs_run_in_worker_processes(pool: cf.WorkerPool) -> None:
    pids = set(pool.map(lambda job: os.getpid(), range(200)))
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2


def test_errors_keep_their_type_and_traceback(pool: cf.WorkerPool) -> None:
    def body(job: int) -> int:
        if job == 2:
            raise Boom(f"bad {job}")
        return job

    results = {result.index: result for result in pool.results(body, range(4))}
    bad = results[2]
    assert isinstance(bad.error, Boom)
    assert str(bad.error) == "bad 2"
    assert bad.traceback is not None
    assert "Boom: bad 2" in bad.traceback
    assert "in body" in bad.traceback, "the worker's own traceback"
    assert [results[job].value for job in (0, 1, 3)] == [0, 1, 3]
    with pytest.raises(Boom, match="bad 2"):
        list(pool.map(body, range(4)))


def test_failures_and_values_only_cloudpickle_can_carry_come_back(pool: cf.WorkerPool) -> None:
    # A failure travels plainly pickled when it can (fast, for retries); these classes,
    # defined here, can travel by value only: cloudpickle must still carry them.
    class LocalError(Exception):
        pass

    class LocalValue:
        def __init__(self, job: int) -> None:
            self.job = job

    def body(job: int) -> LocalValue:
        if job % 3 == 1:
            raise LocalError(f"local {job}")
        return LocalValue(job)

    results = {result.index: result for result in pool.results(body, range(9), retries=1)}
    for job, result in results.items():
        if job % 3 == 1:
            assert type(result.error).__name__ == "LocalError"
            assert str(result.error) == f"local {job}"
            assert result.attempts == 2
        else:
            assert type(result.value).__name__ == "LocalValue"
            assert result.value.job == job


def test_outcomes_are_pickled_plainly_when_they_can_be(monkeypatch: pytest.MonkeyPatch) -> None:
    class Local(Exception):
        pass

    by_cloudpickle: list[object] = []
    dumps = cloudpickle.dumps

    def spied(obj: object, *args: Any, **kwargs: Any) -> bytes:
        by_cloudpickle.append(obj)
        return dumps(obj, *args, **kwargs)

    monkeypatch.setattr(cloudpickle, "dumps", spied)
    failures, values = pickle.loads(_dumps(({0: (ValueError("x"), "ValueError", "x", "")}, [None])))
    assert isinstance(failures[0][0], ValueError) and values == [None]
    assert by_cloudpickle == []  # plain pickle did it
    error = pickle.loads(_dumps(Local("by value")))
    assert type(error).__name__ == "Local" and str(error) == "by value"
    assert len(by_cloudpickle) == 1  # only cloudpickle carries a class by value


def test_what_cannot_be_pickled_fails_its_own_job_clearly(pool: cf.WorkerPool) -> None:
    lock = threading.Lock()
    results = {result.index: result for result in pool.results(repr, [1, lock, 3])}
    assert (results[0].ok, results[2].ok) == (True, True)
    assert isinstance(results[1].error, TypeError)
    assert "cannot be sent to a worker process" in str(results[1].error)
    assert "lock" in str(results[1].error)

    back = {result.index: result for result in pool.results(lambda j: threading.Lock(), [1])}
    assert not back[0].ok
    assert "cannot be sent back" in str(back[0].error)


class NeedsTwoArguments(Exception):
    """Pickles fine, but unpickling calls ``__init__`` with the message alone."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


def rebuilt_nowhere() -> None:
    raise RuntimeError("this object cannot be rebuilt")


class LoadsNowhere:
    """A result whose unpickling fails (as a class the parent cannot import would)."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return rebuilt_nowhere, ()


def test_an_error_that_cannot_be_rebuilt_comes_back_as_its_text(pool: cf.WorkerPool) -> None:
    # Once, this error hung the pool: the parent failed to unpickle the chunk's reply.
    def body(job: int) -> int:
        if job == 3:
            raise NeedsTwoArguments(42, "broken")
        return job

    results = {result.index: result for result in pool.results(body, range(8))}
    bad = results.pop(3)
    assert isinstance(bad.error, cf.RemoteError)
    assert bad.error.type_name == "NeedsTwoArguments"
    assert "42: broken" in str(bad.error)
    assert bad.traceback is not None and "NeedsTwoArguments: 42: broken" in bad.traceback
    assert {index: result.value for index, result in results.items()} == {
        job: job for job in range(8) if job != 3
    }


@pytest.mark.parametrize("chunksize", [1, None])
def test_a_result_the_parent_cannot_unpickle_fails_its_message_not_the_pool(
    chunksize: int | None,
) -> None:
    def body(job: int) -> object:
        return LoadsNowhere() if job == 5 else job

    with cf.WorkerPool(workers=2, backend="process", chunksize=chunksize) as pool:
        results = {result.index: result for result in pool.results(body, range(40))}
        assert sorted(results) == list(range(40))  # every job came out, once
        bad = results[5]
        assert isinstance(bad.error, cf.RemoteError)
        assert "cannot be unpickled in the parent process" in str(bad.error)
        assert "this object cannot be rebuilt" in str(bad.error)
        lost = {index for index, result in results.items() if not result.ok}
        if chunksize == 1:
            assert lost == {5}  # one job per message: only its own outcome is lost
        assert all(results[job].value == job for job in set(range(40)) - lost)
        assert list(pool.map(square, range(10))) == [job * job for job in range(10)]


def test_an_unpicklable_function_fails_every_job_without_hanging(pool: cf.WorkerPool) -> None:
    lock = threading.Lock()
    results = list(pool.results(lambda job: lock.locked(), range(3)))
    assert len(results) == 3
    assert all(isinstance(result.error, TypeError) for result in results)


class LoadsIn:
    """A job function that, unpickled in a worker process, first runs ``on_load`` there.

    A job returns the time it started (``time.monotonic`` is the same clock in every
    process here).
    """

    def __init__(self, on_load: Any) -> None:
        self.on_load = on_load

    def __call__(self, job: int) -> float:
        return time.monotonic()

    def __reduce__(self) -> Any:
        return (_load_in_worker, (self.on_load, os.getpid()))


def _load_in_worker(on_load: Any, parent: int) -> LoadsIn:
    if os.getpid() != parent:
        on_load()
    return LoadsIn(on_load)


def _cannot_import() -> None:
    raise ModuleNotFoundError("No module named 'only_on_the_parent'")


def _imports_slowly() -> None:
    time.sleep(0.6)


def test_a_function_a_worker_cannot_load_fails_every_job_clearly(pool: cf.WorkerPool) -> None:
    results = list(pool.results(LoadsIn(_cannot_import), range(3)))
    assert len(results) == 3
    for result in results:
        assert isinstance(result.error, RuntimeError), result.error
        assert "could not be loaded in the worker process" in str(result.error)
        assert "only_on_the_parent" in str(result.error)
    assert list(pool.map(square, range(3))) == [0, 1, 4], "the workers should still serve"


def test_loading_the_function_is_not_part_of_the_timeout() -> None:
    # Importing what a function needs in a fresh worker (0.6 s here) is not the job's run.
    with cf.WorkerPool(workers=2, backend="process", timeout=0.3) as pool:
        results = list(pool.results(LoadsIn(_imports_slowly), range(6)))
    assert [result.error for result in results] == [None] * 6


def test_rate_tokens_are_taken_once_a_worker_can_start_the_job() -> None:
    # Tokens taken while the workers load the function (0.6 s) would let the first
    # jobs start all at once when loading ends.
    with cf.WorkerPool(workers=4, backend="process", rate="20/s") as pool:
        starts = sorted(pool.map(LoadsIn(_imports_slowly), range(6)))
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # Tokens taken early would release the first four jobs together (gaps of a few ms).
    # Paced, the gaps are 50 ms, less the start-up jitter of the workers, which a
    # loaded machine (a CPU burner beside the suite's three processes) makes 15 ms.
    assert min(gaps) >= 0.02, gaps


def test_a_50_mb_result_comes_back(pool: cf.WorkerPool) -> None:
    [blob] = pool.map(lambda size: b"x" * size, [50 * 1024 * 1024])
    assert len(blob) == 50 * 1024 * 1024


def test_a_chunk_queued_as_the_backend_closes_fails_once_not_silently(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first chunk is queued, then the pool closes before a slot could start for
    # it: nobody will run it, so its job must come out as an error, not vanish.
    backend = ProcessBackend(workers=1, mp_context=None)
    delivered: list[Result[Any]] = []
    call = call_of(backend, square, results_into(delivered))
    real_start_slots = ProcessBackend._start_slots

    def close_first(self: ProcessBackend) -> None:
        self.close()
        real_start_slots(self)

    monkeypatch.setattr(ProcessBackend, "_start_slots", close_first)
    backend.submit(call, [Job(call, 0, 3)])
    [result] = delivered
    assert isinstance(result.error, RuntimeError)
    assert "closed before the job started" in str(result.error)


def test_workers_default_to_the_cpu_count() -> None:
    with cf.WorkerPool(backend="process") as pool:
        list(pool.map(square, range(10)))
        stats = pool.stats()
    assert stats.completed == 10
    assert pool._process_backend is not None
    assert pool._process_backend.workers == (os.cpu_count() or 1)


# -- crashes and timeouts ---------------------------------------------------------------------


def test_a_crash_fails_only_the_job_that_caused_it() -> None:
    with cf.WorkerPool(workers=2, backend="process", retries=1, backoff=no_backoff) as pool:
        results = list(pool.results(crash_on({5, 77}), range(300)))
    assert Counter(result.index for result in results) == Counter(range(300))
    failed = {result.index: result for result in results if not result.ok}
    assert set(failed) == {5, 77}
    for result in failed.values():
        assert isinstance(result.error, cf.WorkerCrashed)
        assert "exited with code 3" in str(result.error)
        assert result.attempts == 2, "retried once, as asked"
    assert all(result.attempts == 1 for result in results if result.ok)


def run_recording_runs(
    tmp_path: Path, *, jobs: int, crashing: set[int], seconds: float
) -> tuple[list[cf.Result[int]], Counter[int]]:
    """Jobs that take ``seconds`` (the ``crashing`` ones kill their worker) in chunks of
    20 on one worker: their Results (each job once) and how many times each job ran."""
    runs = tmp_path / "runs"
    runs.mkdir()

    def job(index: int) -> int:
        (runs / f"{index}-{os.getpid()}").touch()
        if index in crashing:
            os._exit(3)
        time.sleep(seconds)
        return index

    with cf.WorkerPool(workers=1, backend="process", chunksize=20) as pool:
        results = list(pool.results(job, range(jobs)))
    assert Counter(result.index for result in results) == Counter(range(jobs))
    return results, Counter(int(path.name.split("-")[0]) for path in runs.iterdir())


def test_a_crash_loses_only_the_work_since_the_last_outcomes_sent(tmp_path: Path) -> None:
    # One chunk of 20 slow jobs, job 15 crashes: the outcomes of jobs 0-14 were sent
    # ahead (each job takes longer than the flush interval), so none of them runs twice.
    results, ran = run_recording_runs(tmp_path, jobs=20, crashing={15}, seconds=0.006)
    assert [result.index for result in results if not result.ok] == [15]
    assert ran == Counter(range(20)), "a job that had finished before the crash ran again"


def test_after_a_crash_outcomes_are_sent_ahead_after_every_job(tmp_path: Path) -> None:
    # Jobs of 2 ms: a worker sends outcomes ahead every 4 ms, so a crash could lose the
    # job before it; once the call has killed a worker it sends them every 0.5 ms.
    results, ran = run_recording_runs(tmp_path, jobs=40, crashing={5, 35}, seconds=0.002)
    assert sorted(result.index for result in results if not result.ok) == [5, 35]
    assert all(ran[index] == 1 for index in range(20, 35)), f"ran again after the crash: {ran}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_exactly_once_under_random_crashes(seed: int) -> None:
    rng = random.Random(seed)
    bad = {job for job in range(1_000) if rng.random() < 0.02}
    with cf.WorkerPool(workers=2, backend="process") as pool:
        values = list(pool.map(crash_on(bad), range(1_000), dead_letters=lambda r: None))
        stats = pool.stats()
    assert values == [job for job in range(1_000) if job not in bad]
    assert (stats.completed, stats.failed, stats.in_flight) == (1_000 - len(bad), len(bad), 0)


def test_sigkill_of_a_worker_mid_job_is_a_worker_crash() -> None:
    def body(job: int) -> int:
        if job == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return job

    with cf.WorkerPool(workers=2, backend="process") as pool:
        results = {result.index: result for result in pool.results(body, range(10))}
    assert isinstance(results[3].error, cf.WorkerCrashed)
    assert "SIGKILL" in str(results[3].error)
    assert all(results[job].ok for job in range(10) if job != 3)


def test_a_timeout_kills_the_hung_worker_and_capacity_holds() -> None:
    def body(job: int) -> int:
        if job == 0:
            time.sleep(60)
        return os.getpid()

    start = time.monotonic()
    with cf.WorkerPool(workers=2, backend="process", timeout=0.5) as pool:
        results = {result.index: result for result in pool.results(body, range(20))}
    assert time.monotonic() - start < 10
    assert isinstance(results[0].error, cf.JobTimeout)
    assert [job for job, result in sorted(results.items()) if result.ok] == list(range(1, 20))


# -- workers: initializer, state, recycling --------------------------------------------------------


def load_model(size: int) -> None:
    cf.worker_state()["model"] = list(range(size))


def test_initializer_and_worker_state() -> None:
    def body(job: int) -> tuple[int, int, int]:
        state = cf.worker_state()
        state["jobs"] = state.get("jobs", 0) + 1
        return len(state["model"]), os.getpid(), state["jobs"]

    with cf.WorkerPool(workers=2, backend="process", initializer=load_model, initargs=(5,)) as pool:
        outcomes = list(pool.map(body, range(50)))
    assert {size for size, _, _ in outcomes} == {5}
    # The state lives as long as its worker: each worker counted its own jobs 1, 2, 3...
    counts: dict[int, list[int]] = {}
    for _, pid, count in outcomes:
        counts.setdefault(pid, []).append(count)
    assert all(sorted(seen) == list(range(1, len(seen) + 1)) for seen in counts.values())


def failing_initializer() -> None:
    raise RuntimeError("no model file")


def test_an_initializer_failure_is_a_clear_error_not_a_hang() -> None:
    start = time.monotonic()
    with cf.WorkerPool(workers=2, backend="process", initializer=failing_initializer) as pool:
        results = list(pool.results(square, range(5)))
    assert time.monotonic() - start < 10
    assert len(results) == 5
    for result in results:
        assert not result.ok
        assert "initializer failed" in str(result.error)
        assert "no model file" in str(result.error)


class _ExhaustedProcess(multiprocessing.get_context("spawn").Process):  # type: ignore[misc,name-defined]
    def start(self) -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable")  # fork's EAGAIN


class _ExhaustedContext(multiprocessing.context.SpawnContext):
    """A start method at the process limit: no worker process can start."""

    Process = _ExhaustedProcess


def test_a_worker_that_cannot_start_fails_its_jobs_clearly_not_a_hang() -> None:
    start = time.monotonic()
    with cf.WorkerPool(workers=2, backend="process", mp_context=_ExhaustedContext()) as pool:
        results = list(pool.results(square, range(5)))
    assert time.monotonic() - start < 10
    assert sorted(result.index for result in results) == list(range(5))
    for result in results:
        assert isinstance(result.error, cf.WorkerCrashed)
        assert "could not start a worker process" in str(result.error)
        assert "Resource temporarily unavailable" in str(result.error)


def test_max_jobs_per_worker_recycles_workers() -> None:
    with cf.WorkerPool(workers=2, backend="process", max_jobs_per_worker=3) as pool:
        pids = list(pool.map(lambda job: os.getpid(), range(30)))
    assert max(Counter(pids).values()) <= 3
    assert len(set(pids)) >= 10


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("mp_context", "teleport"),
        ("max_jobs_per_worker", 0),
        ("initializer", 42),
    ],
)
def test_bad_process_settings_are_refused(setting: str, value: object) -> None:
    with pytest.raises((TypeError, ValueError), match=setting):
        cf.WorkerPool(backend="process", **{setting: value})  # type: ignore[arg-type]


# -- no orphans ---------------------------------------------------------------------------------

_PARENT = """
import os, sys, time
import chanflow as cf

def pid(job):
    if job < 2:
        time.sleep(float(sys.argv[1]))  # two workers stay busy
    return os.getpid()

if __name__ == "__main__":
    with cf.WorkerPool(workers=2, backend="process") as pool:
        pids = set(pool.map(pid, range(2, 200)))
        print(" ".join(map(str, sorted(pids))), flush=True)
        print("running", flush=True)
        list(pool.map(pid, range(2)))
"""


def start_parent(tmp_path: Path) -> tuple[subprocess.Popen[str], set[int]]:
    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    child = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", str(script), "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout = cast(IO[str], child.stdout)  # a pipe: stdout=PIPE
        pids = {int(word) for word in stdout.readline().split()}
        assert stdout.readline() == "running\n"
        assert pids and pids_alive(pids) == pids
    except BaseException:
        child.kill()
        child.communicate()
        raise
    return child, pids


def test_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    child, pids = start_parent(tmp_path)
    child.kill()  # SIGKILL: no cleanup runs in the parent
    child.communicate(timeout=5)
    assert wait_until_gone(pids, 5.0) == set(), "orphaned workers"


def test_ctrl_c_in_the_parent_leaves_no_worker(tmp_path: Path) -> None:
    child, pids = start_parent(tmp_path)
    time.sleep(0.2)
    _, stderr = interrupt(child, within=5.0)
    assert "KeyboardInterrupt" in stderr
    assert wait_until_gone(pids, 5.0) == set()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork, which only POSIX systems have")
def test_a_fork_while_a_worker_starts_leaves_the_child_able_to_start_its_own(
    tmp_path: Path,
) -> None:
    # The parent's thread holds the start locks and hides __main__'s file at the fork;
    # the child must get fresh locks and its __main__ back, not wait for ever.
    held = "_backend_process._main_module_hidden(), _backend_process._process_lock"
    child = """\
        shown = getattr(__main__, "__file__", None) == sys.argv[0]
        with cf.WorkerPool(workers=1, backend="process") as pool:
            print("child got", list(pool.map(abs, [-1, -2])), shown, flush=True)"""
    assert fork_while_held(tmp_path, held, child) == ["child got [1, 2] True"]


def test_chunksize_fixes_the_jobs_per_chunk() -> None:
    with cf.WorkerPool(workers=2, backend="process", chunksize=10, max_jobs_per_worker=10) as pool:
        pids = list(pool.map(lambda job: os.getpid(), range(100)))
    # Each worker runs exactly one chunk of 10 before it is recycled.
    assert sorted(Counter(pids).values()) == [10] * 10
    assert [pids[start : start + 10] == [pids[start]] * 10 for start in range(0, 100, 10)] == [
        True
    ] * 10


_NO_GUARD = """
import os
import chanflow as cf

def twice(job):
    return 2 * job

# No `if __name__ == "__main__":` guard: workers never import this script again.
with cf.WorkerPool(workers=2, backend="process") as pool:
    print(sum(pool.map(twice, range(100))), len(set(pool.map(lambda j: os.getpid(), range(50)))))
"""


def test_a_script_without_a_main_guard_works(tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(_NO_GUARD)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    total, workers = done.stdout.split()
    assert total == str(2 * sum(range(100)))
    assert 1 <= int(workers) <= 2


def test_ordered_results_stay_in_order_when_some_jobs_cannot_be_sent(
    pool: cf.WorkerPool,
) -> None:
    lock = threading.Lock()
    jobs: list[Any] = [lock if job in (0, 2, 5) else job for job in range(8)]
    results = list(pool.results(repr, jobs, ordered=True, chunksize=8))
    assert [result.index for result in results] == list(range(8))
    assert [result.ok for result in results] == [job not in (0, 2, 5) for job in range(8)]


def test_async_code_consumes_a_process_pool() -> None:
    import asyncio

    async def main() -> tuple[list[int], list[bool]]:
        async with cf.WorkerPool(workers=2, backend="process") as pool:
            values = [value async for value in pool.amap(lambda job: job * 2, range(100))]
            oks = [r.ok async for r in pool.aresults(lambda job: 1 / job, range(3), ordered=True)]
        return values, oks

    values, oks = asyncio.run(main())
    assert values == [job * 2 for job in range(100)]
    assert oks == [False, True, True]


def test_exit_codes_survive_many_crashes_at_once() -> None:
    # Workers are started (Process.start polls every child) while others die: a
    # thread-unsafe poll once turned exit code 3 into 255 now and then.
    bad = set(range(0, 400, 4))
    with cf.WorkerPool(workers=2, backend="process") as pool:
        results = list(pool.results(crash_on(bad), range(400)))
    messages = [str(result.error) for result in results if not result.ok]
    assert len(messages) == len(bad)
    assert all("exited with code 3" in message for message in messages), [
        message for message in messages if "code 3" not in message
    ][:3]


def test_a_rate_limits_job_starts_across_processes() -> None:
    with cf.WorkerPool(workers=2, backend="process", rate="20/s") as pool:
        starts = list(pool.map(lambda job: time.time(), range(11)))
    span = max(starts) - min(starts)
    assert 0.4 <= span <= 2.0, span  # 10 intervals of 50 ms after the first start


def test_submit_runs_in_a_worker_process(pool: cf.WorkerPool) -> None:
    future = pool.submit(lambda a, b, *, scale: (a + b) * scale, 2, 3, scale=10)
    assert future.result(timeout=10) == 50
    failing = pool.submit(lambda: 1 / 0)
    assert isinstance(failing.exception(timeout=10), ZeroDivisionError)
    assert pool.submit(os.getpid).result(timeout=10) != os.getpid()


def test_leaving_early_kills_the_running_chunk_promptly() -> None:
    start = time.monotonic()
    with cf.WorkerPool(workers=2, backend="process") as pool:
        for _ in pool.map(time.sleep, [0.0] + [30.0] * 4):
            break
    assert time.monotonic() - start < 5


# -- current_context() in a worker process ------------------------------------------------------


def test_current_context_in_a_process_job(pool: cf.WorkerPool) -> None:
    def describe(job: int) -> tuple[bool, bool, bool]:
        context = cf.current_context()
        return context is cf.background(), context.cancelled, context.deadline is not None

    assert list(pool.map(describe, [1])) == [(False, False, False)]
    assert list(pool.map(describe, [1], timeout=30)) == [(False, False, True)]
    assert cf.current_context() is cf.background()


def test_leaving_early_cancels_running_process_jobs_cooperatively(tmp_path: Path) -> None:
    def cooperative(job: int) -> int:
        if job == 0:  # returns once job 1 runs in the other worker
            deadline = time.monotonic() + 10
            while not (tmp_path / "started-1").exists() and time.monotonic() < deadline:
                time.sleep(0.005)
            return job
        (tmp_path / f"started-{job}").touch()
        if cf.current_context().wait(30):  # True once cancelled
            (tmp_path / f"cancelled-{job}").touch()
        return job

    start = time.monotonic()
    with cf.WorkerPool(workers=2, backend="process", chunksize=1) as pool:
        for _ in pool.map(cooperative, range(2)):
            break
    assert time.monotonic() - start < 5
    stopped = sorted(path.name for path in tmp_path.iterdir())
    assert stopped == ["cancelled-1", "started-1"], "job 1 saw its context cancelled"


@pytest.mark.parametrize("backend", ["auto", "thread", "async"])
def test_process_settings_on_another_backend_are_refused(backend: str) -> None:
    with pytest.raises(ValueError, match="initializer= applies to backend='process' only"):
        cf.WorkerPool(backend=backend, initializer=load_model, initargs=(1,))


def hanging_initializer() -> None:
    time.sleep(60)


class LeaveEarly(Exception):
    pass


def test_leaving_while_an_initializer_hangs_returns_promptly() -> None:
    futures: list[Any] = []

    def leave_on_an_error() -> None:
        with cf.WorkerPool(workers=1, backend="process", initializer=hanging_initializer) as pool:
            futures.append(pool.submit(square, 3))
            time.sleep(0.2)  # the worker is in its initializer now, or soon
            raise LeaveEarly

    start = time.monotonic()
    with pytest.raises(LeaveEarly):
        leave_on_an_error()
    assert time.monotonic() - start < 5
    assert futures[0].cancelled()


async def async_square(job: int) -> tuple[int, int]:
    await asyncio.sleep(0.001)
    return job * job, os.getpid()


def test_coroutine_functions_run_in_worker_processes(pool: cf.WorkerPool) -> None:
    results = list(pool.map(async_square, range(50)))
    assert [value for value, _ in results] == [job * job for job in range(50)]
    assert os.getpid() not in {pid for _, pid in results}

    async def deadline_left(job: float) -> float:
        await asyncio.sleep(job)
        deadline = cf.current_context().deadline
        return -1.0 if deadline is None else deadline - time.monotonic()

    [left] = pool.map(deadline_left, [0.0], timeout=5.0)
    assert 4.0 < left <= 5.0
    [timed_out] = pool.results(deadline_left, [30.0], timeout=0.1)
    assert isinstance(timed_out.error, cf.JobTimeout)


# -- retries ----------------------------------------------------------------------------------


def test_a_retry_does_not_wait_for_the_end_of_the_chunk_its_job_failed_in(
    tmp_path: Path,
) -> None:
    # Job 0 fails first in a chunk of 20 that runs for ~0.2 s: the worker reports the
    # failure at once, and the retry runs on the other worker while the chunk goes on
    # (it used to wait for the chunk to end: a retry cost its chunk's time too).
    stamps = Stamps(tmp_path / "stamps")

    def job(index: int) -> int:
        stamps.stamp(f"start-{index}")
        if index == 0 and len(stamps.times("start-0")) == 1:
            stamps.stamp("failed")
            raise RuntimeError("flaky")  # builtin: the other worker loads no test module
        time.sleep(0.01)
        return index

    pool = cf.WorkerPool(workers=2, backend="process", chunksize=20, retries=1, backoff=no_backoff)
    with pool:
        results = list(pool.results(job, range(20)))
    assert sorted((r.index, r.ok, r.attempts) for r in results) == [
        (index, True, 2 if index == 0 else 1) for index in range(20)
    ]
    [failed], [_, retry] = stamps.times("failed"), stamps.times("start-0")
    chunk_end = stamps.times("start-19")[0] + 0.01
    assert retry < chunk_end - 0.05, (retry - failed, chunk_end - failed)


def test_retries_that_fall_due_together_travel_as_one_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Jobs 0-19 fail while job 20 of their chunk keeps the only worker busy: their
    # retries wait in the queue side by side, and go as one chunk, not one round trip
    # to the worker each (the last retry waited for all the others).
    chunks: list[int] = []
    real_run_chunk = ProcessBackend._run_chunk

    def run_chunk(self: ProcessBackend, slot: Any, call: Any, chunk: Any) -> None:
        chunks.append(len(chunk))
        real_run_chunk(self, slot, call, chunk)

    monkeypatch.setattr(ProcessBackend, "_run_chunk", run_chunk)

    def job(index: int) -> int:
        if index < 20 and cf.worker_state().setdefault(index, 0) == 0:
            cf.worker_state()[index] = 1
            raise RuntimeError("flaky")
        if index == 20:
            time.sleep(0.2)
        return index

    pool = cf.WorkerPool(workers=1, backend="process", chunksize=21, retries=1, backoff=no_backoff)
    with pool:
        results = list(pool.results(job, range(21)))
    assert sorted((r.index, r.ok) for r in results) == [(index, True) for index in range(21)]
    assert chunks == [21, 20]


@pytest.mark.parametrize("paced", [False, True], ids=["plain", "with-timeout"])
def test_a_retry_goes_to_a_worker_ahead_of_its_due_time_and_waits_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paced: bool
) -> None:
    # The hand-off of a retry (timer thread, slot thread, worker process) happens while
    # its backoff runs out, and the worker waits for the due time: the attempt still
    # never starts early. A paced attempt (a timeout here) is handed over when due: its
    # deadline starts with the hand-off.
    import chanflow._backend as backend_module

    scheduled: list[float] = []
    real_schedule = backend_module.schedule

    def schedule(delay: float, callback: Any) -> Any:
        scheduled.append(delay)
        return real_schedule(delay, callback)

    monkeypatch.setattr(backend_module, "schedule", schedule)
    stamps = Stamps(tmp_path / "stamps")
    delay = 0.2

    def job(index: int) -> int:
        stamps.stamp("start")
        if len(stamps.times("start")) == 1:
            stamps.stamp("failed")
            raise RuntimeError("flaky")  # builtin: nothing to import where the retry runs
        return index

    options: dict[str, Any] = {"timeout": 30.0} if paced else {}
    with cf.WorkerPool(
        workers=1, backend="process", retries=1, backoff=lambda attempt: delay, **options
    ) as pool:
        [result] = pool.results(job, [7])
    assert (result.ok, result.attempts) == (True, 2)
    lead = 0.0 if paced else ProcessBackend.dispatch_lead
    assert paced or 0.0 < lead < delay
    assert scheduled == [pytest.approx(delay - lead)]
    [failed], [_, retry] = stamps.times("failed"), stamps.times("start")
    assert retry - failed >= delay


def test_a_worker_starts_no_job_before_its_start_time() -> None:
    # What a retry sent ahead (see the test above) relies on. The wait is not the
    # jobs' own time: the parent sizes chunks by it.
    started: list[float] = []

    def job(item: int) -> int:
        started.append(time.monotonic())
        return item

    now = time.monotonic()
    starts = [now + 0.03, now - 1.0, now + 0.05]
    progress = multiprocessing.RawValue("l", -1)
    failures, values, waited = _run(
        job, [0, 1, 2], progress, JobScope(), cast(Any, _Outbox()), 60.0, False, starts
    )
    assert (failures, values) == ({}, [0, 1, 2])
    assert all(start >= due for start, due in zip(started, starts, strict=True)), started
    assert 0.0 < waited <= 0.05


def test_a_worker_waits_no_longer_than_max_early_for_a_start_time() -> None:
    # A start time from a clock this process does not share must not idle a worker.
    from chanflow._process_worker import MAX_EARLY

    progress = multiprocessing.RawValue("l", -1)
    began = time.monotonic()
    _, values, _ = _run(
        square, [3], progress, JobScope(), cast(Any, _Outbox()), 60.0, False, [began + 3600.0]
    )
    assert values == [9]
    assert MAX_EARLY < 1.0
    assert time.monotonic() - began < 10.0  # generous: without the cap, an hour


class _Outbox:
    """Stands for a worker's pipe to the parent: keeps the outcomes sent ahead."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, dict[int, Any], list[Any], float]] = []

    def send_bytes(self, data: bytes) -> None:
        self.parts.append(decode_outcomes(data))


@pytest.mark.parametrize("eager", [True, False])
def test_a_worker_of_a_retrying_call_reports_a_failure_at_once(eager: bool) -> None:
    # With ``eager`` (the call retries), the failure of job 1 goes ahead right after it
    # failed, with job 0's value, not with the chunk's end: the parent schedules the
    # retry while the chunk goes on. The last job's failure goes with ``done``.
    def job(item: int) -> int:
        if item in (1, 3):
            raise RuntimeError(item)
        return item

    outbox = _Outbox()
    progress = multiprocessing.RawValue("l", -1)
    rest = _run(job, [0, 1, 2, 3], progress, JobScope(), cast(Any, outbox), 60.0, eager)
    ahead = [(sorted(failures), values) for _, failures, values, _ in outbox.parts]
    if eager:
        assert ahead == [([1], [0, None])]
        assert (sorted(rest[0]), rest[1]) == ([1], [2, None])
    else:
        assert ahead == []
        assert (sorted(rest[0]), rest[1]) == ([1, 3], [0, None, 2, None])


def test_a_worker_gives_up_its_cpu_after_a_failure_it_sends_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The parent's thread that reads a part may be waiting for the CPU this worker
    # runs on (the chunk's write woke the worker there): after a failure sent ahead the
    # worker yields it, or the failure would reach the parent with the chunk's end.
    import chanflow._process_worker as worker_module

    events: list[str] = []

    class Outbox(_Outbox):
        def send_bytes(self, data: bytes) -> None:
            events.append("part")
            super().send_bytes(data)

    def job(item: int) -> int:
        if item % 2:
            raise RuntimeError(item)
        return item

    monkeypatch.setattr(worker_module, "_yield_cpu", lambda: events.append("yield"))
    monkeypatch.setattr(worker_module, "YIELD_GAP", 0.0)
    progress = multiprocessing.RawValue("l", -1)
    _run(job, [0, 1, 2, 3, 4, 5], progress, JobScope(), cast(Any, Outbox()), 60.0, True)
    assert events == ["part", "yield", "part", "yield"]  # the last failure goes with done
    events.clear()
    _run(job, [0, 2, 4], progress, JobScope(), cast(Any, Outbox()), 0.0, True)
    assert events == ["part"] * 3  # parts sent for time's sake: nobody waits for them
    events.clear()
    monkeypatch.setattr(worker_module, "YIELD_GAP", 60.0)  # at most one yield per gap
    _run(job, [0, 1, 2, 3, 4, 5], progress, JobScope(), cast(Any, Outbox()), 60.0, True)
    assert events == ["part", "yield", "part"]


def test_retries_that_join_a_waiting_chunk_run_in_index_order() -> None:
    # Retries join the waiting chunk in the order they fell due; the chunk must still
    # run (and come back) in index order, or an ordered consumer would read [4, 6, 5]
    # as consecutive, or [4, 6, 9, 7] as 4-7 and wait for 5 for ever.
    backend = ProcessBackend(workers=1)
    call = call_of(backend, square, results_into([]))
    call.measured(100, 0.0001)  # cheap jobs: chunks of many
    jobs = [Job(call, index, index) for index in (6, 4, 9, 7)]
    queued = backend._join_waiting(call, jobs[:1])
    assert queued is not None
    assert [backend._join_waiting(call, [job]) for job in jobs[1:]] == [None] * 3
    backend._take_waiting(call, queued)
    assert [job.index for job in queued] == [4, 6, 7, 9]
    assert backend._join_waiting(call, [Job(call, 1, 1)]) is not queued  # taken: a new one


def test_retries_that_fall_due_together_wait_in_one_chunk_per_worker() -> None:
    # Retries that fall due while every worker is busy are shared among the workers:
    # one waiting chunk each, a retry joining the shortest; in one chunk, the first
    # worker free would run them all, one after the other, and the next one none.
    backend = ProcessBackend(workers=2)
    call = call_of(backend, square, results_into([]))
    call.measured(100, 0.0001)  # cheap jobs: chunks of many
    jobs = [Job(call, index, index) for index in range(6)]
    first = backend._join_waiting(call, jobs[:1])
    second = backend._join_waiting(call, jobs[1:2])
    assert first is not None and second is not None and first is not second
    assert [backend._join_waiting(call, [job]) for job in jobs[2:5]] == [None] * 3
    assert ([job.index for job in first], [job.index for job in second]) == ([0, 2, 4], [1, 3])
    backend._take_waiting(call, first)  # a worker takes it: the next retry starts another
    third = backend._join_waiting(call, jobs[5:])
    assert third is not None and third is not first and third is not second
    assert backend._join_waiting(call, [Job(call, 6, 6)]) is None
    assert [job.index for job in second] + [job.index for job in third] == [1, 3, 5, 6]


def test_a_full_waiting_chunk_takes_no_more_retries() -> None:
    # A waiting chunk holds at most the call's chunk size: the next retry starts another.
    backend = ProcessBackend(workers=1)
    call = call_of(backend, square, results_into([]))  # chunks of 1 job until measured
    first = backend._join_waiting(call, [Job(call, 0, 0)])
    second = backend._join_waiting(call, [Job(call, 1, 1)])
    assert first is not None and second is not None and second is not first
    backend._take_waiting(call, first)  # no longer registered: nothing happens to second
    assert backend._join_waiting(call, [Job(call, 2, 2)]) is not None  # second is full too
    backend._take_waiting(call, second)
    assert [job.index for job in second] == [1]
