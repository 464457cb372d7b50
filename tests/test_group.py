"""Group (Go's errgroup): threads with ``with``, asyncio tasks with ``async with``."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chanflow._context import background
from chanflow._group import Group
from chanflow._sync import go
from helpers import ConcurrencyMeter, wait_until


class JobError(Exception):
    pass


class BodyError(Exception):
    pass


def fail(tag: object) -> None:
    raise JobError(tag)


async def afail(tag: object) -> None:
    raise JobError(tag)


async def async_noop() -> None:
    pass


def total(numbers: list[int]) -> int:
    return sum(numbers)


def group_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("chanflow-group")]


def other_tasks() -> set[asyncio.Task[object]]:
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


# -- construction and misuse ---------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1])
def test_bad_limit_value_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        Group(limit=limit)


@pytest.mark.parametrize("limit", [1.5, "2", True])
def test_bad_limit_type_is_refused(limit: object) -> None:
    with pytest.raises(TypeError, match="limit"):
        Group(limit=limit)  # type: ignore[arg-type]


def test_bad_context_is_refused() -> None:
    with pytest.raises(TypeError, match="Context"):
        Group(context="ctx")  # type: ignore[arg-type]


def test_go_outside_the_block_raises_runtime_error() -> None:
    g = Group()
    with pytest.raises(RuntimeError, match="entered"):
        g.go(int)
    with g:
        pass
    with pytest.raises(RuntimeError, match="left"):
        g.go(int)
    with pytest.raises(RuntimeError, match="once"), g:
        pass


def test_sync_group_refuses_coroutine_functions() -> None:
    with Group() as g, pytest.raises(TypeError, match="coroutine function"):
        g.go(async_noop)
    assert g.errors == []


def test_async_group_refuses_plain_functions_and_coroutine_objects() -> None:
    async def main() -> None:
        async with Group() as g:
            with pytest.raises(TypeError, match=r"asyncio\.to_thread"):
                g.go(print)
            with pytest.raises(TypeError, match="not a coroutine"):
                g.go(async_noop())  # type: ignore[call-overload]
            # The documented way to run blocking code in an async group.
            task = g.go(asyncio.to_thread, total, [1, 2, 3])
        assert task.result() == 6

    asyncio.run(main())


def test_async_group_go_from_another_thread_raises() -> None:
    async def main() -> None:
        async with Group() as g:
            from_thread = go(g.go, async_noop)
            with pytest.raises(RuntimeError, match="event loop"):
                await asyncio.wrap_future(from_thread)

    asyncio.run(main())


# -- the thread form -----------------------------------------------------------------------


def test_jobs_run_in_named_threads_and_futures_carry_results() -> None:
    with Group() as g:
        squares = [g.go(lambda x: x * x, i) for i in range(10)]
        name = g.go(lambda: threading.current_thread().name)
    assert [f.result(timeout=0) for f in squares] == [i * i for i in range(10)]
    assert name.result(timeout=0).startswith("chanflow-group")
    assert g.errors == []
    assert g.context.cancelled  # leaving always cancels, like errgroup.Wait
    assert not group_threads()


def test_first_error_is_raised_and_cancels_the_context_for_the_others() -> None:
    saw_cancel: list[bool] = []
    g = Group()

    def block() -> None:
        with g:
            for _ in range(3):
                g.go(lambda: saw_cancel.append(g.context.wait(5)))
            g.go(fail, "first")

    with pytest.raises(JobError, match="first"):
        block()
    assert saw_cancel == [True, True, True]
    assert g.context.cancelled
    assert [str(e) for e in g.errors] == ["first"]
    assert not group_threads()


def test_the_context_is_cancelled_before_the_failed_future_resolves() -> None:
    seen: list[bool] = []

    def block() -> None:
        with Group() as g:
            failed = g.go(fail, "x")
            seen.append(isinstance(failed.exception(timeout=5), JobError))
            seen.append(g.context.cancelled)

    with pytest.raises(JobError):
        block()
    assert seen == [True, True]


def test_errors_are_listed_in_the_order_they_happened() -> None:
    def fail_as(n: int) -> None:
        wait_until(lambda: len(g.errors) == n)
        raise JobError(n)

    g = Group()

    def block() -> None:
        with g:
            for n in (3, 1, 4, 0, 2):
                g.go(fail_as, n)

    with pytest.raises(JobError) as raised:
        block()
    assert [e.args[0] for e in g.errors] == [0, 1, 2, 3, 4]
    assert raised.value is g.errors[0]


def test_errors_property_is_a_copy() -> None:
    g = Group()
    with pytest.raises(JobError), g:
        g.go(fail, 1)
    g.errors.clear()
    assert len(g.errors) == 1


def test_limit_caps_the_jobs_running_at_once() -> None:
    meter = ConcurrencyMeter()
    barrier = threading.Barrier(3, timeout=5)  # passes only if 3 run at once

    def job() -> None:
        meter.enter()
        barrier.wait()
        meter.leave()

    with Group(limit=3) as g:
        for _ in range(30):
            g.go(job)
    assert meter.most == 3
    assert g.errors == []


def test_limit_holds_under_stress() -> None:
    meter = ConcurrencyMeter()

    def job() -> None:
        meter.enter()
        threading.Event().wait(0.001)
        meter.leave()

    with Group(limit=4) as g:
        for _ in range(200):
            g.go(job)
    assert 1 <= meter.most <= 4
    assert not group_threads()


def test_go_blocks_for_a_slot_when_the_limit_is_reached() -> None:
    release = threading.Event()
    with Group(limit=1) as g:
        g.go(release.wait, 5)
        second = go(g.go, int, "7")  # a second g.go, from another thread
        assert g._slots is not None
        wait_until(lambda: len(g._slots._waiters) == 1)  # type: ignore[union-attr]
        assert not second.done()
        release.set()
        job = second.result(timeout=5)
    assert job.result(timeout=0) == 7


def test_body_exception_wins_over_job_errors() -> None:
    stopped: list[bool] = []
    g = Group()

    def block() -> None:
        with g:
            g.go(lambda: stopped.append(g.context.wait(5)))
            g.go(fail, "job")
            raise BodyError

    with pytest.raises(BodyError):
        block()
    assert stopped == [True]
    assert [str(e) for e in g.errors] == ["job"]
    assert not group_threads()


def test_body_exception_cancels_the_context_so_jobs_can_stop() -> None:
    stopped: list[bool] = []
    g = Group()

    def block() -> None:
        with g:
            g.go(lambda: stopped.append(g.context.wait(5)))
            raise BodyError

    with pytest.raises(BodyError):
        block()
    assert stopped == [True]
    assert g.errors == []


def test_jobs_may_start_jobs_while_the_group_waits() -> None:
    finished: list[int] = []
    lock = threading.Lock()

    leaving = threading.Event()

    def spawn(depth: int) -> None:
        if depth:
            leaving.wait(5)  # spawn once the body is done and the group is waiting
            g.go(spawn, depth - 1)
        with lock:
            finished.append(depth)

    with Group() as g:
        g.go(spawn, 5)
        leaving.set()
    assert sorted(finished) == [0, 1, 2, 3, 4, 5]
    assert not group_threads()


def test_parent_context_cancels_the_group_context_but_not_the_reverse() -> None:
    parent = background().with_cancel()
    with Group(context=parent) as g:
        assert g.context is not parent
        waiting = g.go(g.context.wait, 5)
        parent.cancel()
    assert waiting.result(timeout=0) is True

    other = background().with_cancel()
    g2 = Group(context=other)
    with pytest.raises(JobError), g2:
        g2.go(fail, 1)
    assert g2.context.cancelled
    assert not other.cancelled


@settings(max_examples=40, deadline=None)
@given(
    outcomes=st.lists(st.booleans(), min_size=1, max_size=12),
    limit=st.one_of(st.none(), st.integers(min_value=1, max_value=4)),
)
def test_random_job_outcomes_thread_form(outcomes: list[bool], limit: int | None) -> None:
    def job(i: int, fails: bool) -> int:
        if fails:
            raise JobError(i)
        return i

    futures: list[Future[int]] = []
    g = Group(limit=limit)

    def block() -> None:
        with g:
            futures.extend(g.go(job, i, fails) for i, fails in enumerate(outcomes))

    if any(outcomes):
        with pytest.raises(JobError) as raised:
            block()
        assert raised.value is g.errors[0]
    else:
        block()
    failed = {i for i, fails in enumerate(outcomes) if fails}
    assert sorted(e.args[0] for e in g.errors) == sorted(failed)
    assert all(f.done() for f in futures)
    assert g.context.cancelled
    assert not group_threads()


# -- the task form -------------------------------------------------------------------------


def test_async_jobs_return_their_tasks_and_results() -> None:
    async def square(x: int) -> int:
        await asyncio.sleep(0)
        return x * x

    async def main() -> None:
        async with Group() as g:
            tasks = [g.go(square, i) for i in range(10)]
            assert all(isinstance(t, asyncio.Task) for t in tasks)
        assert [t.result() for t in tasks] == [i * i for i in range(10)]
        assert g.errors == []
        assert g.context.cancelled
        assert not other_tasks()

    asyncio.run(main())


def test_async_first_error_cancels_the_context_but_not_the_tasks() -> None:
    async def watcher() -> str:
        await asyncio.wait_for(g.context, 5)
        return "saw cancel"

    async def ignorer(gate: asyncio.Event) -> str:
        await gate.wait()  # not watching the context: must still run to the end
        return "finished"

    g = Group()
    jobs: dict[str, asyncio.Task[str]] = {}

    async def block() -> None:
        gate = asyncio.Event()
        async with g:
            jobs["watching"] = g.go(watcher)
            jobs["ignoring"] = g.go(ignorer, gate)
            g.go(afail, "first")
            await asyncio.wait_for(g.context, 5)
            gate.set()

    async def main() -> None:
        with pytest.raises(JobError, match="first"):
            await block()
        assert jobs["watching"].result() == "saw cancel"
        assert jobs["ignoring"].result() == "finished"
        assert [str(e) for e in g.errors] == ["first"]
        assert not other_tasks()

    asyncio.run(main())


def test_async_errors_are_listed_in_the_order_they_happened() -> None:
    g = Group()
    turns = [asyncio.Event() for _ in range(4)]

    async def fail_on_turn(n: int) -> None:
        await turns[n].wait()
        raise JobError(n)

    async def block() -> None:
        async with g:
            tasks = {n: g.go(fail_on_turn, n) for n in (2, 0, 3, 1)}
            for n in range(4):
                turns[n].set()
                await asyncio.wait([tasks[n]])

    async def main() -> None:
        with pytest.raises(JobError) as raised:
            await block()
        assert raised.value is g.errors[0]

    asyncio.run(main())
    assert [e.args[0] for e in g.errors] == [0, 1, 2, 3]


def test_async_limit_caps_the_tasks_running_at_once() -> None:
    meter = ConcurrencyMeter()
    started: list[int] = []

    async def job(i: int) -> None:
        started.append(i)
        meter.enter()
        for _ in range(3):
            await asyncio.sleep(0)
        meter.leave()

    async def main() -> None:
        async with Group(limit=3) as g:
            tasks = [g.go(job, i) for i in range(30)]
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            # Tasks beyond the limit wait for a slot before calling the function.
            assert len(started) == 3
        assert all(t.done() for t in tasks)

    asyncio.run(main())
    assert meter.most == 3
    assert sorted(started) == list(range(30))


def test_async_body_exception_wins_over_job_errors() -> None:
    g = Group()
    stopped: list[bool] = []

    async def watcher() -> None:
        await asyncio.wait_for(g.context, 5)
        stopped.append(True)

    async def block() -> None:
        async with g:
            g.go(watcher)
            g.go(afail, "job")
            await asyncio.sleep(0)
            raise BodyError

    async def main() -> None:
        with pytest.raises(BodyError):
            await block()
        assert stopped == [True]
        assert [str(e) for e in g.errors] == ["job"]
        assert not other_tasks()

    asyncio.run(main())


def test_cancelling_the_outer_task_while_it_waits_cancels_and_awaits_the_tasks() -> None:
    cleaned_up: list[str] = []

    async def forever(tag: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits
            cleaned_up.append(tag)

    async def outer(ready: asyncio.Event) -> None:
        async with Group() as g:
            g.go(forever, "a")
            g.go(forever, "b")
            ready.set()
        raise AssertionError("unreachable: the group waits forever")

    async def main() -> None:
        ready = asyncio.Event()
        task = asyncio.ensure_future(outer(ready))
        await ready.wait()
        await asyncio.sleep(0)  # the outer task is now waiting at the exit
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sorted(cleaned_up) == ["a", "b"]
        assert not other_tasks()

    asyncio.run(main())


def test_cancelling_the_outer_task_during_the_body_cancels_the_tasks() -> None:
    async def main() -> None:
        group = Group()

        async def outer() -> None:
            async with group:
                group.go(asyncio.sleep, 100)
                await asyncio.sleep(100)

        task = asyncio.ensure_future(outer())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert group.context.cancelled
        assert not other_tasks()

    asyncio.run(main())


def test_timeout_around_an_async_group_leaves_no_task_behind() -> None:
    async def group_of_sleepers() -> None:
        async with Group(limit=2) as g:
            for _ in range(5):
                g.go(asyncio.sleep, 100)

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):  # TimeoutError from 3.11 on
            await asyncio.wait_for(group_of_sleepers(), 0.05)
        assert not other_tasks()

    asyncio.run(main())


def test_a_second_cancel_while_the_group_cleans_up_still_waits_for_the_tasks() -> None:
    cleaned_up: list[bool] = []

    async def slow_cleanup(gate: asyncio.Event) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await gate.wait()
            cleaned_up.append(True)

    async def main() -> None:
        gate = asyncio.Event()

        async def outer() -> None:
            async with Group() as g:
                g.go(slow_cleanup, gate)
                await asyncio.sleep(100)

        task = asyncio.ensure_future(outer())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.sleep(0)
        task.cancel()  # again, while the group waits for the cleanup
        await asyncio.sleep(0)
        assert not task.done()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cleaned_up == [True]
        assert not other_tasks()

    asyncio.run(main())


def test_async_group_tasks_may_start_tasks_while_it_waits() -> None:
    finished: list[int] = []

    async def spawn(depth: int) -> None:
        await asyncio.sleep(0)
        if depth:
            g.go(spawn, depth - 1)
        finished.append(depth)

    async def main() -> None:
        async with g:
            g.go(spawn, 4)
        assert not other_tasks()

    g = Group()
    asyncio.run(main())
    assert sorted(finished) == [0, 1, 2, 3, 4]


@settings(max_examples=40, deadline=None)
@given(
    outcomes=st.lists(st.sampled_from(["ok", "fail", "yield-fail"]), min_size=1, max_size=12),
    limit=st.one_of(st.none(), st.integers(min_value=1, max_value=4)),
)
def test_random_job_outcomes_task_form(outcomes: list[str], limit: int | None) -> None:
    async def job(i: int, outcome: str) -> int:
        if outcome == "yield-fail":
            await asyncio.sleep(0)
        if outcome != "ok":
            raise JobError(i)
        return i

    async def main() -> None:
        g = Group(limit=limit)
        tasks: list[asyncio.Task[int]] = []

        async def block() -> None:
            async with g:
                tasks.extend(g.go(job, i, outcome) for i, outcome in enumerate(outcomes))

        if outcomes.count("ok") < len(outcomes):
            with pytest.raises(JobError) as raised:
                await block()
            assert raised.value is g.errors[0]
        else:
            await block()
        failed = {i for i, outcome in enumerate(outcomes) if outcome != "ok"}
        assert sorted(e.args[0] for e in g.errors) == sorted(failed)
        assert all(t.done() and not t.cancelled() for t in tasks)
        assert g.context.cancelled
        assert not other_tasks()

    asyncio.run(main())
