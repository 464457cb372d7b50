"""What a Dask worker runs for the Dask backend: one chunk of jobs per Dask task.

The parent (``_backend_dask``) submits ``run_chunk(call_key, fn_bytes, payload)`` as
one Dask task per chunk. ``fn_bytes`` is the call's function, cloudpickled (lambdas
and closures travel; loaded once per worker process and call, see
``KNOWN_FUNCTIONS``); ``payload`` is the cloudpickled ``(items, timeout)``. The task
returns the same bytes a process-backend worker sends back (``_process_worker``'s
``done`` message): ``(failures, values, seconds)``, with anything that cannot be
pickled turned into a failure saying so. So Dask only ever moves bytes, and a job's
failure is its outcome, never the task's: a task fails only when its worker dies
(Dask then reschedules it, see ``distributed.scheduler.allowed-failures``) or when
chanflow cannot even be imported on the worker.

Cancellation reaches a running job through ``cf.current_context()``: the first
chunk on each worker installs a worker plugin (``_CancelWatcher``, no client round
trip) that sees the worker cancel an executing task (the parent cancelled its
future: a timeout, a consumer that left) and cancels that chunk's job contexts.
Dask cannot interrupt a thread, so an uncooperative job runs on; with a ``timeout``
(chunks of one job), the job runs in a thread of its own and the task returns at the
deadline or on cancellation, handing its Dask thread back (the abandoned job's late
result is dropped), the way the thread backend replaces a stuck worker.

This module imports ``distributed``: only Dask workers and a connected Dask backend
import it, never ``import chanflow``.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from typing import Any, cast

import cloudpickle
from distributed import WorkerPlugin, get_worker

from ._backend import Job, JobSlot, enter_slot, leave_slot
from ._context import Context, background
from ._exceptions import Cancelled, DeadlineExceeded, JobTimeout
from ._process_worker import Failure, _encode_outcomes, _failure, _Unloadable
from ._sync import is_async_callable

__all__ = ["KNOWN_FUNCTIONS", "run_chunk"]

# A worker process keeps the functions of this many calls loaded, the oldest forgotten
# first (a forgotten one is loaded again from the bytes every task carries).
KNOWN_FUNCTIONS = 16
_WATCHER_NAME = "chanflow-cancel-watcher"
# What an executing task becomes on its worker when its future is cancelled.
_CANCELLED_STATES = ("cancelled", "released", "forgotten")

_functions: OrderedDict[str, Any] = OrderedDict()
_functions_lock = threading.Lock()
# The scopes of the chunks running in this process, by Dask task key.
_scopes: dict[Any, _TaskScope] = {}
_scopes_lock = threading.Lock()
_watched: weakref.WeakSet[Any] = weakref.WeakSet()  # workers with the watcher installed
_thread = threading.local()  # a coroutine function's event loop, one per Dask thread


class _TaskScope:
    """The jobs of one chunk, for ``cf.current_context()`` inside them.

    A job's Context is made only when the job asks for it (``current_context()`` is
    then about 2 us), with the attempt's deadline when the call has a ``timeout``
    (a chunk then holds one job). It is cancelled when the job ends, at the
    deadline, or when the task is cancelled; a job that asks after the task was
    cancelled gets a cancelled Context.
    """

    __slots__ = ("_cancelled", "_context", "_lock", "_started", "_timeout")

    def __init__(self, timeout: float | None) -> None:
        self._lock = threading.Lock()
        self._timeout = timeout
        self._started = time.monotonic()
        self._context: Context | None = None
        self._cancelled = False

    def context(self) -> Context:
        with self._lock:
            context = self._context
            if context is not None:
                return context
            root = background()
            if self._timeout is None:
                context = root.with_cancel()
            else:
                context = root.with_deadline(self._started + self._timeout)
            self._context = context
            cancelled = self._cancelled
        if cancelled:
            context.cancel()  # outside the lock: it runs the context's callbacks
        return context

    def end_job(self) -> None:
        with self._lock:
            context, self._context = self._context, None
        if context is not None:
            context.cancel()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            context = self._context
        if context is not None:
            context.cancel()


class _CancelWatcher(WorkerPlugin):
    """Cancels a chunk's job contexts when the worker cancels the chunk's executing task.

    ``transition`` runs on the worker's event loop for every task transition: a
    dictionary lookup for ours, two string comparisons for the others.
    """

    idempotent = True

    def setup(self, worker: Any) -> None:
        # Chunks that started before the watcher was installed: catch a cancel missed
        # in between (the worker's task states are not public API: best effort).
        tasks = getattr(getattr(worker, "state", None), "tasks", None)
        if tasks is None:
            return
        with _scopes_lock:
            running = list(_scopes.items())
        for key, scope in running:
            task = tasks.get(key)
            if task is None or task.state in _CANCELLED_STATES:
                scope.cancel()

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start not in ("executing", "long-running") or finish in ("memory", "error"):
            return
        scope = _scopes.get(key)  # a single dict read: atomic
        if scope is not None:
            scope.cancel()


_WATCHER = _CancelWatcher()


def _watch(worker: Any) -> None:
    """Install the watcher on ``worker`` (on its event loop), once per worker."""
    if worker in _watched:
        return
    with _scopes_lock:
        if worker in _watched:
            return
        _watched.add(worker)
    worker.loop.add_callback(worker.plugin_add, plugin=_WATCHER, name=_WATCHER_NAME)


class _OnThreadLoop:
    """A coroutine function, each job run to completion on its Dask thread's own loop."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, item: Any) -> Any:
        loop = getattr(_thread, "loop", None)
        if loop is None:
            import asyncio

            loop = _thread.loop = asyncio.new_event_loop()
        return loop.run_until_complete(self.fn(item))


def _function(call_key: str, fn_bytes: bytes) -> Any:
    with _functions_lock:
        fn = _functions.get(call_key)
        if fn is not None:
            _functions.move_to_end(call_key)
            return fn
    try:
        fn = cloudpickle.loads(fn_bytes)
    except Exception as error:  # e.g. a module this worker cannot import
        fn = _Unloadable(error)
    else:
        fn = _OnThreadLoop(fn) if is_async_callable(fn) else fn
    with _functions_lock:
        _functions[call_key] = fn
        while len(_functions) > KNOWN_FUNCTIONS:
            _functions.popitem(last=False)
    return fn


def run_chunk(call_key: str, fn_bytes: bytes, payload: bytes) -> bytes:
    """Run the call's function over a chunk's items; the pickled outcomes (see the module).

    Blocks the Dask thread for the chunk's jobs, one after the other (with a
    ``timeout``, at most until the deadline or the task's cancellation).
    """
    scope = _TaskScope(None)
    key = _register(scope)  # first: a cancel may come while the function loads
    try:
        items, timeout = cloudpickle.loads(payload)
        fn = _function(call_key, fn_bytes)
        scope._timeout = timeout  # the attempt starts now, its function loaded
        scope._started = time.monotonic()
        started = time.perf_counter()
        if timeout is None:
            failures, values = _run(fn, items, scope)
        else:
            failures, values = _run_abandonable(fn, items, scope, timeout)
    finally:
        if key is not None:
            with _scopes_lock:
                _scopes.pop(key, None)
    return _encode_outcomes("done", failures, values, time.perf_counter() - started)


def _register(scope: _TaskScope) -> Any:
    """Make the running task's chunk cancellable by the watcher; its key (None outside Dask)."""
    try:
        worker = get_worker()
    except ValueError:  # not in a Dask worker (a direct call): nothing to cancel it
        return None
    key = worker.get_current_task()
    with _scopes_lock:
        _scopes[key] = scope
    _watch(worker)
    # A cancel the watcher saw before the scope was registered: the task's state says
    # so already (it changes before plugins hear of it). Not public API: best effort.
    tasks = getattr(getattr(worker, "state", None), "tasks", None)
    task = tasks.get(key) if tasks is not None else None
    if task is not None and task.state in _CANCELLED_STATES:
        scope.cancel()
    return key


def _run(fn: Any, items: list[Any], scope: _TaskScope) -> tuple[dict[int, Failure], list[Any]]:
    failures: dict[int, Failure] = {}
    values: list[Any] = []
    append = values.append
    slot = JobSlot()
    slot.job = cast(Job, scope)  # current_context() asks the slot's job for its context()
    token = enter_slot(slot)
    try:
        for position, item in enumerate(items):
            try:
                append(fn(item))
            except BaseException as error:  # a job's failure, whatever it is, is its outcome
                append(None)
                failures[position] = _failure(error)
            if scope._context is not None:  # the job asked for its Context (rare)
                scope.end_job()
    finally:
        leave_slot(token)
    return failures, values


def _run_abandonable(
    fn: Any, items: list[Any], scope: _TaskScope, timeout: float
) -> tuple[dict[int, Failure], list[Any]]:
    """Run one job (a chunk with a timeout holds one) in a thread of its own.

    Waits until it ends, its deadline passes or the task is cancelled; in the last
    two cases the job is abandoned (it runs on, its result dropped) and its outcome
    is a JobTimeout or Cancelled failure. Costs a thread start (about 100 us).
    """
    [item] = items
    context = scope.context()
    outcome: list[tuple[dict[int, Failure], list[Any]]] = []
    ended = threading.Event()
    slot = JobSlot()
    slot.job = cast(Job, scope)

    def job() -> None:
        token = enter_slot(slot)
        try:
            try:
                value = fn(item)
            except BaseException as error:  # a job's failure, whatever it is, is its outcome
                result: tuple[dict[int, Failure], list[Any]] = ({0: _failure(error)}, [None])
            else:
                result = ({}, [value])
            if not context.cancelled:  # else it ended too late: the deadline or cancel won
                outcome.append(result)
        finally:
            leave_slot(token)
            ended.set()

    stop = context.after_func(ended.set)
    threading.Thread(target=job, name="chanflow-dask-job", daemon=True).start()
    ended.wait()
    stop()
    if outcome:
        scope.end_job()
        return outcome[0]
    if isinstance(context.error, DeadlineExceeded):
        error: BaseException = JobTimeout(f"the job ran over {timeout} s on its Dask worker")
    else:
        error = Cancelled("the job's Dask task was cancelled")
    return {0: _failure(error)}, [None]
