"""fan_out and afan_out: the seeds' fan-out, one concurrent job per item of a small set.

Go's fan-out for a fixed, known set of jobs starts one goroutine per job and
collects one result each. Here that is one :class:`WorkerPool` call: as many
workers as items (capped, see :func:`fan_out`), the whole list in the pool's window
(``buffer=len(items)``), one job per chunk (``chunksize=1``, so every job starts at
once on a worker of its own, whatever the pool measures), results in input order.
The pool is entered and left inside the call, so no thread or task outlives it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import Any, TypeVar, overload

from ._backend_dask import DaskBackend
from ._pool import WorkerPool, _check_backend, _positive_int_or_none, resolve_kind
from ._result import Result

__all__ = ["afan_out", "fan_out"]

T = TypeVar("T")
R = TypeVar("R")

MAX_THREADS = 100
"""With ``limit=None``, at most this many threads run one call's jobs at once."""


def _backend_kind(fn: object, backend: object, function: str) -> str:
    """The backend that will run ``fn``: refuse a mismatch now, as the pool would later."""
    if not callable(fn):
        raise TypeError(f"{function}() takes a callable, not {fn!r}")
    return resolve_kind(_check_backend(backend), fn)


def _workers(kind: str, count: int, limit: int | None) -> int:
    """How many jobs run at once: ``limit``, else one per item within the backend's cap."""
    if limit is not None:
        return min(limit, count)
    if kind == "thread":
        return min(count, MAX_THREADS)
    if kind == "process":
        return min(count, os.cpu_count() or 1)
    return count


def _materialise(items: object, function: str) -> list[Any]:
    """``list(items)``, with a clear TypeError for what is not iterable."""
    try:
        iterator = iter(items)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"{function}() takes a finite iterable of items, not {items!r}") from None
    return list(iterator)


@overload
def fan_out(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T],
    *,
    backend: str | DaskBackend = "auto",
    limit: int | None = None,
) -> list[Result[R]]: ...


@overload
def fan_out(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    backend: str | DaskBackend = "auto",
    limit: int | None = None,
) -> list[Result[R]]: ...


def fan_out(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    backend: str | DaskBackend = "auto",
    limit: int | None = None,
) -> list[Result[Any]]:
    """Run ``fn(item)`` for every item at once; return one :class:`Result` per item, in order.

    For a small set of jobs known in advance (the seeds' fan-out: one goroutine per
    job, then collect). ``items`` is read to the end first (``list(items)``), so it
    must be finite; for a long or endless input use a :class:`WorkerPool`, whose
    memory stays flat. Result ``i`` is item ``i``'s: ``ok`` and ``value``, or
    ``error`` with its ``traceback``; a failing job never makes this raise.

    ``backend`` as for WorkerPool: ``"auto"`` (coroutine functions on asyncio,
    everything else on threads), ``"thread"``, ``"async"``, ``"process"``, ``"dask"``
    or a :class:`DaskBackend` (every job a Dask task of its own).
    ``limit`` caps how many jobs run at once; None means one per item, at most
    ``MAX_THREADS`` (100) threads, or ``os.cpu_count()`` processes (async tasks are
    not capped). A coroutine function runs on an event loop thread the call owns: in
    a coroutine use :func:`afan_out`, which runs it on the caller's loop.

    Blocks until every job has ended (no timeout here: give ``fn`` its own, or use a
    WorkerPool with ``timeout=``). Leaves no thread behind: the pool's workers (and
    processes) stop before it returns. Empty ``items``: returns ``[]`` at once.

    Raises TypeError if ``fn`` is not callable, does not suit ``backend`` (a plain
    function on ``"async"``, a coroutine function on ``"thread"``), or ``items`` is
    not iterable; ValueError for an unknown ``backend`` or a ``limit`` that is not
    an int >= 1; whatever iterating ``items`` raises.

    Cost: the pool's start and stop (a thread start per worker, about 50-100 us each;
    a worker process takes tens of milliseconds to start) plus a hand-off per job
    (a thread wake-up, tens of microseconds). Fine for tens or hundreds of jobs of a
    millisecond or more; for many tiny jobs, ``WorkerPool.map`` batches them.
    """
    kind = _backend_kind(fn, backend, "fan_out")
    limit = _positive_int_or_none(limit, "limit")
    jobs = _materialise(items, "fan_out")
    if not jobs:
        return []
    pool_backend = backend if isinstance(backend, DaskBackend) else kind
    with WorkerPool(workers=_workers(kind, len(jobs), limit), backend=pool_backend) as pool:
        return list(pool.results(fn, jobs, ordered=True, buffer=len(jobs), chunksize=1))


@overload
async def afan_out(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    backend: str | DaskBackend = "auto",
    limit: int | None = None,
) -> list[Result[R]]: ...


@overload
async def afan_out(
    fn: Callable[[T], R],
    items: Iterable[T] | AsyncIterable[T],
    *,
    backend: str | DaskBackend = "auto",
    limit: int | None = None,
) -> list[Result[R]]: ...


async def afan_out(
    fn: Callable[[Any], Any],
    items: Iterable[Any] | AsyncIterable[Any],
    *,
    backend: str | DaskBackend = "auto",
    limit: int | None = None,
) -> list[Result[Any]]:
    """Async twin of :func:`fan_out`, for a coroutine on a running event loop.

    Coroutine functions run as tasks on the caller's loop; plain functions on the
    pool's threads (or processes), and waiting for them never blocks the loop.
    ``items`` may also be an async iterable; it is read to the end first. Same
    results, limits, errors and costs as :func:`fan_out`.

    Cancelling the awaiting task cancels the jobs: tasks not yet done are
    cancelled, running threads see ``cf.current_context()`` cancelled, and the
    pool is left before CancelledError propagates.
    """
    kind = _backend_kind(fn, backend, "afan_out")
    limit = _positive_int_or_none(limit, "limit")
    if isinstance(items, AsyncIterable) and not isinstance(items, Iterable):
        jobs = [item async for item in items]
    else:
        jobs = _materialise(items, "afan_out")
    if not jobs:
        return []
    pool_backend = backend if isinstance(backend, DaskBackend) else kind
    async with WorkerPool(workers=_workers(kind, len(jobs), limit), backend=pool_backend) as pool:
        results = pool.aresults(fn, jobs, ordered=True, buffer=len(jobs), chunksize=1)
        return [result async for result in results]
