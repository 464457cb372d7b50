"""fan_out and afan_out: one job per item, results in input order, errors as Results,
the concurrency limit, every backend, sync and async callers."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator

import pytest

import chanflow as cf
from helpers import ConcurrencyMeter

# Jobs that wait for each other give up after this long (a broken limit then shows as a
# failed assertion, not a hang).
PATIENCE = 1.0


class Boom(Exception):
    pass


def square_or_fail(n: int) -> int:
    if n % 3 == 2:
        raise Boom(f"job {n} failed")
    return n * n


async def asquare_or_fail(n: int) -> int:
    await asyncio.sleep(0)
    return square_or_fail(n)


def check_results(results: list[cf.Result[int]], items: list[int]) -> None:
    assert len(results) == len(items)
    for position, (result, item) in enumerate(zip(results, items, strict=True)):
        assert isinstance(result, cf.Result)
        assert result.index == position
        assert result.job == item
        if item % 3 == 2:
            assert not result.ok
            assert isinstance(result.error, Boom)
            assert str(result.error) == f"job {item} failed"
            assert result.value is None
            assert result.traceback is not None and "Boom" in result.traceback
            with pytest.raises(Boom):
                result.unwrap()
        else:
            assert result.ok
            assert result.value == item * item
            assert result.unwrap() == item * item


# -- results ----------------------------------------------------------------------------------


def test_results_come_in_input_order_whatever_order_jobs_finish_in() -> None:
    items = list(range(6))
    finished: list[int] = []
    lock = threading.Lock()
    gates = [threading.Event() for _ in items]
    gates[-1].set()  # the last job finishes first, then each lets the one before go

    def job(n: int) -> int:
        assert gates[n].wait(PATIENCE), f"job {n} was never let go"
        with lock:
            finished.append(n)
        if n > 0:
            gates[n - 1].set()
        return square_or_fail(n)

    results = cf.fan_out(job, items)
    assert finished == items[::-1]
    check_results(results, items)


@pytest.mark.parametrize("backend", ["auto", "thread", "process"])
def test_errors_become_failed_results_and_nothing_raises(backend: str) -> None:
    items = list(range(9))
    check_results(cf.fan_out(square_or_fail, items, backend=backend), items)


@pytest.mark.parametrize("backend", ["auto", "async"])
def test_coroutine_functions_from_sync_code(backend: str) -> None:
    items = list(range(7))
    check_results(cf.fan_out(asquare_or_fail, items, backend=backend), items)


def test_empty_items_give_an_empty_list_and_start_nothing() -> None:
    before = threading.active_count()
    assert cf.fan_out(square_or_fail, []) == []
    assert cf.fan_out(asquare_or_fail, iter(()), backend="process") == []
    assert asyncio.run(cf.afan_out(asquare_or_fail, [])) == []
    assert threading.active_count() == before


def test_items_may_be_any_finite_iterable_read_once() -> None:
    pulled: list[int] = []

    def generate() -> object:
        for n in range(5):
            pulled.append(n)
            yield n

    results = cf.fan_out(square_or_fail, generate())  # type: ignore[call-overload]
    assert pulled == [0, 1, 2, 3, 4]
    check_results(results, [0, 1, 2, 3, 4])
    assert [r.value for r in cf.fan_out(str.upper, "ab")] == ["A", "B"]


def test_an_error_raised_by_the_items_themselves_propagates() -> None:
    def broken() -> object:
        yield 1
        raise Boom("input broke")

    with pytest.raises(Boom, match="input broke"):
        cf.fan_out(square_or_fail, broken())  # type: ignore[call-overload]


# -- concurrency --------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 3])
def test_limit_caps_how_many_jobs_run_at_once(limit: int) -> None:
    meter = ConcurrencyMeter()
    full = threading.Event()

    def job(n: int) -> int:
        meter.enter()
        try:
            if meter.inside >= limit:
                full.set()
            # Wait (a little) for the others, so that a pool running more than `limit`
            # jobs at once would be caught with them inside together.
            full.wait(PATIENCE)
            time.sleep(0.002)
            return n
        finally:
            meter.leave()

    results = cf.fan_out(job, range(12), limit=limit)
    assert [r.value for r in results] == list(range(12))
    assert meter.most == limit


def test_without_a_limit_every_item_runs_at_once() -> None:
    items = 8
    barrier = threading.Barrier(items, timeout=PATIENCE)  # broken unless all 8 meet

    def job(n: int) -> int:
        barrier.wait()
        return n

    results = cf.fan_out(job, range(items))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]


def test_jobs_run_concurrently_so_the_call_takes_as_long_as_the_longest() -> None:
    started = time.monotonic()
    results = cf.fan_out(time.sleep, [0.2] * 10)
    assert time.monotonic() - started < 1.0  # ten 0.2 s sleeps one after the other take 2 s
    assert all(r.ok for r in results)


def test_limit_caps_async_jobs_too() -> None:
    inside = most = 0

    async def main() -> list[cf.Result[int]]:
        full = asyncio.Event()

        async def job(n: int) -> int:
            nonlocal inside, most
            inside += 1
            most = max(most, inside)
            if inside >= 4:
                full.set()
            try:
                await asyncio.wait_for(full.wait(), PATIENCE)
                await asyncio.sleep(0)  # let any job beyond the limit in, to be counted
            finally:
                inside -= 1
            return n

        return await cf.afan_out(job, range(20), limit=4)

    results = asyncio.run(main())
    assert [r.value for r in results] == list(range(20))
    assert most == 4


# -- backends -----------------------------------------------------------------------------------


def test_thread_backend_runs_plain_functions_on_pool_threads() -> None:
    names = cf.fan_out(lambda _: threading.current_thread().name, range(3), backend="thread")
    assert all(r.value.startswith("chanflow-worker-") for r in names)


def test_process_backend_runs_jobs_in_other_processes_even_closures() -> None:
    offset = 100
    results = cf.fan_out(lambda n: (os.getpid(), n + offset), range(4), backend="process")
    assert [r.value[1] for r in results] == [100, 101, 102, 103]
    assert os.getpid() not in {r.value[0] for r in results}


def test_process_backend_with_a_limit() -> None:
    results = cf.fan_out(square_or_fail, list(range(6)), backend="process", limit=1)
    check_results(results, list(range(6)))


def test_afan_out_runs_coroutine_functions_on_the_callers_loop() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def job(n: int) -> bool:
            await asyncio.sleep(0)
            return asyncio.get_running_loop() is loop and n >= 0

        results = await cf.afan_out(job, range(5))
        assert [r.value for r in results] == [True] * 5
        check_results(await cf.afan_out(asquare_or_fail, range(8), backend="async"), [*range(8)])

    asyncio.run(main())


def test_afan_out_runs_plain_functions_on_threads_without_blocking_the_loop() -> None:
    async def main() -> None:
        release = threading.Event()
        ticks = 0

        def job(n: int) -> int:
            assert release.wait(PATIENCE)
            return square_or_fail(n)

        async def ticker() -> None:
            nonlocal ticks
            while ticks < 5:
                await asyncio.sleep(0.001)
                ticks += 1
            release.set()  # only a loop that was not blocked gets here

        tick_task = asyncio.create_task(ticker())
        results = await cf.afan_out(job, range(4), backend="thread")
        await tick_task
        check_results(results, [0, 1, 2, 3])

    asyncio.run(main())


def test_afan_out_on_processes_and_with_an_async_iterable() -> None:
    async def numbers() -> AsyncIterator[int]:
        for n in range(6):
            yield n

    async def main() -> None:
        check_results(await cf.afan_out(square_or_fail, numbers()), [*range(6)])
        results = await cf.afan_out(square_or_fail, range(5), backend="process", limit=2)
        check_results(results, [*range(5)])

    asyncio.run(main())


def test_cancelling_afan_out_cancels_its_jobs() -> None:
    started: list[int] = []
    cancelled: list[int] = []

    async def main() -> None:
        all_started = asyncio.Event()

        async def job(n: int) -> int:
            started.append(n)
            if len(started) == 4:
                all_started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(n)
                raise
            return n

        task = asyncio.create_task(cf.afan_out(job, range(4)))
        await all_started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), 5))
    assert sorted(cancelled) == [0, 1, 2, 3]


# -- bad arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"backend": "gpu"}, ValueError, "backend"),
        ({"backend": None}, ValueError, "backend"),
        ({"limit": 0}, ValueError, "limit"),
        ({"limit": -2}, ValueError, "limit"),
        ({"limit": True}, ValueError, "limit"),
        ({"limit": 1.5}, ValueError, "limit"),
    ],
)
def test_bad_settings_are_refused_before_anything_runs(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    ran: list[int] = []
    with pytest.raises(error, match=match):
        cf.fan_out(ran.append, [1, 2], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(error, match=match):
        asyncio.run(cf.afan_out(ran.append, [1, 2], **kwargs))  # type: ignore[arg-type]
    with pytest.raises(error, match=match):  # also with nothing to do
        cf.fan_out(ran.append, [], **kwargs)  # type: ignore[arg-type]
    assert ran == []


def test_bad_functions_and_items_are_refused() -> None:
    with pytest.raises(TypeError, match="callable"):
        cf.fan_out(42, [1])  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="iterable"):
        cf.fan_out(square_or_fail, 5)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="backend='thread' runs plain functions"):
        cf.fan_out(asquare_or_fail, [1], backend="thread")
    with pytest.raises(TypeError, match="backend='async' runs coroutine functions"):
        cf.fan_out(square_or_fail, [], backend="async")
    with pytest.raises(TypeError, match="iterable"):
        asyncio.run(cf.afan_out(square_or_fail, None))  # type: ignore[call-overload]
