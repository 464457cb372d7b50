"""select / aselect: readiness, default, timeout, nil channels, fairness, exactly-once."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import pytest

import chanflow as cf
from helpers import run_threads, wait_until


def test_selected_is_a_named_tuple() -> None:
    ch: cf.Channel[int] = cf.Channel(1)
    ch.send(5)
    selected = cf.select(cf.Recv(ch))
    assert selected == (0, 5, True)
    assert (selected.index, selected.value, selected.ok) == (0, 5, True)
    assert isinstance(selected, tuple)


def test_ready_recv_and_ready_send() -> None:
    empty: cf.Channel[int] = cf.Channel(1)
    full: cf.Channel[int] = cf.Channel(1)
    full.send(1)
    assert cf.select(cf.Recv(empty), cf.Recv(full)) == cf.Selected(1, 1, True)
    assert cf.select(cf.Send(full, 9), cf.Send(empty, 2)) in {(0, None, True), (1, None, True)}


def test_default_returns_minus_one_when_nothing_is_ready() -> None:
    ch: cf.Channel[int] = cf.Channel()
    assert cf.select(cf.Recv(ch), cf.Send(ch, 1), default=True) == (-1, None, False)
    assert cf.select(default=True) == (-1, None, False)


def test_timeout_raises_timeout_error_and_fires_nothing() -> None:
    ch: cf.Channel[int] = cf.Channel(1)
    ch.send(1)
    other: cf.Channel[int] = cf.Channel()
    with pytest.raises(TimeoutError):
        cf.select(cf.Recv(other), cf.Send(ch, 2), timeout=0.02)
    assert ch.recv_many(5) == [1]
    assert not ch._senders and not other._receivers  # no stale parked entries


def test_nil_channel_is_never_ready() -> None:
    ch: cf.Channel[int] = cf.Channel(1)
    ch.send(3)
    assert cf.select(cf.Recv(None), cf.Send(None, 1), cf.Recv(ch)) == (2, 3, True)
    with pytest.raises(TimeoutError):
        cf.select(cf.Recv(None), cf.Send(None, 1), timeout=0.01)
    assert cf.select(cf.Recv(None), default=True).index == -1


def test_closed_recv_case_reports_not_ok() -> None:
    ch: cf.Channel[int] = cf.Channel(2)
    ch.send(1)
    ch.close()
    assert cf.select(cf.Recv(ch)) == (0, 1, True)
    assert cf.select(cf.Recv(ch)) == (0, None, False)
    assert cf.select(cf.Recv(ch)) == (0, None, False)


def test_send_case_on_closed_channel_raises() -> None:
    ch: cf.Channel[int] = cf.Channel(2)
    ch.close()
    with pytest.raises(cf.ChannelClosed):
        cf.select(cf.Send(ch, 1), cf.Recv(cf.Channel()))


def test_send_case_raises_when_the_channel_closes_while_waiting() -> None:
    ch: cf.Channel[int] = cf.Channel()
    errors: list[BaseException] = []

    def selector() -> None:
        try:
            cf.select(cf.Send(ch, 1), timeout=5)
        except cf.ChannelClosed as error:
            errors.append(error)

    thread = threading.Thread(target=selector)
    thread.start()
    wait_until(lambda: len(ch._senders) == 1)
    ch.close()
    thread.join(5)
    assert len(errors) == 1


def test_recv_case_fires_not_ok_when_the_channel_closes_while_waiting() -> None:
    ch: cf.Channel[int] = cf.Channel()
    other: cf.Channel[int] = cf.Channel()
    results: list[cf.Selected] = []
    thread = threading.Thread(
        target=lambda: results.append(cf.select(cf.Recv(other), cf.Recv(ch), timeout=5))
    )
    thread.start()
    wait_until(lambda: len(ch._receivers) == 1)
    ch.close()
    thread.join(5)
    assert results == [(1, None, False)]
    assert not other._receivers


def test_send_and_recv_on_the_same_unbuffered_channel_blocks() -> None:
    ch: cf.Channel[int] = cf.Channel()
    assert cf.select(cf.Send(ch, 1), cf.Recv(ch), default=True).index == -1
    with pytest.raises(TimeoutError):
        cf.select(cf.Send(ch, 1), cf.Recv(ch), timeout=0.05)


def test_select_waits_and_is_completed_by_another_thread() -> None:
    a: cf.Channel[str] = cf.Channel()
    b: cf.Channel[str] = cf.Channel()
    results: list[cf.Selected] = []
    thread = threading.Thread(target=lambda: results.append(cf.select(cf.Recv(a), cf.Recv(b))))
    thread.start()
    wait_until(lambda: len(b._receivers) == 1)
    b.send("hello")
    thread.join(5)
    assert results == [(1, "hello", True)]
    assert not a._receivers


@pytest.mark.parametrize("n_cases", [2, 3, 5])
def test_choice_among_ready_cases_is_uniform(n_cases: int) -> None:
    channels = [cf.Channel[int](1) for _ in range(n_cases)]
    rounds = 3000
    counts: Counter[int] = Counter()
    for _ in range(rounds):
        for ch in channels:
            if not len(ch):
                ch.send(0)
        counts[cf.select(*(cf.Recv(ch) for ch in channels)).index] += 1
    expected = rounds / n_cases
    sigma = (rounds * (1 / n_cases) * (1 - 1 / n_cases)) ** 0.5
    for index in range(n_cases):  # 5 sigma: fails by chance about once in 3 million runs
        assert abs(counts[index] - expected) < 5 * sigma, counts


def test_exactly_one_case_fires_when_two_partners_race() -> None:
    for _ in range(300):
        a: cf.Channel[str] = cf.Channel()
        b: cf.Channel[str] = cf.Channel()
        selected: list[cf.Selected] = []
        selector = threading.Thread(
            target=lambda: selected.append(cf.select(cf.Send(a, "x"), cf.Recv(b), timeout=5))
        )
        selector.start()
        wait_until(lambda: len(a._senders) == 1 and len(b._receivers) == 1)
        start = threading.Barrier(2)
        outcomes: dict[str, object] = {}

        def take_a() -> None:
            start.wait()
            try:
                outcomes["a"] = a.recv_nowait()
            except cf.WouldBlock:
                pass

        def give_b() -> None:
            start.wait()
            try:
                b.send_nowait("y")
                outcomes["b"] = True
            except cf.WouldBlock:
                pass

        run_threads(take_a, give_b)
        selector.join(5)
        assert len(outcomes) == 1, outcomes
        assert selected[0].index == (0 if "a" in outcomes else 1)
        assert not a._senders and not b._receivers


def test_bad_cases_are_refused_with_a_clear_message() -> None:
    ch: cf.Channel[int] = cf.Channel()
    with pytest.raises(TypeError, match=r"cf\.Recv"):
        cf.select(ch)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Channel"):
        cf.Recv("not a channel")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Channel"):
        cf.Send(42, 1)  # type: ignore[arg-type]


# -- aselect -----------------------------------------------------------------------------


def test_aselect_waits_without_blocking_the_loop() -> None:
    async def main() -> cf.Selected:
        a: cf.Channel[int] = cf.Channel()
        b: cf.Channel[int] = cf.Channel()
        threading.Timer(0.05, a.send, args=(1,)).start()
        selected = await cf.aselect(cf.Recv(a), cf.Recv(b), timeout=5)
        assert not b._receivers
        return selected

    assert asyncio.run(main()) == (0, 1, True)


def test_aselect_default_and_timeout() -> None:
    async def main() -> None:
        ch: cf.Channel[int] = cf.Channel()
        assert (await cf.aselect(cf.Recv(ch), default=True)).index == -1
        with pytest.raises(TimeoutError):
            await cf.aselect(cf.Recv(ch), cf.Send(ch, 1), timeout=0.01)
        assert not ch._receivers and not ch._senders

    asyncio.run(main())


def test_cancelled_aselect_gives_back_the_item_it_was_handed() -> None:
    async def main() -> None:
        a: cf.Channel[str] = cf.Channel()
        b: cf.Channel[str] = cf.Channel()
        task = asyncio.ensure_future(cf.aselect(cf.Recv(a), cf.Recv(b)))
        await asyncio.sleep(0)
        b.send_nowait("item")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert b.recv_nowait() == "item"
        assert not a._receivers and not b._receivers

    asyncio.run(main())


def test_cancelled_aselect_before_anything_fired_leaves_no_trace() -> None:
    async def main() -> None:
        a: cf.Channel[str] = cf.Channel()
        task = asyncio.ensure_future(cf.aselect(cf.Recv(a), cf.Send(a, "x")))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not a._receivers and not a._senders

    asyncio.run(main())


def test_threads_and_coroutines_select_against_each_other() -> None:
    n = 500
    ping: cf.Channel[int] = cf.Channel()
    pong: cf.Channel[int] = cf.Channel()
    quit_: cf.Channel[None] = cf.Channel()
    seen: list[int] = []

    async def echo() -> None:
        while True:
            selected = await cf.aselect(cf.Recv(ping), cf.Recv(quit_))
            if selected.index == 1:
                return
            await cf.aselect(cf.Send(pong, selected.value * 10))

    def driver() -> None:
        for i in range(n):
            cf.select(cf.Send(ping, i))
            seen.append(cf.select(cf.Recv(pong)).value)
        quit_.close()

    run_threads(lambda: asyncio.run(echo()), driver)
    assert seen == [i * 10 for i in range(n)]
