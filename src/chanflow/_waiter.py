"""Parking and waking of threads and coroutines: the one mechanism every primitive shares.

A blocked operation parks a *waiter* on the queue of each object it waits for (a
select parks one waiter on several channels). Whoever makes the operation possible
*claims* the waiter, fills in the outcome, then wakes it. Claiming is an atomic
test-and-set, so exactly one party ever completes a waiter, even when several
channels race for the same select. A waiter that times out or is cancelled claims
*itself*: if that succeeds, nobody completed it and it may leave; if it fails, the
operation did happen and its outcome is already written (the completing party
writes it while it holds the lock of the queue the waiter sat on, and the leaving
waiter takes that lock before it looks).

Waking a thread releases a lock it is blocked on (what ``threading.Condition`` does
internally, minus the condition). Waking a coroutine resolves an asyncio future:
directly when called from the loop's own thread, else through
``call_soon_threadsafe``, so a thread may complete a coroutine's operation without
ever touching the loop from the wrong thread.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from typing import Any

__all__ = ["AsyncWaiter", "ThreadWaiter", "Waiter", "check_timeout", "discard"]

_get_ident = threading.get_ident
_allocate_lock = threading.Lock

OK = 0
CLOSED = 1


def check_timeout(timeout: float | None) -> float | None:
    """Validate a ``timeout=`` argument; None means wait forever, <= 0 means do not wait."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    if math.isnan(timeout):
        raise ValueError("timeout must be a number of seconds or None, not NaN")
    if timeout >= threading.TIMEOUT_MAX:
        return None  # longer than any lock can wait: the same as forever
    return float(timeout)


def discard(queue: deque[Any], entry: object) -> None:
    """Remove ``entry`` from ``queue`` if it is still there (the ends are O(1))."""
    if queue:
        if queue[-1] is entry:
            queue.pop()
        elif queue[0] is entry:
            queue.popleft()
        else:
            try:
                queue.remove(entry)
            except ValueError:
                pass


class Waiter:
    """Base of the two waiter kinds; holds the claim flag and the outcome.

    ``index`` is which case fired (always 0 outside select), ``value`` what it
    delivered, ``status`` ``OK`` or ``CLOSED``.
    """

    __slots__ = ("_claim", "index", "status", "value")

    def __init__(self) -> None:
        self._claim = _allocate_lock()
        self.index = -1
        self.value: Any = None
        self.status = OK

    def claim(self) -> bool:
        """Atomically take the right to complete this waiter. True for exactly one caller."""
        return self._claim.acquire(False)

    def fire(self, index: int, value: Any, status: int) -> None:
        """Record the outcome and wake the waiter. The caller must have claimed it."""
        self.index = index
        self.value = value
        self.status = status
        self.wake()

    def wake(self) -> None:
        raise NotImplementedError


class ThreadWaiter(Waiter):
    """A waiter for a blocked thread."""

    __slots__ = ("_wake",)

    def __init__(self) -> None:
        super().__init__()
        self._wake = _allocate_lock()
        self._wake.acquire()

    def wake(self) -> None:
        self._wake.release()

    def wait(self, timeout: float | None) -> bool:
        """Block until woken (True) or until ``timeout`` passes (False)."""
        if timeout is None:
            return self._wake.acquire()
        return self._wake.acquire(True, timeout) if timeout > 0 else False


_WOKEN = True
_EXPIRED = False


def _resolve(future: asyncio.Future[bool], outcome: bool = _WOKEN) -> None:
    if not future.done():
        future.set_result(outcome)


class AsyncWaiter(Waiter):
    """A waiter for a coroutine; never blocks its event loop."""

    __slots__ = ("_future", "_loop", "_thread")

    def __init__(self) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._future: asyncio.Future[bool] = self._loop.create_future()
        self._thread = _get_ident()

    def wake(self) -> None:
        if _get_ident() == self._thread:
            _resolve(self._future)
            return
        try:
            self._loop.call_soon_threadsafe(_resolve, self._future)
        except RuntimeError:
            # The loop is closed: its tasks can never run again, so nobody is left
            # to wake. Swallow it rather than fail the thread that completed us.
            pass

    async def wait(self, timeout: float | None) -> bool:
        """Wait until woken (True) or until ``timeout`` passes (False).

        False does not prove a timeout: the waiter may have been completed in the same
        instant, so the caller then claims it, under the queue's lock, to find out.
        """
        future = self._future
        if timeout is None:
            return await future
        if timeout <= 0:
            return False
        handle = self._loop.call_later(timeout, _resolve, future, _EXPIRED)
        try:
            return await future
        finally:
            handle.cancel()
