"""Tests of Context: cancellation trees, deadlines, waiting, leaks and races."""

from __future__ import annotations

import asyncio
import gc
import math
import random
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chanflow._channel import Channel
from chanflow._context import Context, background
from chanflow._exceptions import Cancelled, ChanflowError, ChannelClosed, DeadlineExceeded
from chanflow._select import Recv, aselect, select
from helpers import HookCapture, run_threads, wait_until

LATE = 0.15


def descendants_registered(context: Context) -> int:
    children = context._children or set()
    return len(children) + sum(descendants_registered(child) for child in children)


# -- the root -------------------------------------------------------------------------


def test_background_is_a_singleton_that_cannot_be_cancelled() -> None:
    root = background()
    assert root is background()
    assert isinstance(root, Context)
    root.cancel()
    assert not root.cancelled
    assert root.error is None
    assert root.deadline is None
    assert not root.wait(0.01)
    with pytest.raises(TimeoutError):
        root.done.recv(timeout=0.01)
    assert select(Recv(root.done), default=True).index == -1
    with root:
        pass
    assert not root.cancelled
    assert repr(root) == "<Context background>"


def test_the_root_keeps_no_children() -> None:
    root = background()
    children = [root.with_cancel() for _ in range(1000)]
    timed = [root.with_timeout(3600) for _ in range(10)]
    assert root._children is None
    alive = [weakref.ref(child) for child in children + timed]
    for context in timed:
        context.cancel()
    del children, timed, context
    gc.collect()
    assert all(ref() is None for ref in alive)


def test_context_cannot_be_created_directly() -> None:
    with pytest.raises(TypeError, match="background"):
        Context()


# -- cancelling trees ---------------------------------------------------------------------


def test_cancel_reaches_every_descendant_and_nothing_else() -> None:
    root = background().with_cancel()
    left = root.with_cancel()
    left_child = left.with_cancel()
    left_grandchild = left_child.with_timeout(3600)
    right = root.with_cancel()

    left.cancel()
    assert [c.cancelled for c in (root, left, left_child, left_grandchild, right)] == [
        False,
        True,
        True,
        True,
        False,
    ]
    assert isinstance(left.error, Cancelled)
    assert left_child.error is left.error
    assert left_grandchild.error is left.error

    root.cancel()
    assert right.cancelled
    assert right.error is root.error
    assert left.error is not root.error, "a cancelled context keeps its first error"


def test_cancel_is_idempotent_and_never_affects_the_parent() -> None:
    parent = background().with_cancel()
    child = parent.with_cancel()
    child.cancel()
    first = child.error
    child.cancel()
    assert child.error is first
    assert not parent.cancelled
    parent.cancel()
    assert child.error is first


def test_child_of_a_cancelled_context_starts_cancelled_with_its_error() -> None:
    parent = background().with_cancel()
    parent.cancel()
    for child in (parent.with_cancel(), parent.with_timeout(10), parent.with_timeout(-1)):
        assert child.cancelled
        assert child.error is parent.error
        assert child.done.closed
    assert parent._children is None


def test_deep_chain_is_cancelled_without_recursion() -> None:
    top = background().with_cancel()
    context = top
    for _ in range(sys.getrecursionlimit() * 3):
        context = context.with_cancel()
    top.cancel()
    assert context.cancelled
    assert context.error is top.error


def test_errors_are_chanflow_errors_of_the_right_kind() -> None:
    cancelled = background().with_cancel()
    cancelled.cancel()
    assert isinstance(cancelled.error, Cancelled)
    assert isinstance(cancelled.error, ChanflowError)
    assert not isinstance(cancelled.error, TimeoutError)
    expired = background().with_timeout(0)
    assert isinstance(expired.error, DeadlineExceeded)
    assert isinstance(expired.error, TimeoutError)
    assert isinstance(expired.error, ChanflowError)


# -- deadlines ----------------------------------------------------------------------------


def test_deadline_is_the_earliest_of_its_own_and_its_ancestors() -> None:
    before = time.monotonic()
    parent = background().with_timeout(10)
    after = time.monotonic()
    assert parent.deadline is not None
    assert before + 10 <= parent.deadline <= after + 10
    with parent.with_timeout(100) as later:
        assert later.deadline == parent.deadline
    with parent.with_cancel() as plain:
        assert plain.deadline == parent.deadline
    with parent.with_timeout(1) as sooner:
        assert sooner.deadline is not None
        assert before + 1 <= sooner.deadline <= time.monotonic() + 1
        assert sooner.with_timeout(5).deadline == sooner.deadline
    with parent.with_deadline(before + 3) as absolute:
        assert absolute.deadline == before + 3
    assert background().with_timeout(math.inf).deadline is None
    assert background().with_cancel().deadline is None
    parent.cancel()


def test_with_timeout_cancels_with_deadline_exceeded() -> None:
    start = time.monotonic()
    context = background().with_timeout(0.05)
    assert not context.cancelled
    assert context.wait(5)
    elapsed = time.monotonic() - start
    assert 0.05 <= elapsed < 0.05 + LATE
    assert isinstance(context.error, DeadlineExceeded)


@pytest.mark.parametrize("seconds", [0, -1, -0.001])
def test_with_timeout_in_the_past_is_expired_at_once(seconds: float) -> None:
    context = background().with_timeout(seconds)
    assert context.cancelled
    assert isinstance(context.error, DeadlineExceeded)
    assert context._timer is None


def test_children_of_a_timed_out_context_carry_its_deadline_exceeded() -> None:
    parent = background().with_timeout(0.05)
    plain = parent.with_cancel()
    later = parent.with_timeout(3600)  # needs no timer of its own: its parent's fires first
    assert later._timer is None
    assert parent.wait(5)
    for child in (plain, later):
        assert child.cancelled
        assert child.error is parent.error
        assert isinstance(child.error, DeadlineExceeded)


def test_timer_is_dropped_when_cancelled_early() -> None:
    context = background().with_timeout(3600)
    alive = weakref.ref(context)
    context.cancel()
    assert isinstance(context.error, Cancelled)
    del context
    gc.collect()
    assert alive() is None, "the cancelled context's timer entry kept it alive"


def test_cancel_after_deadline_keeps_deadline_exceeded() -> None:
    context = background().with_timeout(0)
    context.cancel()
    assert isinstance(context.error, DeadlineExceeded)


@pytest.mark.parametrize(
    ("value", "error"),
    [("1", TypeError), (None, TypeError), (True, TypeError), (math.nan, ValueError)],
)
def test_bad_timeouts_and_deadlines_are_rejected(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="seconds"):
        background().with_timeout(value)  # type: ignore[arg-type]
    with pytest.raises(error, match="when"):
        background().with_deadline(value)  # type: ignore[arg-type]


def test_many_timeouts_fire_never_early() -> None:
    fired_at: dict[int, float] = {}
    lock = threading.Lock()
    contexts = []
    rng = random.Random(2)
    for index in range(200):
        context = background().with_timeout(rng.uniform(0, 0.1))

        def record(index: int = index) -> None:
            with lock:
                fired_at[index] = time.monotonic()

        context.after_func(record)
        contexts.append(context)
    for context in contexts:
        assert context.wait(5)
    assert len(fired_at) == 200
    for index, context in enumerate(contexts):
        assert context.deadline is not None
        assert fired_at[index] >= context.deadline
        assert isinstance(context.error, DeadlineExceeded)


# -- done, wait and await ----------------------------------------------------------------


def test_done_channel_in_select() -> None:
    context = background().with_cancel()
    work: Channel[int] = Channel()
    assert select(Recv(context.done), Recv(work), default=True).index == -1
    canceller = threading.Thread(target=context.cancel)

    def select_until_cancelled() -> None:
        selected = select(Recv(work), Recv(context.done), timeout=5)
        assert selected == (1, None, False)

    def cancel_once_parked() -> None:
        wait_until(lambda: bool(context.done._receivers))
        canceller.start()
        canceller.join()

    run_threads(select_until_cancelled, cancel_once_parked, timeout=5)
    with pytest.raises(ChannelClosed):
        context.done.recv_nowait()


def test_done_created_after_cancel_is_already_closed() -> None:
    context = background().with_cancel()
    context.cancel()
    assert context._done is None
    assert context.done.closed
    assert context.done is context.done


def test_wait_times_out_then_wakes_on_cancel() -> None:
    context = background().with_cancel()
    start = time.monotonic()
    assert context.wait(0.05) is False
    assert time.monotonic() - start >= 0.05
    assert context.wait(0) is False
    assert context.wait(-1) is False
    results: list[bool] = []

    def waiter() -> None:
        results.append(context.wait(5))

    def canceller() -> None:
        wait_until(lambda: bool(context.done._receivers))
        context.cancel()

    run_threads(waiter, canceller, timeout=5)
    assert results == [True]
    assert context.wait() is True
    assert context.wait(0) is True


def test_wait_rejects_bad_timeouts() -> None:
    with pytest.raises(TypeError, match="timeout"):
        background().with_cancel().wait("1")  # type: ignore[arg-type]


def test_await_waits_without_blocking_the_loop() -> None:
    context = background().with_cancel()

    async def main() -> int:
        beats = 0

        async def heartbeat() -> None:
            nonlocal beats
            while True:
                beats += 1
                await asyncio.sleep(0.005)

        beating = asyncio.create_task(heartbeat())
        threading.Timer(0.1, context.cancel).start()
        await context
        beating.cancel()
        await context  # already cancelled: returns at once
        return beats

    beats = asyncio.run(asyncio.wait_for(main(), 5))
    assert beats >= 3
    assert context.cancelled


def test_await_with_a_time_limit_and_in_aselect() -> None:
    async def main() -> None:
        context = background().with_cancel()
        with pytest.raises(asyncio.TimeoutError):  # TimeoutError from 3.11 on
            await asyncio.wait_for(context, 0.02)
        assert not context.cancelled
        expiring = context.with_timeout(0.02)
        selected = await aselect(Recv(Channel[int]()), Recv(expiring.done), timeout=5)
        assert selected.index == 1
        await expiring
        context.cancel()

    asyncio.run(main())


def test_await_the_root_can_be_cancelled() -> None:
    async def main() -> None:
        task = asyncio.ensure_future(_await(background()))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


async def _await(context: Context) -> None:
    await context


# -- with-blocks, repr ---------------------------------------------------------------------


def test_with_block_cancels_on_exit() -> None:
    parent = background().with_cancel()
    with parent.with_timeout(5) as context:
        assert not context.cancelled
    assert isinstance(context.error, Cancelled)
    assert not parent.cancelled
    assert parent._children is None or context not in parent._children


def test_with_block_cancels_on_error() -> None:
    contexts: list[Context] = []

    def fail() -> None:
        with background().with_cancel() as context:
            contexts.append(context)
            raise KeyError("boom")

    with pytest.raises(KeyError):
        fail()
    assert contexts[0].cancelled


def test_async_with_block_cancels_on_exit() -> None:
    async def main() -> Context:
        async with background().with_timeout(5) as context:
            assert not context.cancelled
        return context

    assert asyncio.run(main()).cancelled


def test_repr() -> None:
    context = background().with_cancel()
    assert repr(context) == "<Context active>"
    timed = context.with_timeout(10)
    assert re.fullmatch(r"<Context active deadline in (9\.9\d\d|10\.000) s>", repr(timed))
    context.cancel()
    assert repr(context) == "<Context cancelled (Cancelled)>"
    assert repr(background().with_timeout(0)) == (
        "<Context cancelled (DeadlineExceeded) deadline passed>"
    )


# -- after_func ------------------------------------------------------------------------------


def test_after_func_runs_once_after_cancel() -> None:
    context = background().with_cancel()
    seen: list[bool] = []
    context.after_func(lambda: seen.append(context.cancelled))
    assert seen == []
    context.cancel()
    context.cancel()
    assert seen == [True]


def test_after_func_on_a_cancelled_context_runs_at_once() -> None:
    context = background().with_cancel()
    context.cancel()
    seen: list[int] = []
    stop = context.after_func(lambda: seen.append(1))
    assert seen == [1]
    assert stop() is False


def test_after_func_stop() -> None:
    context = background().with_cancel()
    seen: list[int] = []
    stop = context.after_func(lambda: seen.append(1))
    kept = context.after_func(lambda: seen.append(2))
    assert stop() is True
    assert stop() is False
    context.cancel()
    assert seen == [2]
    assert kept() is False
    assert background().after_func(lambda: seen.append(3))() is True
    with pytest.raises(TypeError, match="callable"):
        context.after_func(42)  # type: ignore[arg-type]


def test_after_func_runs_on_the_timer_thread_for_a_deadline() -> None:
    threads: list[str] = []
    context = background().with_timeout(0.01)
    context.after_func(lambda: threads.append(threading.current_thread().name))
    assert context.wait(5)
    wait_until(lambda: bool(threads))
    assert threads == ["chanflow-timer"]


def test_after_func_errors_are_reported_not_raised() -> None:
    context = background().with_cancel()
    child = context.with_cancel()
    seen: list[int] = []
    context.after_func(lambda: 1 / 0)
    child.after_func(lambda: seen.append(1))
    with HookCapture() as capture:
        context.cancel()
    assert [type(error) for error in capture.errors] == [ZeroDivisionError]
    assert seen == [1]
    assert child.cancelled


def test_callbacks_run_with_no_lock_held() -> None:
    parent = background().with_cancel()
    context = parent.with_cancel()
    sibling = parent.with_cancel()
    made: list[Context] = []

    def touch_everything() -> None:
        made.append(context.with_cancel())
        made.append(parent.with_cancel())
        sibling.cancel()
        assert context.done.closed
        context.cancel()
        parent.cancel()

    context.after_func(touch_everything)
    # In a thread, so a deadlock fails the test instead of hanging it.
    run_threads(context.cancel, timeout=5)
    assert all(c.cancelled for c in (parent, context, sibling, *made))


def test_every_context_is_marked_before_any_is_woken() -> None:
    parent = background().with_cancel()
    children = [parent.with_cancel() for _ in range(20)]
    grandchildren = [child.with_cancel() for child in children]
    observed: list[bool] = []
    parent.after_func(lambda: observed.append(all(c.cancelled for c in grandchildren)))
    parent.cancel()
    assert observed == [True]


# -- leaks --------------------------------------------------------------------------------


def test_cancelled_tree_is_collectable_and_leaves_its_parent() -> None:
    parent = background().with_cancel()
    top = parent.with_cancel()
    tree = [top]
    for _ in range(50):
        tree.append(random.choice(tree).with_timeout(3600))
    assert descendants_registered(parent) == 51
    alive = [weakref.ref(context) for context in tree]
    top.cancel()
    assert parent._children == set()
    assert all(context._children is None for context in tree)
    del tree, top
    gc.collect()
    assert all(ref() is None for ref in alive)
    assert not parent.cancelled


def test_live_children_are_held_by_their_parent() -> None:
    parent = background().with_cancel()
    child = weakref.ref(parent.with_cancel())
    gc.collect()
    kept = child()
    assert kept is not None, "a live child must stay reachable so cancel can reach it"
    parent.cancel()
    assert kept.cancelled


def test_children_cancelled_on_their_own_leave_their_parent() -> None:
    parent = background().with_cancel()
    for _ in range(1000):
        with parent.with_cancel():
            pass
        parent.with_timeout(0)
    assert not parent._children


# -- concurrency --------------------------------------------------------------------------


@pytest.mark.parametrize("round_", range(5))
def test_no_child_misses_a_concurrent_cancel(round_: int) -> None:
    parent = background().with_cancel()
    made: list[list[Context]] = [[] for _ in range(8)]
    go = threading.Barrier(9)

    def creator(mine: list[Context]) -> Callable[[], None]:
        def create() -> None:
            go.wait()
            # Keep creating until well after the cancel, so both sides of it are hit.
            while not parent.cancelled or len(mine) % 50:
                source = random.choice(mine) if mine and random.random() < 0.5 else parent
                mine.append(source.with_cancel())

        return create

    def canceller() -> None:
        go.wait()
        wait_until(lambda: sum(map(len, made)) > 200 * (round_ + 1))
        parent.cancel()

    run_threads(canceller, *(creator(mine) for mine in made), timeout=15)
    contexts = [context for mine in made for context in mine]
    assert all(context.error is parent.error for context in contexts)
    assert all(context.done.closed for context in contexts)
    assert parent._children is None


def test_concurrent_cancels_of_overlapping_subtrees() -> None:
    for _ in range(20):
        root = background().with_cancel()
        nodes = [root]
        for _ in range(300):
            nodes.append(random.choice(nodes).with_cancel())
        calls: list[int] = []
        lock = threading.Lock()
        for index, node in enumerate(nodes):

            def count(index: int = index) -> None:
                with lock:
                    calls.append(index)

            node.after_func(count)
        targets = random.sample(nodes, 8)
        run_threads(*(target.cancel for target in targets), timeout=5)
        root.cancel()
        assert sorted(calls) == list(range(len(nodes))), "every callback exactly once"
        assert all(isinstance(node.error, Cancelled) for node in nodes)
        assert all(node._children is None for node in nodes)


def test_threads_and_coroutines_wait_on_one_context() -> None:
    context = background().with_timeout(0.05)
    results: list[bool] = []

    def thread_waiter() -> None:
        results.append(context.wait(5))

    def async_waiters() -> None:
        async def main() -> None:
            await asyncio.wait_for(asyncio.gather(*(_await(context) for _ in range(20))), 5)

        asyncio.run(main())
        results.append(True)

    run_threads(*(thread_waiter for _ in range(10)), async_waiters, timeout=10)
    assert results == [True] * 11


# -- random trees (hypothesis) --------------------------------------------------------------

operation = st.one_of(
    st.tuples(st.just("child"), st.integers(0, 10_000), st.sampled_from([None, 50.0, 100.0])),
    st.tuples(st.just("cancel"), st.integers(0, 10_000), st.none()),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(operation, max_size=60))
def test_random_trees_and_cancel_orders(operations: list[tuple[str, int, float | None]]) -> None:
    top = background().with_cancel()
    nodes = [top]
    parents: list[int | None] = [None]
    expected_error: list[int | None] = [None]  # index into errors: whose cancel hit it
    expected_deadline: list[float | None] = [None]
    errors: list[BaseException | None] = []
    for kind, pick, timeout in operations:
        index = pick % len(nodes)
        node = nodes[index]
        if kind == "child":
            before = time.monotonic()
            child = node.with_cancel() if timeout is None else node.with_timeout(timeout)
            after = time.monotonic()
            inherited = expected_deadline[index]
            if timeout is None or (inherited is not None and inherited <= before + timeout):
                assert child.deadline == inherited
            else:
                assert child.deadline is not None
                assert before + timeout <= child.deadline <= after + timeout
            nodes.append(child)
            parents.append(index)
            expected_error.append(expected_error[index])
            expected_deadline.append(child.deadline)
        else:
            node.cancel()
            if expected_error[index] is None:
                errors.append(node.error)
                for other in range(len(nodes)):
                    if expected_error[other] is None and _descends(other, index, parents):
                        expected_error[other] = len(errors) - 1
        for other, context in enumerate(nodes):
            cause = expected_error[other]
            if cause is None:
                assert context.error is None
            else:
                assert context.error is errors[cause]
                assert context._children is None
    live = [i for i, cause in enumerate(expected_error) if cause is None]
    for index in live:
        parent = parents[index]
        if parent is not None:
            assert nodes[index] in (nodes[parent]._children or set())
    top.cancel()
    assert all(context.cancelled for context in nodes)
    assert all(context._timer is None for context in nodes)


def _descends(node: int, ancestor: int, parents: list[int | None]) -> bool:
    current: int | None = node
    while current is not None:
        if current == ancestor:
            return True
        current = parents[current]
    return False
