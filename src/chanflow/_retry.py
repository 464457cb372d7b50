"""Retries of failed pool jobs: which errors to retry, how often, and how long to wait.

``Backoff`` is exponential backoff with *full jitter* (the AWS Architecture Blog's
"Exponential Backoff And Jitter"): the wait before retry ``n`` is drawn uniformly
from ``[0, min(cap, base * factor ** (n - 1)))``. Spreading retries over the whole
window, rather than around its end, is what keeps many clients that failed together
from retrying together.

``RetryPolicy`` bundles a pool's ``retries``, ``retry_on`` and ``backoff`` settings,
validated once, so the pool's hot path only asks ``should_retry`` and ``delay``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from ._rate import _check_positive, _is_number

__all__ = ["Backoff", "RetryPolicy"]

RetryOn = type[BaseException] | tuple[type[BaseException], ...]
BackoffFunction = Callable[[int], float]
_DEFAULT_CAP = 10.0  # seconds: Backoff's default cap


def _check_factor(factor: float) -> float:
    if not _is_number(factor):
        raise TypeError(f"Backoff factor must be a number >= 1, not {factor!r}")
    if not 1 <= factor < math.inf:
        raise ValueError(f"Backoff factor must be >= 1 and finite, not {factor!r}")
    return float(factor)


def _check_attempt(attempt: int) -> None:
    if isinstance(attempt, bool) or not isinstance(attempt, int):
        raise TypeError(f"attempt must be an int >= 1, not {attempt!r}")
    if attempt < 1:
        raise ValueError(f"attempt must be an int >= 1, not {attempt!r}")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter, for a worker pool's ``backoff=`` setting.

    After attempt ``n`` of a job fails (``n`` = 1 for the first), the pool waits a
    random time between 0 and ``min(cap, base * factor ** (n - 1))`` seconds before
    the next attempt. The defaults wait up to 0.1 s, 0.2 s, 0.4 s, ... and never more
    than 10 s.

    Raises TypeError if ``base``, ``cap`` or ``factor`` is not a number, ValueError if
    ``base`` or ``cap`` is not positive and finite, or ``factor`` is below 1 or
    infinite. A ``cap`` below ``base`` is allowed: every wait is then capped at ``cap``.
    Instances are immutable, hashable and compare by value.
    """

    base: float = 0.1
    cap: float = _DEFAULT_CAP
    factor: float = 2.0

    def __post_init__(self) -> None:
        base = _check_positive("Backoff base", self.base)
        cap = _check_positive("Backoff cap", self.cap)
        # Frozen: store the normalised floats the only way a frozen dataclass allows.
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "cap", cap)
        object.__setattr__(self, "factor", _check_factor(self.factor))

    def ceiling(self, attempt: int) -> float:
        """The most :meth:`delay` can return after attempt ``attempt``, in seconds.

        Never blocks; never overflows, however large ``attempt`` is. Raises
        TypeError/ValueError unless ``attempt`` is an int >= 1.
        """
        _check_attempt(attempt)
        try:
            growth = self.factor ** (attempt - 1)
        except OverflowError:  # float ** int past the float range
            return self.cap
        return min(self.cap, self.base * growth)

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait after attempt ``attempt`` failed: ``rng() * ceiling(attempt)``.

        ``rng`` returns a float in [0, 1) (``random.random`` by default; pass a seeded
        generator's ``random`` for reproducible delays). Never blocks; costs about
        0.25 us. Raises TypeError/ValueError unless ``attempt`` is an int >= 1.
        """
        return rng() * self.ceiling(attempt)


def _check_retries(retries: int) -> int:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, not {retries!r}")
    return retries


def _is_exception_class(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, BaseException)


def _check_retry_on(retry_on: RetryOn) -> tuple[type[BaseException], ...]:
    if _is_exception_class(retry_on):
        return (retry_on,)  # type: ignore[return-value]
    if isinstance(retry_on, tuple) and retry_on and all(map(_is_exception_class, retry_on)):
        return retry_on
    raise TypeError(
        "retry_on must be an exception class or a non-empty tuple of exception classes, "
        f"not {retry_on!r}"
    )


def _check_backoff(backoff: Backoff | BackoffFunction | float | None) -> Backoff | BackoffFunction:
    if backoff is None:
        return Backoff()
    if isinstance(backoff, Backoff) or callable(backoff):
        return backoff
    if _is_number(backoff):
        return _backoff_from_seconds(backoff)
    raise TypeError(
        "backoff must be a number of seconds, a chanflow.Backoff, a callable taking the "
        f"attempt number and returning seconds, or None, not {backoff!r}"
    )


def _backoff_from_seconds(seconds: float) -> Backoff:
    """``backoff=0.5``: the default exponential backoff from a base of 0.5 s.

    The cap stays the default 10 s unless the base is larger: a user who asks for 30 s
    between attempts does not mean "at most 10".
    """
    if not 0 < seconds < math.inf:
        raise ValueError(f"backoff must be a positive, finite number of seconds, not {seconds!r}")
    return Backoff(base=seconds, cap=max(_DEFAULT_CAP, seconds))


def _check_delay(backoff: BackoffFunction, attempts: int, delay: object) -> float:
    if not _is_number(delay):
        raise TypeError(
            f"backoff {backoff!r} returned {delay!r} for attempt {attempts}: "
            "it must return a number of seconds"
        )
    if not 0 <= delay < math.inf:  # type: ignore[operator]
        raise ValueError(
            f"backoff {backoff!r} returned {delay!r} for attempt {attempts}: "
            "it must return a finite number of seconds >= 0"
        )
    return float(delay)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A validated retry setting: how many retries, of which errors, after what wait.

    Build it with :meth:`build`. ``retries`` is the number of *extra* attempts a job
    may get (so at most ``retries + 1`` attempts in all), ``retry_on`` the tuple of
    exception classes worth retrying, ``backoff`` a :class:`Backoff` or a callable
    ``backoff(attempt) -> seconds``.
    """

    retries: int
    retry_on: tuple[type[BaseException], ...]
    backoff: Backoff | BackoffFunction

    @classmethod
    def build(
        cls,
        retries: int = 0,
        retry_on: RetryOn = (Exception,),
        backoff: Backoff | BackoffFunction | float | None = None,
    ) -> RetryPolicy:
        """Validate the pool's retry arguments into a policy.

        ``retry_on`` may be one exception class or a non-empty tuple of them;
        ``backoff=None`` means ``Backoff()``, a number ``n`` of seconds
        ``Backoff(base=n)``. Raises ValueError for ``retries`` that is not an int >= 0,
        TypeError for a bad ``retry_on`` or ``backoff``.
        """
        return cls(_check_retries(retries), _check_retry_on(retry_on), _check_backoff(backoff))

    def should_retry(self, error: BaseException, attempts: int) -> bool:
        """True if a job whose attempt number ``attempts`` just failed with ``error`` runs again.

        That is when ``attempts <= retries`` and ``error`` is an instance of
        ``retry_on``. Exceptions that are not ``Exception`` subclasses
        (KeyboardInterrupt, SystemExit, asyncio.CancelledError, ...) are never retried,
        whatever ``retry_on`` says. Never blocks; about 0.05 us.
        """
        return (
            attempts <= self.retries
            and isinstance(error, self.retry_on)
            and isinstance(error, Exception)
        )

    def delay(self, attempts: int) -> float:
        """Seconds to wait before the retry that follows failed attempt ``attempts``.

        Never blocks (it computes; the caller sleeps). A callable backoff is called
        with ``attempts``; what it raises propagates, and a result that is not a
        finite number >= 0 raises TypeError/ValueError naming the backoff and the
        value (it is never silently clamped: a negative or NaN wait is a bug).
        """
        backoff = self.backoff
        if isinstance(backoff, Backoff):
            return backoff.delay(attempts)
        return _check_delay(backoff, attempts, backoff(attempts))
