"""Contexts: Go's context.Context, for cancelling trees of work.

Every context but the root holds its own small lock, and no two locks are ever held
at once: a parent registers a child under the parent's lock, a cancel marks one
context under that context's lock, and a context leaving its parent takes the
parent's lock after letting go of its own. Cancelling a tree first marks every
context of it (parents before children), then closes their ``done`` channels and
runs their callbacks with no lock held, so code woken by the cancellation may
freely create, cancel or inspect contexts.

Parents hold their live children strongly, so a cancellation always reaches them;
children hold their parent only until they are cancelled. A cancelled context
forgets its children and leaves its parent's set, and the root keeps no children at
all, so contexts that are cancelled or dropped do not pile up anywhere.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Generator
from time import monotonic
from typing import Any

from ._channel import Channel
from ._exceptions import Cancelled, ChanflowError, ChannelClosed, DeadlineExceeded
from ._timer import TimerHandle, check_seconds, report_callback_error, schedule_at
from ._waiter import check_timeout

__all__ = ["Context", "background"]

Callback = Callable[[], object]


class Context:
    """A cancellation signal shared by a tree of work, like Go's context.Context.

    Get the root with :func:`background`, and derive children from it with
    :meth:`with_cancel`, :meth:`with_timeout` or :meth:`with_deadline`. Cancelling
    a context (``cancel()``, or its deadline passing) cancels all its descendants;
    it never affects its parent. Contexts are thread-safe: cancel from any thread
    while others derive children, wait or select on ``done``.

    Use it as ``with parent.with_timeout(5) as ctx:`` to cancel it on leaving the
    block (Go's ``defer cancel()``). Do not call ``Context()`` directly.

    Cost (CPython 3.11): deriving a child takes about 0.5 us; cancelling about 0.5 us
    per descendant, plus waking whoever waits on their ``done`` channels.
    """

    __slots__ = (
        "__weakref__",
        "_callbacks",
        "_children",
        "_deadline",
        "_done",
        "_error",
        "_lock",
        "_parent",
        "_timer",
    )

    _lock: threading.Lock
    _parent: Context | None
    _children: set[Context] | None
    _callbacks: dict[object, Callback] | None
    _deadline: float | None
    _done: Channel[None] | None
    _error: ChanflowError | None
    _timer: TimerHandle | None

    def __init__(self) -> None:
        raise TypeError(
            "create contexts with cf.background() and its .with_cancel(), "
            ".with_timeout(seconds) or .with_deadline(when), not Context()"
        )

    def _setup(self, deadline: float | None) -> None:
        self._lock = threading.Lock()
        self._parent = None
        self._children = None
        self._callbacks = None
        self._deadline = deadline
        self._done = None
        self._error = None
        self._timer = None

    # -- state ------------------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        """True once the context is cancelled (by cancel(), an ancestor or its deadline)."""
        return self._error is not None

    @property
    def error(self) -> ChanflowError | None:
        """None until cancelled; then a :class:`Cancelled` or :class:`DeadlineExceeded`.

        A context cancelled through an ancestor carries that ancestor's error (the
        same instance), so a child of a timed-out context has a DeadlineExceeded.
        """
        return self._error

    @property
    def deadline(self) -> float | None:
        """When the context expires, as a ``time.monotonic()`` value; None if never.

        The earliest of its own deadline and its ancestors'.
        """
        return self._deadline

    @property
    def done(self) -> Channel[None]:
        """A channel that is closed when the context is cancelled; never blocks.

        Receive-only by convention: use it in ``cf.select(cf.Recv(ctx.done), ...)``
        (the case fires with ``ok=False``) or block on ``ctx.done.recv()`` (raises
        ChannelClosed). Never send on it or close it. Created on first use.
        """
        done = self._done
        if done is None:
            with self._lock:
                done = self._done
                if done is None:
                    done = self._done = Channel(0)
                    if self._error is not None:
                        done.close()
        return done

    # -- deriving ---------------------------------------------------------------------

    def with_cancel(self) -> Context:
        """Return a new child context, cancelled with this one (or by its own cancel()).

        Never blocks; about 0.5 us. A child of a cancelled context starts cancelled,
        with the parent's error.
        """
        return self._derive(None)

    def with_timeout(self, seconds: float) -> Context:
        """Return a child that is cancelled with DeadlineExceeded after ``seconds``.

        Its deadline is the earlier of ``now + seconds`` and this context's. The
        timer entry is dropped as soon as the child is cancelled earlier. Never
        blocks; ``seconds <= 0`` gives a child already expired, ``math.inf`` one
        with no deadline of its own. Raises TypeError/ValueError for a non-number.
        """
        seconds = check_seconds(seconds, "seconds")
        return self._derive(monotonic() + seconds)

    def with_deadline(self, when: float) -> Context:
        """Return a child cancelled with DeadlineExceeded at ``when`` (``time.monotonic()``).

        Like :meth:`with_timeout` with an absolute time.
        """
        return self._derive(check_seconds(when, "when"))

    def _derive(self, deadline: float | None) -> Context:
        if deadline is not None and math.isinf(deadline):
            deadline = None
        inherited = self._deadline
        own_timer = deadline is not None and (inherited is None or deadline < inherited)
        child: Context = object.__new__(Context)
        child._setup(deadline if own_timer else inherited)
        error = self._adopt(child)
        if error is not None:
            child._cancel(error)
        elif own_timer:
            child._start_timer()
        return child

    def _adopt(self, child: Context) -> ChanflowError | None:
        """Register ``child``, or return this context's error if it is already cancelled."""
        with self._lock:
            error = self._error
            if error is not None:
                return error
            child._parent = self
            children = self._children
            if children is None:
                children = self._children = set()
            children.add(child)
        return None

    def _start_timer(self) -> None:
        deadline: float = self._deadline  # type: ignore[assignment]
        if deadline <= monotonic():
            self._cancel(DeadlineExceeded("context deadline exceeded"))
            return
        with self._lock:
            # Under the lock, so a cancel() racing with us either finds the handle
            # to cancel or has already happened (and we schedule nothing).
            if self._error is None:
                self._timer = schedule_at(deadline, self._expire)

    def _expire(self) -> None:
        self._cancel(DeadlineExceeded("context deadline exceeded"))

    # -- cancelling -------------------------------------------------------------------

    def cancel(self) -> None:
        """Cancel this context and all its descendants with a Cancelled error.

        Idempotent (a context already cancelled keeps its first error); never
        blocks; O(descendants). Wakes everything waiting on the contexts' ``done``
        channels and runs their :meth:`after_func` callbacks on this thread.
        """
        if self._error is None:
            self._cancel(Cancelled("context cancelled"))

    def _cancel(self, error: ChanflowError) -> None:
        to_close: list[Channel[None]] = []
        to_call: list[Callback] = []
        parent = self._parent  # only _mark() changes it, and only if it succeeds
        if not self._mark(error, to_close, to_call):
            return
        stack: list[Context] = [self]
        while stack:
            # Iterative, so a deep chain of contexts cannot hit the recursion limit.
            for child in stack.pop()._take_children():
                if child._mark(error, to_close, to_call):
                    stack.append(child)
        if parent is not None:
            parent._forget(self)
        for done in to_close:
            done.close()
        for callback in to_call:
            _run_callback(callback)

    def _mark(
        self, error: ChanflowError, to_close: list[Channel[None]], to_call: list[Callback]
    ) -> bool:
        """Set the error and collect what to wake; False if it was already cancelled."""
        with self._lock:
            if self._error is not None:
                return False
            self._error = error
            self._parent = None
            timer, self._timer = self._timer, None
            if self._done is not None:
                to_close.append(self._done)
            if self._callbacks:
                to_call.extend(self._callbacks.values())
            self._callbacks = None
        if timer is not None:
            timer.cancel()
        return True

    def _take_children(self) -> set[Context]:
        with self._lock:
            children, self._children = self._children, None
        return children or set()

    def _forget(self, child: Context) -> None:
        with self._lock:
            if self._children is not None:
                self._children.discard(child)

    # -- callbacks ----------------------------------------------------------------------

    def after_func(self, callback: Callback) -> Callable[[], bool]:
        """Arrange for ``callback()`` to run once this context is cancelled (Go's AfterFunc).

        It runs on the thread that cancels (the timer thread for a deadline), after
        every lock is released, and must be quick; if the context is already
        cancelled it runs at once, here. An exception it raises is reported through
        ``threading.excepthook``, never to the canceller. Returns ``stop()``, which
        unregisters the callback and returns True if that kept it from running.
        Never blocks; about 1 us.
        """
        if not callable(callback):
            raise TypeError(f"after_func() takes a callable, not {callback!r}")
        token = object()
        with self._lock:
            registered = self._error is None
            if registered:
                if self._callbacks is None:
                    self._callbacks = {}
                self._callbacks[token] = callback
        if not registered:
            _run_callback(callback)

        def stop() -> bool:
            with self._lock:
                return self._callbacks is not None and self._callbacks.pop(token, None) is not None

        return stop

    # -- waiting ------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the context is cancelled (True) or ``timeout`` passes (False).

        ``timeout=None`` waits as long as it takes (forever on the root).
        """
        timeout = check_timeout(timeout)
        if self._error is not None:
            return True
        if timeout is not None and timeout <= 0:
            return False
        try:
            self.done.recv(timeout)
        except ChannelClosed:
            return True
        except TimeoutError:
            return self._error is not None
        raise AssertionError("something was sent on a context's done channel")

    def __await__(self) -> Generator[Any, None, None]:
        """``await ctx`` waits, without blocking the event loop, until it is cancelled.

        For a time limit: ``await asyncio.wait_for(ctx, seconds)``.
        """
        return self._until_cancelled().__await__()

    async def _until_cancelled(self) -> None:
        if self._error is None:
            try:
                await self.done.arecv()
            except ChannelClosed:
                return
            raise AssertionError("something was sent on a context's done channel")

    # -- context manager, repr ------------------------------------------------------------

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()

    async def __aenter__(self) -> Context:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cancel()

    def __repr__(self) -> str:
        error = self._error
        state = "active" if error is None else f"cancelled ({type(error).__name__})"
        if self._deadline is None:
            return f"<Context {state}>"
        remaining = self._deadline - monotonic()
        if remaining <= 0:
            return f"<Context {state} deadline passed>"
        return f"<Context {state} deadline in {remaining:.3f} s>"


class _Background(Context):
    """The root context: never cancelled, no deadline, and it tracks no children."""

    __slots__ = ()

    def __init__(self) -> None:
        self._setup(None)
        self._done = Channel(0)  # never closed

    def _adopt(self, child: Context) -> ChanflowError | None:
        # The root can never cancel its children, so it need not know them.
        return None

    def cancel(self) -> None:
        """Does nothing: the background context cannot be cancelled."""

    def after_func(self, callback: Callback) -> Callable[[], bool]:
        """The callback would never run, so it is not even kept; stop() returns True."""
        if not callable(callback):
            raise TypeError(f"after_func() takes a callable, not {callback!r}")
        return lambda: True

    def __repr__(self) -> str:
        return "<Context background>"


_BACKGROUND = _Background()


def background() -> Context:
    """Return the root context (always the same object); never blocks.

    It is never cancelled (``cancel()`` does nothing), has no deadline and no
    error, and its ``done`` channel never closes. Derive the contexts you cancel
    from it with ``background().with_cancel()`` or ``.with_timeout(seconds)``.
    """
    return _BACKGROUND


def _run_callback(callback: Callback) -> None:
    try:
        callback()
    except BaseException as error:
        report_callback_error(error, f"context callback {callback!r}")
