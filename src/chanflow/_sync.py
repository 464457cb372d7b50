"""go(), WaitGroup and Semaphore: Go's ``go`` statement and ``sync`` primitives.

Every wait here parks a waiter from ``_waiter`` on one FIFO queue shared by threads
and coroutines, so a thread and a coroutine on any event loop can wait on the same
WaitGroup or Semaphore. Whoever makes the wait end (the ``done()`` that reaches zero,
the ``release()`` that frees a permit) claims the waiter under the object's lock and
wakes it; a waiter that times out or is cancelled claims itself under that lock, and
if it cannot, knows it was completed in the same instant and acts on it.
"""

from __future__ import annotations

import inspect
import itertools
import threading
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from ._waiter import OK, AsyncWaiter, ThreadWaiter, Waiter, check_timeout, discard

__all__ = ["Semaphore", "WaitGroup", "go"]

T = TypeVar("T")
P = ParamSpec("P")

_thread_numbers = itertools.count(1)


# -- running a function in a thread, shared with Group -------------------------------------


def is_async_callable(fn: object) -> bool:
    """True for an ``async def`` function, a partial of one, or an async-callable object."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def check_sync_callable(fn: object, where: str) -> None:
    """Reject what cannot run in a thread: non-callables and ``async def`` functions."""
    if not callable(fn):
        raise TypeError(f"{where} takes a callable, not {fn!r}")
    if is_async_callable(fn):
        raise TypeError(
            f"{where} runs plain functions in a thread, not the coroutine function {fn!r}; "
            "await it from a coroutine (or run it with asyncio.run) instead"
        )


def start_thread(prefix: str, target: Callable[[], object]) -> threading.Thread:
    """Start a daemon thread named ``<prefix>-<n>`` running ``target``."""
    thread = threading.Thread(target=target, name=f"{prefix}-{next(_thread_numbers)}", daemon=True)
    thread.start()
    return thread


def run_into_future(
    future: Future[Any],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    on_error: Callable[[BaseException], object] | None = None,
) -> None:
    """Call ``fn`` and store its outcome in ``future``; ``on_error`` sees an exception first.

    ``on_error`` runs before the future is resolved, so whoever waits on the future
    already sees the error's effects (a Group's cancelled context).
    """
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            _close_if_coroutine(result)
            raise TypeError(f"{fn!r} returned an awaitable: it cannot run in a thread")
    except BaseException as error:
        if on_error is not None:
            on_error(error)
        future.set_exception(error)
    else:
        future.set_result(result)


def _close_if_coroutine(awaitable: object) -> None:
    if inspect.iscoroutine(awaitable):
        awaitable.close()  # no "coroutine was never awaited" warning


def go(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
    """Run ``fn(*args, **kwargs)`` in a new daemon thread, like Go's ``go`` statement.

    Never blocks. Returns a ``concurrent.futures.Future`` that receives fn's return
    value or the exception it raised (nothing is printed: an exception nobody asks
    the future for goes unnoticed, as with an executor). The thread is named
    ``chanflow-go-<n>``. Raises TypeError for an ``async def`` function. Costs one
    thread start, roughly 50-100 us: for many small jobs use a worker pool.
    """
    check_sync_callable(fn, "go()")
    future: Future[T] = Future()
    start_thread("chanflow-go", lambda: run_into_future(future, fn, args, kwargs))
    return future


# -- the parking both share ----------------------------------------------------------------

W = TypeVar("W", bound=Waiter)


def _check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {value!r}")
    return value


class _Parking:
    """A lock and a FIFO queue of parked waiters, and how a waiter leaves it."""

    __slots__ = ("_lock", "_waiters")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: deque[Waiter] = deque()

    def _park_locked(self, waiter_type: type[W]) -> W:
        waiter = waiter_type()
        self._waiters.append(waiter)
        return waiter

    def _withdraw(self, waiter: Waiter) -> bool:
        """Take a parked waiter back; False means it was completed meanwhile."""
        with self._lock:
            if waiter.claim():
                discard(self._waiters, waiter)
                return True
        return False

    def _interrupted(self, waiter: Waiter) -> None:
        """A parked waiter is leaving on an exception (KeyboardInterrupt, cancellation)."""
        self._withdraw(waiter)

    def _block(self, waiter: ThreadWaiter, timeout: float | None) -> bool:
        """Wait until completed (True) or timed out and withdrawn (False)."""
        try:
            woken = waiter.wait(timeout)
        except BaseException:
            self._interrupted(waiter)
            raise
        return woken or not self._withdraw(waiter)

    async def _ablock(self, waiter: AsyncWaiter, timeout: float | None) -> bool:
        """Async twin of :meth:`_block`."""
        try:
            woken = await waiter.wait(timeout)
        except BaseException:
            self._interrupted(waiter)
            raise
        return woken or not self._withdraw(waiter)


# -- WaitGroup -------------------------------------------------------------------------------


class WaitGroup(_Parking):
    """Go's ``sync.WaitGroup``: wait until a counter of running jobs drops to zero.

    ``add(n)`` before starting jobs, ``done()`` as each finishes, ``wait()`` (threads)
    or ``await wg`` (coroutines, on any event loop) until the counter is zero;
    ``go(fn)`` does all three bookkeeping steps for one job run in a thread. The
    counter may go up again after reaching zero (the group is reusable). Every
    method is safe to call from any thread; none but the waits ever block.
    """

    __slots__ = ("_count",)

    def __init__(self) -> None:
        super().__init__()
        self._count = 0

    @property
    def count(self) -> int:
        """The counter: jobs added and not yet done."""
        return self._count

    def __repr__(self) -> str:
        return f"<WaitGroup count={self._count} waiters={len(self._waiters)}>"

    def add(self, n: int = 1) -> None:
        """Add ``n`` (may be negative) to the counter; never blocks, about 0.5 us.

        Reaching zero wakes every waiter. Raises ValueError, and leaves the counter
        at zero (waking the waiters), if the counter would go below zero; TypeError
        if ``n`` is not an int.
        """
        n = _check_int(n, "WaitGroup.add(n)")
        with self._lock:
            count = self._count + n
            self._count = max(count, 0)
            if count <= 0:
                self._wake_all_locked()
        if count < 0:
            raise ValueError(f"WaitGroup counter went below zero ({count}); it is now 0")

    def done(self) -> None:
        """Decrement the counter by one (``add(-1)``); raises ValueError below zero."""
        self.add(-1)

    def _wake_all_locked(self) -> None:
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if waiter.claim():
                waiter.fire(0, None, OK)

    def _park_unless_zero(self, waiter_type: type[W]) -> W | None:
        with self._lock:
            return None if self._count == 0 else self._park_locked(waiter_type)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the counter is zero; True then, False if ``timeout`` s passed first.

        Returns at once when the counter is already zero (``timeout <= 0`` only
        looks). A thread blocked here wakes in about 10-50 us once it is zero.
        """
        timeout = check_timeout(timeout)
        waiter = self._park_unless_zero(ThreadWaiter)
        return True if waiter is None else self._block(waiter, timeout)

    async def wait_async(self, timeout: float | None = None) -> bool:
        """Async twin of :meth:`wait`: never blocks the event loop.

        Works whichever threads or loops call ``done()``. Cancelling the waiting
        task simply withdraws it.
        """
        timeout = check_timeout(timeout)
        waiter = self._park_unless_zero(AsyncWaiter)
        return True if waiter is None else await self._ablock(waiter, timeout)

    def __await__(self) -> Generator[Any, None, None]:
        """``await wg`` waits, without blocking the loop, until the counter is zero."""
        yield from self.wait_async().__await__()

    def go(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """``add(1)``, run fn in a new ``chanflow-go-<n>`` thread, ``done()`` when it ends.

        Never blocks (about 50-100 us for the thread start). ``done()`` runs however
        fn ends, after the returned Future has its result or exception, so after a
        ``wait()`` every future of the group is resolved. Raises TypeError for an
        ``async def`` function.
        """
        check_sync_callable(fn, "WaitGroup.go()")
        future: Future[T] = Future()

        def run() -> None:
            try:
                run_into_future(future, fn, args, kwargs)
            finally:
                self.done()

        self.add(1)
        try:
            start_thread("chanflow-go", run)
        except BaseException:  # the thread could not start: nothing will call done()
            self.done()
            raise
        return future


# -- Semaphore -------------------------------------------------------------------------------


def _check_permits(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, float)):
        raise TypeError(f"Semaphore(n) takes an int >= 0, not {n!r}")
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"Semaphore(n) takes an int >= 0, not {n!r}")
    return n


class Semaphore(_Parking):
    """A bounded, fair semaphore shared by threads and coroutines.

    ``n`` permits; ``acquire()``/``release()`` from threads, ``await aacquire()``
    from coroutines on any event loop, or ``with sem:`` / ``async with sem:``.
    Waiters are served strictly first come, first served, threads and coroutines
    alike: ``release()`` hands its permit straight to the oldest waiter, so a
    newcomer never takes a permit while someone is waiting.

    It is *bounded* (like ``threading.BoundedSemaphore``): a ``release()`` that
    would make more than ``n`` permits available raises ValueError.

    Cost: about 0.5-1 us for an acquire or release that does not wait.
    """

    __slots__ = ("_limit", "_value")

    def __init__(self, n: int) -> None:
        super().__init__()
        self._limit = _check_permits(n)
        self._value = self._limit

    @property
    def value(self) -> int:
        """The number of permits available right now."""
        return self._value

    def __repr__(self) -> str:
        return f"<Semaphore value={self._value}/{self._limit} waiters={len(self._waiters)}>"

    def _try_take(self) -> bool:
        with self._lock:
            if self._value > 0:  # only ever > 0 while no one waits
                self._value -= 1
                return True
        return False

    def _take_or_park(self, waiter_type: type[W], timeout: float | None) -> W | bool:
        """Take a free permit (True), give up if ``timeout <= 0`` (False), or park."""
        with self._lock:
            if self._value > 0:
                self._value -= 1
                return True
            if timeout is not None and timeout <= 0:
                return False
            return self._park_locked(waiter_type)

    def _interrupted(self, waiter: Waiter) -> None:
        # A permit handed over in the same instant is passed on, never lost.
        if not self._withdraw(waiter):
            self.release()

    def acquire(self, timeout: float | None = None) -> bool:
        """Take a permit, blocking while none is free; True once taken.

        Returns False, having taken nothing, if ``timeout`` seconds pass first
        (``timeout <= 0`` only tries). Raises TypeError/ValueError for a bad timeout.
        """
        if self._try_take():
            return True
        timeout = check_timeout(timeout)
        outcome = self._take_or_park(ThreadWaiter, timeout)
        if isinstance(outcome, bool):
            return outcome
        return self._block(outcome, timeout)

    async def aacquire(self, timeout: float | None = None) -> bool:
        """Async twin of :meth:`acquire`; waits without blocking the event loop.

        If the task is cancelled while waiting, CancelledError propagates and no
        permit is held: one handed over in the same instant goes to the next waiter.
        """
        if self._try_take():
            return True
        timeout = check_timeout(timeout)
        outcome = self._take_or_park(AsyncWaiter, timeout)
        if isinstance(outcome, bool):
            return outcome
        return await self._ablock(outcome, timeout)

    def release(self) -> None:
        """Give a permit back, to the oldest waiter if any; never blocks.

        Raises ValueError if that would make more than ``n`` permits available.
        """
        with self._lock:
            if self._value >= self._limit:
                raise ValueError(
                    f"Semaphore released too many times (all {self._limit} permits are free)"
                )
            waiters = self._waiters
            while waiters:
                waiter = waiters.popleft()
                if waiter.claim():
                    waiter.fire(0, None, OK)
                    return
            self._value += 1

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    async def __aenter__(self) -> None:
        await self.aacquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
