"""go(), WaitGroup and Semaphore: threads and coroutines waiting on the same objects."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chanflow._sync import Semaphore, WaitGroup, go
from helpers import ConcurrencyMeter, run_threads, wait_until


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom("boom")


async def async_noop() -> None:
    pass


def has_waiters(sem: Semaphore, count: int) -> bool:
    return len(sem._waiters) == count


async def cancel_while_parked(
    parking: WaitGroup | Semaphore, wait: Coroutine[object, None, bool]
) -> None:
    """Park ``wait`` as the only waiter, cancel it, check that it left no trace."""
    task = asyncio.ensure_future(wait)
    await asyncio.sleep(0)
    assert len(parking._waiters) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not parking._waiters


# -- go() ----------------------------------------------------------------------------------


def test_go_returns_a_future_with_the_result() -> None:
    def add(a: int, b: int = 0) -> int:
        return a + b

    future = go(add, 40, b=2)
    assert isinstance(future, Future)
    assert future.result(timeout=5) == 42


def test_go_future_carries_the_exception() -> None:
    future = go(boom)
    assert isinstance(future.exception(timeout=5), Boom)
    with pytest.raises(Boom):
        future.result()


def test_go_runs_in_a_named_daemon_thread() -> None:
    future = go(threading.current_thread)
    thread = future.result(timeout=5)
    assert thread.name.startswith("chanflow-go")
    assert thread.daemon
    assert thread is not threading.current_thread()


def test_go_runs_concurrently() -> None:
    # Both must be running at once to get past the barrier.
    barrier = threading.Barrier(2, timeout=5)
    futures = [go(barrier.wait), go(barrier.wait)]
    assert sorted(f.result(timeout=5) for f in futures) == [0, 1]


def test_go_refuses_coroutine_functions_and_non_callables() -> None:
    with pytest.raises(TypeError, match="coroutine function"):
        go(async_noop)
    with pytest.raises(TypeError, match="callable"):
        go(42)  # type: ignore[arg-type]


def test_go_of_a_function_returning_a_coroutine_fails_its_future_without_warning() -> None:
    def make_coroutine() -> object:
        return async_noop()

    future = go(make_coroutine)
    with pytest.raises(TypeError, match="awaitable"):
        future.result(timeout=5)


# -- WaitGroup: counter --------------------------------------------------------------------


def test_waitgroup_done_below_zero_raises_and_leaves_zero() -> None:
    wg = WaitGroup()
    with pytest.raises(ValueError, match="below zero"):
        wg.done()
    assert wg.count == 0
    wg.add(2)
    wg.done()
    wg.done()
    with pytest.raises(ValueError, match="below zero"):
        wg.done()
    assert wg.count == 0


def test_waitgroup_negative_add_below_zero_raises_leaves_zero_and_wakes_waiters() -> None:
    wg = WaitGroup()
    wg.add(3)
    future = go(wg.wait, 5)
    wait_until(lambda: len(wg._waiters) == 1)
    with pytest.raises(ValueError, match="below zero"):
        wg.add(-5)
    assert wg.count == 0
    assert future.result(timeout=5) is True


def test_waitgroup_add_checks_its_argument() -> None:
    wg = WaitGroup()
    for bad in (1.5, "1", True, None):
        with pytest.raises(TypeError, match="int"):
            wg.add(bad)  # type: ignore[arg-type]
    assert wg.count == 0


def test_waitgroup_count_and_repr() -> None:
    wg = WaitGroup()
    wg.add(3)
    wg.done()
    assert wg.count == 2
    assert "count=2" in repr(wg)


# -- WaitGroup: waiting from threads -------------------------------------------------------


def test_waitgroup_wait_returns_at_once_when_zero() -> None:
    wg = WaitGroup()
    assert wg.wait() is True
    assert wg.wait(0) is True
    started = time.monotonic()
    assert wg.wait(10) is True
    assert time.monotonic() - started < 1


def test_waitgroup_wait_times_out_and_leaves_no_waiter() -> None:
    wg = WaitGroup()
    wg.add(1)
    assert wg.wait(0) is False
    assert wg.wait(-1) is False
    started = time.monotonic()
    assert wg.wait(0.05) is False
    assert 0.04 <= time.monotonic() - started < 2
    assert not wg._waiters
    wg.done()
    assert wg.wait(0) is True


def test_waitgroup_wait_rejects_a_bad_timeout() -> None:
    wg = WaitGroup()
    with pytest.raises(TypeError, match="timeout"):
        wg.wait("1")  # type: ignore[arg-type]


def test_waitgroup_wakes_many_waiting_threads() -> None:
    wg = WaitGroup()
    wg.add(3)
    results: list[bool] = []
    lock = threading.Lock()

    def waiter() -> None:
        ok = wg.wait(10)
        with lock:
            results.append(ok)

    def finisher() -> None:
        wait_until(lambda: len(wg._waiters) == 20)
        for _ in range(3):
            wg.done()

    run_threads(*[waiter] * 20, finisher)
    assert results == [True] * 20
    assert not wg._waiters


def test_waitgroup_is_reusable_after_reaching_zero() -> None:
    wg = WaitGroup()
    for _ in range(3):
        wg.add(2)
        assert wg.wait(0) is False
        wg.done()
        wg.done()
        assert wg.wait(0) is True


def test_waitgroup_counts_many_threads_exactly() -> None:
    wg = WaitGroup()
    gate = threading.Event()
    finished: list[int] = []

    def job(i: int) -> None:
        gate.wait(5)
        finished.append(i)

    futures = [wg.go(job, i) for i in range(50)]
    assert wg.count == 50
    assert wg.wait(0.01) is False
    gate.set()
    assert wg.wait(10) is True
    assert sorted(finished) == list(range(50))
    assert all(f.done() for f in futures)


def test_waitgroup_go_futures_carry_results_and_exceptions() -> None:
    wg = WaitGroup()
    good = wg.go(lambda x: x * 2, 21)
    bad = wg.go(boom)
    name = wg.go(lambda: threading.current_thread().name)
    assert wg.wait(5) is True
    # done() runs after the future is resolved: nothing left to wait for.
    assert all(f.done() for f in (good, bad, name))
    assert good.result() == 42
    assert isinstance(bad.exception(), Boom)
    assert name.result().startswith("chanflow-go")
    assert wg.count == 0


def test_waitgroup_go_refuses_coroutine_functions_without_counting() -> None:
    wg = WaitGroup()
    with pytest.raises(TypeError, match="coroutine function"):
        wg.go(async_noop)
    assert wg.count == 0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=8))
def test_waitgroup_adds_and_dones_from_threads_always_meet_at_zero(batches: list[int]) -> None:
    wg = WaitGroup()
    total = sum(batches)
    wg.add(total)
    released: list[bool] = []

    def doer(n: int) -> None:
        for _ in range(n):
            wg.done()

    def waiter() -> None:
        released.append(wg.wait(10))

    run_threads(waiter, *[lambda n=n: doer(n) for n in batches], waiter)
    assert released == [True, True]
    assert wg.count == 0


# -- WaitGroup: waiting from coroutines ----------------------------------------------------


def test_await_waitgroup_while_threads_finish_does_not_block_the_loop() -> None:
    wg = WaitGroup()
    gate = threading.Event()
    for _ in range(5):
        wg.go(gate.wait, 5)

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                if ticks == 10:
                    gate.set()  # threads finish only once the loop has been seen running
                await asyncio.sleep(0.001)

        ticking = asyncio.create_task(ticker())
        await asyncio.wait_for(asyncio.ensure_future(wg), 5)
        ticking.cancel()
        return ticks

    assert asyncio.run(main()) >= 10
    assert wg.count == 0


def test_await_waitgroup_returns_at_once_when_zero() -> None:
    async def main() -> None:
        await WaitGroup()

    asyncio.run(main())


def test_waitgroup_wakes_coroutines_on_several_loops_and_threads_alike() -> None:
    wg = WaitGroup()
    wg.add(1)
    outcomes: list[object] = []

    async def on_loop() -> None:
        await wg
        outcomes.append("loop")

    def in_thread() -> None:
        outcomes.append(wg.wait(10))

    def loop_thread() -> None:
        asyncio.run(asyncio.wait_for(on_loop(), 10))

    def finisher() -> None:
        wait_until(lambda: len(wg._waiters) == 4)
        wg.done()

    run_threads(loop_thread, loop_thread, in_thread, in_thread, finisher)
    assert sorted(map(str, outcomes)) == ["True", "True", "loop", "loop"]


def test_waitgroup_wait_async_times_out_and_cancellation_withdraws() -> None:
    wg = WaitGroup()
    wg.add(1)

    async def main() -> None:
        assert await wg.wait_async(0.02) is False
        assert not wg._waiters
        await cancel_while_parked(wg, wg.wait_async())
        waiting = asyncio.ensure_future(wg.wait_async(5))
        await asyncio.sleep(0)
        threading.Thread(target=wg.done).start()
        assert await waiting is True

    asyncio.run(main())


# -- Semaphore: basics ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [-1, 1.5, -0.5])
def test_semaphore_bad_size_value_is_refused(n: float) -> None:
    with pytest.raises(ValueError, match="int >= 0"):
        Semaphore(n)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", ["2", None, True])
def test_semaphore_bad_size_type_is_refused(n: object) -> None:
    with pytest.raises(TypeError, match="int >= 0"):
        Semaphore(n)  # type: ignore[arg-type]


def test_semaphore_counts_permits_and_is_bounded() -> None:
    sem = Semaphore(2)
    assert sem.value == 2
    with pytest.raises(ValueError, match="released too many times"):
        sem.release()
    assert sem.acquire() is True
    assert sem.acquire(timeout=0) is True
    assert sem.value == 0
    assert sem.acquire(timeout=0) is False
    sem.release()
    sem.release()
    assert sem.value == 2
    with pytest.raises(ValueError, match="released too many times"):
        sem.release()
    assert sem.value == 2
    assert "value=2/2" in repr(sem)


def test_semaphore_of_zero_never_grants_and_cannot_be_released() -> None:
    sem = Semaphore(0)
    assert sem.acquire(timeout=0.01) is False
    with pytest.raises(ValueError, match="released too many times"):
        sem.release()


def test_semaphore_timeout_returns_false_and_leaves_no_trace() -> None:
    sem = Semaphore(1)
    sem.acquire()
    started = time.monotonic()
    assert sem.acquire(timeout=0.05) is False
    assert 0.04 <= time.monotonic() - started < 2
    assert sem.value == 0
    assert not sem._waiters

    async def main() -> None:
        assert await sem.aacquire(timeout=0.02) is False
        assert await sem.aacquire(timeout=0) is False

    asyncio.run(main())
    assert not sem._waiters
    sem.release()
    assert sem.value == 1


def test_semaphore_context_managers() -> None:
    sem = Semaphore(1)
    with sem:
        assert sem.value == 0
    assert sem.value == 1

    async def main() -> None:
        async with sem:
            assert sem.value == 0
        assert sem.value == 1

    asyncio.run(main())
    with pytest.raises(Boom), sem:
        boom()
    assert sem.value == 1


def test_semaphore_limit_is_reached() -> None:
    # Four threads can only all pass the barrier if four can hold a permit at once.
    sem = Semaphore(4)
    barrier = threading.Barrier(4, timeout=5)

    def holder() -> None:
        with sem:
            barrier.wait()

    run_threads(*[holder] * 4)
    assert sem.value == 4


# -- Semaphore: stress and fairness --------------------------------------------------------


def test_semaphore_limit_holds_under_thread_stress() -> None:
    sem = Semaphore(3)
    meter = ConcurrencyMeter()

    def worker() -> None:
        for i in range(200):
            assert sem.acquire(timeout=10)
            meter.enter()
            if i % 16 == 0:
                time.sleep(0)  # let others pile up as waiters
            meter.leave()
            sem.release()

    run_threads(*[worker] * 24)
    assert 1 <= meter.most <= 3
    assert sem.value == 3
    assert not sem._waiters


def test_semaphore_limit_holds_for_threads_and_coroutines_together() -> None:
    sem = Semaphore(3)
    meter = ConcurrencyMeter()

    def thread_worker() -> None:
        for _ in range(100):
            with sem:
                meter.enter()
                time.sleep(0)
                meter.leave()

    async def coroutine_worker() -> None:
        for _ in range(100):
            async with sem:
                meter.enter()
                await asyncio.sleep(0)
                meter.leave()

    async def loop_main() -> None:
        await asyncio.wait_for(asyncio.gather(*(coroutine_worker() for _ in range(8))), 20)

    run_threads(*[thread_worker] * 8, lambda: asyncio.run(loop_main()))
    assert 1 <= meter.most <= 3
    assert sem.value == 3
    assert not sem._waiters


def test_semaphore_serves_threads_and_coroutines_first_come_first_served() -> None:
    sem = Semaphore(1)
    sem.acquire()
    order: list[int] = []

    def take_and_pass_on(i: int) -> bool:
        order.append(i)
        sem.release()
        return True

    async def coroutine_waiter(i: int) -> bool:
        return await sem.aacquire(timeout=10) and take_and_pass_on(i)

    def thread_waiter(i: int) -> bool:
        return sem.acquire(timeout=10) and take_and_pass_on(i)

    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()
    try:
        outcomes: list[Future[bool]] = []
        for i in range(12):  # even: a thread, odd: a coroutine; each parks before the next
            if i % 2:
                outcomes.append(asyncio.run_coroutine_threadsafe(coroutine_waiter(i), loop))
            else:
                outcomes.append(go(thread_waiter, i))
            wait_until(functools.partial(has_waiters, sem, i + 1))
        sem.release()
        assert [f.result(timeout=10) for f in outcomes] == [True] * 12
    finally:
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(5)
        loop.close()
    assert order == list(range(12))
    assert sem.value == 1


def test_semaphore_release_hands_the_permit_to_the_waiter_not_a_newcomer() -> None:
    sem = Semaphore(1)
    sem.acquire()
    waiting = go(sem.acquire, 5)
    wait_until(lambda: len(sem._waiters) == 1)
    sem.release()
    # The permit already belongs to the parked thread, even if it has not run yet.
    assert sem.acquire(timeout=0) is False
    assert sem.value == 0
    assert waiting.result(timeout=5) is True
    sem.release()
    assert sem.value == 1


# -- Semaphore: cancellation ---------------------------------------------------------------


def test_cancelled_aacquire_takes_no_permit() -> None:
    async def main() -> None:
        sem = Semaphore(1)
        await sem.aacquire()
        await cancel_while_parked(sem, sem.aacquire())
        sem.release()
        assert sem.value == 1

    asyncio.run(main())


def test_aacquire_cancelled_in_the_instant_it_is_handed_a_permit_passes_it_on() -> None:
    async def main() -> None:
        sem = Semaphore(1)
        await sem.aacquire()
        first = asyncio.ensure_future(sem.aacquire())
        second = asyncio.ensure_future(sem.aacquire())
        await asyncio.sleep(0)
        assert len(sem._waiters) == 2
        sem.release()  # hands the permit to `first`...
        first.cancel()  # ...which is cancelled before it can run
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await asyncio.wait_for(second, 5) is True
        assert sem.value == 0
        sem.release()
        assert sem.value == 1

    asyncio.run(main())


def test_thread_release_racing_coroutine_cancellation_never_loses_a_permit() -> None:
    sem = Semaphore(2)

    def release_twice() -> None:
        sem.release()
        sem.release()

    async def main() -> None:
        for _ in range(200):
            assert sem.acquire(timeout=5)
            assert sem.acquire(timeout=5)
            tasks = [asyncio.ensure_future(sem.aacquire()) for _ in range(3)]
            await asyncio.sleep(0)
            releaser = threading.Thread(target=release_twice)
            releaser.start()
            tasks[0].cancel()
            tasks[1].cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            releaser.join(5)
            granted = sum(1 for t in tasks if not t.cancelled() and t.result())
            for _ in range(granted):
                sem.release()
            assert sem.value == 2
            assert not sem._waiters

    asyncio.run(asyncio.wait_for(main(), 15))


OPS = st.lists(
    st.tuples(st.sampled_from(["spawn", "release", "cancel", "settle"]), st.integers(0, 7)),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(min_value=0, max_value=3), ops=OPS)
def test_random_acquire_release_cancel_sequences_keep_permits_exact(
    n: int, ops: list[tuple[str, int]]
) -> None:
    async def main() -> None:
        sem = Semaphore(n)
        holding: set[int] = set()
        tasks: list[asyncio.Task[None]] = []
        let_go: list[asyncio.Event] = []

        async def worker(i: int) -> None:
            await sem.aacquire()
            holding.add(i)
            try:
                await let_go[i].wait()
            finally:
                holding.discard(i)
                sem.release()

        async def settle() -> None:
            for _ in range(5):
                await asyncio.sleep(0)
            assert len(holding) + sem.value == n
            assert not (sem._waiters and sem.value)

        for op, k in ops:
            if op == "spawn":
                let_go.append(asyncio.Event())
                tasks.append(asyncio.ensure_future(worker(len(tasks))))
            elif op == "release" and holding:
                let_go[sorted(holding)[k % len(holding)]].set()
            elif op == "cancel" and tasks:
                tasks[k % len(tasks)].cancel()
            elif op == "settle":
                await settle()
        await settle()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert sem.value == n
        assert not holding
        assert not sem._waiters

    asyncio.run(main())


def test_semaphore_timeout_longer_than_a_lock_can_wait_means_forever() -> None:
    sem = Semaphore(1)
    assert sem.acquire()
    got: list[bool] = []
    thread = threading.Thread(target=lambda: got.append(sem.acquire(timeout=1e30)))
    thread.start()
    wait_until(lambda: len(sem._waiters) == 1)
    sem.release()
    thread.join(5)
    assert got == [True]
