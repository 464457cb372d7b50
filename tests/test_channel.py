"""Channel: buffering, blocking, timeouts, close, batching, threads and asyncio together."""

from __future__ import annotations

import asyncio
import math
import threading
from collections import Counter

import pytest

import chanflow as cf
from helpers import run_threads, wait_until

# -- construction ---------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, 1, 10, math.inf])
def test_capacity_is_reported_as_given(capacity: float) -> None:
    assert cf.Channel(capacity).capacity == capacity


@pytest.mark.parametrize("capacity", [-1, 1.5, math.nan, -math.inf])
def test_bad_capacity_value_is_refused(capacity: float) -> None:
    with pytest.raises(ValueError, match="capacity"):
        cf.Channel(capacity)


@pytest.mark.parametrize("capacity", ["3", None, True, [1]])
def test_bad_capacity_type_is_refused(capacity: object) -> None:
    with pytest.raises(TypeError, match="capacity"):
        cf.Channel(capacity)  # type: ignore[arg-type]


def test_channel_is_truthy_even_when_empty_and_len_counts_buffered_items() -> None:
    ch: cf.Channel[int] = cf.Channel(3)
    assert bool(ch) is True
    assert len(ch) == 0
    ch.send(1)
    ch.send(2)
    assert len(ch) == 2
    ch.close()
    assert bool(ch) is True
    assert "closed" in repr(ch)


def test_bad_timeouts_are_refused() -> None:
    ch: cf.Channel[int] = cf.Channel()
    with pytest.raises(TypeError, match="timeout"):
        ch.recv(timeout="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        ch.recv(timeout=math.nan)


# -- buffered and unbounded ---------------------------------------------------------------


def test_buffered_channel_is_fifo_and_blocks_only_when_full() -> None:
    ch: cf.Channel[int] = cf.Channel(3)
    for i in range(3):
        ch.send_nowait(i)
    with pytest.raises(cf.WouldBlock):
        ch.send_nowait(3)
    with pytest.raises(TimeoutError):
        ch.send(3, timeout=0.01)
    assert [ch.recv(), ch.recv_nowait(), ch.recv(timeout=0)] == [0, 1, 2]
    with pytest.raises(cf.WouldBlock):
        ch.recv_nowait()
    with pytest.raises(TimeoutError):
        ch.recv(timeout=0.01)


def test_unbounded_channel_never_blocks_a_sender() -> None:
    ch: cf.Channel[int] = cf.Channel(math.inf)
    for i in range(10_000):
        ch.send_nowait(i)
    assert len(ch) == 10_000
    assert ch.recv_many(20_000) == list(range(10_000))


def test_timed_out_send_never_delivers_its_item_later() -> None:
    ch: cf.Channel[str] = cf.Channel(1)
    ch.send("first")
    with pytest.raises(TimeoutError):
        ch.send("ghost", timeout=0.02)
    assert ch.recv() == "first"
    ch.send("second")
    ch.close()
    assert list(ch) == ["second"]


def test_parked_sender_moves_into_the_buffer_when_space_frees() -> None:
    ch: cf.Channel[int] = cf.Channel(1)
    ch.send(1)
    sent = threading.Event()

    def sender() -> None:
        ch.send(2, timeout=5)
        sent.set()

    thread = threading.Thread(target=sender)
    thread.start()
    wait_until(lambda: len(ch._senders) == 1)
    assert ch.recv() == 1
    # The sender's item is already in the buffer: it completed without running again.
    assert len(ch) == 1
    assert sent.wait(5)
    thread.join()
    assert ch.recv_nowait() == 2


# -- unbuffered -----------------------------------------------------------------------


def test_unbuffered_send_waits_for_a_receiver() -> None:
    ch: cf.Channel[int] = cf.Channel()
    with pytest.raises(cf.WouldBlock):
        ch.send_nowait(1)
    with pytest.raises(TimeoutError):
        ch.send(1, timeout=0.02)
    assert len(ch) == 0
    received: list[int] = []
    receiver = threading.Thread(target=lambda: received.append(ch.recv(timeout=5)))
    receiver.start()
    wait_until(lambda: len(ch._receivers) == 1)
    ch.send_nowait(7)  # a parked receiver makes an unbuffered send ready
    receiver.join()
    assert received == [7]


def test_unbuffered_send_returns_only_after_the_item_was_taken() -> None:
    ch: cf.Channel[int] = cf.Channel()
    returned = threading.Event()

    def sender() -> None:
        ch.send(1, timeout=5)
        returned.set()

    thread = threading.Thread(target=sender)
    thread.start()
    wait_until(lambda: len(ch._senders) == 1)
    assert not returned.is_set()
    assert len(ch) == 0  # the item waits with its sender, not in a buffer
    assert ch.recv() == 1
    assert returned.wait(5)
    thread.join()


# -- close -----------------------------------------------------------------------------


def test_close_is_idempotent_and_keeps_buffered_items_receivable() -> None:
    ch: cf.Channel[int] = cf.Channel(5)
    ch.send_many([1, 2, 3])
    ch.close()
    ch.close()
    assert ch.closed
    assert [ch.recv(), ch.recv_nowait()] == [1, 2]
    assert list(ch) == [3]
    for _ in range(3):
        with pytest.raises(cf.ChannelClosed):
            ch.recv()
        with pytest.raises(cf.ChannelClosed):
            ch.recv_nowait()
        with pytest.raises(cf.ChannelClosed):
            ch.recv_many(5)
    with pytest.raises(cf.ChannelClosed):
        ch.send(4)
    with pytest.raises(cf.ChannelClosed):
        ch.send_nowait(4)


def test_close_wakes_parked_senders_and_receivers() -> None:
    full: cf.Channel[int] = cf.Channel(1)
    full.send(0)
    empty: cf.Channel[int] = cf.Channel(0)
    outcomes: list[str] = []
    lock = threading.Lock()

    def expect_closed(fn: object) -> None:
        try:
            fn()  # type: ignore[operator]
        except cf.ChannelClosed:
            with lock:
                outcomes.append("closed")

    threads = [
        threading.Thread(target=expect_closed, args=(lambda: full.send(1),)) for _ in range(3)
    ]
    threads += [threading.Thread(target=expect_closed, args=(empty.recv,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(full._senders) == 3 and len(empty._receivers) == 3)
    full.close()
    empty.close()
    for thread in threads:
        thread.join(5)
    assert outcomes == ["closed"] * 6
    assert list(full) == [0]  # the blocked senders' items never went in


def test_close_wakes_parked_coroutines() -> None:
    async def main() -> None:
        empty: cf.Channel[int] = cf.Channel()
        full: cf.Channel[int] = cf.Channel(1)
        full.send(0)
        receivers = [asyncio.ensure_future(empty.arecv()) for _ in range(3)]
        senders = [asyncio.ensure_future(full.asend(i)) for i in range(3)]
        await asyncio.sleep(0)
        empty.close()
        full.close()
        for task in receivers + senders:
            with pytest.raises(cf.ChannelClosed):
                await task

    asyncio.run(main())


# -- batches ------------------------------------------------------------------------------


def test_recv_many_returns_what_is_ready_up_to_max_items() -> None:
    ch: cf.Channel[int] = cf.Channel(10)
    ch.send_many(range(7))
    assert ch.recv_many(3) == [0, 1, 2]
    assert ch.recv_many(10) == [3, 4, 5, 6]
    with pytest.raises(TimeoutError):
        ch.recv_many(10, timeout=0.01)
    with pytest.raises(ValueError, match="max_items"):
        ch.recv_many(0)


def test_recv_many_waits_for_the_first_item() -> None:
    ch: cf.Channel[int] = cf.Channel(10)
    got: list[list[int]] = []
    thread = threading.Thread(target=lambda: got.append(ch.recv_many(5, timeout=5)))
    thread.start()
    wait_until(lambda: len(ch._receivers) == 1)
    ch.send(42)
    thread.join()
    assert got == [[42]]


def test_recv_many_takes_from_parked_senders_of_an_unbuffered_channel() -> None:
    ch: cf.Channel[int] = cf.Channel()
    threads = [threading.Thread(target=ch.send, args=(i, 5)) for i in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(ch._senders) == 4)
    assert sorted(ch.recv_many(10)) == [0, 1, 2, 3]
    for thread in threads:
        thread.join()


def test_send_many_reports_how_many_went_in_when_the_channel_closes() -> None:
    ch: cf.Channel[int] = cf.Channel(3)
    errors: list[cf.ChannelClosed] = []

    def sender() -> None:
        try:
            ch.send_many(range(10))
        except cf.ChannelClosed as error:
            errors.append(error)

    thread = threading.Thread(target=sender)
    thread.start()
    wait_until(lambda: len(ch._senders) == 1)
    assert ch.recv_many(2) == [0, 1]  # two more items (3, 4) can now go in
    wait_until(lambda: len(ch._senders) == 1)
    ch.close()
    thread.join(5)
    assert [e.sent for e in errors] == [5]
    assert list(ch) == [2, 3, 4]


def test_send_many_timeout_carries_the_sent_count() -> None:
    ch: cf.Channel[int] = cf.Channel(2)
    with pytest.raises(TimeoutError) as info:
        ch.send_many(iter(range(5)), timeout=0.02)
    assert info.value.sent == 2  # type: ignore[attr-defined]
    assert ch.recv_many(5) == [0, 1]


def test_send_many_pulls_lazily_from_an_endless_iterator() -> None:
    import itertools

    ch: cf.Channel[int] = cf.Channel(4)
    pulled = itertools.count()
    source = (next(pulled) for _ in itertools.count())
    with pytest.raises(TimeoutError):
        ch.send_many(source, timeout=0.02)
    # 4 in the buffer plus at most one chunk held while waiting for room.
    assert next(pulled) <= 4 + 1 + 1


def test_async_batches() -> None:
    async def main() -> list[int]:
        ch: cf.Channel[int] = cf.Channel(4)
        producer = asyncio.ensure_future(ch.asend_many(range(100)))
        received: list[int] = []
        while len(received) < 100:
            received += await ch.arecv_many(8)
        await producer
        return received

    assert asyncio.run(main()) == list(range(100))


# -- iteration ----------------------------------------------------------------------------


def test_iteration_drains_until_closed() -> None:
    ch: cf.Channel[int] = cf.Channel()

    def producer() -> None:
        for i in range(100):
            ch.send(i)
        ch.close()

    thread = threading.Thread(target=producer)
    thread.start()
    assert list(ch) == list(range(100))
    thread.join()


def test_async_iteration_drains_until_closed_fed_by_a_thread() -> None:
    async def main() -> list[int]:
        ch: cf.Channel[int] = cf.Channel(2)

        def producer() -> None:
            ch.send_many(range(50))
            ch.close()

        thread = threading.Thread(target=producer)
        thread.start()
        items = [item async for item in ch]
        thread.join()
        return items

    assert asyncio.run(main()) == list(range(50))


# -- threads and asyncio together -------------------------------------------------------------


def test_waiting_coroutine_does_not_block_the_event_loop() -> None:
    async def main() -> tuple[int, int]:
        ch: cf.Channel[int] = cf.Channel()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        tick_task = asyncio.ensure_future(ticker())
        threading.Timer(0.1, ch.send, args=(5,)).start()
        value = await ch.arecv(timeout=5)
        tick_task.cancel()
        return value, ticks

    value, ticks = asyncio.run(main())
    assert value == 5
    assert ticks > 10  # the loop kept running while arecv waited


def test_thread_sends_while_coroutines_receive_and_vice_versa() -> None:
    to_loop: cf.Channel[int] = cf.Channel()
    from_loop: cf.Channel[int] = cf.Channel()
    n = 2000

    async def main() -> list[int]:
        async def echo() -> None:
            async for item in to_loop:
                await from_loop.asend(item * 2)
            from_loop.close()

        task = asyncio.ensure_future(echo())
        await task
        return []

    def feeder() -> None:
        for i in range(n):
            to_loop.send(i)
        to_loop.close()

    got: list[int] = []
    run_threads(lambda: asyncio.run(main()), feeder, lambda: got.extend(from_loop))
    assert got == [2 * i for i in range(n)]


def test_coroutines_on_two_event_loops_share_a_channel() -> None:
    ch: cf.Channel[int] = cf.Channel(3)
    n = 1000
    received: list[int] = []

    async def produce() -> None:
        for i in range(n):
            await ch.asend(i)
        ch.close()

    async def consume() -> None:
        async for item in ch:
            received.append(item)

    run_threads(lambda: asyncio.run(produce()), lambda: asyncio.run(consume()))
    assert received == list(range(n))


def test_async_timeouts_raise_builtin_timeout_error() -> None:
    async def main() -> None:
        ch: cf.Channel[int] = cf.Channel(1)
        with pytest.raises(TimeoutError):
            await ch.arecv(timeout=0.01)
        await ch.asend(1)
        with pytest.raises(TimeoutError):
            await ch.asend(2, timeout=0.01)
        assert await ch.arecv() == 1
        with pytest.raises(cf.WouldBlock):
            ch.recv_nowait()  # the timed-out item left no trace

    asyncio.run(main())


# -- cancellation atomicity -------------------------------------------------------------------


def test_cancelled_receiver_gives_back_an_item_it_was_handed() -> None:
    async def main() -> None:
        ch: cf.Channel[str] = cf.Channel()
        receiver = asyncio.ensure_future(ch.arecv())
        await asyncio.sleep(0)  # the receiver parks
        ch.send_nowait("item")  # handed over to the parked receiver...
        receiver.cancel()  # ...which is cancelled before it could run
        with pytest.raises(asyncio.CancelledError):
            await receiver
        assert ch.recv_nowait() == "item"  # back at the front of the channel

    asyncio.run(main())


def test_given_back_item_goes_before_older_buffered_items() -> None:
    async def main() -> None:
        ch: cf.Channel[str] = cf.Channel(5)
        receiver = asyncio.ensure_future(ch.arecv())
        await asyncio.sleep(0)
        ch.send_nowait("first")
        ch.send_nowait("second")
        receiver.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receiver
        assert ch.recv_many(5) == ["first", "second"]

    asyncio.run(main())


def test_cancelled_sender_delivers_nothing_or_exactly_once() -> None:
    async def main() -> None:
        ch: cf.Channel[str] = cf.Channel()
        sender = asyncio.ensure_future(ch.asend("a"))
        await asyncio.sleep(0)
        sender.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sender
        with pytest.raises(cf.WouldBlock):
            ch.recv_nowait()  # withdrawn: not sent
        sender = asyncio.ensure_future(ch.asend("b"))
        await asyncio.sleep(0)
        assert ch.recv_nowait() == "b"  # taken in the same instant as the cancel
        sender.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sender
        with pytest.raises(cf.WouldBlock):
            ch.recv_nowait()  # and not duplicated

    asyncio.run(main())


def test_random_cancellations_never_lose_or_duplicate_items() -> None:
    n = 3000
    ch: cf.Channel[int] = cf.Channel(2)
    received: list[int] = []

    async def consume() -> None:
        import random

        rng = random.Random(1)
        while True:
            task = asyncio.ensure_future(ch.arecv())
            await asyncio.sleep(0)
            if rng.random() < 0.5:
                task.cancel()
            try:
                received.append(await task)
            except asyncio.CancelledError:
                continue
            except cf.ChannelClosed:
                return

    def produce() -> None:
        ch.send_many(range(n))
        ch.close()

    run_threads(lambda: asyncio.run(consume()), produce)
    assert sorted(received) == list(range(n))


# -- many senders and receivers --------------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, 1, 64])
def test_exactly_once_and_per_sender_fifo_with_many_threads(capacity: int) -> None:
    senders, receivers, per_sender = 8, 8, 500
    ch: cf.Channel[tuple[int, int]] = cf.Channel(capacity)
    received: list[list[tuple[int, int]]] = [[] for _ in range(receivers)]
    done = cf.Channel[None](math.inf)

    def send(sender: int) -> None:
        for seq in range(per_sender):
            ch.send((sender, seq))
        done.send(None)

    def closer() -> None:
        for _ in range(senders):
            done.recv()
        ch.close()

    def receive(slot: int) -> None:
        received[slot].extend(ch)

    targets = [lambda s=s: send(s) for s in range(senders)]  # type: ignore[misc]
    targets += [lambda r=r: receive(r) for r in range(receivers)]  # type: ignore[misc]
    run_threads(*targets, closer)
    everything = Counter(item for part in received for item in part)
    assert everything == Counter((s, q) for s in range(senders) for q in range(per_sender))
    for part in received:  # each receiver sees each sender's items in send order
        for sender in range(senders):
            seqs = [seq for s, seq in part if s == sender]
            assert seqs == sorted(seqs)


@pytest.mark.parametrize("timeout", [math.inf, 1e30])
def test_timeouts_longer_than_a_lock_can_wait_mean_forever(timeout: float) -> None:
    ch: cf.Channel[int] = cf.Channel()
    received: list[int] = []
    thread = threading.Thread(target=lambda: received.append(ch.recv(timeout=timeout)))
    thread.start()
    wait_until(lambda: len(ch._receivers) == 1)
    ch.send(3, timeout=timeout)
    thread.join(5)
    assert received == [3]
