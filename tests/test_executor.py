"""Tests of cf.PoolExecutor: a WorkerPool behind the ``concurrent.futures.Executor`` interface.

Most tests run on every backend of pool_helpers.BACKENDS ("thread", "async", "process" and,
with distributed installed, "dask" on the session's LocalCluster: see conftest.dask_client).
A job is written once as a *body* (a plain function, or a generator that yields waits, see
pool_helpers) and adapted per backend by ``backend.job(body)``: a blocking function for
threads, processes and Dask, an ``async def`` for backend="async" (which runs coroutine
functions only). Bodies live at module level, so worker processes and Dask workers import
them from this module; hypothesis is imported inside its one test, so that a fresh worker
process does not pay for importing it.

What a job waits for or reports across processes goes through files (:class:`FileFlag`,
:class:`FileLog`): a few microseconds from any process, nothing to connect to. No test
depends on a sleep winning a race: a job that must still be running when the test looks
blocks on a flag only the test sets; time bounds are lower bounds a correct executor cannot
beat, or upper bounds (``PROMPT``) many times what the work takes.

Several tests mirror CPython's own executor tests (Lib/test/test_concurrent_futures); their
docstrings name the test. The "backoff=" section at the end covers the number of seconds
that WorkerPool, PoolExecutor and RetryPolicy now accept.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import inspect
import itertools
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress

import chanflow as cf
from chanflow._retry import Backoff, RetryPolicy
from helpers import wait_until
from pool_helpers import BACKENDS, Backend, Sleep, Source, Steps, WaitEvent

each_backend = pytest.mark.parametrize("backend", BACKENDS, ids=str)


def backends_named(*names: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize(
        "backend", [backend for backend in BACKENDS if backend.name in names], ids=str
    )


# Upper bound for "returns promptly" / "completes": many times what the work takes, so that
# only a hang or a real bug misses it on a loaded 2-core machine.
PROMPT = 5.0
# How long a blocked job waits for its release before it gives up (and fails).
BLOCK_SECONDS = 20.0
WORKERS = 2


# -- cross-process probes -------------------------------------------------------------------


@dataclass(frozen=True)
class FileFlag:
    """An event that any process can set and see: a file that exists once set.

    Has what pool_helpers.WaitEvent needs (``is_set``, ``wait``), so a body can yield
    ``WaitEvent(flag, seconds)`` on every backend.
    """

    path: str

    def set(self) -> None:
        with open(self.path, "a"):
            pass

    def is_set(self) -> bool:
        return os.path.exists(self.path)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True


@dataclass(frozen=True)
class FileLog:
    """Lines that jobs in any process append (one short ``write`` each: no interleaving)."""

    path: str

    def append(self, line: object) -> None:
        with open(self.path, "a") as file:
            file.write(f"{line}\n")

    def lines(self) -> list[str]:
        try:
            with open(self.path) as file:
                return file.read().splitlines()
        except FileNotFoundError:
            return []


class Probes:
    """Makes flags and logs in the test's tmp_path; sets every flag made when the test ends."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._flags: list[FileFlag] = []
        self._names = itertools.count()

    def flag(self) -> FileFlag:
        flag = FileFlag(os.fspath(self._directory / f"flag-{next(self._names)}"))
        self._flags.append(flag)
        return flag

    def log(self) -> FileLog:
        return FileLog(os.fspath(self._directory / f"log-{next(self._names)}"))

    def release_all(self) -> None:
        for flag in self._flags:
            flag.set()


@pytest.fixture
def probes(tmp_path: Path) -> Iterator[Probes]:
    made = Probes(tmp_path)
    yield made
    made.release_all()  # before the autouse check for leftover threads


@contextlib.contextmanager
def releasing(*flags: FileFlag) -> Iterator[None]:
    """Set ``flags`` on leaving, whatever happened: a blocked job never outlives a failure.

    Put it after the executor in a ``with``: it is left first, so the executor's shutdown
    does not wait ``BLOCK_SECONDS`` for jobs that nobody will release.
    """
    try:
        yield
    finally:
        for flag in flags:
            flag.set()


# -- job bodies (module level: process and Dask workers import them from here) ----------------


class Flaky(Exception):
    pass


def square(x: int) -> int:
    return x * x


def add(x: int, y: int = 0) -> int:
    return x + y


def capture(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def raise_value_error(message: str) -> None:
    raise ValueError(message)


def fail_odd(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


def divide(x: int, y: int) -> float:
    return x / y


def raise_base_exception(kind: str) -> None:
    if kind == "KeyboardInterrupt":
        raise KeyboardInterrupt("interrupted inside the job")
    raise SystemExit(3)


def block(release: FileFlag, started: FileFlag | None = None, value: Any = None) -> Steps:
    """Say it started, then wait until ``release`` is set; return ``value``."""
    if started is not None:
        started.set()
    released = yield WaitEvent(release, BLOCK_SECONDS)
    if not released:
        raise AssertionError(f"{release} was never set")
    return value


BLOCKED = "blocked"


def block_on(value: Any, release: FileFlag) -> Steps:
    """``value`` at once, unless it is BLOCKED: then wait for ``release`` first."""
    if value == BLOCKED:
        yield WaitEvent(release, BLOCK_SECONDS)
    return value


def mark(ran: FileFlag, value: Any = None) -> Any:
    """Leave a trace that the job ran."""
    ran.set()
    return value


def hang_reporting_pid(pids: FileLog, release: FileFlag) -> Steps:
    """Write the worker's pid, then hang until released (a per-job timeout ends it first)."""
    pids.append(os.getpid())
    yield WaitEvent(release, BLOCK_SECONDS)
    return "not stopped"


def fail_first_attempts(attempts: FileLog, failures: int, value: Any) -> Any:
    attempts.append("attempt")
    count = len(attempts.lines())
    if count <= failures:
        raise Flaky(f"attempt {count}")
    return value


def stamp_start(starts: FileLog, value: Any) -> Any:
    starts.append(repr(time.monotonic()))
    return value


def sleep_then(seconds: float, value: Any) -> Steps:
    yield Sleep(seconds)
    return value


def record(log: FileLog, value: Any) -> Any:
    log.append(value)
    return value


def crash_or_square(x: int) -> int:
    if x < 0:
        os._exit(7)  # the worker process dies in the middle of its job
    return x * x


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def executor(backend: Backend, workers: int = WORKERS, **options: Any) -> Iterator[cf.PoolExecutor]:
    """``with cf.PoolExecutor(workers, backend=...)``: the way users write it."""
    with cf.PoolExecutor(workers, backend=backend.name, **options) as ex:
        yield ex


def warm_up(ex: cf.PoolExecutor, backend: Backend) -> None:
    """Run one job, so that worker processes have started and loaded this module."""
    assert ex.submit(backend.job(square), 3).result(timeout=30) == 9


# -- what it is -----------------------------------------------------------------------------


def test_is_an_executor_and_a_thread_pool_executor_for_asyncio() -> None:
    with cf.PoolExecutor(2) as ex:
        assert isinstance(ex, concurrent.futures.Executor)
        # loop.set_default_executor refuses anything else (see test_set_default_executor).
        assert isinstance(ex, concurrent.futures.ThreadPoolExecutor)
        assert "thread" in repr(ex)
        assert "running" in repr(ex)
    assert "shut down" in repr(ex)


def test_max_workers_is_the_stdlibs_spelling_of_workers() -> None:
    with cf.PoolExecutor(max_workers=3) as ex:
        assert ex.submit(square, 4).result(timeout=PROMPT) == 16
        assert list(ex.map(square, range(4))) == [0, 1, 4, 9]
    with pytest.raises(TypeError, match="max_workers"):
        cf.PoolExecutor(2, max_workers=3)


@pytest.mark.parametrize("workers", [0, -1])
def test_zero_or_negative_workers_is_a_value_error(workers: int) -> None:
    with pytest.raises(ValueError, match="workers"):
        cf.PoolExecutor(workers)
    with pytest.raises(ValueError, match="workers"):
        cf.PoolExecutor(max_workers=workers)


def test_an_unknown_backend_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="backend"):
        cf.PoolExecutor(2, backend="greenlet")


def test_bad_pool_settings_are_refused_when_it_is_made() -> None:
    with pytest.raises(ValueError, match="timeout"):
        cf.PoolExecutor(2, timeout=-1)
    with pytest.raises(ValueError, match="retries"):
        cf.PoolExecutor(2, retries=-1)
    with pytest.raises(ValueError, match="initializer"):
        cf.PoolExecutor(2, backend="thread", initializer=print)  # process only


@backends_named("dask")
def test_a_dask_backend_object_names_the_cluster(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    client = request.getfixturevalue("dask_client")
    for target in (client, client.scheduler.address):
        with cf.PoolExecutor(2, backend=cf.DaskBackend(target)) as ex:
            assert ex.submit(square, 6).result(timeout=30) == 36
            assert list(ex.map(add, range(3), range(3))) == [0, 2, 4]


def test_auto_runs_coroutine_functions_on_asyncio_and_the_rest_on_threads() -> None:
    with cf.PoolExecutor(2, backend="auto") as ex:
        assert ex.submit(square, 3).result(timeout=PROMPT) == 9
        assert ex.submit(_async_square, 4).result(timeout=PROMPT) == 16
        assert list(ex.map(_async_square, range(3))) == [0, 1, 4]


# -- submit ---------------------------------------------------------------------------------


@each_backend
def test_submit_passes_positional_and_keyword_arguments(backend: Backend) -> None:
    """CPython's test_submit and test_submit_keyword: ``fn`` and ``self`` are positional-only,
    so a job may take keyword arguments of those names."""
    with executor(backend) as ex:
        assert ex.submit(backend.job(square), 8).result(timeout=30) == 64
        assert ex.submit(backend.job(add), 2, y=8).result(timeout=PROMPT) == 10
        future = ex.submit(backend.job(capture), 1, self=2, fn=3)
        assert future.result(timeout=PROMPT) == ((1,), {"self": 2, "fn": 3})


@each_backend
def test_futures_work_with_wait_and_as_completed(backend: Backend) -> None:
    with executor(backend) as ex:
        futures = [ex.submit(backend.job(square), x) for x in range(6)]
        futures.append(ex.submit(backend.job(raise_value_error), "bad"))
        done, not_done = concurrent.futures.wait(futures, timeout=30)
        assert (len(done), not_done) == (7, set())
        completed = list(concurrent.futures.as_completed(futures, timeout=PROMPT))
        assert set(completed) == set(futures)
        first_error = concurrent.futures.wait(futures, return_when="FIRST_EXCEPTION")
        assert futures[-1] in first_error.done
        assert [future.result() for future in futures[:-1]] == [x * x for x in range(6)]


@each_backend
def test_add_done_callback_runs_once_per_callback(backend: Backend) -> None:
    with executor(backend) as ex:
        called: list[concurrent.futures.Future[Any]] = []
        everything_called = threading.Event()

        def callback(future: concurrent.futures.Future[Any]) -> None:
            called.append(future)
            if len(called) == 2:
                everything_called.set()

        future = ex.submit(backend.job(square), 5)
        future.add_done_callback(callback)
        assert future.result(timeout=30) == 25
        future.add_done_callback(callback)  # already done: called at once, on this thread
        assert everything_called.wait(PROMPT)
        assert called == [future, future]


@each_backend
def test_futures_await_through_wrap_future_and_run_in_executor(backend: Backend) -> None:
    async def main(ex: cf.PoolExecutor) -> tuple[Any, Any, Any]:
        loop = asyncio.get_running_loop()
        wrapped = await asyncio.wrap_future(ex.submit(backend.job(square), 3))
        ran = await loop.run_in_executor(ex, backend.job(add), 4, 5)
        try:
            await loop.run_in_executor(ex, backend.job(raise_value_error), "in a loop")
        except ValueError as error:
            failed = str(error)
        return wrapped, ran, failed

    with executor(backend) as ex:
        assert asyncio.run(asyncio.wait_for(main(ex), 30)) == (9, 9, "in a loop")


@each_backend
def test_set_default_executor(backend: Backend) -> None:
    """asyncio accepts it as the loop's default executor (a TypeError for a mere Executor
    since Python 3.11), runs ``run_in_executor(None, ...)`` on it, and shuts it down when
    asyncio.run ends."""
    ex = cf.PoolExecutor(WORKERS, backend=backend.name)

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ex)
        return await loop.run_in_executor(None, backend.job(square), 7)

    try:
        assert asyncio.run(asyncio.wait_for(main(), 30)) == 49
        assert "shut down" in repr(ex)
        with pytest.raises(RuntimeError, match="shutdown"):
            ex.submit(backend.job(square), 1)
    finally:
        ex.shutdown(wait=True)


# -- exceptions -----------------------------------------------------------------------------


@each_backend
def test_exception_type_message_and_traceback(backend: Backend) -> None:
    """As the stdlib's executors: ``future.exception()`` is the job's exception, of its type
    and with its message, and its formatted traceback names the job function (for
    ProcessPoolExecutor, through a ``_RemoteTraceback`` cause holding the worker's)."""
    with executor(backend) as ex:
        future = ex.submit(backend.job(raise_value_error), "broken input")
        error = future.exception(timeout=30)
        assert type(error) is ValueError
        assert str(error) == "broken input"
        with pytest.raises(ValueError, match="broken input"):
            future.result()
        assert error is not None
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        assert "raise_value_error" in text, f"the traceback does not name the job:\n{text}"


@each_backend
@pytest.mark.parametrize("kind", ["KeyboardInterrupt", "SystemExit"])
def test_a_job_raising_a_base_exception_fails_its_future_only(backend: Backend, kind: str) -> None:
    expected = {"KeyboardInterrupt": KeyboardInterrupt, "SystemExit": SystemExit}[kind]
    with executor(backend) as ex:
        future = ex.submit(backend.job(raise_base_exception), kind)
        error = future.exception(timeout=30)
        assert type(error) is expected
        with pytest.raises(expected):
            future.result()
        # The executor keeps serving, on every worker.
        assert list(ex.map(backend.job(square), range(8))) == [x * x for x in range(8)]
        assert ex.submit(backend.job(square), 3).result(timeout=PROMPT) == 9


# -- future states and cancel ---------------------------------------------------------------


@each_backend
@pytest.mark.timeout(60)
def test_cancel_before_start_and_running_states(backend: Backend, probes: Probes) -> None:
    """CPython's test_cancel/test_running/test_done in terms of a real executor: with its one
    worker busy, a submitted future is pending (not running, not done) and can be cancelled
    (cancel() is True, its job never runs); the running one cannot (cancel() is False) and
    completes; a future turns running when its job starts and done when it ends."""
    release, started, ran = probes.flag(), probes.flag(), probes.flag()
    second_release, second_started = probes.flag(), probes.flag()
    with executor(backend, workers=1) as ex, releasing(release, second_release):
        running = ex.submit(backend.job(block), release, started, "first")
        assert started.wait(30)
        waiting = ex.submit(backend.job(mark), ran, "never")
        later = ex.submit(backend.job(block), second_release, second_started, "later")
        assert running.running() and not running.done()
        assert not waiting.running() and not waiting.done()
        assert waiting.cancel()
        assert waiting.cancelled() and waiting.done()
        assert not running.cancel()
        assert not running.cancelled()
        release.set()
        assert running.result(timeout=PROMPT) == "first"
        assert second_started.wait(PROMPT)
        wait_until(later.running, PROMPT)
        assert not later.done()
        second_release.set()
        assert later.result(timeout=PROMPT) == "later"
        assert not later.running() and later.done()
        with pytest.raises(concurrent.futures.CancelledError):
            waiting.result()
    assert not ran.is_set(), "a cancelled job ran"
    assert ex.stats().cancelled >= 1


# -- map ------------------------------------------------------------------------------------


@each_backend
def test_map_yields_in_order_zips_iterables_and_stops_at_the_shortest(backend: Backend) -> None:
    with executor(backend) as ex:
        assert list(ex.map(backend.job(square), range(20))) == [x * x for x in range(20)]
        assert list(ex.map(backend.job(add), range(10), range(100, 104))) == list(
            map(add, range(10), range(100, 104))
        )
        assert list(ex.map(backend.job(add), [], [])) == []
        assert list(ex.map(backend.job(square), [])) == []
        assert list(ex.map(backend.job(square), [], buffersize=2)) == []
        # Lazy input, and an order that finishes out of order: the values stay in order.
        values = ex.map(backend.job(sleep_then), [0.03, 0.0, 0.02, 0.0], "abcd")
        assert list(values) == list("abcd")


@each_backend
def test_map_raises_the_first_error_when_its_value_is_reached(backend: Backend) -> None:
    """CPython's test_map_exception: the values before the failure come first."""
    with executor(backend) as ex:
        values = ex.map(backend.job(divide), [1, 1, 1, 1], [2, 4, 0, 5])
        assert next(values) == 0.5
        assert next(values) == 0.25
        with pytest.raises(ZeroDivisionError):
            next(values)
        with pytest.raises(StopIteration):  # a generator that raised is finished
            next(values)
        assert list(ex.map(backend.job(square), range(3))) == [0, 1, 4]


@each_backend
def test_map_with_chunksize_gives_the_same_values(backend: Backend) -> None:
    with executor(backend) as ex:
        assert list(ex.map(backend.job(square), range(25), chunksize=4)) == [
            x * x for x in range(25)
        ]


@each_backend
@pytest.mark.timeout(60)
def test_map_timeout_is_measured_from_the_call(backend: Backend, probes: Probes) -> None:
    """The deadline is the map call plus ``timeout``, not each ``next()`` plus ``timeout``
    (CPython's test_map_timeout): the consumer waits WAIT seconds before its first
    ``next()``; TimeoutError comes TIMEOUT seconds after the call, well before WAIT +
    TIMEOUT, and never before TIMEOUT (the job it waits for is blocked until released)."""
    timeout, wait = 1.0, 0.5
    release = probes.flag()
    with executor(backend) as ex, releasing(release):
        warm_up(ex, backend)
        start = time.monotonic()
        jobs = [0, 1, BLOCKED, 3]
        values = ex.map(backend.job(block_on), jobs, itertools.repeat(release), timeout=timeout)
        time.sleep(wait)
        got, error = describe_map(values)
        raised_after = time.monotonic() - start
    assert error is not None and issubclass(error[0], concurrent.futures.TimeoutError), error
    assert got == [0, 1]
    assert timeout <= raised_after < timeout + wait, (
        f"TimeoutError {raised_after:.2f} s after the call, with timeout={timeout} "
        f"and the first next() {wait} s after the call"
    )


@each_backend
@pytest.mark.timeout(60)
def test_map_timeout_raises_at_the_first_value_not_ready(backend: Backend, probes: Probes) -> None:
    """Forty cheap jobs, then one that blocks: with the stdlib, the forty values come out
    and TimeoutError is raised at the blocked one. Values of jobs that have finished must not
    be held back because a later job of the same chunk is still running."""
    release = probes.flag()
    jobs = [*range(40), BLOCKED, 41, 42]
    with executor(backend) as ex, releasing(release):
        warm_up(ex, backend)
        values = ex.map(backend.job(block_on), jobs, itertools.repeat(release), timeout=1.0)
        got, error = describe_map(values)
    assert error is not None and issubclass(error[0], concurrent.futures.TimeoutError), error
    assert got == list(range(40)), f"TimeoutError after {len(got)} of the 40 finished values"


@each_backend
@pytest.mark.parametrize("buffersize", [None, 1, 5])
def test_map_over_an_endless_input_is_bounded(backend: Backend, buffersize: int | None) -> None:
    """``map(fn, itertools.count())`` works: a consumer that takes 10 values and stops has
    made the input produce at most 10 + ``buffersize`` items (Python 3.14: at most
    ``buffersize`` taken and not yet yielded), or 10 + the documented bound of the
    default window (docs/worker-pool.md, "The default window"). Input is taken only in the
    consumer's calls, so the count is final once the tenth value is out. After shutdown,
    ``next()`` on the unfinished map raises RuntimeError and the input is closed."""
    source = Source.endless()
    with executor(backend) as ex:
        values = ex.map(backend.job(square), source.sync(), buffersize=buffersize)
        assert [next(values) for _ in range(10)] == [x * x for x in range(10)]
        pulled = source.pulled
        bound = backend.default_window_bound(WORKERS) if buffersize is None else buffersize
        assert pulled <= 10 + bound, f"took {pulled} items for 10 values, window {bound}"
        time.sleep(0.05)
        assert source.pulled == pulled, "the input was read while nobody asked for values"
    with pytest.raises(RuntimeError, match="shutdown"):
        next(values)
    assert source.closed


@each_backend
def test_map_buffersize_takes_that_many_at_the_call(backend: Backend) -> None:
    """CPython 3.14's test_map_buffersize_without_iteration and
    test_map_buffersize_when_buffer_is_full: the jobs start at the call, ``buffersize`` of
    them, and no more are taken without iteration (not even by shutdown)."""
    with executor(backend) as ex:
        items = iter(range(4))
        ex.map(backend.job(square), items, buffersize=2)
        ex.shutdown(wait=True)
    assert list(items) == [2, 3]


@each_backend
def test_map_buffersize_over_several_endless_inputs(backend: Backend) -> None:
    """CPython 3.14's test_map_buffersize_on_multiple_infinite_iterables."""
    with executor(backend) as ex:
        values = ex.map(backend.job(add), itertools.count(), itertools.count(), buffersize=2)
        assert [next(values) for _ in range(4)] == [0, 2, 4, 6]


@each_backend
def test_map_runs_its_jobs_without_iteration(backend: Backend, probes: Probes) -> None:
    """CPython's test_map_submits_without_iteration (its executors have 5 workers): the
    jobs of a map that nobody iterates still run, and ``shutdown(wait=True)`` waits for
    them. Ten jobs fit chanflow's default window for five workers (``2 * workers``), so
    laziness is no excuse here; only ``cancel_futures=True`` may cancel them."""
    log = probes.log()
    ex = cf.PoolExecutor(5, backend=backend.name)
    try:
        ex.map(backend.job(record), itertools.repeat(log), range(10))
    finally:
        ex.shutdown(wait=True)
    assert sorted(int(line) for line in log.lines()) == list(range(10))


def sleep_record(log: FileLog, value: Any) -> Steps:
    yield Sleep(0.1)
    log.append(value)
    return value


@each_backend
def test_shutdown_lets_the_jobs_a_map_has_taken_run(backend: Backend, probes: Probes) -> None:
    """The jobs a map has taken from its input are submitted work: ``shutdown(wait=True)``
    without ``cancel_futures`` runs them all, as the stdlib's shutdown runs the futures its
    map made, even those still queued behind busy workers (0.1 s jobs, 2 workers, up to 4
    taken), and whether or not the caller still holds the map's iterator. Input not yet
    taken stays untaken (CPython 3.14's test_map_buffersize_when_buffer_is_full)."""
    log = probes.log()
    items = iter(range(8))
    with executor(backend) as ex:
        values = ex.map(backend.job(sleep_record), itertools.repeat(log), items, buffersize=4)
        ex.shutdown(wait=True)
        ran = sorted(int(line) for line in log.lines())
    taken = 8 - len(list(items))
    assert 1 <= taken <= 4
    assert ran == list(range(taken)), f"{taken} jobs taken, these ran: {ran}"
    del values


@each_backend
def test_a_map_whose_input_was_all_taken_yields_its_values_after_shutdown(
    backend: Backend,
) -> None:
    """``with Executor() as ex: results = ex.map(fn, items)``, then ``for r in results``
    after the block: with the stdlib (and with 3.14's ``buffersize``, once the input has
    all been taken) the values come out. Two items fit every window, buffersize=2 or the
    default, so the map is finished with its input at the call; its jobs (0.05 s) are
    still running when ``with`` shuts the executor down."""
    with executor(backend) as ex:
        default = ex.map(backend.job(sleep_then), [0.05, 0.05], ["a", "b"])
        explicit = ex.map(backend.job(sleep_then), [0.05, 0.05], ["c", "d"], buffersize=2)
    assert list(default) == ["a", "b"]
    assert list(explicit) == ["c", "d"]


@each_backend
def test_map_bad_arguments_raise_at_once_and_the_executor_keeps_serving(
    backend: Backend,
) -> None:
    """CPython 3.14's test_map_buffersize_validation, and chunksize as the stdlib checks it."""
    job = backend.job(square)
    with executor(backend) as ex:
        with pytest.raises(ValueError, match="buffersize"):
            ex.map(job, range(3), buffersize=0)
        with pytest.raises(ValueError, match="buffersize"):
            ex.map(job, range(3), buffersize=-1)
        with pytest.raises(TypeError, match="buffersize"):
            ex.map(job, range(3), buffersize="x")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="buffersize"):
            ex.map(job, range(3), buffersize=2.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="chunksize"):
            ex.map(job, range(3), chunksize=0)
        with pytest.raises(TypeError, match="timeout"):
            ex.map(job, range(3), timeout="soon")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            ex.map(job, 42)  # type: ignore[call-overload]
        assert list(ex.map(job, range(3))) == [0, 1, 4]


# -- shutdown -------------------------------------------------------------------------------


@each_backend
def test_shutdown_waits_for_every_submitted_job(backend: Backend) -> None:
    ex = cf.PoolExecutor(WORKERS, backend=backend.name)
    futures = [ex.submit(backend.job(sleep_then), 0.05, x) for x in range(6)]
    ex.shutdown(wait=True)
    assert all(future.done() for future in futures)
    assert [future.result() for future in futures] == list(range(6))
    ex.shutdown(wait=True)  # idempotent
    ex.shutdown(wait=False)


@each_backend
@pytest.mark.timeout(60)
def test_shutdown_without_wait_returns_while_jobs_run(backend: Backend, probes: Probes) -> None:
    """CPython's test_shutdown_no_wait: ``wait=False`` returns at once; the work still to do
    is done afterwards (the job is blocked until the test releases it, so it cannot have
    finished when shutdown returns)."""
    release, started = probes.flag(), probes.flag()
    ex = cf.PoolExecutor(WORKERS, backend=backend.name)
    try:
        running = ex.submit(backend.job(block), release, started, "done")
        queued = [ex.submit(backend.job(square), x) for x in range(4)]
        assert started.wait(30)
        ex.shutdown(wait=False)
        assert not running.done()
        with pytest.raises(RuntimeError, match="shutdown"):
            ex.submit(backend.job(square), 1)
        release.set()
        assert running.result(timeout=PROMPT) == "done"
        assert [future.result(timeout=PROMPT) for future in queued] == [0, 1, 4, 9]
    finally:
        release.set()
        ex.shutdown(wait=True)  # joins what wait=False left running


@each_backend
@pytest.mark.timeout(60)
def test_shutdown_cancel_futures(backend: Backend, probes: Probes) -> None:
    """CPython's test_cancel_futures: the futures not started are cancelled (their jobs
    never run), the running one completes."""
    release, started, ran = probes.flag(), probes.flag(), probes.flag()
    ex = cf.PoolExecutor(1, backend=backend.name)
    try:
        running = ex.submit(backend.job(block), release, started, "finished")
        assert started.wait(30)
        pending = [ex.submit(backend.job(mark), ran, x) for x in range(5)]
        ex.shutdown(wait=False, cancel_futures=True)
        assert all(future.cancelled() for future in pending)
        assert not running.cancelled()
        release.set()
        assert running.result(timeout=PROMPT) == "finished"
    finally:
        release.set()
        ex.shutdown(wait=True)
    assert not ran.is_set(), "a cancelled job ran"


@each_backend
def test_submit_and_map_after_shutdown_raise_runtime_error(backend: Backend) -> None:
    with executor(backend) as ex:
        future = ex.submit(backend.job(square), 2)
    assert future.done()  # leaving `with` waited for it
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(backend.job(square), 2)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.map(backend.job(square), [1])


@each_backend
@pytest.mark.timeout(60)
def test_shutdown_from_a_done_callback_does_not_deadlock(backend: Backend) -> None:
    """``add_done_callback(lambda f: executor.shutdown(wait=True))``: the callback runs on
    one of the executor's own threads, which shutdown cannot wait for; it must return, the
    other jobs must still complete, and a later shutdown(wait=True) must return."""
    ex = cf.PoolExecutor(WORKERS, backend=backend.name)
    callback_returned = threading.Event()

    def shut_down(future: concurrent.futures.Future[Any]) -> None:
        ex.shutdown(wait=True)
        callback_returned.set()

    try:
        first = ex.submit(backend.job(sleep_then), 0.05, "first")
        first.add_done_callback(shut_down)
        others = [ex.submit(backend.job(sleep_then), 0.05, x) for x in range(4)]
        assert callback_returned.wait(30), "shutdown(wait=True) in a done-callback hung"
        assert first.result() == "first"
        assert [future.result(timeout=PROMPT) for future in others] == list(range(4))
    finally:
        closer = threading.Thread(target=ex.shutdown, daemon=True)
        closer.start()
        closer.join(30)
    assert not closer.is_alive(), "shutdown(wait=True) after the callback's hung"


@each_backend
def test_no_stale_references(backend: Backend) -> None:
    """CPython's test_no_stale_references (issue #16284): once a job has run, the executor
    holds nothing of it; an object whose bound method was submitted is freed (once the
    caller drops the future too) without waiting for the executor to go."""
    with executor(backend) as ex:
        warm_up(ex, backend)
        reference, collected = run_a_bound_method(ex, backend)
        deadline = time.monotonic() + 3.0  # the job has ended: only its leftovers remain
        while not collected.is_set() and time.monotonic() < deadline:
            gc.collect()
            collected.wait(0.05)
        leftover = reference()
        kept_by = [] if leftover is None else holders(leftover)
        del leftover
        assert not kept_by, f"the submitted method's object is still referenced: {kept_by}"


def run_a_bound_method(
    ex: cf.PoolExecutor, backend: Backend
) -> tuple[weakref.ref[MethodOwner], threading.Event]:
    """Submit a bound method of a new object and wait for it; keep nothing of either."""
    owner = MethodOwner()
    collected = threading.Event()
    reference = weakref.ref(owner, lambda _: collected.set())
    future = ex.submit(owner.amethod if backend.name == "async" else owner.method)
    assert future.result(timeout=30) == 1
    return reference, collected


def holders(thing: object) -> list[str]:
    """What keeps ``thing`` alive, briefly: its referrers (frames excepted), and for a bound
    method among them, the method's own. For a failure's message."""
    found = []
    referrers = gc.get_referrers(thing)
    for holder in referrers:
        if inspect.isframe(holder):
            continue
        if inspect.ismethod(holder):
            for outer in gc.get_referrers(holder):
                if outer is not referrers and not inspect.isframe(outer):
                    found.append(f"the bound method, held by {type(outer).__name__} {outer!r:.150}")
        else:
            found.append(f"{type(holder).__name__} {holder!r:.150}")
    return found


class MethodOwner:
    def method(self) -> int:
        return 1

    async def amethod(self) -> int:
        return 1


@each_backend
def test_an_executor_dropped_without_shutdown_stops_its_threads(backend: Backend) -> None:
    """CPython's test_del_shutdown: an executor garbage collected without shutdown finishes
    its work, and the threads it started end (they are not left running forever)."""
    before = set(threading.enumerate())
    ex = cf.PoolExecutor(WORKERS, backend=backend.name)
    futures = [ex.submit(backend.job(square), x) for x in range(4)]
    assert [future.result(timeout=30) for future in futures] == [0, 1, 4, 9]
    started = [thread for thread in threading.enumerate() if thread not in before]
    started = [thread for thread in started if thread.name.startswith("chanflow-")]
    del ex, futures
    deadline = time.monotonic() + 3.0
    while any(thread.is_alive() for thread in started) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    alive = [thread.name for thread in started if thread.is_alive()]
    assert not alive, f"threads of a dropped executor still running: {alive}"


EXIT_SCRIPT = textwrap.dedent(
    """
    import asyncio, atexit, os, sys, time
    import chanflow as cf

    backend, out = sys.argv[1], sys.argv[2]

    def say(text):  # one write: lines from several threads do not interleave
        os.write(1, f"{text}\\n".encode())

    def work(i):
        time.sleep(0.2)
        with open(out, "a") as file:
            file.write(f"job {i}\\n")
        return i

    async def awork(i):
        await asyncio.sleep(0.2)
        with open(out, "a") as file:
            file.write(f"job {i}\\n")
        return i

    def executor():
        if backend == "dask":
            return cf.PoolExecutor(2, backend=cf.DaskBackend(sys.argv[3]))
        return cf.PoolExecutor(2, backend=backend)

    fn = awork if backend == "async" else work
    never_shut_down = executor()
    shut_down_without_wait = executor()

    @atexit.register
    def submit_at_exit():
        try:
            never_shut_down.submit(fn, 99)
        except RuntimeError:
            say("runtime-error")

    for i in range(3):
        never_shut_down.submit(fn, i).add_done_callback(
            lambda future: say(f"done {future.result()}")
        )
        shut_down_without_wait.submit(fn, 10 + i)
    shut_down_without_wait.shutdown(wait=False)
    say("leaving")
    """
)


@each_backend
@pytest.mark.timeout(90)
def test_no_hang_at_interpreter_exit_with_pending_work(
    backend: Backend, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """CPython's test_interpreter_shutdown, test_hang_issue39205 and
    test_submit_after_interpreter_shutdown, in a child interpreter: it submits slow-ish jobs
    to one executor it never shuts down and to one it shuts down with ``wait=False``, and
    exits. Every job runs (its line is written, the done-callbacks print), the child exits
    0 within the timeout, and a submit from an atexit handler raises RuntimeError. On Dask
    the child connects to the session's cluster."""
    out = tmp_path / "jobs.txt"
    args = [sys.executable, "-c", EXIT_SCRIPT, backend.name, os.fspath(out)]
    if backend.name == "dask":
        args.append(request.getfixturevalue("dask_client").scheduler.address)
    child = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    jobs = [0, 1, 2, 10, 11, 12]
    assert sorted(out.read_text().splitlines()) == sorted(f"job {i}" for i in jobs)
    lines = child.stdout.splitlines()
    assert lines[0] == "leaving"
    assert sorted(line for line in lines if line.startswith("done")) == [
        "done 0",
        "done 1",
        "done 2",
    ]
    assert lines[-1] == "runtime-error"


# -- chanflow's extras through the Executor interface -----------------------------------------


@each_backend
def test_retries_and_a_backoff_in_seconds(backend: Backend, probes: Probes) -> None:
    attempts = probes.log()
    with executor(backend, retries=2, backoff=0.01) as ex:
        assert ex.submit(backend.job(fail_first_attempts), attempts, 2, "ok").result(30) == "ok"
        assert len(attempts.lines()) == 3
        again = probes.log()
        failing = ex.submit(backend.job(fail_first_attempts), again, 5, "never")
        with pytest.raises(Flaky, match="attempt 3"):
            failing.result(timeout=PROMPT)
    assert ex.stats().retried == 4


@each_backend
@pytest.mark.timeout(60)
def test_a_job_timeout_fails_only_that_future(backend: Backend, probes: Probes) -> None:
    """``timeout=``: the hung job's future fails with cf.JobTimeout (a TimeoutError), every
    other future completes, and the executor keeps serving. On processes the worker that
    ran the hung job is killed (and replaced)."""
    pids, release = probes.log(), probes.flag()
    with executor(backend, timeout=0.5) as ex, releasing(release):
        hung = ex.submit(backend.job(hang_reporting_pid), pids, release)
        others = [ex.submit(backend.job(square), x) for x in range(6)]
        with pytest.raises(cf.JobTimeout):
            hung.result(timeout=30)
        assert isinstance(hung.exception(), TimeoutError)
        assert [future.result(timeout=PROMPT) for future in others] == [x * x for x in range(6)]
        if backend.name == "process":
            [pid] = pids.lines()
            wait_until(lambda: not pid_alive(int(pid)), PROMPT)
        assert list(ex.map(backend.job(square), range(4))) == [0, 1, 4, 9]
    assert ex.stats().timed_out == 1


@each_backend
def test_a_rate_limits_job_starts(backend: Backend, probes: Probes) -> None:
    """``rate="20/s"`` (a burst of one): five jobs cannot all have started before four
    intervals of 50 ms have passed since they were submitted."""
    starts = probes.log()
    with executor(backend, workers=4, rate="20/s") as ex:
        submitted = time.monotonic()
        futures = [ex.submit(backend.job(stamp_start), starts, x) for x in range(5)]
        assert [future.result(timeout=30) for future in futures] == list(range(5))
    last_start = max(float(line) for line in starts.lines())
    assert last_start - submitted >= 4 * 0.05 - 0.005


@each_backend
def test_map_with_dead_letters_skips_failed_jobs(backend: Backend) -> None:
    letters: list[cf.Result[Any]] = []
    with executor(backend, dead_letters=letters.append) as ex:
        assert list(ex.map(backend.job(fail_odd), range(10))) == [0, 2, 4, 6, 8]
    assert sorted(letter.job for letter in letters) == [1, 3, 5, 7, 9]
    assert all(isinstance(letter.error, ValueError) for letter in letters)


@each_backend
def test_stats_count_submitted_and_mapped_jobs(backend: Backend) -> None:
    with executor(backend) as ex:
        assert list(ex.map(backend.job(square), range(5))) == [0, 1, 4, 9, 16]
        assert ex.submit(backend.job(square), 5).result(timeout=30) == 25
        ex.submit(backend.job(raise_value_error), "x").exception(timeout=PROMPT)
    stats = ex.stats()
    assert isinstance(stats, cf.PoolStats)
    assert (stats.submitted, stats.completed, stats.failed) == (7, 6, 1)
    assert (stats.running, stats.in_flight) == (0, 0)


@each_backend
def test_progress_on_a_rich_progress_object(backend: Backend) -> None:
    console = Console(file=open(os.devnull, "w"), force_terminal=True)  # noqa: SIM115
    try:
        with Progress(console=console) as progress, executor(backend, progress=progress) as ex:
            assert list(ex.map(backend.job(square), range(30))) == [x * x for x in range(30)]
            [task] = progress.tasks
            assert task.completed == 30
    finally:
        console.file.close()


@backends_named("process")
@pytest.mark.timeout(60)
def test_a_crashed_process_worker_fails_only_the_future_of_its_job(backend: Backend) -> None:
    """``os._exit`` in a job: that future fails with cf.WorkerCrashed, every other future
    completes, and the executor keeps serving (never a BrokenProcessPool)."""
    with executor(backend) as ex:
        futures = [ex.submit(crash_or_square, x) for x in [1, 2, -1, 3, 4, 5]]
        crashed = futures.pop(2)
        with pytest.raises(cf.WorkerCrashed):
            crashed.result(timeout=30)
        assert [future.result(timeout=PROMPT) for future in futures] == [1, 4, 9, 16, 25]
        values = ex.map(crash_or_square, [1, 2, -1, 3])
        assert [next(values), next(values)] == [1, 4]
        with pytest.raises(cf.WorkerCrashed):
            next(values)
        assert list(ex.map(crash_or_square, range(6))) == [x * x for x in range(6)]
        assert ex.submit(crash_or_square, 7).result(timeout=PROMPT) == 49


# -- bad input ------------------------------------------------------------------------------


@each_backend
def test_a_non_callable_is_a_type_error_and_the_executor_keeps_serving(backend: Backend) -> None:
    with executor(backend) as ex:
        with pytest.raises(TypeError, match="callable"):
            ex.submit(42)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="callable"):
            ex.map(42, [1, 2])  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="callable"):
            ex.map(42, [1, 2], [3, 4])  # type: ignore[call-overload]
        assert ex.submit(backend.job(square), 3).result(timeout=30) == 9


@backends_named("thread", "async")
def test_the_wrong_kind_of_function_is_a_type_error(backend: Backend) -> None:
    """backend="async" runs coroutine functions, backend="thread" plain ones."""
    wrong: Callable[[int], Any] = square if backend.name == "async" else _async_square
    with executor(backend) as ex:
        with pytest.raises(TypeError, match="backend='"):
            ex.submit(wrong, 2)
        with pytest.raises(TypeError, match="backend='"):
            ex.map(wrong, [1, 2])
        assert ex.submit(backend.job(square), 3).result(timeout=PROMPT) == 9


async def _async_square(x: int) -> int:
    return x * x


@backends_named("process", "dask")
def test_a_function_that_cannot_be_pickled_is_a_type_error(backend: Backend) -> None:
    """A process or Dask executor must send the function: one that closes over a lock
    cannot go, and says so at submit/map (not as a hang); the executor keeps serving."""
    lock = threading.Lock()

    def locked_square(x: int) -> int:
        with lock:
            return x * x

    with executor(backend) as ex:
        for _ in range(2):  # the second time too (the check remembers the last function)
            with pytest.raises(TypeError, match="pickle"):
                ex.submit(locked_square, 2)
            with pytest.raises(TypeError, match="pickle"):
                ex.map(locked_square, [1, 2])
            with pytest.raises(TypeError, match="pickle"):
                ex.map(locked_square, [1, 2], [3, 4])
        assert ex.submit(square, 3).result(timeout=30) == 9
        assert list(ex.map(square, range(3))) == [0, 1, 4]


@backends_named("process", "dask")
def test_an_argument_that_cannot_be_pickled_fails_its_future(backend: Backend) -> None:
    """As ProcessPoolExecutor: the future fails with the pickling TypeError."""
    with executor(backend) as ex:
        future = ex.submit(len, threading.Lock())
        with pytest.raises(TypeError, match="pickle"):
            future.result(timeout=30)
        assert ex.submit(square, 3).result(timeout=PROMPT) == 9


def make_a_lock() -> Any:
    return threading.Lock()


@backends_named("process", "dask")
def test_a_result_that_cannot_be_pickled_fails_its_future_with_a_type_error(
    backend: Backend,
) -> None:
    """As ProcessPoolExecutor (and docs/executor.md): the future fails with the TypeError
    of pickling the result; the executor keeps serving."""
    with executor(backend) as ex:
        error = ex.submit(make_a_lock).exception(timeout=30)
        assert isinstance(error, TypeError), repr(error)
        assert "pickle" in str(error)
        assert ex.submit(square, 3).result(timeout=PROMPT) == 9


# -- fork safety ----------------------------------------------------------------------------

_LOCK_HELD_IN_THE_PARENT = threading.Lock()


def take_the_parents_lock(x: int) -> Any:
    """In a worker forked from the test process while a thread held the lock, the copy is
    held forever: acquiring it fails (a deadlock without the timeout)."""
    if not _LOCK_HELD_IN_THE_PARENT.acquire(timeout=2.0):
        return "deadlocked: the worker inherited a held lock"
    _LOCK_HELD_IN_THE_PARENT.release()
    return x


@backends_named("process", "dask")
@pytest.mark.timeout(60)
def test_workers_do_not_inherit_the_parents_threads_locks(backend: Backend) -> None:
    """Fork safety, in the parent: the executor works in a process with many threads
    running, one of which holds a lock that the job takes. A worker forked from that
    process (ProcessPoolExecutor's default start method on Linux before 3.14) would
    inherit the lock held, and the job would deadlock; chanflow's workers come from a
    forkserver (Dask's from its nanny), so the job sees the lock free. (Checked: with
    ``mp_context="fork"`` this test fails.) Thread and asyncio jobs run in this process,
    where the lock *is* held: they are not concerned."""
    stop = threading.Event()
    holding = threading.Event()

    def hold_the_lock() -> None:
        with _LOCK_HELD_IN_THE_PARENT:
            holding.set()
            stop.wait(60)

    def keep_busy() -> None:
        private = threading.Lock()
        while not stop.is_set():
            with private:
                sum(range(100))
            time.sleep(0.001)

    threads = [threading.Thread(target=hold_the_lock, name="test-holder", daemon=True)]
    threads += [
        threading.Thread(target=keep_busy, name=f"test-busy-{n}", daemon=True) for n in range(16)
    ]
    for thread in threads:
        thread.start()
    try:
        assert holding.wait(PROMPT)
        with executor(backend) as ex:
            assert list(ex.map(take_the_parents_lock, range(8))) == list(range(8))
            assert ex.submit(take_the_parents_lock, 9).result(timeout=30) == 9
    finally:
        stop.set()
        for thread in threads:
            thread.join(PROMPT)


FORK_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys, time
    import chanflow as cf

    backend, child_does = sys.argv[1], sys.argv[2]

    def slow(x):
        time.sleep(0.3)
        return x

    def square(x):
        return x * x

    async def aslow(x):
        await asyncio.sleep(0.3)
        return x

    async def asquare(x):
        return x * x

    slow_fn, square_fn = (aslow, asquare) if backend == "async" else (slow, square)
    parents = cf.PoolExecutor(2, backend=backend)
    assert parents.submit(square_fn, 2).result(timeout=30) == 4  # its workers are up
    in_flight = parents.submit(slow_fn, 1)  # still running when the child is forked
    pid = os.fork()
    if pid == 0:
        if child_does == "use its own executor":
            code = 1
            try:
                with cf.PoolExecutor(2, backend=backend) as own:
                    values = list(own.map(square_fn, range(5)))
                    value = own.submit(square_fn, 3).result(timeout=20)
                print("child got", values, value, flush=True)
                code = 0
            finally:
                os._exit(code)
        sys.exit(0)  # "exit normally": atexit hooks and all
    deadline = time.monotonic() + 8
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print("child exit code", os.waitstatus_to_exitcode(status), flush=True)
            break
        if time.monotonic() > deadline:
            print("child hung", flush=True)
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            break
        time.sleep(0.01)
    assert in_flight.result(timeout=20) == 1
    parents.shutdown()
    print("parent done", flush=True)
    """
)

FORK_BACKENDS = backends_named("thread", "async", "process")


def run_fork_script(backend: Backend, child_does: str) -> list[str]:
    args = [sys.executable, "-c", FORK_SCRIPT, backend.name, child_does]
    child = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    return child.stdout.splitlines()


@FORK_BACKENDS
@pytest.mark.timeout(90)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX")
def test_a_fork_child_can_create_and_use_its_own_executor(backend: Backend) -> None:
    """Fork safety, in the child: a process holding an executor (workers up, a job in
    flight) forks; the child makes an executor of the same backend and uses it (the
    stdlib's executors work there: ProcessPoolExecutor with its default context). Run in
    a child interpreter, not in pytest's process (whose threads a fork would copy
    mid-flight). Not for Dask: its client runs on an IO-loop thread that a fork child
    does not have, and distributed does not support forking a process with a client."""
    lines = run_fork_script(backend, "use its own executor")
    assert lines[-3:] == ["child got [0, 1, 4, 9, 16] 9", "child exit code 0", "parent done"]


@FORK_BACKENDS
@pytest.mark.timeout(90)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX")
def test_a_fork_child_exits_normally_while_the_parent_has_work_in_flight(
    backend: Backend,
) -> None:
    """The child of a process whose executor has a job in flight inherits a copy of that
    executor with no workers behind it. When the child exits normally (atexit hooks run),
    it must not wait for the parent's work, which it cannot see finish; the stdlib's
    ThreadPoolExecutor lets such a child exit."""
    lines = run_fork_script(backend, "exit normally")
    assert lines[-2:] == ["child exit code 0", "parent done"]


# -- the stdlib executor, swapped: same results and exceptions (hypothesis) --------------------

ERRORS: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "KeyError": KeyError,
    "ZeroDivisionError": ZeroDivisionError,
}


def outcome_job(x: int, error: str | None) -> int:
    if error is not None:
        raise ERRORS[error](f"job {x}")
    return 3 * x


def describe_map(values: Iterator[Any]) -> tuple[list[Any], tuple[type, str] | None]:
    got: list[Any] = []
    try:
        for value in values:
            got.append(value)
    except Exception as error:
        return got, (type(error), str(error))
    return got, None


def describe_future(future: concurrent.futures.Future[Any]) -> tuple[str, Any]:
    error = future.exception(timeout=PROMPT)
    return ("value", future.result()) if error is None else ("error", (type(error), str(error)))


@pytest.mark.timeout(120)
def test_same_results_and_exceptions_as_thread_pool_executor() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    jobs = st.lists(
        st.tuples(st.integers(-100, 100), st.sampled_from([None, None, None, *ERRORS])),
        max_size=30,
    )

    @settings(max_examples=40, deadline=None)
    @given(jobs=jobs, workers=st.integers(1, 4), buffersize=st.sampled_from([None, 1, 3]))
    def check(jobs: list[tuple[int, str | None]], workers: int, buffersize: int | None) -> None:
        xs = [x for x, _ in jobs]
        errors = [error for _, error in jobs]
        with concurrent.futures.ThreadPoolExecutor(workers) as stdlib:
            expected_map = describe_map(stdlib.map(outcome_job, xs, errors))
            expected_submit = [describe_future(stdlib.submit(outcome_job, *job)) for job in jobs]
        with cf.PoolExecutor(workers, backend="thread") as ours:
            got_map = describe_map(ours.map(outcome_job, xs, errors, buffersize=buffersize))
            got_submit = [describe_future(ours.submit(outcome_job, *job)) for job in jobs]
        assert got_map == expected_map
        assert got_submit == expected_submit

    check()


# -- backoff= as a number of seconds (WorkerPool, PoolExecutor, RetryPolicy) -----------------


def test_backoff_in_seconds_is_the_base_of_the_default_backoff() -> None:
    assert RetryPolicy.build(backoff=0.5).backoff == Backoff(base=0.5)
    assert RetryPolicy.build(backoff=2).backoff == Backoff(base=2.0)
    # A base above the default cap raises the cap with it: "30 s between attempts" is
    # not "at most 10 s".
    assert RetryPolicy.build(backoff=30).backoff == Backoff(base=30.0, cap=30.0)


def test_worker_pool_takes_backoff_in_seconds() -> None:
    with cf.WorkerPool(2, backend="thread", backoff=0.5) as pool:
        assert list(pool.map(square, range(3))) == [0, 1, 4]
    attempts: list[int] = []

    def flaky(x: int) -> int:
        attempts.append(x)
        if len(attempts) < 3:
            raise Flaky("again")
        return x

    with cf.WorkerPool(1, backend="thread", retries=2, backoff=0.01) as pool:
        assert list(pool.map(flaky, [7])) == [7]
        assert list(pool.map(flaky, [8], backoff=0.02)) == [8]  # per call too
    assert len(attempts) == 4


@pytest.mark.parametrize("bad", [0, 0.0, -1, -0.5, math.inf, math.nan])
def test_backoff_that_is_not_a_positive_finite_number_is_a_value_error(bad: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy.build(backoff=bad)
    with pytest.raises(ValueError, match="backoff"):
        cf.WorkerPool(2, backoff=bad)
    with pytest.raises(ValueError, match="backoff"):
        cf.PoolExecutor(2, retries=1, backoff=bad)
    with cf.WorkerPool(1, backend="thread") as pool, pytest.raises(ValueError, match="backoff"):
        pool.map(square, [1], backoff=bad)


@pytest.mark.parametrize("bad", [True, False, "0.5", [0.5]])
def test_backoff_of_another_type_is_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="backoff"):
        RetryPolicy.build(backoff=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="backoff"):
        cf.WorkerPool(2, backoff=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="backoff"):
        cf.PoolExecutor(2, retries=1, backoff=bad)  # type: ignore[arg-type]
