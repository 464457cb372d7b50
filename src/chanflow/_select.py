"""Go's select statement: wait on several channel operations, complete exactly one.

The algorithm is Go's (runtime/select.go). Lock every channel of the select, in a
fixed order so two selects cannot deadlock; poll the cases in a random order and
complete the first ready one (which makes the choice among ready cases uniform);
otherwise park one waiter on every channel and unlock. While a select polls, it
is parked nowhere, so it can never match its own parked operation: a select that
sends and receives on the same unbuffered channel blocks, as in Go. A parked
select is completed by whichever channel first claims its waiter; the claim is an
atomic test-and-set, so exactly one case ever fires. The woken select then locks
its channels again to take its stale entries out of the other queues.
"""

from __future__ import annotations

from collections.abc import Sequence
from random import random as _random
from random import shuffle as _shuffle
from typing import Any, Generic, NamedTuple, TypeVar

from ._channel import _EMPTY, Channel, Entry
from ._exceptions import ChannelClosed
from ._waiter import CLOSED, AsyncWaiter, ThreadWaiter, Waiter, check_timeout, discard

__all__ = ["Recv", "Selected", "Send", "aselect", "select"]

T = TypeVar("T")


class Recv(Generic[T]):
    """A select case that receives from ``channel`` (None: never ready, like a nil channel)."""

    __slots__ = ("channel",)

    def __init__(self, channel: Channel[T] | None) -> None:
        _check_channel(channel, "Recv")
        self.channel = channel

    def __repr__(self) -> str:
        return f"Recv({self.channel!r})"


class Send(Generic[T]):
    """A select case that sends ``item`` on ``channel`` (None: never ready)."""

    __slots__ = ("channel", "item")

    def __init__(self, channel: Channel[T] | None, item: T) -> None:
        _check_channel(channel, "Send")
        self.channel = channel
        self.item = item

    def __repr__(self) -> str:
        return f"Send({self.channel!r}, {self.item!r})"


Case = Recv[Any] | Send[Any]


class Selected(NamedTuple):
    """What a select did: which case fired, and what it received.

    For a Recv case: ``value`` is the item and ``ok`` True, or ``(None, False)``
    when the channel is closed and drained. For a Send case: ``(None, True)``.
    ``index`` is -1 when ``default=True`` and no case was ready.
    """

    index: int  # type: ignore[assignment]  # shadows tuple.index, as Go names it
    value: Any
    ok: bool


_DEFAULT = Selected(-1, None, False)


def _check_channel(channel: object, kind: str) -> None:
    if channel is not None and not isinstance(channel, Channel):
        raise TypeError(f"{kind}() takes a chanflow Channel or None, not {channel!r}")


def _check_case(position: int, case: object) -> None:
    if not isinstance(case, (Recv, Send)):
        raise TypeError(
            f"select case {position} must be cf.Recv(channel) or cf.Send(channel, item), "
            f"not {case!r}"
        )


class _Selection:
    """One select call's cases, their channels and its parked entries."""

    __slots__ = ("cases", "channels", "entries", "order")

    def __init__(self, cases: Sequence[Case]) -> None:
        self.cases = cases
        order: list[int] = []
        channels: list[Channel[Any]] = []
        for index, case in enumerate(cases):
            if type(case) is not Recv and type(case) is not Send:
                _check_case(index, case)
            channel = case.channel
            if channel is not None:
                order.append(index)
                if channel not in channels:  # identity: channels define no __eq__
                    channels.append(channel)
        if len(order) == 2:
            if _random() < 0.5:
                order.reverse()
        elif len(order) > 2:
            _shuffle(order)
        if len(channels) > 1:
            channels.sort(key=id)  # one global lock order: two selects never deadlock
        self.order = order
        self.channels = channels
        self.entries: list[tuple[Channel[Any], Entry]] = []

    def lock(self) -> None:
        for channel in self.channels:
            channel._lock.acquire()

    def unlock(self) -> None:
        for channel in reversed(self.channels):
            channel._lock.release()

    def poll_locked(self) -> Selected | None:
        """Complete the first ready case in random order, or return None."""
        cases = self.cases
        for index in self.order:
            case = cases[index]
            channel: Channel[Any] = case.channel  # type: ignore[assignment]
            if type(case) is Recv:
                item = channel._take_locked()
                if item is not _EMPTY:
                    return Selected(index, item, True)
                if channel._closed:
                    return Selected(index, None, False)
            else:
                if channel._closed:
                    raise ChannelClosed(f"select case {index} sends on a closed channel")
                if channel._put_locked(case.item):  # type: ignore[union-attr]
                    return Selected(index, None, True)
        return None

    def park_locked(self, waiter: Waiter) -> None:
        cases = self.cases
        for index in self.order:
            case = cases[index]
            channel: Channel[Any] = case.channel  # type: ignore[assignment]
            if type(case) is Recv:
                recv_entry = (waiter, index)
                channel._receivers.append(recv_entry)
                self.entries.append((channel, recv_entry))
            else:
                send_entry = (waiter, index, case.item)  # type: ignore[union-attr]
                channel._senders.append(send_entry)
                self.entries.append((channel, send_entry))

    def begin(
        self, waiter_type: type[Waiter], timeout: float | None, default: bool
    ) -> Selected | Waiter:
        """Poll; if nothing is ready, return the result for default/timeout, or park."""
        self.lock()
        try:
            selected = self.poll_locked()
            if selected is not None:
                return selected
            if default:
                return _DEFAULT
            if timeout is not None and timeout <= 0:
                raise TimeoutError(f"select timed out after {timeout} s")
            waiter = waiter_type()
            self.park_locked(waiter)
            return waiter
        finally:
            self.unlock()

    def finish(self, waiter: Waiter) -> bool:
        """Unpark from every channel. True if a case fired, False if none did."""
        self.lock()
        try:
            fired = not waiter.claim()
            for channel, entry in self.entries:
                queue = channel._receivers if len(entry) == 2 else channel._senders
                discard(queue, entry)
        finally:
            self.unlock()
        return fired

    def outcome(self, waiter: Waiter, fired: bool, timeout: float | None) -> Selected:
        if not fired:
            raise TimeoutError(f"select timed out after {timeout} s")
        index = waiter.index
        if type(self.cases[index]) is Recv:
            if waiter.status == CLOSED:
                return Selected(index, None, False)
            return Selected(index, waiter.value, True)
        if waiter.status == CLOSED:
            raise ChannelClosed(f"select case {index} sends on a closed channel")
        return Selected(index, None, True)

    def abandon(self, waiter: Waiter) -> None:
        """Interrupted while parked: unpark, and give back an item already received."""
        if self.finish(waiter) and waiter.status != CLOSED:
            case = self.cases[waiter.index]
            if type(case) is Recv:
                case.channel._put_back(waiter.value)  # type: ignore[union-attr]


def select(*cases: Case, timeout: float | None = None, default: bool = False) -> Selected:
    """Wait until one of ``cases`` can proceed, perform exactly that one, and say which.

    Blocks until a case is ready; when several are, one is chosen uniformly at
    random. With ``default=True`` it never blocks and returns index -1 if nothing
    is ready. Raises TimeoutError after ``timeout`` seconds (no case fired), and
    ChannelClosed if the chosen case is a Send on a closed channel (also when the
    channel closes while the select waits). A case on a ``None`` channel is never
    ready; ``select()`` with no ready-able case waits for its timeout (forever if none).

    Cost: about 2 us for two cases when one is ready at once (a plain recv costs
    0.3 us); a select that waits adds a waiter per case plus the wake-up.
    """
    timeout = check_timeout(timeout)
    selection = _Selection(cases)
    begun = selection.begin(ThreadWaiter, timeout, default)
    if type(begun) is Selected:
        return begun
    waiter: ThreadWaiter = begun  # type: ignore[assignment]
    try:
        waiter.wait(timeout)
    except BaseException:  # KeyboardInterrupt while parked
        selection.abandon(waiter)
        raise
    # Always unpark: being woken by one channel leaves stale entries on the others.
    return selection.outcome(waiter, selection.finish(waiter), timeout)


async def aselect(*cases: Case, timeout: float | None = None, default: bool = False) -> Selected:
    """Async twin of :func:`select`; waits without blocking the event loop.

    Atomic with respect to cancellation: a cancelled aselect performed no case (an
    item it had already received goes back to the front of its channel) and
    CancelledError propagates.
    """
    timeout = check_timeout(timeout)
    selection = _Selection(cases)
    begun = selection.begin(AsyncWaiter, timeout, default)
    if type(begun) is Selected:
        return begun
    waiter: AsyncWaiter = begun  # type: ignore[assignment]
    try:
        await waiter.wait(timeout)
    except BaseException:  # CancelledError while parked
        selection.abandon(waiter)
        raise
    return selection.outcome(waiter, selection.finish(waiter), timeout)
