"""merge and tee: Go's fan-in and broadcast of channels, run by forwarder threads.

``merge`` starts one daemon forwarder thread per input (``chanflow-merge-<n>``), as
Go's fan-in starts one goroutine per input; ``tee`` starts one (``chanflow-tee-<n>``)
that hands each item to every output before it takes the next. A forwarder moves
items with the channels' ordinary blocking operations, so the channels on either
side may be used from threads and from coroutines on any event loop alike.

A forwarder must never hang, so it must learn when its consumers give up. The
channels it returns are a private subclass of :class:`Channel` whose ``close()``
also closes an internal *stop* channel: a forwarder waiting for input waits in a
``select`` on its input and on that stop channel, and one waiting to send is woken
by the close itself (a parked send on a channel that closes raises
``ChannelClosed``). So closing what ``merge`` or ``tee`` returned ends their
threads at once, without polling.

Items a forwarder took from an input but could not deliver because the consumer
closed the output go back to the front of that input, in order: nothing is lost,
and what the merged channel did not deliver can still be received from the inputs.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ._channel import _EMPTY, Channel, _check_capacity
from ._exceptions import ChannelClosed, WouldBlock
from ._select import Recv, Send, select
from ._sync import start_thread
from ._waiter import OK

__all__ = ["merge", "tee"]

T = TypeVar("T")

# The most items a merge forwarder takes from its input at once: one lock round-trip
# on each side per batch instead of per item.
_BATCH = 256


class _WatchedChannel(Channel[T]):
    """A Channel that calls ``on_close`` after it is closed, by whoever closes it."""

    __slots__ = ("_on_close",)

    def __init__(self, capacity: float, on_close: Callable[[], object]) -> None:
        super().__init__(capacity)
        self._on_close = on_close

    def close(self) -> None:
        """Close the channel (as :meth:`Channel.close`) and stop whatever feeds it.

        Idempotent, never blocks. A forwarder of ``merge``/``tee`` that fed this
        channel stops once no open channel is left for it to feed; an item it had
        taken and not delivered goes back to the front of its input.
        """
        super().close()
        self._on_close()


# -- helpers on the channels' locked core ------------------------------------------------


def _take_ready(source: Channel[T], most: int) -> list[T] | None:
    """Take up to ``most`` items that are ready, without waiting; None: closed and drained."""
    with source._lock:
        items = source._take_many_locked(most)
        if not items and source._closed:
            return None
    return items


def _room(channel: Channel[Any]) -> int:
    """How many items ``channel`` would take now without a wait (at least 1, at most _BATCH).

    Read without the lock: an estimate, which is all a batch size needs.
    """
    free = channel._limit - len(channel._buffer) + len(channel._receivers)
    return int(min(_BATCH, max(1, free)))


def _give_back(source: Channel[T], items: Sequence[T]) -> None:
    """Put ``items`` back at the front of ``source``, in order (they were taken from there).

    Like a cancelled receiver's item: the buffer may hold more than the capacity for
    a moment, and receivers parked meanwhile are served first, oldest item first.
    Works on a closed channel too (buffered items stay receivable after close).
    """
    if not items:
        return
    with source._lock:
        buffer = source._buffer
        buffer.extendleft(reversed(items))
        receivers = source._receivers
        while buffer and receivers:
            waiter, index = receivers.popleft()
            if waiter.claim():
                waiter.fire(index, buffer.popleft(), OK)


def _check_channel(channel: object, where: str, hint: str = "") -> None:
    if not isinstance(channel, Channel):
        hint = f" ({hint})" if hint and isinstance(channel, (list, tuple)) else ""
        raise TypeError(f"{where} must be a chanflow Channel, not {channel!r}{hint}")


def _checked_capacity(capacity: object, function: str) -> float:
    try:
        return _check_capacity(capacity)  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise type(error)(f"{function}(): {error}") from None


# -- merge -----------------------------------------------------------------------------------


class _Merge:
    """The shared state of one merge: its output, stop channel and live forwarders."""

    __slots__ = ("_left", "_lock", "out", "stop")

    def __init__(self, capacity: float, forwarders: int) -> None:
        self.stop: Channel[None] = Channel()
        self.out: Channel[Any] = _WatchedChannel(capacity, self.stop.close)
        self._lock = threading.Lock()
        self._left = forwarders

    def forward(self, source: Channel[Any]) -> None:
        """Move every item of ``source`` to the output until either side is done."""
        try:
            self._forward(source)
        finally:
            with self._lock:
                self._left -= 1
                last = self._left == 0
            if last:
                self.out.close()

    def _forward(self, source: Channel[Any]) -> None:
        out, stop = self.out, self.stop
        while not out.closed:
            # Take no more than the output can take at once: a forwarder holds about
            # one item that the output has not taken, as a goroutine would.
            items = _take_ready(source, _room(out))
            if items is None:
                return  # closed and drained
            if not items:
                selected = select(Recv(source), Recv(stop))
                if selected.index == 1 or not selected.ok:
                    return  # the consumer closed the output, or the input is done
                items = [selected.value]
                room = _room(out)
                if room > 1:
                    items.extend(_take_ready(source, room - 1) or ())
            try:
                if len(items) == 1:
                    out.send(items[0])
                else:
                    out.send_many(items)
            except ChannelClosed as closed:  # the consumer closed the output
                _give_back(source, items[closed.sent :])
                return


def merge(*channels: Channel[T], capacity: float = 0) -> Channel[T]:
    """Fan-in: a new channel that receives every item of every input channel.

    Returns at once; one daemon thread per distinct input (``chanflow-merge-<n>``)
    forwards that input's items, so items of one input arrive in the order they were
    sent, while items of different inputs interleave as they come. The returned
    channel (buffered by ``capacity``, default unbuffered) is closed once every input
    is closed and drained and all its items went out; with no inputs it is returned
    closed. An input given twice is forwarded once.

    The returned channel works from threads (``recv``, ``for``) and coroutines
    (``arecv``, ``async for``); the inputs may be fed from either.

    A consumer that stops early should ``close()`` the returned channel: the
    forwarders then stop at once (none hangs, waiting to send or to receive), and
    items they had taken but not delivered go back to the front of their inputs, so
    nothing is lost. A merged channel that is neither drained nor closed keeps its
    forwarders blocked, as Go's goroutines would be.

    Raises TypeError if an argument is not a Channel, TypeError/ValueError for a
    ``capacity`` that is not an int >= 0 or ``math.inf``.

    Cost: a thread start per input (about 50-100 us); then per item a receive and a
    send (a thread switch each way when they wait). A forwarder takes from its input
    only as many ready items as the output can take at once (at least one, at most
    256), moving them with one lock round-trip on each side: a buffered output makes
    merging cheap per item, and an unbuffered one leaves about one item per input in
    a forwarder's hands, as Go's goroutines would.
    """
    for position, channel in enumerate(channels):
        _check_channel(
            channel,
            f"merge() argument {position + 1}",
            "to merge a list, unpack it: merge(*channels)",
        )
    capacity = _checked_capacity(capacity, "merge")
    sources: list[Channel[T]] = []
    for channel in channels:
        if not any(channel is seen for seen in sources):
            sources.append(channel)
    if not sources:
        empty: Channel[T] = Channel(capacity)
        empty.close()
        return empty
    state = _Merge(capacity, len(sources))
    try:
        for source in sources:
            start_thread("chanflow-merge", functools.partial(state.forward, source))
    except BaseException:  # a thread could not start: stop the ones that did
        state.out.close()
        raise
    out: Channel[T] = state.out
    return out


# -- tee -------------------------------------------------------------------------------------


class _Tee:
    """The shared state of one tee: its input, outputs and stop channel."""

    __slots__ = ("outputs", "source", "stop")

    def __init__(self, source: Channel[Any], n: int, capacity: float) -> None:
        self.source = source
        self.stop: Channel[None] = Channel()
        self.outputs: list[Channel[Any]] = [
            _WatchedChannel(capacity, self._output_closed) for _ in range(n)
        ]

    def _output_closed(self) -> None:
        # Each close sets its flag before it calls this, so whichever of several
        # concurrent closes runs this last sees them all.
        if all(output.closed for output in self.outputs):
            self.stop.close()

    def forward(self) -> None:
        """Hand each item of the input to every open output, until either side is done."""
        try:
            self._forward()
        finally:
            for output in self.outputs:
                output.close()

    def _forward(self) -> None:
        source, stop = self.source, self.stop
        while not stop.closed:
            with source._lock:
                item = source._take_locked()
                drained = item is _EMPTY and source._closed
            if drained:
                return
            if item is _EMPTY:
                selected = select(Recv(source), Recv(stop))
                if selected.index == 1 or not selected.ok:
                    return  # every output was closed, or the input is done
                item = selected.value
            if not self._broadcast(item):
                _give_back(source, [item])  # nobody took it: it stays in the input
                return

    def _broadcast(self, item: Any) -> bool:
        """Send ``item`` on every open output, in whichever order they can take it.

        Returns once each output took it or was closed; False if none took it.
        """
        taken = False
        waiting: list[Channel[Any]] = []
        for output in self.outputs:
            try:
                output.send_nowait(item)
                taken = True
            except WouldBlock:
                waiting.append(output)
            except ChannelClosed:
                pass
        while waiting:
            try:
                selected = select(*(Send(output, item) for output in waiting))
            except ChannelClosed:  # one of them was closed: drop the closed ones
                waiting = [output for output in waiting if not output.closed]
                continue
            taken = True
            del waiting[selected.index]
        return taken


def tee(channel: Channel[T], n: int, capacity: float = 0) -> list[Channel[T]]:
    """Broadcast: ``n`` new channels that each receive every item of ``channel``, in order.

    Returns at once; one daemon thread (``chanflow-tee-<n>``) takes an item from
    ``channel``, sends it on every output (to whichever is ready first, then the
    others) and only then takes the next. So backpressure is Go's usual tee: the
    slowest output sets the pace, and an output nobody reads stops the whole tee
    once its buffer (``capacity``, default unbuffered) is full. Every output is
    closed once ``channel`` is closed and drained.

    An output closed by its consumer is dropped; the others keep receiving. Once
    every output is closed the thread stops at once (also while it waits for
    input), taking nothing more from ``channel``; an item it had taken that no
    output received goes back to the front of ``channel``.

    The outputs work from threads and coroutines alike; ``channel`` may be fed from
    either. Raises TypeError if ``channel`` is not a Channel, ValueError if ``n`` is
    not an int >= 1, TypeError/ValueError for a bad ``capacity``.

    Cost: a thread start (about 50-100 us); then per item one receive and ``n``
    sends (about 0.3 us each when they need not wait, a ``select`` over the outputs
    still waiting when some must).
    """
    _check_channel(channel, "tee() channel")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"tee() takes n, the number of outputs, as an int >= 1, not {n!r}")
    capacity = _checked_capacity(capacity, "tee")
    state = _Tee(channel, n, capacity)
    start_thread("chanflow-tee", state.forward)
    outputs: list[Channel[T]] = state.outputs
    return outputs
