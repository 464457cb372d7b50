"""Code written for ``concurrent.futures``, moved to chanflow by changing one line.

``cf.PoolExecutor`` is a ``concurrent.futures.Executor``: ``submit``, ``map``,
``shutdown``, ``with``, ``loop.run_in_executor``. Swap it in where the stdlib's
executor was created::

    executor = ThreadPoolExecutor(4)            ->  executor = cf.PoolExecutor(4)
    executor = ProcessPoolExecutor()            ->  executor = cf.PoolExecutor(backend="process")

and nothing else changes: the same values, the same exceptions. What it adds:

1. The swap: one function run on ``ThreadPoolExecutor``, on ``cf.PoolExecutor`` and
   on ``cf.PoolExecutor(backend="process")``, with identical results and errors.
2. A lazy, bounded ``map``: over ``itertools.count()`` (the stdlib's ``map`` before
   Python 3.14 submits its whole input first, so it never returns), stopped after 10
   values; ``buffersize=8`` caps the jobs taken ahead of the consumer.
3. A per-job ``timeout=``: the slow job's future fails with ``cf.JobTimeout``, the
   others are unaffected. A thread cannot be killed, so the job is told through
   ``cf.current_context()``; on ``backend="process"`` its worker would be killed.
4. ``retries=`` with ``backoff=0.01`` (seconds): a job that fails twice with a
   ``ConnectionError`` heals, where the stdlib's future holds the first error.
5. ``loop.run_in_executor`` and ``loop.set_default_executor`` (so
   ``asyncio.to_thread`` runs on it too).

Run it with ``.venv/bin/python examples/executor_swap.py`` (about half a second).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor

import chanflow as cf

WORDS = ["gopher", "channel", "select", "context"]
TIMEOUT = 0.2  # section 3's per-job timeout, seconds
AHEAD = 8  # section 2's buffersize


def say(line: str) -> None:
    """Print one line in one write, so lines from several threads never interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# -- 1. the swap ------------------------------------------------------------------------------


def checksum(text: str) -> str:
    """The job: a short digest of ``text``; empty text is an error."""
    if not text:
        raise ValueError("empty text")
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def written_for_the_stdlib(executor: Executor) -> tuple[list[str], str]:
    """Code that knows only ``concurrent.futures.Executor``: map, then a failing submit."""
    with executor:
        values = list(executor.map(checksum, WORDS))
        error = executor.submit(checksum, "").exception()
    return values, f"{type(error).__name__}: {error}"


def the_swap() -> None:
    say("1. the same code on ThreadPoolExecutor and on cf.PoolExecutor")
    outcomes = {
        "ThreadPoolExecutor(4)": written_for_the_stdlib(ThreadPoolExecutor(4)),
        "cf.PoolExecutor(4)": written_for_the_stdlib(cf.PoolExecutor(4)),
        'cf.PoolExecutor(2, backend="process")': written_for_the_stdlib(
            cf.PoolExecutor(2, backend="process")
        ),
    }
    for name, (values, error) in outcomes.items():
        say(f"   {name}: {values}, then {error}")
    first, *others = outcomes.values()
    same = all(outcome == first for outcome in others)
    say(f"   identical values and errors: {same}")


# -- 2. a lazy map ----------------------------------------------------------------------------


def square(n: int) -> int:
    return n * n


def lazy_map() -> None:
    say(f"2. map over itertools.count(), buffersize={AHEAD}, stopped after 10 values")
    taken = 0

    def numbers() -> Iterator[int]:
        nonlocal taken
        for n in itertools.count():
            taken += 1
            yield n

    with cf.PoolExecutor(4) as executor:
        squares = executor.map(square, numbers(), buffersize=AHEAD)
        first = [next(squares) for _ in range(10)]
        say(f"   {first}")
        say(f"   inputs taken: {taken} (10 yielded + at most {AHEAD} ahead)")
    try:
        next(squares)
    except RuntimeError as error:  # the executor's shutdown ended the open map
        say(f"   next() after shutdown: RuntimeError: {error}")


# -- 3. a job timeout -------------------------------------------------------------------------


def wait_for(seconds: float) -> str:
    """A job that waits ``seconds``; it gives up early when its context is cancelled."""
    cf.current_context().wait(seconds)  # a thread job's way to hear about its timeout
    return f"waited {seconds} s"


def job_timeout() -> None:
    say(f"3. timeout={TIMEOUT}: a slow job fails alone with cf.JobTimeout")
    started = time.monotonic()
    with cf.PoolExecutor(4, timeout=TIMEOUT) as executor:
        fast = executor.submit(wait_for, 0.05)
        slow = executor.submit(wait_for, 5.0)
        error = slow.exception()
        failed_after = time.monotonic() - started
        value = fast.result()
    stats = executor.stats()  # after shutdown: every job is settled
    say(f"   fast job: {value}")
    say(f"   slow job: {type(error).__name__}, a TimeoutError: {isinstance(error, TimeoutError)}")
    say(f"   it failed within 2x the timeout: {failed_after < 2 * TIMEOUT}")
    say(f"   stats: completed={stats.completed} timed_out={stats.timed_out}")


# -- 4. retries --------------------------------------------------------------------------------


class Flaky:
    """Fails its first ``failures`` calls with a ConnectionError, then doubles its input."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, n: int) -> int:
        with self._lock:
            self.calls += 1
            call = self.calls
        if call <= self.failures:
            raise ConnectionError(f"call {call}: connection reset")
        return 2 * n


def retries() -> None:
    say("4. retries=3, backoff=0.01: a job that fails twice, then succeeds")
    with ThreadPoolExecutor(4) as executor:
        error = executor.submit(Flaky(failures=2), 21).exception()
    say(f"   ThreadPoolExecutor(4): {type(error).__name__}: {error}")
    flaky = Flaky(failures=2)
    with cf.PoolExecutor(4, retries=3, backoff=0.01) as pool_executor:
        value = pool_executor.submit(flaky, 21).result()
    say(f"   cf.PoolExecutor(4, retries=3, backoff=0.01): {value} after {flaky.calls} calls")
    say(f"   stats: retried={pool_executor.stats().retried}")


# -- 5. asyncio --------------------------------------------------------------------------------


def blocking_lookup(key: str) -> str:
    """A blocking call (a database driver, a file system) that asyncio must not run itself."""
    time.sleep(0.02)
    worker = threading.current_thread().name.rstrip("0123456789")
    return f"{key} on {worker}<n>"


async def from_asyncio() -> None:
    loop = asyncio.get_running_loop()
    with cf.PoolExecutor(4) as executor:
        looked_up = await asyncio.gather(
            *(loop.run_in_executor(executor, blocking_lookup, key) for key in ("a", "b", "c"))
        )
    for line in looked_up:
        say(f"   run_in_executor: {line}")
    loop.set_default_executor(cf.PoolExecutor(2))  # asyncio.run shuts it down at the end
    say(f"   asyncio.to_thread: {await asyncio.to_thread(blocking_lookup, 'd')}")


def with_asyncio() -> None:
    say("5. loop.run_in_executor and loop.set_default_executor")
    asyncio.run(from_asyncio())


def main() -> None:
    started = time.perf_counter()
    the_swap()
    say("")
    lazy_map()
    say("")
    job_timeout()
    say("")
    retries()
    say("")
    with_asyncio()
    say(f"\nall done in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
