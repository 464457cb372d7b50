"""Go's own channel test programs (go/test/chan/*.go), ported to chanflow.

Each keeps the shape of the Go original; goroutines become threads (or tasks), and
where Go lets goroutines leak at exit, the port stops them so no test leaves a
thread behind.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
from collections import Counter
from collections.abc import Callable

import pytest

import chanflow as cf
from helpers import run_threads

# -- sieve1.go: the concurrent prime sieve ------------------------------------------------


def test_sieve_prints_the_first_primes() -> None:
    quit_: cf.Channel[None] = cf.Channel()
    threads: list[threading.Thread] = []

    def start(fn: Callable[[], None]) -> None:
        thread = threading.Thread(target=fn)
        threads.append(thread)
        thread.start()

    def generate(out: cf.Channel[int]) -> None:
        for i in itertools.count(2):
            if cf.select(cf.Send(out, i), cf.Recv(quit_)).index == 1:
                return

    def filter_(inp: cf.Channel[int], out: cf.Channel[int], prime: int) -> None:
        while True:
            selected = cf.select(cf.Recv(inp), cf.Recv(quit_))
            if selected.index == 1:
                return
            keep = selected.value % prime != 0
            if keep and cf.select(cf.Send(out, selected.value), cf.Recv(quit_)).index == 1:
                return

    ch: cf.Channel[int] = cf.Channel()
    start(lambda: generate(ch))
    primes = []
    for _ in range(25):
        prime = ch.recv(timeout=10)
        primes.append(prime)
        nxt: cf.Channel[int] = cf.Channel()
        start(lambda i=ch, o=nxt, p=prime: filter_(i, o, p))  # type: ignore[misc]
        ch = nxt
    quit_.close()
    for thread in threads:
        thread.join(10)
    assert primes == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67,
                      71, 73, 79, 83, 89, 97]  # fmt: skip


# -- fifo.go: asynchronous and synchronous FIFO order ----------------------------------------


def test_async_fifo() -> None:
    n = 10
    ch: cf.Channel[int] = cf.Channel(n)
    for i in range(n):
        ch.send(i)
    for i in range(n):
        assert ch.recv() == i


def test_sync_fifo_through_a_chain_of_threads() -> None:
    # Each link waits for its turn on `inp`, sends its value, then passes the turn on.
    n = 10
    ch: cf.Channel[int] = cf.Channel()

    def link(value: int, inp: cf.Channel[int], out: cf.Channel[int]) -> None:
        inp.recv()
        ch.send(value)
        out.send(1)

    start: cf.Channel[int] = cf.Channel()
    inp = start
    targets = []
    for i in range(n):
        out: cf.Channel[int] = cf.Channel()
        targets.append(lambda v=i, a=inp, b=out: link(v, a, b))  # type: ignore[misc]
        inp = out
    last = inp

    def drive() -> None:
        start.send(0)
        for i in range(n):
            assert ch.recv() == i
        last.recv()

    run_threads(*targets, drive)


# -- doubleselect.go: a value is received exactly once when senders select ---------------------


def test_doubleselect() -> None:
    iterations = 5000
    channels = [cf.Channel[int]() for _ in range(4)]
    mux: cf.Channel[int] = cf.Channel()
    received: Counter[int] = Counter()

    def sender() -> None:
        for i in range(iterations):
            cf.select(*(cf.Send(c, i) for c in channels))
        for c in channels:
            c.close()

    def multiplex(c: cf.Channel[int]) -> Callable[[], None]:
        def run() -> None:
            for value in c:
                mux.send(value)

        return run

    def receive() -> None:
        remaining = iterations
        while remaining:
            received[mux.recv()] += 1
            remaining -= 1

    run_threads(sender, *(multiplex(c) for c in channels), receive)
    assert received == Counter(range(iterations))


# -- nonblock.go: non-blocking operations with select/default -----------------------------------


@pytest.mark.parametrize("capacity", [0, 1, 10])
def test_nonblock(capacity: int) -> None:
    ch: cf.Channel[int] = cf.Channel(capacity)
    assert cf.select(cf.Recv(ch), default=True).index == -1
    if capacity == 0:
        assert cf.select(cf.Send(ch, 1), default=True).index == -1
        sync = threading.Event()

        def receiver() -> None:
            sync.set()
            assert ch.recv(timeout=5) == 7

        thread = threading.Thread(target=receiver)
        thread.start()
        sync.wait(5)
        # Go's test loops until the receiver is ready; so do we (bounded).
        for _ in range(100_000):
            if cf.select(cf.Send(ch, 7), default=True).index == 0:
                break
        else:
            pytest.fail("receiver never became ready")
        thread.join(5)
    else:
        for i in range(capacity):
            assert cf.select(cf.Send(ch, i), default=True).index == 0
        assert cf.select(cf.Send(ch, 99), default=True).index == -1
        for i in range(capacity):
            assert cf.select(cf.Recv(ch), default=True) == (0, i, True)


# -- closedchan.go: the behaviour of closed channels ----------------------------------------


@pytest.mark.parametrize("capacity", [0, 10, math.inf])
def test_closedchan(capacity: float) -> None:
    ch: cf.Channel[int] = cf.Channel(capacity)
    if capacity:
        ch.send(7)
    ch.close()
    if capacity:
        assert ch.recv() == 7
    for _ in range(3):  # every receive on a closed, drained channel fails at once
        with pytest.raises(cf.ChannelClosed):
            ch.recv()
        assert cf.select(cf.Recv(ch)) == (0, None, False)
        assert cf.select(cf.Recv(ch), default=True) == (0, None, False)
    with pytest.raises(cf.ChannelClosed):
        ch.send(1)
    with pytest.raises(cf.ChannelClosed):
        cf.select(cf.Send(ch, 1), default=True)
    ch.close()  # closing twice is allowed here (Go panics; Python code prefers idempotence)


# -- select2/select3.go: what blocks and what does not ------------------------------------


def test_select_blocking_rules() -> None:
    never_ready = [
        (cf.Recv(None),),
        (cf.Send(None, 1),),
        (cf.Recv(cf.Channel()),),
        (cf.Send(cf.Channel(), 1),),
    ]
    for cases in never_ready:
        with pytest.raises(TimeoutError):
            cf.select(*cases, timeout=0.005)

    buffered: cf.Channel[int] = cf.Channel(1)
    assert cf.select(cf.Send(buffered, 1), timeout=0.005).index == 0  # room: does not block
    closed: cf.Channel[int] = cf.Channel()
    closed.close()
    assert cf.select(cf.Recv(closed), timeout=0.005) == (0, None, False)


# -- the seeds' ping-pong between two goroutines, as coroutines -----------------------------------


def test_ping_pong_between_coroutines() -> None:
    async def main() -> int:
        ping: cf.Channel[int] = cf.Channel()
        pong: cf.Channel[int] = cf.Channel()

        async def player(inp: cf.Channel[int], out: cf.Channel[int]) -> int:
            last = -1
            async for ball in inp:
                last = ball
                if ball >= 1000:
                    out.close()
                    break
                await out.asend(ball + 1)
            return last

        a = asyncio.ensure_future(player(ping, pong))
        b = asyncio.ensure_future(player(pong, ping))
        await ping.asend(0)
        return max(await asyncio.gather(a, b))

    assert asyncio.run(main()) == 1000
