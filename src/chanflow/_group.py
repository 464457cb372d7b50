"""Group: Go's errgroup, for threads (``with``) and for asyncio tasks (``async with``).

A group owns a child context. Its jobs run concurrently; the first one to fail
records its exception and cancels the context, and leaving the block waits for
every job, re-raises that first exception, and cancels the context for good. Jobs
are never killed (threads cannot be) nor force-cancelled (tasks could be, but Go's
errgroup does not): they are expected to watch ``g.context`` and stop on their own.

Whether a group runs threads or tasks is decided once, by how it is entered.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from ._context import Context, background
from ._sync import Semaphore, check_sync_callable, is_async_callable, run_into_future, start_thread

__all__ = ["Group"]

T = TypeVar("T")
P = ParamSpec("P")

_NEW = "new"
_THREADS = "threads"
_TASKS = "tasks"
_CLOSED = "closed"

# Finished threads are dropped from a group's list once it has grown this long.
_PRUNE_AT = 64


def _check_limit(limit: object) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"Group(limit=) takes an int >= 1 or None, not {limit!r}")
    if limit < 1:
        raise ValueError(f"Group(limit=) takes an int >= 1 or None, not {limit!r}")
    return limit


def _check_context(context: object) -> Context:
    if context is None:
        return background()
    if not isinstance(context, Context):
        raise TypeError(f"Group(context=) takes a chanflow Context or None, not {context!r}")
    return context


class Group:
    """Run jobs concurrently; the first failure cancels the rest's context and is raised.

    Go's ``errgroup``, in two forms, chosen by how the group is entered::

        with cf.Group(limit=8) as g:            # jobs are plain functions, in threads
            for url in urls:
                g.go(fetch, g.context, url)

        async with cf.Group() as g:             # jobs are async functions, in tasks
            g.go(afetch, g.context, url)

    ``g.context`` is a child of ``context`` (default: the background context). The
    first exception raised by a job cancels it; jobs are not interrupted otherwise
    (threads cannot be, and tasks are not force-cancelled, as in Go): a job that
    should stop early must watch ``g.context``. Leaving the block waits for every
    job, even ones started by other jobs meanwhile, then cancels ``g.context`` and
    raises the first job exception; ``g.errors`` lists all of them in the order
    they happened. If the block's body itself raises, the context is cancelled,
    the jobs are waited for, and the body's exception propagates instead.

    ``limit`` caps how many jobs run at once (further ones wait for a slot, first
    come first served). A group is entered once; ``go`` outside the block raises
    RuntimeError.

    Cost: a thread start (about 50-100 us) per job in the ``with`` form, a task
    (about 5 us) per job in the ``async with`` form.
    """

    __slots__ = (
        "_aborting",
        "_context",
        "_errors",
        "_limit",
        "_lock",
        "_loop",
        "_prune_at",
        "_slots",
        "_state",
        "_tasks",
        "_threads",
    )

    def __init__(self, limit: int | None = None, context: Context | None = None) -> None:
        self._limit = _check_limit(limit)
        self._context = _check_context(context).with_cancel()
        self._slots = None if self._limit is None else Semaphore(self._limit)
        self._lock = threading.Lock()
        self._errors: list[BaseException] = []
        self._state = _NEW
        self._threads: list[threading.Thread] = []
        self._prune_at = _PRUNE_AT
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._aborting = False

    @property
    def context(self) -> Context:
        """The group's context: cancelled by the first job failure, and on leaving."""
        return self._context

    @property
    def errors(self) -> list[BaseException]:
        """Every exception the jobs raised so far, in the order they happened (a copy)."""
        with self._lock:
            return list(self._errors)

    @property
    def limit(self) -> int | None:
        """How many jobs may run at once (None: no limit)."""
        return self._limit

    def __repr__(self) -> str:
        return f"<Group {self._state} limit={self._limit} errors={len(self._errors)}>"

    # -- starting jobs ---------------------------------------------------------------------

    @overload
    def go(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> asyncio.Task[T]: ...

    @overload
    def go(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]: ...

    def go(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Start the job ``fn(*args, **kwargs)``.

        In a ``with`` block: ``fn`` must be a plain function (TypeError for an
        ``async def`` one); it runs in a new daemon thread named
        ``chanflow-group-<n>``, and a ``concurrent.futures.Future`` of its outcome
        is returned. With a ``limit``, this call blocks until a slot is free.

        In an ``async with`` block: ``fn`` must be an ``async def`` function
        (TypeError for a plain one: wrap blocking code as
        ``g.go(asyncio.to_thread, fn, ...)``); this call never blocks and returns
        the ``asyncio.Task`` running it, which, with a ``limit``, first waits for a
        slot. It must be called from the event loop the group was entered on.

        Jobs may start more jobs until the group is left (under a ``limit``, a job
        that waits for a slot while holding one can deadlock, as in Go). Raises
        RuntimeError before the group is entered or once it has been left.
        """
        if self._state == _TASKS:
            return self._go_task(fn, args, kwargs)
        if self._state == _THREADS:
            return self._go_thread(fn, args, kwargs)
        raise self._not_open_error()

    def _not_open_error(self) -> RuntimeError:
        if self._state == _NEW:
            return RuntimeError("Group.go() needs the group entered: `with Group() as g:`")
        return RuntimeError("Group.go() called after the group's block was left")

    def _enter(self, state: str) -> None:
        with self._lock:
            if self._state != _NEW:
                raise RuntimeError("a Group can be entered only once")
            self._state = state

    def _record(self, error: BaseException) -> None:
        with self._lock:
            self._errors.append(error)
            first = len(self._errors) == 1
        if first:
            self._context.cancel()

    # -- the thread form -------------------------------------------------------------------

    def __enter__(self) -> Group:
        """Open the group for thread jobs. Never blocks."""
        self._enter(_THREADS)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Wait for every job (blocking), cancel the context, raise the first job error."""
        if exc is not None:
            self._context.cancel()
        try:
            self._join_threads()
        finally:
            with self._lock:
                self._state = _CLOSED
            self._context.cancel()
        if exc is None and self._errors:
            raise self._errors[0]

    def _go_thread(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> Future[Any]:
        check_sync_callable(fn, "Group.go() in a `with` block")
        slots = self._slots
        if slots is not None:
            slots.acquire()
        future: Future[Any] = Future()
        try:
            with self._lock:
                # Checked under the lock that __exit__ closes the group with, so no
                # thread can start after the last join.
                if self._state != _THREADS:
                    raise self._not_open_error()
                thread = start_thread(
                    "chanflow-group", lambda: self._run_thread(future, fn, args, kwargs)
                )
                self._remember_locked(thread)
        except BaseException:
            if slots is not None:
                slots.release()
            raise
        return future

    def _run_thread(
        self, future: Future[Any], fn: Callable[..., Any], args: Any, kwargs: Any
    ) -> None:
        try:
            run_into_future(future, fn, args, kwargs, self._record)
        finally:
            if self._slots is not None:
                self._slots.release()

    def _remember_locked(self, thread: threading.Thread) -> None:
        threads = self._threads
        threads.append(thread)
        if len(threads) >= self._prune_at:
            self._threads = [t for t in threads if t.is_alive()]
            self._prune_at = max(_PRUNE_AT, 2 * len(self._threads))

    def _join_threads(self) -> None:
        """Join every thread, including ones started meanwhile, then close the group."""
        while True:
            with self._lock:
                threads, self._threads = self._threads, []
                if not threads:
                    self._state = _CLOSED
                    return
            for thread in threads:
                thread.join()

    # -- the task form ---------------------------------------------------------------------

    async def __aenter__(self) -> Group:
        """Open the group for async jobs on the running event loop. Never blocks."""
        self._enter(_TASKS)
        self._loop = asyncio.get_running_loop()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Wait for every task, cancel the context, raise the first job error.

        If the task running the block is cancelled (in the body or while waiting
        here), the group cancels its context *and* its tasks (once: a task's own
        cleanup is not cut short by further cancels, and a task started meanwhile is
        cancelled at once), waits for them all, then lets CancelledError propagate:
        no task outlives the group.
        """
        if exc is not None:
            self._context.cancel()
            if isinstance(exc, asyncio.CancelledError):
                self._abort()
        cancelled: asyncio.CancelledError | None = None
        try:
            while self._tasks:
                try:
                    await asyncio.wait(list(self._tasks))
                except asyncio.CancelledError as error:
                    # Keep waiting: the tasks must be gone before the group is.
                    cancelled = cancelled or error
                    self._abort()
        finally:
            self._state = _CLOSED
            self._context.cancel()
        if cancelled is not None:
            raise cancelled
        if exc is None and self._errors:
            raise self._errors[0]

    def _abort(self) -> None:
        """Cancel the context and every task, once: a task's cleanup is not cut short."""
        self._context.cancel()
        if not self._aborting:
            self._aborting = True
            for task in self._tasks:
                task.cancel()

    def _go_task(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> asyncio.Task[Any]:
        loop = self._loop
        if loop is None or _running_loop() is not loop:
            raise RuntimeError(
                "Group.go() in an `async with` block must be called from its event loop"
            )
        _check_async_callable(fn)
        task = loop.create_task(self._run_task(fn, args, kwargs))
        self._tasks.add(task)
        task.add_done_callback(self._forget_task)
        if self._aborting:
            task.cancel()  # started by a task's cleanup after the group was cancelled
        return task

    async def _run_task(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        slots = self._slots
        if slots is not None:
            await slots.aacquire()
        try:
            return await fn(*args, **kwargs)
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            self._record(error)
            raise
        finally:
            if slots is not None:
                slots.release()

    def _forget_task(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # the group reports it: no "exception never retrieved" log


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _check_async_callable(fn: object) -> None:
    if is_async_callable(fn):
        return
    if inspect.iscoroutine(fn):
        fn.close()  # no "never awaited" warning for the coroutine we refuse
        raise TypeError(
            "Group.go() takes an async function and its arguments, not a coroutine: "
            "write g.go(fn, *args) rather than g.go(fn(*args))"
        )
    raise TypeError(
        f"Group.go() in an `async with` block takes an async function, not {fn!r}; "
        "run blocking code in a thread with g.go(asyncio.to_thread, fn, *args)"
    )
