"""merge and tee: every item exactly once and in order, closing, sync and async ends,
consumers that give up early, and no forwarder left behind."""

from __future__ import annotations

import asyncio
import math
import threading
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chanflow as cf
from helpers import run_threads, wait_until

CAPACITIES = [0, 1, 3, math.inf]
# Long enough for a forwarder that wrongly moves on to do so; only ever waited out in
# checks that something does *not* happen.
NEGATIVE = 0.1

Item = tuple[int, int]


def forwarders(kind: str) -> list[threading.Thread]:
    """The live forwarder threads of merge ("merge") or tee ("tee")."""
    return [t for t in threading.enumerate() if t.name.startswith(f"chanflow-{kind}-")]


def wait_for_no_forwarders(kind: str) -> None:
    wait_until(lambda: not forwarders(kind), timeout=1.5)


def feeder(channel: cf.Channel[Item], source: int, count: int) -> Callable[[], None]:
    """A thread body sending (source, 0..count-1) on ``channel``, then closing it."""

    def run() -> None:
        for seq in range(count):
            channel.send((source, seq))
        channel.close()

    return run


def assert_exactly_once_in_order(got: list[Item], counts: list[int]) -> None:
    assert Counter(got) == Counter((s, seq) for s, n in enumerate(counts) for seq in range(n))
    for source in range(len(counts)):
        assert [seq for s, seq in got if s == source] == list(range(counts[source]))


# -- merge: delivery --------------------------------------------------------------------------


@pytest.mark.parametrize("in_capacity", CAPACITIES)
@pytest.mark.parametrize("out_capacity", CAPACITIES)
def test_merge_delivers_every_item_once_in_per_input_order(
    in_capacity: float, out_capacity: float
) -> None:
    counts = [200, 0, 57, 1]
    inputs = [cf.Channel[Item](in_capacity) for _ in counts]
    merged = cf.merge(*inputs, capacity=out_capacity)
    assert merged.capacity == out_capacity
    got: list[Item] = []
    producers = [feeder(ch, s, n) for s, (ch, n) in enumerate(zip(inputs, counts, strict=True))]
    run_threads(*producers, lambda: got.extend(merged))
    assert_exactly_once_in_order(got, counts)
    assert merged.closed


def test_merge_returns_a_new_channel_and_interleaves_inputs_as_items_come() -> None:
    a, b = cf.Channel[str](), cf.Channel[str]()
    merged = cf.merge(a, b)
    assert isinstance(merged, cf.Channel)
    assert merged is not a and merged is not b
    # Items arrive as they are sent, whichever input they come from.
    for ch, item in [(b, "b1"), (a, "a1"), (b, "b2")]:
        cf.go(ch.send, item)
        assert merged.recv(timeout=5) == item
    a.close()
    b.close()
    assert list(merged) == []


def test_merge_of_no_channels_is_a_closed_channel() -> None:
    merged: cf.Channel[int] = cf.merge()
    assert isinstance(merged, cf.Channel)
    assert merged.closed
    with pytest.raises(cf.ChannelClosed):
        merged.recv_nowait()
    assert not forwarders("merge")


def test_merge_closes_only_once_every_input_is_closed_and_drained() -> None:
    a, b = cf.Channel[int](3), cf.Channel[int](3)
    a.send_many([1, 2])
    a.close()  # closed, but still holding items
    merged = cf.merge(a, b, capacity=10)
    assert merged.recv(timeout=5) == 1
    assert merged.recv(timeout=5) == 2
    with pytest.raises(TimeoutError):  # b is still open: more may come
        merged.recv(timeout=NEGATIVE)
    assert not merged.closed
    b.send(3)
    b.close()
    assert list(merged) == [3]
    assert merged.closed
    wait_for_no_forwarders("merge")


def test_merge_of_inputs_closed_and_empty_closes_at_once() -> None:
    a, b = cf.Channel[int](), cf.Channel[int](1)
    a.close()
    b.close()
    assert list(cf.merge(a, b)) == []


def test_merge_forwards_an_input_given_twice_once() -> None:
    a = cf.Channel[int](100)
    a.send_many(range(100))
    a.close()
    before = len(forwarders("merge"))
    merged = cf.merge(a, a)
    assert len(forwarders("merge")) - before <= 1
    assert list(merged) == list(range(100))  # one forwarder: its order is kept


def test_merge_takes_from_an_input_only_what_the_output_can_take() -> None:
    a = cf.Channel[int](10)
    a.send_many(range(10))
    merged = cf.merge(a)  # unbuffered and unread: the forwarder holds one item, as in Go
    wait_until(lambda: len(a) == 9)
    assert merged.recv(timeout=5) == 0
    a.close()
    assert list(merged) == list(range(1, 10))


def test_merge_runs_daemon_threads_named_chanflow_merge() -> None:
    inputs = [cf.Channel[int]() for _ in range(3)]
    merged = cf.merge(*inputs)
    threads = forwarders("merge")
    assert len(threads) == 3
    assert all(thread.daemon for thread in threads)
    for ch in inputs:
        ch.close()
    assert list(merged) == []
    wait_for_no_forwarders("merge")


def test_merged_channel_works_in_select() -> None:
    a = cf.Channel[int]()
    merged = cf.merge(a)
    cf.go(a.send, 7)
    selected = cf.select(cf.Recv(merged), timeout=5)
    assert selected == (0, 7, True)
    a.close()
    assert cf.select(cf.Recv(merged), timeout=5) == (0, None, False)


# -- merge: asyncio ---------------------------------------------------------------------------


@pytest.mark.parametrize("out_capacity", [0, 4])
def test_merge_fed_by_tasks_consumed_with_async_for(out_capacity: float) -> None:
    counts = [30, 20, 0]

    async def main() -> list[Item]:
        inputs = [cf.Channel[Item]() for _ in counts]
        merged = cf.merge(*inputs, capacity=out_capacity)

        async def produce(channel: cf.Channel[Item], source: int, count: int) -> None:
            for seq in range(count):
                await channel.asend((source, seq))
            channel.close()

        tasks = [
            asyncio.create_task(produce(ch, s, n))
            for s, (ch, n) in enumerate(zip(inputs, counts, strict=True))
        ]
        got = [item async for item in merged]
        await asyncio.gather(*tasks)
        return got

    assert_exactly_once_in_order(asyncio.run(main()), counts)
    wait_for_no_forwarders("merge")


def test_merge_fed_by_threads_consumed_with_arecv() -> None:
    counts = [40, 25]
    inputs = [cf.Channel[Item](2) for _ in counts]
    merged = cf.merge(*inputs)

    async def consume() -> list[Item]:
        got: list[Item] = []
        while True:
            try:
                got.append(await merged.arecv(timeout=5))
            except cf.ChannelClosed:
                return got

    got: list[Item] = []
    producers = [feeder(ch, s, n) for s, (ch, n) in enumerate(zip(inputs, counts, strict=True))]
    run_threads(*producers, lambda: got.extend(asyncio.run(consume())))
    assert_exactly_once_in_order(got, counts)


def test_merge_of_a_task_fed_and_a_thread_fed_input_consumed_by_a_thread() -> None:
    from_task, from_thread = cf.Channel[Item](), cf.Channel[Item]()
    merged = cf.merge(from_task, from_thread)

    async def produce() -> None:
        for seq in range(30):
            await from_task.asend((0, seq))
        from_task.close()

    got: list[Item] = []
    run_threads(
        lambda: asyncio.run(produce()),
        feeder(from_thread, 1, 30),
        lambda: got.extend(merged),
    )
    assert_exactly_once_in_order(got, [30, 30])


# -- merge: the consumer gives up -------------------------------------------------------------


def test_closing_the_merged_channel_stops_forwarders_waiting_for_input() -> None:
    inputs = [cf.Channel[int]() for _ in range(4)]  # nobody ever sends on them
    merged = cf.merge(*inputs)
    assert len(forwarders("merge")) == 4
    merged.close()
    wait_for_no_forwarders("merge")
    for ch in inputs:  # the inputs are untouched and still usable
        assert not ch.closed
        with pytest.raises(cf.WouldBlock):
            ch.recv_nowait()


def test_closing_the_merged_channel_stops_forwarders_waiting_to_send_and_loses_nothing() -> None:
    inputs = [cf.Channel[int](50) for _ in range(3)]
    for source, ch in enumerate(inputs):
        ch.send_many(range(source * 100, source * 100 + 50))
    merged = cf.merge(*inputs)  # unbuffered: each forwarder blocks holding an item
    received = [merged.recv(timeout=5) for _ in range(10)]
    merged.close()
    wait_for_no_forwarders("merge")
    with pytest.raises(cf.ChannelClosed):
        merged.recv_nowait()
    # What the merged channel did not deliver is back in its input, in order.
    for source, ch in enumerate(inputs):
        left = ch.recv_many(1000) if len(ch) else []
        mine = [item for item in received if item // 100 == source]
        assert mine + left == list(range(source * 100, source * 100 + 50))


def test_closing_the_merged_channel_while_producers_still_send() -> None:
    inputs = [cf.Channel[int]() for _ in range(3)]
    merged = cf.merge(*inputs)
    stopped = threading.Event()

    def produce(ch: cf.Channel[int]) -> None:
        sent = 0
        while not stopped.is_set():
            try:
                ch.send(sent, timeout=0.01)
            except TimeoutError:
                continue
            sent += 1

    threads = [threading.Thread(target=produce, args=(ch,), daemon=True) for ch in inputs]
    for thread in threads:
        thread.start()
    for _ in range(30):
        merged.recv(timeout=5)
    merged.close()
    wait_for_no_forwarders("merge")
    stopped.set()
    for thread in threads:
        thread.join(5)
    assert not any(thread.is_alive() for thread in threads)


def test_closing_the_merged_channel_from_a_task_stops_the_forwarders() -> None:
    async def main() -> list[int]:
        a, b = cf.Channel[int](10), cf.Channel[int]()
        a.send_many(range(10))
        merged = cf.merge(a, b)
        got = [await merged.arecv(timeout=5) for _ in range(3)]
        merged.close()
        return got

    assert asyncio.run(main()) == [0, 1, 2]
    wait_for_no_forwarders("merge")


# -- merge: bad arguments ---------------------------------------------------------------------


@pytest.mark.parametrize("argument", [1, "ch", None, object()])
def test_merge_refuses_what_is_not_a_channel(argument: object) -> None:
    with pytest.raises(TypeError, match=r"merge\(\) argument 2 must be a chanflow Channel"):
        cf.merge(cf.Channel(), argument)  # type: ignore[arg-type]
    assert not forwarders("merge")


def test_merge_refuses_a_list_of_channels_and_says_to_unpack_it() -> None:
    channels = [cf.Channel[int](), cf.Channel[int]()]
    with pytest.raises(TypeError, match=r"merge\(\*channels\)"):
        cf.merge(channels)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("capacity", "error"),
    [(-1, ValueError), (1.5, ValueError), (math.nan, ValueError), ("3", TypeError)],
)
def test_merge_refuses_a_bad_capacity(capacity: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"merge\(\): capacity"):
        cf.merge(cf.Channel(), capacity=capacity)  # type: ignore[arg-type]
    assert not forwarders("merge")


# -- merge: properties and stress -------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(0, 40), min_size=0, max_size=6),
    in_capacity=st.sampled_from(CAPACITIES),
    out_capacity=st.sampled_from(CAPACITIES),
    async_consumer=st.booleans(),
)
def test_merge_property_exactly_once_in_order(
    counts: list[int], in_capacity: float, out_capacity: float, async_consumer: bool
) -> None:
    inputs = [cf.Channel[Item](in_capacity) for _ in counts]
    merged = cf.merge(*inputs, capacity=out_capacity)
    got: list[Item] = []

    async def consume() -> None:
        got.extend([item async for item in merged])

    consumer = (lambda: asyncio.run(consume())) if async_consumer else lambda: got.extend(merged)
    producers = [feeder(ch, s, n) for s, (ch, n) in enumerate(zip(inputs, counts, strict=True))]
    run_threads(*producers, consumer)
    assert_exactly_once_in_order(got, counts)
    wait_for_no_forwarders("merge")


def test_merge_stress_many_producer_threads_per_input() -> None:
    inputs, per_input, items = 8, 4, 150
    channels = [cf.Channel[Item](capacity) for capacity in [0, 1, 16, math.inf] * 2]
    merged = cf.merge(*channels, capacity=8)
    done = [cf.WaitGroup() for _ in range(inputs)]

    def produce(producer: int) -> Callable[[], None]:
        channel = channels[producer % inputs]
        group = done[producer % inputs]

        def run() -> None:
            try:
                channel.send_many((producer, seq) for seq in range(items))
            finally:
                group.done()

        return run

    def closer(index: int) -> Callable[[], None]:
        return lambda: (done[index].wait(20), channels[index].close())

    for group in done:
        group.add(per_input)
    got: list[Item] = []
    run_threads(
        *(produce(p) for p in range(inputs * per_input)),
        *(closer(i) for i in range(inputs)),
        lambda: got.extend(merged),
    )
    # Items of one producer share an input and keep their order through it.
    assert_exactly_once_in_order(got, [items] * (inputs * per_input))


# -- tee: delivery ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("capacity", CAPACITIES)
def test_tee_gives_every_output_every_item_in_order(n: int, capacity: float) -> None:
    source = cf.Channel[int](2)
    outputs = cf.tee(source, n, capacity=capacity)
    assert len(outputs) == n
    assert len({id(output) for output in outputs}) == n
    assert all(isinstance(o, cf.Channel) and o.capacity == capacity for o in outputs)
    got: list[list[int]] = [[] for _ in outputs]

    def produce() -> None:
        source.send_many(range(150))
        source.close()

    run_threads(produce, *(lambda i=i: got[i].extend(outputs[i]) for i in range(n)))
    assert got == [list(range(150))] * n
    assert all(output.closed for output in outputs)
    wait_for_no_forwarders("tee")


def test_tee_closes_every_output_once_the_input_is_closed_and_drained() -> None:
    source = cf.Channel[int](3)
    source.send_many([1, 2])
    source.close()
    outputs = cf.tee(source, 2, capacity=5)
    assert [list(output) for output in outputs] == [[1, 2], [1, 2]]
    wait_for_no_forwarders("tee")


def test_tee_runs_one_daemon_thread_named_chanflow_tee() -> None:
    source = cf.Channel[int]()
    outputs = cf.tee(source, 3)
    threads = forwarders("tee")
    assert len(threads) == 1
    assert threads[0].daemon
    source.close()
    assert [list(output) for output in outputs] == [[], [], []]
    wait_for_no_forwarders("tee")


def test_tee_with_async_consumers_and_a_task_feeding_it() -> None:
    async def main() -> list[list[int]]:
        source = cf.Channel[int]()
        outputs = cf.tee(source, 3)

        async def produce() -> None:
            for i in range(40):
                await source.asend(i)
            source.close()

        async def consume(output: cf.Channel[int]) -> list[int]:
            return [item async for item in output]

        producer = asyncio.create_task(produce())
        got = await asyncio.gather(*(consume(output) for output in outputs))
        await producer
        return list(got)

    assert asyncio.run(main()) == [list(range(40))] * 3
    wait_for_no_forwarders("tee")


def test_tee_slowest_output_sets_the_pace() -> None:
    source = cf.Channel[int]()
    fast, slow = cf.tee(source, 2, capacity=1)
    source.send(1, timeout=5)  # taken, and sent into both buffers
    source.send(2, timeout=5)  # taken; both buffers are full: the forwarder holds it
    with pytest.raises(TimeoutError):
        source.send(3, timeout=NEGATIVE)
    assert fast.recv(timeout=5) == 1  # room in `fast`: it gets 2, `slow` still has 1
    assert fast.recv(timeout=5) == 2
    with pytest.raises(TimeoutError):  # `slow` has not taken 2 yet: the input waits
        source.send(3, timeout=NEGATIVE)
    assert slow.recv(timeout=5) == 1
    source.send(3, timeout=5)  # `slow` took 2 into its buffer: the forwarder moved on
    assert slow.recv(timeout=5) == 2
    assert fast.recv(timeout=5) == 3
    assert slow.recv(timeout=5) == 3
    source.close()
    assert list(fast) == list(slow) == []


def test_tee_hands_an_item_to_whichever_output_is_ready_first() -> None:
    source = cf.Channel[int]()
    first, second = cf.tee(source, 2, capacity=1)
    source.send(1, timeout=5)  # into both buffers
    source.send(2, timeout=5)  # both full: the forwarder holds 2 and waits
    # Only `second` is read: the forwarder must not wait for `first` before it.
    assert second.recv(timeout=5) == 1
    assert second.recv(timeout=5) == 2
    assert first.recv(timeout=5) == 1
    assert first.recv(timeout=5) == 2
    source.close()
    assert list(first) == list(second) == []
    wait_for_no_forwarders("tee")


# -- tee: consumers that give up -----------------------------------------------------------------


def test_tee_drops_an_output_closed_by_its_consumer_and_feeds_the_others() -> None:
    source = cf.Channel[int]()
    kept, dropped, other = cf.tee(source, 3)
    dropped.close()
    got: list[list[int]] = [[], []]

    def produce() -> None:
        source.send_many(range(100))
        source.close()

    run_threads(produce, lambda: got[0].extend(kept), lambda: got[1].extend(other))
    assert got == [list(range(100))] * 2
    wait_for_no_forwarders("tee")


def test_tee_keeps_feeding_when_an_output_is_closed_while_the_forwarder_waits_on_it() -> None:
    source = cf.Channel[int]()
    kept, stuck, late = cf.tee(source, 3)
    cf.go(source.send, 1)
    assert kept.recv(timeout=5) == 1  # the forwarder now waits for `stuck` and `late`
    stuck.close()
    assert late.recv(timeout=5) == 1  # `late` still gets the item `stuck` never took
    cf.go(source.send, 2)
    assert kept.recv(timeout=5) == 2
    assert late.recv(timeout=5) == 2
    source.close()
    assert list(kept) == list(late) == []
    wait_for_no_forwarders("tee")


def test_tee_stops_when_every_output_is_closed_while_it_waits_for_input() -> None:
    source = cf.Channel[int](5)
    outputs = cf.tee(source, 3)
    assert len(forwarders("tee")) == 1
    for output in outputs:
        output.close()
    wait_for_no_forwarders("tee")
    source.send(1)  # nobody forwards any more: the item stays in the input
    assert source.recv_nowait() == 1
    assert not source.closed


def test_tee_stops_when_every_output_is_closed_while_it_waits_to_send() -> None:
    source = cf.Channel[int](3)
    source.send_many([1, 2, 3])
    first, second = cf.tee(source, 2)  # unbuffered, unread: the forwarder blocks on 1
    wait_until(lambda: len(source) == 2)
    first.close()
    second.close()
    wait_for_no_forwarders("tee")
    assert source.recv_many(10) == [1, 2, 3]  # the item it held went back, in order


# -- tee: bad arguments and properties -----------------------------------------------------------


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "2", None])
def test_tee_refuses_a_bad_n(n: object) -> None:
    with pytest.raises(ValueError, match="int >= 1"):
        cf.tee(cf.Channel(), n)  # type: ignore[arg-type]
    assert not forwarders("tee")


def test_tee_refuses_what_is_not_a_channel_and_a_bad_capacity() -> None:
    with pytest.raises(TypeError, match="must be a chanflow Channel"):
        cf.tee([1, 2], 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"tee\(\): capacity"):
        cf.tee(cf.Channel(), 2, capacity=-1)
    with pytest.raises(TypeError, match=r"tee\(\): capacity"):
        cf.tee(cf.Channel(), 2, capacity="1")  # type: ignore[arg-type]
    assert not forwarders("tee")


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 4),
    items=st.integers(0, 60),
    in_capacity=st.sampled_from(CAPACITIES),
    out_capacity=st.sampled_from(CAPACITIES),
    closed_early=st.sets(st.integers(0, 3)),
)
def test_tee_property_every_open_output_gets_everything(
    n: int, items: int, in_capacity: float, out_capacity: float, closed_early: set[int]
) -> None:
    source = cf.Channel[int](in_capacity)
    outputs = cf.tee(source, n, capacity=out_capacity)
    closed_early = {i for i in closed_early if i < n}
    for i in closed_early:
        outputs[i].close()
    got: dict[int, list[int]] = {i: [] for i in range(n) if i not in closed_early}

    def produce() -> None:
        source.send_many(range(items))
        source.close()

    if len(closed_early) == n:
        # Nobody reads: the tee stops, and whatever is sent stays in the input.
        wait_for_no_forwarders("tee")
        left: list[int] = []
        run_threads(produce, lambda: left.extend(source))
        assert left == list(range(items))
        return
    run_threads(produce, *(lambda i=i: got[i].extend(outputs[i]) for i in got))
    assert got == {i: list(range(items)) for i in got}
    wait_for_no_forwarders("tee")


def test_merge_of_a_tee_gets_every_item_n_times() -> None:
    source = cf.Channel[int](8)
    merged = cf.merge(*cf.tee(source, 3, capacity=2), capacity=4)

    def produce() -> None:
        source.send_many(range(100))
        source.close()

    got: list[int] = []
    run_threads(produce, lambda: got.extend(merged))
    assert Counter(got) == Counter({i: 3 for i in range(100)})
