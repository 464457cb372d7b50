"""PoolExecutor: a :class:`WorkerPool` behind the ``concurrent.futures.Executor`` interface.

Code written against ``Executor`` (``submit``, ``map``, ``shutdown``,
``loop.run_in_executor``, ``asyncio``'s default executor) runs on any chanflow
backend unchanged, and gains what the stdlib executors lack: a ``map`` that is lazy
and bounded, per-job timeouts that kill a hung process worker, retries, rate limits,
and a crashed process worker that fails only the future whose job it ran.

Why a subclass of ``ThreadPoolExecutor`` and not just of ``Executor``: asyncio's
``loop.set_default_executor`` refuses anything else (a TypeError since Python
3.11). Nothing of ``ThreadPoolExecutor`` is used: every public method is replaced,
and its ``__init__`` is never called.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Mapping
from itertools import repeat
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

if TYPE_CHECKING:
    from typing_extensions import Unpack

from ._backend import pickled_function
from ._backend_dask import DaskBackend
from ._exceptions import Cancelled
from ._pool import Apply, PoolSettings, WorkerPool, _default_workers, _nothing, has_more
from ._stats import PoolStats

__all__ = ["ExecutorOptions", "PoolExecutor"]

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

_SHUT_DOWN = "cannot schedule new futures after shutdown"


class ExecutorOptions(PoolSettings, total=False):
    """The :class:`WorkerPool` settings a :class:`PoolExecutor` takes beside its backend."""

    mp_context: object
    initializer: Callable[..., object] | None
    initargs: tuple[Any, ...]
    max_jobs_per_worker: int | None


class PoolExecutor(concurrent.futures.ThreadPoolExecutor):
    """A ``concurrent.futures.Executor`` that runs its work on a chanflow :class:`WorkerPool`.

    ``PoolExecutor(workers=None, backend="thread", **options)``: ``backend`` is
    ``"thread"``, ``"async"`` (coroutine functions, on a loop thread the executor
    owns), ``"process"``, ``"dask"``, a :class:`DaskBackend`, or ``"auto"``;
    ``options`` are the WorkerPool's (``retries``, ``backoff``, ``timeout``,
    ``rate``, ``dead_letters``, ``progress``, ``buffer``, ``chunksize`` and the
    process settings). ``max_workers=`` is accepted as the stdlib spells
    ``workers``. Bad settings raise TypeError or ValueError here.

    A drop-in for ``ThreadPoolExecutor`` and ``ProcessPoolExecutor``: the same
    results, exceptions and future states (a future turns *running* when its job
    starts, and can be cancelled until then). What differs is what goes better:

    * ``map`` takes a window of the input at a time (``buffersize``, or chanflow's
      default window), so an endless iterable works and memory stays flat;
    * with ``timeout=`` a job that runs too long fails with :class:`JobTimeout`; on
      processes its worker is killed and replaced;
    * a process worker that dies fails only the future of the job it ran, with
      :class:`WorkerCrashed`; the executor keeps serving (never a
      ``BrokenProcessPool``);
    * a job raising ``KeyboardInterrupt`` or ``SystemExit`` fails its future with
      it; the worker lives on.

    It subclasses ``ThreadPoolExecutor`` only so that
    ``loop.set_default_executor`` accepts it, whatever its backend.
    """

    def __init__(
        self,
        workers: int | None = None,
        backend: str | DaskBackend = "thread",
        *,
        max_workers: int | None = None,
        **options: Unpack[ExecutorOptions],
    ) -> None:
        if max_workers is not None:
            if workers is not None:
                raise TypeError("give workers= or max_workers=, not both")
            workers = max_workers
        _check_option_names(options)
        self._pool = WorkerPool(workers, backend, **options)
        self._kind = self._pool._kind
        self._pickles = self._kind in ("process", "dask")  # its functions must pickle
        # Read by some code written for the stdlib's executors.
        self._max_workers = workers or _default_workers(self._kind)
        self._shutdown_lock = threading.Lock()
        self._is_shut_down = False
        # The thread that closes the pool, once shutdown() has started it.
        self._closer: threading.Thread | None = None
        self._maps: set[Any] = set()  # the _Runs of maps not yet finished
        self._pid = os.getpid()
        # Dropped without shutdown: its workers stop (in the background; the stdlib's
        # threads exit once their executor is collected too).
        self._finalizer = weakref.finalize(self, _close_dropped, self._pool)
        self._finalizer.atexit = False
        self._last_sendable: Callable[[], object] = _nothing
        _live_executors.add(self)

    def __repr__(self) -> str:
        state = "shut down" if self._is_shut_down else "running"
        return f"<PoolExecutor backend={self._kind!r} workers={self._max_workers} {state}>"

    # -- submit -----------------------------------------------------------------------

    @overload
    def submit(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[R]: ...

    @overload
    def submit(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[R]: ...

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        """Schedule ``fn(*args, **kwargs)``; return its ``concurrent.futures.Future``.

        Never blocks. The future is pending until a worker starts the job (it can be
        cancelled until then), running while it runs, and holds the value or the
        exception in the end; the executor's retries, backoff, timeout and rate apply
        to it. Raises RuntimeError after :meth:`shutdown`, TypeError for a ``fn``
        that is not callable, or that cannot be pickled for a process or Dask
        executor, and for a coroutine function on ``backend="thread"`` (or a plain
        one on ``"async"``). Costs about as much as ``ThreadPoolExecutor.submit``.
        """
        if self._is_shut_down or _interpreter_exiting:
            self._check_open()
        if self._pickles:
            self._check_sendable(fn)
        try:
            return self._pool._submit(fn, args, kwargs, True)
        except RuntimeError:
            self._check_open()  # shut down meanwhile: say so as the stdlib does
            raise

    # -- map --------------------------------------------------------------------------

    @overload
    def map(
        self,
        fn: Callable[..., Awaitable[R]],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[R]: ...

    @overload
    def map(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[R]: ...

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[Any]:
        """``fn(*args)`` for each ``args`` of ``zip(*iterables)``; the values, in order.

        As the stdlib's: jobs start now, ``next()`` blocks until the next value is
        ready and raises the first job's exception when its place is reached (the
        jobs after it are cancelled), and raises ``TimeoutError`` once ``timeout``
        seconds have passed since this call with the next value not ready. Unlike the
        stdlib's, the input is taken a window at a time, never all at once:
        ``buffersize`` jobs taken and not yet yielded at most (Python 3.14's
        meaning), or by default chanflow's adaptive window (``2 * workers`` for slow
        jobs, up to ``max(2 * workers, 1024)`` on threads for cheap ones); so
        ``itertools.count()`` is a valid input. ``chunksize`` greater than 1 fixes
        how many jobs travel to a worker at once; 1, the default, lets chanflow
        choose from measured job times (results are the same either way); with a
        ``timeout``, 1 means one job per chunk, so each value is ready when its job
        ends. After :meth:`shutdown`, the ``next()`` that would take more input raises
        RuntimeError; a map whose input was all taken yields all its values.
        Costs about 0.6 us per no-op job on threads.
        """
        self._check_open()
        if not callable(fn):
            raise TypeError(f"the job function must be callable, not {fn!r}")
        deadline = None if timeout is None else time.monotonic() + _seconds(timeout)
        options: dict[str, Any] = {"buffer": _buffersize(buffersize)}
        if _chunksize(chunksize) > 1:
            options["chunksize"] = chunksize
        elif timeout is not None:
            # A value is "ready" when its job ends, as with the stdlib's futures: not
            # held back until the rest of its chunk has run.
            options["chunksize"] = 1
        self._check_sendable(fn)
        if len(iterables) == 1:
            job_fn, jobs = fn, iterables[0]
        else:  # as the stdlib's, stops at the shortest
            job_fn, jobs = Apply.of(fn), zip(zip(*iterables), repeat({}))  # noqa: B905
        with self._shutdown_lock:
            self._check_open()
            try:
                inner, run, source = self._pool._started_map(job_fn, jobs, deadline, **options)
            except RuntimeError:
                self._check_open()
                raise
            self._maps.add(run)
        return self._values(inner, run, source)

    def _values(
        self, inner: Generator[Any, None, None], run: Any, source: Iterator[Any]
    ) -> Iterator[Any]:
        """``inner``'s values; a map that :meth:`shutdown` stopped says so.

        As Python 3.14's: after shutdown, the ``next()`` that would take more input
        raises RuntimeError; a map whose input was all taken yields all its values.
        Asked at each value, as the stdlib's map submits its next job at each.
        """
        try:
            while True:
                if run.stopped_error is not None:
                    _raise_if_more(run, source)
                try:
                    value = next(inner)
                except StopIteration:
                    return
                yield value
        except (Cancelled, RuntimeError) as error:
            if self._is_shut_down and _closed_under_it(error):
                raise RuntimeError(_SHUT_DOWN) from error
            raise
        finally:
            self._maps.discard(run)
            inner.close()  # ends the call, closes its input

    # -- shutdown ---------------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work; with ``wait``, block until every submitted job is done.

        As the stdlib's: ``cancel_futures=True`` cancels the futures not yet started
        (running ones finish); ``wait=False`` returns at once and the workers stop
        once the work still to do is done. Open ``map`` iterators take no more input
        (Python 3.14's ``buffersize`` semantics): the jobs they took run and are
        waited for (cancelled if not started, with ``cancel_futures``), and the
        ``next()`` that would take another item raises RuntimeError. Called from one
        of chanflow's own threads (a done-callback or a thread job), it cannot wait
        for the workers it runs on: it then shuts down in the background and returns.
        Idempotent; ``with`` calls ``shutdown(wait=True)``.
        """
        with self._shutdown_lock:
            self._is_shut_down = True
            self._finalizer.detach()
            maps = list(self._maps)
            for run in maps:
                run.stop_taking(_ShutDown(_SHUT_DOWN))
                if cancel_futures:
                    run.call.cancel()
            if cancel_futures:
                self._pool._cancel_pending_futures()
            if self._closer is None:
                # Closed on a thread of its own, so that every caller can wait for the
                # same close (or not), wherever it is called from.
                self._closer = threading.Thread(
                    target=_close, args=(self._pool, maps), name="chanflow-executor-shutdown"
                )
                self._closer.start()
        if wait and not _on_chanflow_thread():
            self._closer.join()

    # -- chanflow's extras ------------------------------------------------------------

    def stats(self) -> PoolStats:
        """A frozen snapshot of the executor's counters. Never blocks; ~10 us."""
        return self._pool.stats()

    # -- checks -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._is_shut_down:
            raise RuntimeError(_SHUT_DOWN)
        if _interpreter_exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    def _check_sendable(self, fn: object) -> None:
        """A function that cannot travel to a process or Dask worker: TypeError now.

        The pool itself would fail each job with it; an Executor's user expects the
        error from ``submit``. The last function checked is remembered, so a loop of
        submits pickles it once.
        """
        if not self._pickles or fn is self._last_sendable():
            return
        if not callable(fn):
            return  # the pool says so
        pickled = pickled_function(fn, f"a {self._kind} worker")
        if isinstance(pickled, BaseException):
            raise pickled
        with contextlib.suppress(TypeError):  # not weakly referable: checked each time
            self._last_sendable = weakref.ref(fn)


_OPTION_NAMES = ExecutorOptions.__required_keys__ | ExecutorOptions.__optional_keys__
# The stdlib executors' settings that chanflow spells differently or has no use for.
_STDLIB_HINTS = {
    "max_tasks_per_child": "chanflow calls it max_jobs_per_worker",
    "thread_name_prefix": "chanflow's worker threads are named chanflow-worker-<n>",
    "journal": "an executor does not journal; use WorkerPool.map(fn, jobs, journal=...)",
    "resume": "an executor does not journal; use WorkerPool.map(fn, jobs, journal=...)",
}


def _check_option_names(options: Mapping[str, object]) -> None:
    for name in sorted(options.keys() - _OPTION_NAMES):
        hint = _STDLIB_HINTS.get(name)
        raise TypeError(
            f"PoolExecutor() got an unexpected keyword argument {name!r}"
            + (f" ({hint})" if hint else "")
        )


def _seconds(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    return float(timeout)


def _buffersize(buffersize: object) -> int | None:
    if buffersize is None:
        return None
    if isinstance(buffersize, bool) or not isinstance(buffersize, int):
        raise TypeError(f"buffersize must be an integer or None, not {buffersize!r}")
    if buffersize < 1:
        raise ValueError(f"buffersize must be None or > 0, not {buffersize!r}")
    return buffersize


def _chunksize(chunksize: object) -> int:
    if isinstance(chunksize, bool) or not isinstance(chunksize, int):
        raise TypeError(f"chunksize must be an integer, not {chunksize!r}")
    if chunksize < 1:
        raise ValueError(f"chunksize must be >= 1, not {chunksize!r}")
    return chunksize


class _ShutDown(RuntimeError):
    """What ``next()`` raises on a map that shutdown stopped, once its jobs are out."""


def _raise_if_more(run: Any, source: Iterator[Any]) -> None:
    error = run.stopped_error
    run.stopped_error = None
    if has_more(source):
        raise error


def _closed_under_it(error: Exception) -> bool:
    """Whether ``error`` is the pool's, closed while the map ran (not a job's error)."""
    if isinstance(error, Cancelled):
        return True
    return not isinstance(error, _ShutDown) and str(error) == "the worker pool is closed"


def _close(pool: WorkerPool, maps: list[Any]) -> None:
    """Let the jobs the maps took finish and come out, then close the pool."""
    for run in maps:
        run.wait_delivered()
    pool.close()


def _on_chanflow_thread() -> bool:
    """Whether this is one of chanflow's worker, loop, slot or result threads.

    Waiting there for the workers could wait for this very thread.
    """
    return threading.current_thread().name.startswith("chanflow-")


# Executors not yet shut down: at interpreter exit their submitted jobs still run, as
# the stdlib's do (their worker threads are daemons, which exit would cut short).
_live_executors: weakref.WeakSet[PoolExecutor] = weakref.WeakSet()
_interpreter_exiting = False


def _close_dropped(pool: WorkerPool) -> None:
    threading.Thread(target=pool.close, name="chanflow-executor-dropped", daemon=True).start()


def _shut_down_at_exit() -> None:
    global _interpreter_exiting
    _interpreter_exiting = True
    pid = os.getpid()
    for executor in list(_live_executors):
        if executor._pid == pid:  # a fork child's copies have no workers to wait for
            executor.shutdown(wait=True)


# Runs before the interpreter joins its threads, as concurrent.futures' own hook does.
threading._register_atexit(_shut_down_at_exit)  # type: ignore[attr-defined]
