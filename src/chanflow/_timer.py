"""Timers: one shared timer thread, Go's Ticker, and ``after()``.

Every timed event of the library (ticks, ``after()``, context deadlines) is an
entry in one heap served by one daemon thread, ``chanflow-timer``, instead of a
thread or an event-loop handle per timer: a program with ten thousand pending
deadlines still has one extra thread, and threads and coroutines share the same
timers. The thread starts with the first entry and exits by itself once it has had
nothing to do for ``IDLE_GRACE`` seconds, so an idle program has no timer thread.

Cancelling an entry only drops its callback (O(1)); the dead entry leaves the heap
when it reaches the top, or earlier when dead entries make up most of the heap.
Callbacks run on the timer thread, one after the other, so they must be quick:
they hand work over (send on a channel, close a channel, cancel a context) rather
than do it.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import os
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from time import monotonic
from typing import Any

from ._channel import Channel
from ._exceptions import ChannelClosed, WouldBlock

__all__ = ["IDLE_GRACE", "Ticker", "TimerHandle", "after", "schedule", "schedule_at"]

IDLE_GRACE = 1.0
"""Seconds the timer thread lingers with nothing scheduled before it exits."""

# Condition.wait() rejects timeouts above threading.TIMEOUT_MAX; waking up once an
# hour to look again costs nothing.
_MAX_WAIT = 3600.0
# Dead (cancelled) entries are swept out of the heap once they are this many and
# more than half of it, so the sweep costs O(1) amortised per cancel.
_SWEEP_MIN = 64

Callback = Callable[[], object]


def report_callback_error(error: BaseException, what: str) -> None:
    """Report an exception raised by a callback the library ran, then carry on.

    Goes to ``threading.excepthook`` (what an uncaught exception in a thread does),
    so the current thread survives and test runners see the error.
    """
    thread = threading.current_thread()
    add_note = getattr(error, "add_note", None)  # Python >= 3.11
    if add_note is not None:
        add_note(f"chanflow: raised by {what}")
    try:
        threading.excepthook(
            threading.ExceptHookArgs((type(error), error, error.__traceback__, thread))
        )
    except Exception:  # a broken hook must not take the timer thread down with it
        print(f"chanflow: exception in {what}: {error!r}", file=sys.stderr)


class TimerHandle:
    """A scheduled callback; ``cancel()`` it to stop it from running.

    ``when`` is the ``time.monotonic()`` deadline. Cancelling drops the callback
    reference at once, so a cancelled timer keeps nothing alive.
    """

    __slots__ = ("_callback", "when")

    def __init__(self, when: float, callback: Callback | None) -> None:
        self.when = when
        self._callback = callback

    @property
    def pending(self) -> bool:
        """True until the callback has been handed to the timer thread or cancelled."""
        return self._callback is not None

    def cancel(self) -> None:
        """Stop the callback from running; idempotent, never blocks, O(1) amortised.

        A callback that the timer thread has already taken (its deadline passed)
        may still run: callers that care check their own state in the callback.
        """
        if self._callback is not None:
            _service.cancel(self)

    def __repr__(self) -> str:
        state = "pending" if self._callback is not None else "done"
        return f"<TimerHandle when={self.when:.6f} {state}>"


HeapEntry = tuple[float, int, TimerHandle]


class _TimerService:
    """The heap of timers and the thread that fires them."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[HeapEntry] = []
        self._dead = 0
        self._sequence = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule_at(self, when: float, callback: Callback) -> TimerHandle:
        if not math.isfinite(when):  # +inf: never fires, so there is nothing to keep
            return TimerHandle(when, None)
        handle = TimerHandle(when, callback)
        with self._cond:
            heap = self._heap
            heapq.heappush(heap, (when, next(self._sequence), handle))
            if self._thread is None:
                self._start_thread_locked()
            elif heap[0][2] is handle:
                self._cond.notify()
        return handle

    def cancel(self, handle: TimerHandle) -> None:
        with self._cond:
            if handle._callback is None:  # fired or cancelled in the meantime
                return
            handle._callback = None
            self._dead += 1
            heap = self._heap
            if heap[0][2] is handle:
                self._cond.notify()  # it may be time to go idle, or to wait less long
            elif self._dead >= _SWEEP_MIN and 2 * self._dead > len(heap):
                heap[:] = [entry for entry in heap if entry[2]._callback is not None]
                heapq.heapify(heap)
                self._dead = 0

    def _start_thread_locked(self) -> None:
        thread = threading.Thread(target=self._run, name="chanflow-timer", daemon=True)
        self._thread = thread
        try:
            thread.start()
        except BaseException:
            self._thread = None
            raise

    def _drop_dead_top_locked(self) -> None:
        heap = self._heap
        while heap and heap[0][2]._callback is None:
            heapq.heappop(heap)
            self._dead -= 1

    def _take_due_locked(self, now: float) -> list[Callback]:
        due: list[Callback] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            handle = heapq.heappop(heap)[2]
            callback = handle._callback
            if callback is None:
                self._dead -= 1
            else:
                handle._callback = None
                due.append(callback)
        return due

    def _next_batch(self) -> list[Callback] | None:
        """Wait for the next due callbacks; None when idle long enough to exit."""
        idle_since: float | None = None
        with self._cond:
            while True:
                self._drop_dead_top_locked()
                now = monotonic()
                if self._heap:
                    idle_since = None
                    delay = self._heap[0][0] - now
                    if delay <= 0:
                        return self._take_due_locked(now)
                else:
                    if idle_since is None:
                        idle_since = now
                    delay = idle_since + IDLE_GRACE - now
                    if delay <= 0:
                        self._thread = None
                        return None
                self._cond.wait(min(delay, _MAX_WAIT))

    def _run(self) -> None:
        while True:
            due = self._next_batch()
            if due is None:
                return
            for callback in due:
                try:
                    callback()
                except BaseException as error:
                    report_callback_error(error, f"timer callback {callback!r}")
                    del error
            del due

    def _after_fork_in_child(self) -> None:
        # The timer thread did not survive the fork and the lock may be held by a
        # thread that no longer exists: start over. Pending entries fire once the
        # next schedule() starts a thread.
        self._cond = threading.Condition(threading.Lock())
        self._thread = None


_service = _TimerService()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_service._after_fork_in_child)


def schedule_at(when: float, callback: Callback) -> TimerHandle:
    """Run ``callback()`` on the timer thread once ``time.monotonic()`` reaches ``when``.

    Never blocks; about 2 us. A deadline in the past fires as soon as the timer
    thread gets to it; ``math.inf`` never fires. Callbacks must be quick; an
    exception in one is reported through ``threading.excepthook``.
    """
    return _service.schedule_at(when, callback)


def schedule(delay: float, callback: Callback) -> TimerHandle:
    """Run ``callback()`` on the timer thread after ``delay`` seconds (see schedule_at)."""
    return _service.schedule_at(monotonic() + delay, callback)


def check_seconds(value: float, name: str) -> float:
    """Validate a number of seconds (any sign, inf allowed); name the argument if bad."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    if math.isnan(value):
        raise ValueError(f"{name} must be a number of seconds, not NaN")
    return float(value)


def _check_interval(interval: float) -> float:
    interval = check_seconds(interval, "interval")
    if not 0 < interval < math.inf:
        raise ValueError(f"interval must be a positive finite number of seconds, not {interval!r}")
    return interval


class _WeakChannel(Channel[Any]):
    """A Channel that can be weakly referenced (Channel itself has no __weakref__ slot)."""

    __slots__ = ("__weakref__",)


class _Ticks:
    """The ticking state of a Ticker, which is what the timer heap holds.

    It references the channel only weakly, so a Ticker that nobody can read from
    any more (neither it nor its channel is referenced) stops by itself at the next
    tick instead of ticking forever, as in Go since 1.23.
    """

    __slots__ = ("_channel", "_handle", "_interval", "_lock", "_start", "_step", "stopped")

    def __init__(self, channel: _WeakChannel, interval: float) -> None:
        self._channel = weakref.ref(channel)
        self._interval = interval
        self._lock = threading.Lock()
        self._step = 1
        self.stopped = False
        self._start = monotonic()
        self._handle = schedule_at(self._start + interval, self._tick)

    def _tick(self) -> None:
        channel = self._channel()
        with self._lock:
            if self.stopped:
                return
            if channel is None:  # nobody can read the ticks any more
                self.stopped = True
                return
            now = monotonic()
            try:
                channel.send_nowait(now)
            except WouldBlock:
                pass  # the reader is slow: it misses this tick, as in Go
            except ChannelClosed:  # the user closed the channel
                self.stopped = True
                return
            # The next point of the grid start + k * interval that lies in the future:
            # no drift, and ticks missed while the timer thread was late are skipped.
            step = max(self._step + 1, math.floor((now - self._start) / self._interval) + 1)
            while self._start + step * self._interval <= now:
                step += 1
            self._step = step
            self._handle = schedule_at(self._start + step * self._interval, self._tick)

    def stop(self, channel: Channel[Any]) -> None:
        with self._lock:
            if self.stopped and channel.closed:
                return
            self.stopped = True
            self._handle.cancel()
            # Like Go since 1.23: no stale tick is received once stop() has returned.
            try:
                channel.recv_nowait()
            except (WouldBlock, ChannelClosed):
                pass
            channel.close()


class Ticker:
    """Go's time.Ticker: delivers the time every ``interval`` seconds.

    Iterate it (``for t in ticker`` or ``async for t in ticker``), or receive from
    ``ticker.channel`` (a Channel of capacity 1, usable in select). Each tick is the
    ``time.monotonic()`` at which it fired; the first comes ``interval`` seconds
    after creation. Ticks keep to the grid ``creation + k * interval`` (no drift).
    A slow reader misses ticks instead of queueing them: at most one waits in the
    channel, and grid points that passed while the timer was late are skipped.

    ``stop()`` (or leaving a ``with Ticker(...) as t:`` block) stops the ticks and
    closes the channel, which ends iteration. A Ticker that is neither stopped nor
    referenced any more (it and its channel) stops by itself at its next tick.

    Creating one never blocks and costs a few microseconds; each tick costs about
    5 us on the shared timer thread. Raises TypeError/ValueError unless
    ``interval`` is a positive finite number of seconds.
    """

    __slots__ = ("_channel", "_interval", "_ticks")

    def __init__(self, interval: float) -> None:
        self._interval = _check_interval(interval)
        self._channel = _WeakChannel(1)
        self._ticks = _Ticks(self._channel, self._interval)

    @property
    def channel(self) -> Channel[float]:
        """The channel the ticks arrive on (capacity 1; closed by stop())."""
        return self._channel

    @property
    def interval(self) -> float:
        """Seconds between ticks."""
        return self._interval

    @property
    def stopped(self) -> bool:
        """True once stop() was called (or the channel was closed)."""
        return self._ticks.stopped

    def stop(self) -> None:
        """Stop the ticks and close the channel; idempotent, never blocks.

        A tick waiting unread in the channel is discarded; blocked and future
        receives see the channel closed, so iteration ends.
        """
        self._ticks.stop(self._channel)

    def __iter__(self) -> Iterator[float]:
        """Receive ticks until stop() (blocks between ticks)."""
        return iter(self._channel)

    def __aiter__(self) -> AsyncIterator[float]:
        """Receive ticks asynchronously until stop()."""
        return self._channel.__aiter__()

    def __enter__(self) -> Ticker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._ticks.stopped else "running"
        return f"<Ticker interval={self._interval} {state}>"


def _deliver_once(channel: Channel[float]) -> None:
    try:
        channel.send_nowait(monotonic())
    except (WouldBlock, ChannelClosed):  # the user closed it or filled it: nothing to do
        pass
    channel.close()


def after(seconds: float) -> Channel[float]:
    """Return a channel that receives one tick after ``seconds``, then is closed.

    Like Go's time.After, for use in select: the tick is the ``time.monotonic()``
    at which it fired; a second receive raises ChannelClosed. ``seconds <= 0``
    delivers at once, ``math.inf`` never. Never blocks; about 3 us. Raises
    TypeError/ValueError unless ``seconds`` is a number.
    """
    seconds = check_seconds(seconds, "seconds")
    channel: Channel[float] = Channel(1)
    if seconds <= 0:
        _deliver_once(channel)
    else:
        schedule(seconds, functools.partial(_deliver_once, channel))
    return channel
