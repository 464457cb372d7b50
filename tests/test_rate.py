"""Tests of RateLimiter: parsing, bursts, timeouts, cancellation and achieved rate."""

from __future__ import annotations

import asyncio
import contextvars
import math
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chanflow as cf
from chanflow import _rate
from chanflow._rate import RateLimiter

# -- helpers ---------------------------------------------------------------------------


def _worst_window(stamps: list[float], rate: float) -> float:
    """The most acquisitions any window [t_i, t_j] held, minus what ``rate`` allows for it.

    With v_k = k - rate * t_k over sorted stamps, the window from i to j holds
    v_j - v_i + 1 beyond the allowance, so one pass keeping the smallest v suffices.
    """
    stamps = sorted(stamps)
    origin = stamps[0]
    worst = -math.inf
    lowest = math.inf
    for k, stamp in enumerate(stamps):
        v = k - rate * (stamp - origin)
        lowest = min(lowest, v)
        worst = max(worst, v - lowest + 1)
    return worst


_reserved_instant: contextvars.ContextVar[float] = contextvars.ContextVar("_reserved_instant")
_last_clock_read: contextvars.ContextVar[float] = contextvars.ContextVar("_last_clock_read")


@contextmanager
def _recording_reserved_instants() -> Iterator[None]:
    """Let each thread and task read the instant its last token was granted for.

    A clock read after ``acquire()`` returns can be late by however long the scheduler
    kept the caller off a core, so several late reads bunch into one window on a busy
    machine. What the limiter promises to space out is its grants: a token reserved
    at the limiter's clock read ``now`` for the instant ``ready_at`` is granted at
    ``max(now, ready_at)``, and ``acquire()`` must never return before it. The tests
    check both.
    """
    reserve = RateLimiter._reserve

    def reading_clock() -> float:
        now = time.monotonic()
        _last_clock_read.set(now)
        return now

    def recording(self: RateLimiter, tokens: int, max_delay: float) -> _rate.Reservation | None:
        reservation = reserve(self, tokens, max_delay)
        if reservation is not None:
            _reserved_instant.set(max(reservation[0], _last_clock_read.get()))
        return reservation

    with (
        mock.patch.object(_rate, "_monotonic", reading_clock),
        mock.patch.object(RateLimiter, "_reserve", recording),
    ):
        yield


def _check_rate_and_windows(grants: list[tuple[float, float]], rate: float, burst: int) -> None:
    """``grants`` holds (reserved instant, clock read after acquire returned) pairs."""
    assert all(returned >= instant for instant, returned in grants)
    instants = sorted(instant for instant, _ in grants)
    # Instants are sums of float intervals: allow rounding, not a token.
    assert _worst_window(instants, rate) <= burst + 1e-6
    # The first `burst` acquisitions are free; every later one costs 1/rate seconds.
    achieved = (len(instants) - burst) / (instants[-1] - instants[0])
    assert achieved == pytest.approx(rate, rel=0.02)


def _hammer_with_threads(
    limiter: RateLimiter, threads: int, duration: float, grants: list[tuple[float, float]]
) -> list[threading.Thread]:
    deadline = time.monotonic() + duration

    def hammer() -> None:
        while time.monotonic() < deadline:
            assert limiter.acquire()
            grants.append((_reserved_instant.get(), time.monotonic()))

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    for worker in workers:
        worker.start()
    return workers


async def _hammer_with_tasks(
    limiter: RateLimiter, tasks: int, duration: float, grants: list[tuple[float, float]]
) -> None:
    deadline = time.monotonic() + duration

    async def hammer() -> None:
        while time.monotonic() < deadline:
            assert await limiter.aacquire()
            # No await since aacquire's last clock read: this task's instant is current.
            grants.append((_reserved_instant.get(), time.monotonic()))

    await asyncio.gather(*(hammer() for _ in range(tasks)))


def _count_immediate(limiter: RateLimiter) -> int:
    taken = 0
    while limiter.try_acquire():
        taken += 1
    return taken


class _FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def _fake_clock() -> Iterator[_FakeClock]:
    clock = _FakeClock()
    with mock.patch.object(_rate, "_monotonic", clock):
        yield clock


# -- construction and parsing ------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "per_second"),
    [
        ("10/s", 10.0),
        ("500/m", 500 / 60),
        ("2.5/h", 2.5 / 3600),
        (" 3 / sec ", 3.0),
        ("1/second", 1.0),
        ("0.5/seconds", 0.5),
        ("120/min", 2.0),
        ("60/minute", 1.0),
        ("7200/hr", 2.0),
        ("3600/hour", 1.0),
        ("1e3/S", 1000.0),
        (".5/s", 0.5),
    ],
)
def test_parses_rate_strings(rate: str, per_second: float) -> None:
    assert RateLimiter(rate).rate == pytest.approx(per_second)


@pytest.mark.parametrize(
    ("rate", "per", "per_second"),
    [(10, 1.0, 10.0), (5, 2.0, 2.5), (2.5, 0.5, 5.0), (1, 60, 1 / 60)],
)
def test_numeric_rate_is_tokens_per_period(rate: float, per: float, per_second: float) -> None:
    limiter = RateLimiter(rate, per=per)
    assert limiter.rate == pytest.approx(per_second)
    assert isinstance(limiter.rate, float)


@pytest.mark.parametrize(
    "rate",
    ["", "10", "/s", "10/", "10/d", "10/ms", "ten/s", "10//s", "10/s/s", "-5/s", "+5/s",
     "1,000/s", "nan/s", "inf/s", "10 s"],
)  # fmt: skip
def test_malformed_rate_string_raises_value_error_naming_it(rate: str) -> None:
    with pytest.raises(ValueError, match="rate must be") as caught:
        RateLimiter(rate)
    assert repr(rate) in str(caught.value)


@pytest.mark.parametrize("rate", ["0/s", "0.0/m", "0e5/h"])
def test_zero_rate_string_raises(rate: str) -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(rate)


@pytest.mark.parametrize("rate", [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf])
def test_bad_numeric_rate_raises(rate: float) -> None:
    with pytest.raises(ValueError, match=f"rate must be positive.*{re.escape(repr(rate))}"):
        RateLimiter(rate)


@pytest.mark.parametrize("per", [0, -1.0, math.nan, math.inf])
def test_bad_per_raises(per: float) -> None:
    with pytest.raises(ValueError, match=f"per must be positive.*{re.escape(repr(per))}"):
        RateLimiter(10, per=per)


@pytest.mark.parametrize("burst", [0, -1, 1.5, 2.0, True, "3", None])
def test_bad_burst_raises(burst: object) -> None:
    with pytest.raises(ValueError, match=f"burst must be an int >= 1, not {burst!r}"):
        RateLimiter(10, burst=burst)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [None, True, b"10/s", [10]])
def test_rate_of_wrong_type_raises_type_error(rate: object) -> None:
    with pytest.raises(TypeError, match="rate must be"):
        RateLimiter(rate)  # type: ignore[arg-type]


def test_string_rate_with_per_is_ambiguous() -> None:
    with pytest.raises(ValueError, match="ambiguous"):
        RateLimiter("10/s", per=2.0)
    assert RateLimiter("10/s", per=1.0).rate == 10.0


def test_properties_and_repr() -> None:
    limiter = RateLimiter("30/m", burst=4)
    assert limiter.rate == 0.5
    assert limiter.burst == 4
    assert repr(limiter) == "<RateLimiter rate=0.5/s burst=4 available=4.00>"
    assert limiter.try_acquire(3)
    assert "available=1.00" in repr(limiter)
    with pytest.raises(AttributeError):
        limiter.rate = 1.0  # type: ignore[misc]


# -- bursts and idling -------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(burst=st.integers(min_value=1, max_value=200))
def test_fresh_limiter_allows_exactly_burst(burst: int) -> None:
    limiter = RateLimiter(1, per=3600, burst=burst)
    assert _count_immediate(limiter) == burst


def test_try_acquire_many_tokens_at_once() -> None:
    limiter = RateLimiter(1, per=3600, burst=5)
    assert limiter.try_acquire(3)
    assert not limiter.try_acquire(3)  # refused whole: takes nothing
    assert limiter.try_acquire(2)
    assert not limiter.try_acquire()


def test_idle_limiter_never_holds_more_than_burst() -> None:
    limiter = RateLimiter(20, burst=3)
    assert _count_immediate(limiter) == 3
    time.sleep(0.3)  # long enough to refill 6 tokens, were there no cap
    assert _count_immediate(limiter) == 3


def test_tokens_refill_at_the_rate() -> None:
    limiter = RateLimiter(1, per=3600, burst=2)
    with _fake_clock() as clock:
        assert _count_immediate(limiter) == 2
        clock.now += 3599
        assert not limiter.try_acquire()
        clock.now += 1
        assert limiter.try_acquire()
        assert not limiter.try_acquire()


@settings(max_examples=200, deadline=None)
@given(
    burst=st.integers(min_value=1, max_value=6),
    steps=st.lists(
        st.tuples(st.integers(min_value=0, max_value=12), st.integers(min_value=1, max_value=6)),
        max_size=60,
    ),
)
def test_try_acquire_matches_a_token_bucket(burst: int, steps: list[tuple[int, int]]) -> None:
    """GCRA agrees with a token bucket refilled continuously and capped at ``burst``.

    Time advances in eighths of a second and one token costs a quarter, so the float
    arithmetic is exact and the comparison may be too.
    """
    limiter = RateLimiter(4, burst=burst)
    tokens = Fraction(burst)
    with _fake_clock() as clock:
        for eighths, wanted in steps:
            clock.now += eighths / 8
            tokens = min(Fraction(burst), tokens + Fraction(eighths, 8) * 4)
            if wanted > burst:
                with pytest.raises(ValueError, match="exceeds burst"):
                    limiter.try_acquire(wanted)
                continue
            expected = tokens >= wanted
            assert limiter.try_acquire(wanted) is expected
            if expected:
                tokens -= wanted


# -- bad token counts ----------------------------------------------------------------------


def test_more_tokens_than_burst_raises_everywhere() -> None:
    limiter = RateLimiter(10, burst=3)
    for call in (limiter.try_acquire, limiter.acquire):
        with pytest.raises(ValueError, match="tokens=4 exceeds burst=3"):
            call(4)
    with pytest.raises(ValueError, match="tokens=4 exceeds burst=3"):
        asyncio.run(limiter.aacquire(4))
    assert _count_immediate(limiter) == 3  # nothing was taken


@pytest.mark.parametrize("tokens", [0, -1, 1.0, 1.5, True, "1", None])
def test_tokens_must_be_a_positive_int(tokens: object) -> None:
    limiter = RateLimiter(10, burst=3)
    with pytest.raises(ValueError, match=f"tokens must be an int >= 1, not {tokens!r}"):
        limiter.try_acquire(tokens)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tokens must be"):
        limiter.acquire(tokens)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tokens must be"):
        asyncio.run(limiter.aacquire(tokens))  # type: ignore[arg-type]


@pytest.mark.parametrize(("timeout", "error"), [("1", TypeError), (math.nan, ValueError)])
def test_bad_timeout_raises(timeout: object, error: type[Exception]) -> None:
    limiter = RateLimiter(10)
    with pytest.raises(error, match="timeout"):
        limiter.acquire(timeout=timeout)  # type: ignore[arg-type]
    with pytest.raises(error, match="timeout"):
        asyncio.run(limiter.aacquire(timeout=timeout))  # type: ignore[arg-type]


# -- timeouts ------------------------------------------------------------------------------


def test_acquire_timeout_returns_false_promptly_taking_nothing() -> None:
    limiter = RateLimiter(10)  # one token per 0.1 s
    assert limiter.try_acquire()
    started = time.monotonic()
    assert limiter.acquire(timeout=0.05) is False
    assert limiter.acquire(timeout=0) is False
    assert limiter.acquire(timeout=-1) is False
    assert time.monotonic() - started < 0.05
    # Had a failed call taken a slot, the next token would be 0.2 s away.
    assert limiter.acquire(timeout=0.15) is True
    assert time.monotonic() - started >= 0.09


def test_aacquire_timeout_returns_false_promptly_taking_nothing() -> None:
    async def main() -> None:
        limiter = RateLimiter(10)
        assert await limiter.aacquire()
        started = time.monotonic()
        assert await limiter.aacquire(timeout=0.05) is False
        assert await limiter.aacquire(timeout=0) is False
        assert time.monotonic() - started < 0.05
        assert await limiter.aacquire(timeout=0.15) is True
        assert time.monotonic() - started >= 0.09

    asyncio.run(main())


def test_zero_timeout_acquires_when_tokens_are_there() -> None:
    limiter = RateLimiter(1, per=3600, burst=2)
    assert limiter.acquire(timeout=0) is True
    assert limiter.acquire(timeout=-5) is True
    assert limiter.acquire(timeout=0) is False


def test_acquire_waits_for_the_next_token() -> None:
    limiter = RateLimiter(20)  # one token per 0.05 s
    assert limiter.acquire()
    started = time.monotonic()
    assert limiter.acquire(timeout=1.0)
    assert 0.045 <= time.monotonic() - started < 0.5


# -- cancellation --------------------------------------------------------------------------


def test_cancelled_aacquire_gives_its_reservation_back() -> None:
    async def main() -> None:
        limiter = RateLimiter(1, burst=3)  # one token per second
        assert limiter.try_acquire(2)
        waiter = asyncio.create_task(limiter.aacquire(3))  # needs about 2 s more
        await asyncio.sleep(0)  # the task has reserved and is sleeping
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        # The third token was never used by anyone, so it is still there.
        assert limiter.try_acquire()
        assert not limiter.try_acquire()

    asyncio.run(main())


def test_aacquire_timed_out_by_wait_for_gives_its_reservation_back() -> None:
    async def main() -> None:
        limiter = RateLimiter(1, burst=2)
        assert limiter.try_acquire()
        with pytest.raises((TimeoutError, asyncio.TimeoutError)):
            await asyncio.wait_for(limiter.aacquire(2), 0.01)
        assert limiter.try_acquire()

    asyncio.run(main())


def test_cancelled_aacquire_keeps_its_slot_when_a_later_one_was_reserved() -> None:
    async def main() -> None:
        limiter = RateLimiter(10, burst=2)  # one token per 0.1 s
        assert limiter.try_acquire(2)
        first = asyncio.create_task(limiter.aacquire())  # due in 0.1 s
        second = asyncio.create_task(limiter.aacquire())  # due in 0.2 s
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        # Giving the first slot back would make a third caller due in 0.2 s, together
        # with the second. It must stay due in 0.3 s, beyond this timeout.
        assert await limiter.aacquire(timeout=0.25) is False
        assert await second

    asyncio.run(main())


# -- ordering and thread safety ------------------------------------------------------------


def test_waiters_are_served_in_reservation_order() -> None:
    async def main() -> None:
        limiter = RateLimiter(200, burst=3)
        assert limiter.try_acquire(3)
        order: list[int] = []

        async def take(index: int, tokens: int) -> None:
            assert await limiter.aacquire(tokens)
            order.append(index)

        # A large request is not overtaken by the small ones made after it.
        sizes = [1, 3, 1, 2, 1, 1, 3, 1]
        await asyncio.gather(*(take(i, size) for i, size in enumerate(sizes)))
        assert order == list(range(len(sizes)))

    asyncio.run(main())


def test_concurrent_try_acquire_hands_out_exactly_burst() -> None:
    limiter = RateLimiter(1, per=3600, burst=500)
    start = threading.Barrier(8)
    taken: list[int] = []

    def grab() -> None:
        start.wait()
        taken.append(sum(limiter.try_acquire() for _ in range(2000)))

    workers = [threading.Thread(target=grab) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sum(taken) == 500


def test_threads_get_the_rate_and_no_window_holds_too_many() -> None:
    limiter = RateLimiter(200, burst=4)
    grants: list[tuple[float, float]] = []
    with _recording_reserved_instants():
        for worker in _hammer_with_threads(limiter, threads=6, duration=2.0, grants=grants):
            worker.join()
    assert len(grants) > 350
    _check_rate_and_windows(grants, rate=200, burst=4)


def test_coroutines_get_the_rate_and_no_window_holds_too_many() -> None:
    limiter = RateLimiter("12000/m", burst=3)
    grants: list[tuple[float, float]] = []
    with _recording_reserved_instants():
        asyncio.run(_hammer_with_tasks(limiter, tasks=6, duration=2.0, grants=grants))
    assert len(grants) > 350
    _check_rate_and_windows(grants, rate=200, burst=3)


def test_threads_and_coroutines_share_one_limiter() -> None:
    limiter = RateLimiter(300, burst=2)
    grants: list[tuple[float, float]] = []
    with _recording_reserved_instants():
        workers = _hammer_with_threads(limiter, threads=3, duration=1.0, grants=grants)
        asyncio.run(_hammer_with_tasks(limiter, tasks=3, duration=1.0, grants=grants))
        for worker in workers:
            worker.join()
    assert len(grants) > 250
    _check_rate_and_windows(grants, rate=300, burst=2)


# -- context managers ----------------------------------------------------------------------


def test_with_takes_one_token_and_lets_errors_through() -> None:
    limiter = RateLimiter(1, per=3600, burst=2)
    with limiter:
        pass
    with pytest.raises(KeyError), limiter:
        raise KeyError("inside")
    assert not limiter.try_acquire()


def test_async_with_takes_one_token_and_lets_errors_through() -> None:
    async def main() -> None:
        limiter = RateLimiter(1, per=3600, burst=2)
        async with limiter:
            pass
        with pytest.raises(KeyError):
            async with limiter:
                raise KeyError("inside")
        assert not limiter.try_acquire()

    asyncio.run(main())


def test_with_blocks_until_a_token_is_due() -> None:
    limiter = RateLimiter(20)
    started = time.monotonic()
    for _ in range(3):
        with limiter:
            pass
    assert time.monotonic() - started >= 0.095  # two waits of 0.05 s


def test_acquire_returns_false_when_its_context_is_cancelled() -> None:
    limiter = RateLimiter(1)  # one token a second
    assert limiter.acquire()
    context = cf.background().with_cancel()
    timer = threading.Timer(0.02, context.cancel)
    start = time.monotonic()
    timer.start()
    try:
        assert limiter.acquire(context=context) is False
    finally:
        timer.cancel()
    assert time.monotonic() - start < 0.9, "it should stop at the cancel, not at its slot"
    # Its slot was given back: the next token is the one 1 s after the first, which
    # fits in 1.5 s (had the slot been kept, the next would be 2 s away).
    assert limiter.acquire(timeout=1.5)


def test_acquire_with_a_live_context_waits_for_its_token() -> None:
    limiter = RateLimiter(50)
    assert limiter.acquire()
    start = time.monotonic()
    assert limiter.acquire(context=cf.background().with_cancel())
    assert 0.015 <= time.monotonic() - start < 1.0
