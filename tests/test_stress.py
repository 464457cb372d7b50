"""Property-based stress: random mixes of threads and coroutines sending, receiving,
selecting and closing on one channel must never lose, duplicate or reorder an item,
and must never hang."""

from __future__ import annotations

import asyncio
import math
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import hypothesis.strategies as st
from hypothesis import given, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import chanflow as cf
from helpers import run_threads

SENDER_MODES = ["send", "select", "send_many", "async", "aselect"]
RECEIVER_MODES = ["recv", "select", "recv_many", "async", "aselect", "polling"]

Item = tuple[int, int]


@dataclass
class Run:
    channel: cf.Channel[Item]
    close_after: int | None  # close once this many items were received; None: when senders end
    received: list[list[Item]] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    count: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)

    def note_received(self, slot: int, item: Item) -> None:
        self.received[slot].append(item)
        with self.cond:
            self.count += 1
            self.cond.notify_all()


def make_sender(run: Run, sender: int, mode: str, n_items: int) -> Callable[[], None]:
    ch = run.channel
    never: cf.Channel[Item] = cf.Channel()
    items = [(sender, seq) for seq in range(n_items)]

    def record(count: int) -> None:
        run.sent[sender] = count

    def sync_sender() -> None:
        sent = 0
        try:
            if mode == "send_many":
                try:
                    ch.send_many(items)
                    sent = n_items
                except cf.ChannelClosed as error:
                    sent = error.sent
                return
            for item in items:
                if mode == "send":
                    ch.send(item)
                else:
                    cf.select(cf.Send(ch, item), cf.Recv(never), cf.Send(None, item))
                sent += 1
        except cf.ChannelClosed:
            pass
        finally:
            record(sent)

    async def async_sender() -> None:
        sent = 0
        try:
            for item in items:
                if mode == "async":
                    await ch.asend(item)
                else:
                    await cf.aselect(cf.Send(ch, item), cf.Recv(never))
                sent += 1
        except cf.ChannelClosed:
            pass
        finally:
            record(sent)

    if mode in ("async", "aselect"):
        return lambda: asyncio.run(async_sender())
    return sync_sender


def make_receiver(run: Run, slot: int, mode: str) -> Callable[[], None]:
    ch = run.channel
    never: cf.Channel[Item] = cf.Channel()

    def sync_receiver() -> None:
        while True:
            if mode == "recv":
                try:
                    batch = [ch.recv()]
                except cf.ChannelClosed:
                    return
            elif mode == "recv_many":
                try:
                    batch = ch.recv_many(4)
                except cf.ChannelClosed:
                    return
            elif mode == "polling":
                try:
                    batch = [ch.recv(timeout=0.0005)]
                except TimeoutError:
                    continue
                except cf.ChannelClosed:
                    return
            else:
                selected = cf.select(cf.Recv(never), cf.Recv(ch), cf.Recv(None))
                if not selected.ok:
                    return
                batch = [selected.value]
            for item in batch:
                run.note_received(slot, item)

    async def async_receiver() -> None:
        while True:
            if mode == "async":
                try:
                    item = await ch.arecv()
                except cf.ChannelClosed:
                    return
            else:
                selected = await cf.aselect(cf.Recv(ch), cf.Recv(never))
                if not selected.ok:
                    return
                item = selected.value
            run.note_received(slot, item)

    if mode in ("async", "aselect"):
        return lambda: asyncio.run(async_receiver())
    return sync_receiver


def make_closer(run: Run, senders: list[threading.Event]) -> Callable[[], None]:
    def closer() -> None:
        if run.close_after is None:
            for finished in senders:
                assert finished.wait(20)
        else:
            with run.cond:
                # Every sender may finish before close_after items exist: stop waiting then.
                while run.count < run.close_after and not all(e.is_set() for e in senders):
                    run.cond.wait(0.01)
        run.channel.close()

    return closer


def finishing(fn: Callable[[], None], finished: threading.Event) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        finally:
            finished.set()

    return run


@settings(max_examples=150, deadline=None)
@given(
    capacity=st.sampled_from([0, 1, 3, math.inf]),
    senders=st.lists(
        st.tuples(st.sampled_from(SENDER_MODES), st.integers(0, 300)), min_size=1, max_size=4
    ),
    receivers=st.lists(st.sampled_from(RECEIVER_MODES), min_size=1, max_size=4),
    close_after=st.none() | st.integers(0, 100),
)
def test_no_item_is_lost_duplicated_or_reordered(
    capacity: float,
    senders: list[tuple[str, int]],
    receivers: list[str],
    close_after: int | None,
) -> None:
    run = Run(cf.Channel(capacity), close_after)
    run.received = [[] for _ in receivers]
    run.sent = [0] * len(senders)
    finished = [threading.Event() for _ in senders]
    targets = [
        finishing(make_sender(run, i, mode, n), finished[i]) for i, (mode, n) in enumerate(senders)
    ]
    targets += [make_receiver(run, slot, mode) for slot, mode in enumerate(receivers)]
    run_threads(*targets, make_closer(run, finished), timeout=30)

    got = Counter(item for part in run.received for item in part)
    expected = Counter((s, seq) for s, count in enumerate(run.sent) for seq in range(count))
    assert got == expected
    for part in run.received:
        for sender in range(len(senders)):
            seqs = [seq for s, seq in part if s == sender]
            assert seqs == sorted(seqs)


class ChannelModel(RuleBasedStateMachine):
    """Single-threaded operations against a model: a bounded deque and a closed flag."""

    def __init__(self) -> None:
        super().__init__()
        self.capacity = 3
        self.channel: cf.Channel[int] = cf.Channel(self.capacity)
        self.model: deque[int] = deque()
        self.closed = False
        self.next_item = 0

    def _item(self) -> int:
        self.next_item += 1
        return self.next_item

    @rule()
    def send_nowait(self) -> None:
        item = self._item()
        if self.closed:
            try:
                self.channel.send_nowait(item)
                raise AssertionError("send on a closed channel succeeded")
            except cf.ChannelClosed:
                return
        if len(self.model) == self.capacity:
            try:
                self.channel.send_nowait(item)
                raise AssertionError("send on a full channel succeeded")
            except cf.WouldBlock:
                return
        self.channel.send_nowait(item)
        self.model.append(item)

    @rule()
    def recv_nowait(self) -> None:
        if self.model:
            assert self.channel.recv_nowait() == self.model.popleft()
            return
        expected = cf.ChannelClosed if self.closed else cf.WouldBlock
        try:
            self.channel.recv_nowait()
            raise AssertionError("recv on an empty channel succeeded")
        except expected:
            pass

    @rule(n=st.integers(1, 5))
    def recv_many_now(self, n: int) -> None:
        if self.model:
            expected = [self.model.popleft() for _ in range(min(n, len(self.model)))]
            assert self.channel.recv_many(n, timeout=0) == expected
            return
        error = cf.ChannelClosed if self.closed else TimeoutError
        try:
            self.channel.recv_many(n, timeout=0)
            raise AssertionError("recv_many on an empty channel succeeded")
        except error:
            pass

    @precondition(lambda self: not self.closed)
    @rule(n=st.integers(0, 3))
    def send_many_that_fits(self, n: int) -> None:
        n = min(n, self.capacity - len(self.model))
        items = [self._item() for _ in range(n)]
        self.channel.send_many(items)
        self.model.extend(items)

    @rule()
    def select_default(self) -> None:
        selected = cf.select(cf.Recv(self.channel), default=True)
        if self.model:
            assert selected == (0, self.model.popleft(), True)
        elif self.closed:
            assert selected == (0, None, False)
        else:
            assert selected == (-1, None, False)

    @rule()
    def close(self) -> None:
        self.channel.close()
        self.closed = True

    @invariant()
    def lengths_agree(self) -> None:
        assert len(self.channel) == len(self.model)
        assert self.channel.closed == self.closed


TestChannelModel = ChannelModel.TestCase
TestChannelModel.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)
