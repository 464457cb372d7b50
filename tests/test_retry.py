"""Backoff (exponential, full jitter) and the pool's private RetryPolicy."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chanflow._retry import Backoff, RetryPolicy

# -- Backoff: construction ----------------------------------------------------------


def test_backoff_defaults_and_repr() -> None:
    backoff = Backoff()
    assert (backoff.base, backoff.cap, backoff.factor) == (0.1, 10.0, 2.0)
    assert repr(backoff) == "Backoff(base=0.1, cap=10.0, factor=2.0)"


def test_backoff_normalises_numbers_to_floats_and_compares_by_value() -> None:
    backoff = Backoff(base=1, cap=8, factor=3)
    assert backoff == Backoff(1.0, 8.0, 3.0)
    assert hash(backoff) == hash(Backoff(1.0, 8.0, 3.0))
    assert all(type(value) is float for value in (backoff.base, backoff.cap, backoff.factor))


def test_backoff_is_frozen_and_slotted() -> None:
    backoff = Backoff()
    with pytest.raises(dataclasses.FrozenInstanceError):
        backoff.base = 1.0  # type: ignore[misc]
    assert not hasattr(backoff, "__dict__")


@pytest.mark.parametrize("name", ["base", "cap"])
@pytest.mark.parametrize("bad", ["1", None, True, [1.0]])
def test_backoff_rejects_non_numbers(name: str, bad: object) -> None:
    with pytest.raises(TypeError, match=name):
        Backoff(**{name: bad})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["base", "cap"])
@pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan])
def test_backoff_rejects_non_positive_or_infinite(name: str, bad: float) -> None:
    kwargs = {name: bad}
    if name == "base":
        kwargs["cap"] = 10.0
    with pytest.raises(ValueError, match=name):
        Backoff(**kwargs)


def test_a_cap_below_base_caps_every_wait() -> None:
    assert Backoff(base=2.0, cap=1.0).ceiling(1) == 1.0
    assert Backoff(base=2.0, cap=1.0).ceiling(5) == 1.0
    assert Backoff(base=2.0, cap=2.0).ceiling(5) == 2.0


@pytest.mark.parametrize("bad", [0.99, 0, -2, math.inf, math.nan])
def test_backoff_rejects_bad_factor_values(bad: float) -> None:
    with pytest.raises(ValueError, match="factor"):
        Backoff(factor=bad)


@pytest.mark.parametrize("bad", ["2", None, False])
def test_backoff_rejects_non_number_factor(bad: object) -> None:
    with pytest.raises(TypeError, match="factor"):
        Backoff(factor=bad)  # type: ignore[arg-type]


# -- Backoff: delays ----------------------------------------------------------------


def test_ceiling_grows_exponentially_up_to_the_cap() -> None:
    backoff = Backoff(base=0.1, cap=1.0, factor=2.0)
    ceilings = [backoff.ceiling(attempt) for attempt in range(1, 7)]
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_delay_is_rng_times_ceiling() -> None:
    backoff = Backoff(base=0.5, cap=100.0, factor=3.0)
    assert backoff.delay(3, rng=lambda: 0.5) == pytest.approx(0.5 * 4.5)
    assert backoff.delay(3, rng=lambda: 0.0) == 0.0


def test_delay_spreads_over_the_whole_window() -> None:
    backoff = Backoff(base=1.0, cap=1.0)
    rng = random.Random(1234).random
    delays = [backoff.delay(1, rng) for _ in range(2000)]
    assert min(delays) < 0.05
    assert max(delays) > 0.95
    assert 0.45 < sum(delays) / len(delays) < 0.55
    assert all(0.0 <= delay < 1.0 for delay in delays)


def test_seeded_rng_gives_reproducible_delays() -> None:
    backoff = Backoff()
    first = [backoff.delay(n, random.Random(7).random) for n in range(1, 20)]
    second = [backoff.delay(n, random.Random(7).random) for n in range(1, 20)]
    assert first == second


@pytest.mark.parametrize("attempt", [1_100, 10**6, 10**18, 10**100])
def test_huge_attempt_numbers_do_not_overflow(attempt: int) -> None:
    assert Backoff(base=0.1, cap=30.0).ceiling(attempt) == 30.0
    assert 0.0 <= Backoff(base=0.1, cap=30.0).delay(attempt) <= 30.0
    assert Backoff(base=0.5, cap=30.0, factor=1.0).ceiling(attempt) == 0.5


@pytest.mark.parametrize(("bad", "error"), [(0, ValueError), (-3, ValueError)])
def test_delay_rejects_attempts_below_one(bad: int, error: type[Exception]) -> None:
    with pytest.raises(error, match="attempt"):
        Backoff().delay(bad)


@pytest.mark.parametrize("bad", [1.5, "2", None, True])
def test_delay_rejects_non_int_attempts(bad: object) -> None:
    with pytest.raises(TypeError, match="attempt"):
        Backoff().delay(bad)  # type: ignore[arg-type]


finite_seconds = st.floats(min_value=1e-6, max_value=1e4, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    base=finite_seconds,
    cap_ratio=st.floats(min_value=1.0, max_value=1e6),
    factor=st.floats(min_value=1.0, max_value=50.0),
    attempt=st.integers(min_value=1, max_value=1500),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delay_stays_within_the_exact_bound(
    base: float, cap_ratio: float, factor: float, attempt: int, seed: int
) -> None:
    backoff = Backoff(base=base, cap=base * cap_ratio, factor=factor)
    exact_bound = min(
        Fraction(backoff.cap), Fraction(backoff.base) * Fraction(backoff.factor) ** (attempt - 1)
    )
    ceiling = backoff.ceiling(attempt)
    assert ceiling <= backoff.cap
    assert ceiling == pytest.approx(float(exact_bound), rel=1e-9)
    for rng in (random.Random(seed).random, lambda: math.nextafter(1.0, 0.0)):
        delay = backoff.delay(attempt, rng)
        assert 0.0 <= delay <= ceiling


# -- RetryPolicy: building ----------------------------------------------------------


def test_build_defaults() -> None:
    policy = RetryPolicy.build()
    assert policy.retries == 0
    assert policy.retry_on == (Exception,)
    assert policy.backoff == Backoff()


def test_build_keeps_settings_and_wraps_a_single_class() -> None:
    def backoff(attempt: int) -> float:
        return 0.0

    policy = RetryPolicy.build(retries=3, retry_on=OSError, backoff=backoff)
    assert (policy.retries, policy.retry_on, policy.backoff) == (3, (OSError,), backoff)
    custom = Backoff(base=1.0, cap=2.0)
    assert RetryPolicy.build(backoff=custom).backoff is custom
    both = (OSError, ValueError)
    assert RetryPolicy.build(retry_on=both).retry_on is both


def test_policy_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RetryPolicy.build().retries = 5  # type: ignore[misc]


@pytest.mark.parametrize("bad", [-1, 1.5, "2", None, True])
def test_build_rejects_bad_retries(bad: object) -> None:
    with pytest.raises(ValueError, match="retries"):
        RetryPolicy.build(retries=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", [(), [ValueError], (ValueError, 3), "ValueError", ValueError("x"), int]
)
def test_build_rejects_bad_retry_on(bad: object) -> None:
    with pytest.raises(TypeError, match="retry_on"):
        RetryPolicy.build(retry_on=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["fast", True, [0.5]])  # a number is a valid backoff (issue 16)
def test_build_rejects_bad_backoff(bad: object) -> None:
    with pytest.raises(TypeError, match="backoff"):
        RetryPolicy.build(backoff=bad)  # type: ignore[arg-type]


# -- RetryPolicy: deciding ----------------------------------------------------------


@pytest.mark.parametrize(
    ("retries", "retry_on", "error", "attempts", "expected"),
    [
        (0, (Exception,), ValueError(), 1, False),  # no retries at all
        (1, (Exception,), ValueError(), 1, True),
        (1, (Exception,), ValueError(), 2, False),  # retries used up
        (3, (Exception,), ValueError(), 3, True),
        (3, (Exception,), ValueError(), 4, False),
        (3, (OSError,), ValueError(), 1, False),  # not a listed kind
        (3, (OSError,), ConnectionError(), 1, True),  # subclasses count
        (3, (OSError, ValueError), ValueError(), 2, True),
        (3, (TimeoutError,), TimeoutError(), 1, True),
    ],
)
def test_should_retry_truth_table(
    retries: int,
    retry_on: tuple[type[BaseException], ...],
    error: BaseException,
    attempts: int,
    expected: bool,
) -> None:
    policy = RetryPolicy.build(retries=retries, retry_on=retry_on)
    assert policy.should_retry(error, attempts) is expected


@pytest.mark.parametrize(
    "error", [KeyboardInterrupt(), SystemExit(1), asyncio.CancelledError(), GeneratorExit()]
)
def test_base_exceptions_are_never_retried(error: BaseException) -> None:
    policy = RetryPolicy.build(retries=5, retry_on=BaseException)
    assert policy.should_retry(error, 1) is False
    assert policy.should_retry(RuntimeError(), 1) is True


@pytest.mark.parametrize(("failures", "retries"), [(0, 2), (1, 2), (2, 2), (3, 2), (9, 0)])
def test_a_retry_loop_makes_at_most_retries_plus_one_attempts(failures: int, retries: int) -> None:
    policy = RetryPolicy.build(retries=retries, backoff=lambda attempt: 0.0)
    attempts = 0
    while True:
        attempts += 1
        error = OSError("flaky") if attempts <= failures else None
        if error is None or not policy.should_retry(error, attempts):
            break
    assert attempts == min(failures, retries) + 1


# -- RetryPolicy: delays ------------------------------------------------------------


def test_delay_with_a_backoff_object_stays_in_its_window() -> None:
    policy = RetryPolicy.build(backoff=Backoff(base=1.0, cap=3.0))
    for attempts in range(1, 6):
        assert 0.0 <= policy.delay(attempts) <= min(3.0, 2.0 ** (attempts - 1))


def test_delay_calls_a_callable_with_the_attempt_number() -> None:
    seen: list[int] = []

    def backoff(attempt: int) -> int:
        seen.append(attempt)
        return attempt * 2

    policy = RetryPolicy.build(retries=3, backoff=backoff)
    assert [policy.delay(n) for n in (1, 2, 3)] == [2.0, 4.0, 6.0]
    assert type(policy.delay(1)) is float
    assert seen == [1, 2, 3, 1]


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_delay_rejects_bad_numbers_from_a_callable(bad: float) -> None:
    policy = RetryPolicy.build(backoff=lambda attempt: bad)
    with pytest.raises(ValueError, match=r"returned .* for attempt 2"):
        policy.delay(2)


@pytest.mark.parametrize("bad", ["1", None, True, [0.1]])
def test_delay_rejects_non_numbers_from_a_callable(bad: object) -> None:
    policy = RetryPolicy.build(backoff=lambda attempt: bad)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="must return a number of seconds"):
        policy.delay(1)


def test_delay_lets_errors_of_a_callable_propagate() -> None:
    def backoff(attempt: int) -> float:
        raise LookupError("no delay for you")

    with pytest.raises(LookupError, match="no delay for you"):
        RetryPolicy.build(backoff=backoff).delay(1)
