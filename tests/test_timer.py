"""Tests of the shared timer service, Ticker and after()."""

from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import math
import random
import threading
import time
import weakref
from collections.abc import Callable

import pytest

import chanflow._timer as timer_module
from chanflow._channel import Channel
from chanflow._exceptions import ChannelClosed, WouldBlock
from chanflow._select import Recv, aselect, select
from chanflow._timer import Ticker, after, schedule, schedule_at
from helpers import HookCapture, run_threads, wait_until

# Timing tolerances: how late a timer may fire on a busy machine before we call it a bug.
LATE = 0.15


def timer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "chanflow-timer" and t.is_alive()]


def wait_for_a_waiting_tick(ticker: Ticker) -> None:
    wait_until(lambda: len(ticker.channel) == 1)


@pytest.fixture
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timer_module, "IDLE_GRACE", 0.05)
    # Let a thread still waiting out the old, longer grace see the new one.
    with timer_module._service._cond:
        timer_module._service._cond.notify_all()


# -- the timer service ------------------------------------------------------------------


def test_schedule_runs_callbacks_in_deadline_order() -> None:
    order: list[int] = []
    finished = threading.Event()
    now = time.monotonic()
    for index, delay in enumerate([0.06, 0.02, 0.04, 0.0]):
        schedule_at(now + delay, functools.partial(order.append, index))
    # Equal deadlines run in the order they were scheduled.
    schedule_at(now + 0.06, lambda: order.append(4))
    schedule_at(now + 0.06, finished.set)
    assert finished.wait(5)
    assert order == [3, 1, 2, 0, 4]


def test_schedule_fires_no_earlier_than_its_delay() -> None:
    fired: list[float] = []
    done = threading.Event()
    start = time.monotonic()

    def record() -> None:
        fired.append(time.monotonic())
        done.set()

    schedule(0.05, record)
    assert done.wait(5)
    assert start + 0.05 <= fired[0] < start + 0.05 + LATE


def test_cancelled_callback_never_runs_and_is_released() -> None:
    ran = threading.Event()

    class Callback:
        def __call__(self) -> None:
            ran.set()

    callback = Callback()
    alive = weakref.ref(callback)
    handle = schedule(0.05, callback)
    assert handle.pending
    handle.cancel()
    handle.cancel()  # idempotent
    assert not handle.pending
    del callback
    gc.collect()
    assert alive() is None, "a cancelled timer kept its callback alive"
    marker = threading.Event()
    schedule(0.1, marker.set)
    assert marker.wait(5)
    assert not ran.is_set()


def test_cancelled_entries_do_not_pile_up_in_the_heap() -> None:
    handles = [schedule(3600 + i, lambda: None) for i in range(1000)]
    for handle in handles:
        handle.cancel()
    assert len(timer_module._service._heap) < 200


def test_infinite_deadline_never_fires_and_schedules_nothing() -> None:
    handle = schedule(math.inf, lambda: None)
    assert not handle.pending
    handle.cancel()


def test_callback_exception_is_reported_and_does_not_kill_the_timer_thread() -> None:
    after_errors = threading.Event()
    with HookCapture() as capture:
        schedule(0.0, lambda: 1 / 0)

        def exit_() -> None:
            raise SystemExit(3)

        schedule(0.01, exit_)
        schedule(0.02, after_errors.set)
        assert after_errors.wait(5), "the timer thread died"
    kinds = [type(report.exc_value) for report in capture.reports]
    assert kinds == [ZeroDivisionError, SystemExit]
    assert all(report.thread is not None for report in capture.reports)
    assert {report.thread.name for report in capture.reports if report.thread} == {"chanflow-timer"}


def test_timer_thread_exits_when_idle_and_restarts_on_demand(short_grace: None) -> None:
    fired = threading.Event()
    schedule(0.0, fired.set)
    assert fired.wait(5)
    assert len(timer_threads()) <= 1
    wait_until(lambda: not timer_threads(), timeout=5)
    again = threading.Event()
    schedule(0.01, again.set)
    assert again.wait(5)
    assert [t.daemon for t in timer_threads()] in ([True], [])


def test_one_timer_thread_serves_many_timers() -> None:
    events = [threading.Event() for _ in range(200)]
    for index, event in enumerate(events):
        schedule(0.001 * (index % 20), event.set)
    for event in events:
        assert event.wait(5)
    assert len(timer_threads()) <= 1


def test_callbacks_may_schedule_and_cancel_timers() -> None:
    done = threading.Event()
    doomed = schedule(0.2, lambda: pytest.fail("cancelled timer ran"))

    def first() -> None:
        doomed.cancel()
        schedule(0.01, done.set)

    schedule(0.01, first)
    assert done.wait(5)
    assert not doomed.pending


# -- Ticker ---------------------------------------------------------------------------


def test_first_tick_comes_one_interval_after_creation() -> None:
    before = time.monotonic()
    with Ticker(0.05) as ticker:
        after_creation = time.monotonic()
        tick = ticker.channel.recv(timeout=5)
        received = time.monotonic()
    assert isinstance(tick, float)
    assert before + 0.05 <= tick <= received
    assert tick < after_creation + 0.05 + LATE


def test_ticks_are_monotonic_times_spaced_by_the_interval() -> None:
    with Ticker(0.02) as ticker:
        ticks = [ticker.channel.recv(timeout=5) for _ in range(10)]
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert all(gap > 0 for gap in gaps)
    # A fast reader gets every tick: the mean gap is the interval.
    assert sum(gaps) / len(gaps) == pytest.approx(0.02, abs=0.01)


def test_ticks_keep_to_the_grid_and_skip_points_missed_while_late() -> None:
    interval = 0.2
    before = time.monotonic()
    ticker = Ticker(interval)
    start = time.monotonic()
    # Stall the timer thread from 0.1 to 0.7: grid points 0.2 .. 0.6 pass unserved.
    schedule_at(before + 0.1, lambda: time.sleep(0.6))
    try:
        ticks = [ticker.channel.recv(timeout=5) for _ in range(3)]
    finally:
        ticker.stop()
    late, second, third = ticks
    assert before + 0.7 <= late < start + 0.7 + LATE
    # Neither a burst of catch-up ticks (~0.7) nor drift (late + interval = ~0.9):
    # the next tick is the next grid point, 0.8, and the one after is 1.0.
    assert before + 0.8 <= second < start + 0.8 + 0.09
    assert before + 1.0 <= third < start + 1.0 + 0.09


def test_a_slow_reader_misses_ticks_instead_of_queueing_them() -> None:
    with Ticker(0.02) as ticker:
        channel = ticker.channel
        assert channel.capacity == 1
        start = time.monotonic()
        wait_until(lambda: len(channel) == 1)
        time.sleep(0.3)  # be a slow reader: about 15 ticks fall due meanwhile
        stale = channel.recv_nowait()
        fresh = channel.recv(timeout=5)
    # The waiting tick is the first one (those that came after it were dropped), and
    # the next one received is new rather than a queued old one.
    assert stale < start + 0.02 + LATE
    assert fresh - stale > 0.2


def test_stop_closes_the_channel_and_ends_sync_iteration() -> None:
    ticker = Ticker(0.01)
    received: list[float] = []
    two_ticks = threading.Event()

    def reader() -> None:
        for tick in ticker:
            received.append(tick)
            if len(received) == 2:
                two_ticks.set()

    def stopper() -> None:
        assert two_ticks.wait(5)
        ticker.stop()

    run_threads(reader, stopper, timeout=5)
    assert len(received) >= 2
    assert received == sorted(received)
    assert ticker.stopped
    assert ticker.channel.closed
    with pytest.raises(ChannelClosed):
        ticker.channel.recv(timeout=1)


def test_no_stale_tick_after_stop() -> None:
    ticker = Ticker(0.01)
    wait_for_a_waiting_tick(ticker)
    ticker.stop()
    ticker.stop()  # idempotent
    assert list(ticker) == []


def test_stop_wakes_a_blocked_receiver() -> None:
    ticker = Ticker(3600)
    outcome: list[BaseException] = []

    def reader() -> None:
        try:
            ticker.channel.recv(timeout=5)
        except ChannelClosed as error:
            outcome.append(error)

    thread = threading.Thread(target=reader)
    thread.start()
    wait_until(lambda: bool(ticker.channel._receivers))
    ticker.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert len(outcome) == 1


def test_stop_ends_async_iteration() -> None:
    async def main() -> list[float]:
        ticker = Ticker(0.01)
        ticks: list[float] = []
        async for tick in ticker:
            ticks.append(tick)
            if len(ticks) == 3:
                ticker.stop()
        return ticks

    ticks = asyncio.run(asyncio.wait_for(main(), 5))
    assert len(ticks) == 3


def test_stop_from_another_thread_ends_async_iteration() -> None:
    async def main() -> int:
        ticker = Ticker(0.01)
        count = 0
        stopper = threading.Timer(0.1, ticker.stop)
        stopper.start()
        try:
            async for _tick in ticker:
                count += 1
        finally:
            stopper.join()
        return count

    assert asyncio.run(asyncio.wait_for(main(), 5)) >= 1


def test_with_block_stops_the_ticker_even_on_error() -> None:
    used: list[Ticker] = []

    def use_and_fail() -> None:
        with Ticker(0.01) as ticker:
            used.append(ticker)
            assert not ticker.stopped
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        use_and_fail()
    [ticker] = used
    assert ticker.stopped
    assert ticker.channel.closed


def test_ticker_in_select() -> None:
    quit_: Channel[None] = Channel()
    ticks = 0
    with Ticker(0.01) as ticker:
        while ticks < 3:
            selected = select(Recv(ticker.channel), Recv(quit_), timeout=5)
            assert selected.index == 0
            assert selected.ok
            ticks += 1


def test_ticker_in_aselect() -> None:
    async def main() -> int:
        never: Channel[None] = Channel()
        with Ticker(0.01) as ticker:
            selected = await aselect(Recv(never), Recv(ticker.channel), timeout=5)
        return selected.index

    assert asyncio.run(main()) == 1


def test_ticker_that_nobody_references_stops_by_itself(short_grace: None) -> None:
    ticker = Ticker(0.01)
    channel = weakref.ref(ticker.channel)
    wait_for_a_waiting_tick(ticker)
    del ticker
    gc.collect()
    assert channel() is None
    # Nothing keeps ticking, so the timer thread goes idle and exits.
    wait_until(lambda: not timer_threads(), timeout=5)


@pytest.mark.parametrize("interval", [0, -1, -0.5, math.nan, math.inf])
def test_ticker_rejects_bad_intervals(interval: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        Ticker(interval)


@pytest.mark.parametrize("interval", ["1", None, True, [1]])
def test_ticker_rejects_non_numbers(interval: object) -> None:
    with pytest.raises(TypeError, match="interval"):
        Ticker(interval)  # type: ignore[arg-type]


def test_ticker_repr_and_properties() -> None:
    ticker = Ticker(1)
    assert ticker.interval == 1.0
    assert repr(ticker) == "<Ticker interval=1.0 running>"
    ticker.stop()
    assert repr(ticker) == "<Ticker interval=1.0 stopped>"


def test_user_closing_the_channel_stops_the_ticker() -> None:
    ticker = Ticker(0.01)
    ticker.channel.close()
    wait_until(lambda: ticker.stopped)
    ticker.stop()


# -- after() --------------------------------------------------------------------------


def test_after_delivers_one_tick_then_closes() -> None:
    start = time.monotonic()
    channel = after(0.05)
    tick = channel.recv(timeout=5)
    assert start + 0.05 <= tick < start + 0.05 + LATE
    with pytest.raises(ChannelClosed):
        channel.recv(timeout=5)


@pytest.mark.parametrize("seconds", [0, -1, 0.0])
def test_after_with_no_delay_fires_at_once(seconds: float) -> None:
    before = time.monotonic()
    channel = after(seconds)
    assert before <= channel.recv_nowait() <= time.monotonic()
    with pytest.raises(ChannelClosed):
        channel.recv_nowait()


def test_after_is_not_ready_before_its_time() -> None:
    channel = after(1.0)
    with pytest.raises(WouldBlock):
        channel.recv_nowait()
    assert channel.capacity == 1


def test_after_as_a_select_timeout() -> None:
    never: Channel[int] = Channel()
    start = time.monotonic()
    selected = select(Recv(never), Recv(after(0.05)), timeout=5)
    assert selected.index == 1
    assert selected.ok
    assert time.monotonic() - start >= 0.05


@pytest.mark.parametrize(
    ("seconds", "error"), [("1", TypeError), (None, TypeError), (math.nan, ValueError)]
)
def test_after_rejects_bad_seconds(seconds: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="seconds"):
        after(seconds)  # type: ignore[arg-type]


# -- many at once ---------------------------------------------------------------------


def test_many_concurrent_tickers_and_afters() -> None:
    rng = random.Random(1)
    failures: list[str] = []

    def ticker_user(interval: float) -> Callable[[], None]:
        def use() -> None:
            with Ticker(interval) as ticker:
                ticks = [ticker.channel.recv(timeout=5) for _ in range(4)]
            if ticks != sorted(ticks) or len(set(ticks)) != 4:
                failures.append(f"ticker {interval}: {ticks}")

        return use

    def after_user(delay: float) -> Callable[[], None]:
        def use() -> None:
            start = time.monotonic()
            channel = after(delay)
            tick = channel.recv(timeout=5)
            if tick < start + delay:
                failures.append(f"after({delay}) fired early")
            try:
                channel.recv(timeout=5)
                failures.append(f"after({delay}) delivered twice")
            except ChannelClosed:
                pass

        return use

    users = [ticker_user(rng.uniform(0.005, 0.03)) for _ in range(30)]
    users += [after_user(rng.uniform(0, 0.1)) for _ in range(60)]
    run_threads(*users, timeout=15)
    assert failures == []


def test_many_afters_awaited_from_asyncio() -> None:
    async def main() -> list[float]:
        delays = [0.001 * i for i in range(100)]
        channels = [after(delay) for delay in delays]
        return [await channel.arecv(timeout=5) for channel in channels]

    ticks = asyncio.run(main())
    assert len(ticks) == 100
