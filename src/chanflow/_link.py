"""Links: the bounded hand-offs between the stages of a pipeline.

A pipeline's stages are joined by links. A link carries lists of items (a stage
passes on whatever it has ready in one step, not one item at a time) and is
bounded in *items* through a :class:`Budget`: the stage that takes items from a
link counts them in its own budget until the next stage (or the consumer) takes
them from its output link. So a stage holds at most ``bound`` items, whatever is
running, waiting or done, and the whole flow holds at most the sum of its stages'
bounds.

Every link of one flow shares one :class:`Hub` (one lock and one stop switch):
hand-offs are a few per list of items, so one lock costs nothing measurable, and
a single place to stop makes every wait of the flow wake at once on a failure,
a break or a cancel. Waits are on :class:`Signal`\\ s of that lock, one per thing
awaited (a link's items, a budget's room), so a hand-off wakes only who needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ._channel import Channel
from ._exceptions import Cancelled

__all__ = ["Budget", "Halted", "Hub", "Link"]

# Waits re-check the hub at least this often (a safety net: every state change
# notifies, so a wait normally ends at once).
_RECHECK_SECONDS = 0.25


class Halted(Cancelled):
    """Raised by a wait of a flow that has been stopped (internal to the pipeline)."""


class Signal:
    """A condition of a flow, on its hub's lock: threads and tasks wait for it to change.

    Each link has one for its items, each budget one for its room, so a change wakes
    only those waiting for it (one condition for the whole flow woke every thread of
    it at every hand-off: most of a hand-off's cost).
    """

    __slots__ = ("_async_waiters", "_condition", "waiting")

    def __init__(self, lock: threading.Lock) -> None:
        self._condition = threading.Condition(lock)
        self.waiting = 0  # threads in wait_locked
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def notify_locked(self) -> None:
        """Wake every thread and task waiting on it (they re-check their condition)."""
        if self.waiting:
            self._condition.notify_all()
        if self._async_waiters:
            for loop, future in self._async_waiters:
                with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits
                    loop.call_soon_threadsafe(_resolve, future)
            self._async_waiters.clear()

    def wait_locked(self, timeout: float) -> None:
        self.waiting += 1
        try:
            self._condition.wait(timeout)
        finally:
            self.waiting -= 1

    def async_waiter_locked(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._async_waiters.append((loop, future))
        return future


class Hub:
    """The lock and stop switch shared by the links of one flow."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.halted = False
        # Closed at halt, for waits outside the flow's links (a select on a
        # dead-letter channel) to stop with the flow.
        self.stopped: Channel[None] = Channel()
        self._signals: list[Signal] = []
        self._due: list[Callable[[], None]] = []  # wake callbacks to call after the lock

    def signal(self) -> Signal:
        """A new condition of this flow, woken by :meth:`halt` too."""
        signal = Signal(self.lock)
        self._signals.append(signal)
        return signal

    def fire_locked(self, wakes: list[Callable[[], None]]) -> None:
        """Schedule ``wakes`` (then emptied) to be called once the lock is released."""
        self._due.extend(wakes)
        wakes.clear()

    def unlock_and_wake(self) -> None:
        """Release the lock, then call the wake callbacks that became due under it."""
        due, self._due = self._due, []
        self.lock.release()
        for wake in due:
            wake()

    def halt(self) -> None:
        """Stop the flow: every wait, now or later, raises :class:`Halted`. Idempotent."""
        with self.lock:
            self.halted = True
            for signal in self._signals:
                signal.notify_locked()
        self.stopped.close()

    def check_locked(self) -> None:
        if self.halted:
            raise Halted("the pipeline was stopped")

    def wait_locked(self, signal: Signal, timeout: float | None = None) -> None:
        signal.wait_locked(_RECHECK_SECONDS if timeout is None else timeout)
        self.check_locked()


class Budget:
    """How many items one stage may hold; counted under its hub's lock."""

    __slots__ = ("bound", "held", "low_water", "room", "room_wakes")

    def __init__(self, hub: Hub, bound: int) -> None:
        self.bound = bound
        self.held = 0
        self.room = hub.signal()  # room was made
        # A taker waits until at least this much room is free (or all it wants fits).
        self.low_water = max(1, bound // 4)
        # Pool stages to wake when room is made (see Link.take_ready).
        self.room_wakes: list[Callable[[], None]] = []

    @property
    def free(self) -> int:
        return self.bound - self.held

    def shrink_locked(self, hub: Hub, n: int) -> None:
        """``n`` items fewer are held: wake whoever waits for room."""
        self.held -= n
        self.room.notify_locked()
        if self.room_wakes:
            hub.fire_locked(self.room_wakes)


class Link:
    """Lists of items from one stage to the next; items count in ``budget`` while here.

    ``put`` never blocks: a stage puts only what it already counts in its budget.
    ``take`` blocks until items are there and the taker's budget has room, and
    moves the items from this link's budget to the taker's.
    """

    def __init__(self, hub: Hub, budget: Budget) -> None:
        self.hub = hub
        self.budget = budget
        self._chunks: deque[list[Any]] = deque()
        self.count = 0  # items waiting here
        self.closed = False
        self.error: BaseException | None = None  # the input error that ended the flow
        self.arrived = hub.signal()  # items arrived, or the link closed
        self._item_wakes: list[Callable[[], None]] = []  # a pool stage waiting for items

    # -- the producer's side ------------------------------------------------------------

    def put(self, items: list[Any], grown: int = 0) -> None:
        """Add ``items`` (never blocks); ``grown`` items more than the budget counted."""
        hub = self.hub
        hub.lock.acquire()
        try:
            if items:
                hub.check_locked()
            if grown < 0:
                self.budget.shrink_locked(hub, -grown)
            else:
                self.budget.held += grown
            if items:
                self._chunks.append(items)
                self.count += len(items)
                hub.fire_locked(self._item_wakes)
                self.arrived.notify_locked()
        finally:
            hub.unlock_and_wake()

    def close(self, error: BaseException | None = None) -> None:
        """No more items; a taker gets None once the link is drained. Idempotent."""
        hub = self.hub
        hub.lock.acquire()
        try:
            if not self.closed:
                self.closed = True
                self.error = error
            hub.fire_locked(self._item_wakes)
            self.arrived.notify_locked()
        finally:
            hub.unlock_and_wake()

    # -- the taker's side ---------------------------------------------------------------

    def _take_locked(self, n: int, into: Budget | None) -> list[Any] | None:
        """Up to ``n`` items, fewer if ``into`` lacks room; [] if none; None at the end.

        ``into`` None: the consumer's take; the items stay counted until it calls
        :meth:`release` for them (once it has handed them all out).
        """
        if not self.count:
            return None if self.closed else []
        # A quarter of a budget at a time: the rest of it keeps the stages around
        # busy meanwhile (one taker holding a whole budget would serialise the flow).
        n = min(n, self.budget.low_water)
        if into is not None and into is not self.budget:
            # Wait for a worthwhile amount of room rather than move a few items at a
            # time as each is passed on (the "silly window" of TCP).
            if into.free < min(n, self.count, into.low_water):
                return []
            n = min(n, into.free)
        chunks = self._chunks
        taken: list[Any] = []
        while chunks and len(taken) < n:
            chunk = chunks.popleft()
            room = n - len(taken)
            if len(chunk) > room:
                chunks.appendleft(chunk[room:])
                chunk = chunk[:room]
            if taken:
                taken.extend(chunk)
            else:
                taken = chunk
        self.count -= len(taken)
        if into is not None and into is not self.budget:
            self.budget.shrink_locked(self.hub, len(taken))
            into.held += len(taken)
        return taken

    def take_ready(self, n: int, into: Budget, wake: Callable[[], None]) -> list[Any] | None:
        """Non-blocking take for a pool stage; [] means ``wake()`` comes on a change.

        The wake waits on what stood in the way: items arriving here, or room
        being made in ``into`` (never on every hand-off of the flow, which would
        have the stage spin on its own outputs).
        """
        hub = self.hub
        hub.lock.acquire()
        try:
            hub.check_locked()
            taken = self._take_locked(n, into)
            if taken == []:
                waits_on = self._item_wakes if not self.count else into.room_wakes
                if wake not in waits_on:
                    waits_on.append(wake)
            return taken
        finally:
            hub.unlock_and_wake()

    def take(self, n: int, into: Budget | None, timeout: float | None = None) -> list[Any] | None:
        """Block until items can be taken (up to ``n``); None at the end; [] on timeout.

        ``into`` is the taker's budget (None for the consumer, see ``_take_locked``).
        Raises :class:`Halted` if the flow is stopped.
        """
        hub = self.hub
        deadline = None if timeout is None else time.monotonic() + timeout
        hub.lock.acquire()
        try:
            while True:
                hub.check_locked()
                taken = self._take_locked(n, into)
                if taken != []:
                    return taken
                # Wait for what stands in the way: items here, or room in ``into``.
                signal = into.room if self.count and into is not None else self.arrived
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return []
                    hub.wait_locked(signal, min(left, _RECHECK_SECONDS))
                else:
                    hub.wait_locked(signal)
        finally:
            hub.unlock_and_wake()

    async def atake(self, n: int) -> list[Any] | None:
        """Async twin of :meth:`take` for the consumer (``into=None``): never blocks the loop."""
        hub = self.hub
        while True:
            hub.lock.acquire()
            try:
                hub.check_locked()
                taken = self._take_locked(n, None)
                if taken != []:
                    return taken
                waiter = self.arrived.async_waiter_locked()
            finally:
                hub.unlock_and_wake()
            try:
                await asyncio.wait_for(waiter, _RECHECK_SECONDS)
            except asyncio.TimeoutError:
                pass

    def reserve(self, n: int) -> int:
        """Block until this link's budget has room; count up to ``n`` items in it.

        For a producer that must count items before it has them (the source
        feeder). Raises :class:`Halted` if the flow is stopped.
        """
        hub = self.hub
        with hub.lock:
            while self.budget.free < min(n, self.budget.low_water):
                hub.wait_locked(self.budget.room)
            hub.check_locked()
            granted = min(n, self.budget.free)
            self.budget.held += granted
        return granted

    def release(self, n: int) -> None:
        """Uncount ``n`` items the budget held (reserved and not put, or passed on)."""
        if n:
            self.put([], grown=-n)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
