"""The seeds' rate limiters as a chanflow program: Go's ticker and a token bucket.

The Go original (JS2GO EP.41, "Rate Limiter Pattern: Ticker / Token Bucket") lets one
request through per tick::

    limiter := time.Tick(500 * time.Millisecond)
    for i := 1; i <= 5; i++ {
        <-limiter
        fmt.Println("Processing request", i)
    }

The JavaScript original sleeps before each task::

    async function rateLimited(tasks, interval = 500) {
      for (const [i, task] of tasks.entries()) {
        await new Promise((r) => setTimeout(r, interval));
        console.log(`Processing task ${i + 1}`);
        task();
      }
    }

Both run here at a tenth of the seeds' interval (50 ms instead of 500 ms):

1. Go's ticker as ``cf.Ticker``, received line for line. Unlike ``time.Tick`` it is
   stopped when the ``with`` block is left, ticks keep to a grid (no drift), and a
   slow reader misses ticks instead of getting a burst of stale ones afterwards.
2. JavaScript's ``rateLimited`` with ``cf.RateLimiter`` (a token bucket), awaited from
   a coroutine: the first ``burst`` tasks go at once, then one per interval, and the
   time a task takes is not added to the wait as a fixed sleep would add it.
3. Many workers, one limit: ``cf.WorkerPool(rate=...)`` spaces out job starts across
   all its workers, retries included.
4. Shedding load instead of queueing it: ``try_acquire`` never waits, and
   ``acquire(timeout=)`` says no at once when the token would come too late.

Each section prints the time of every request since the section started; the
limiter's promise is that request ``k`` never starts before ``(k - burst) * interval``.
Run it with ``.venv/bin/python examples/rate_limit.py`` (about a second).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from functools import partial

import chanflow as cf

INTERVAL = 0.05  # the seeds' 500 ms, ten times faster
RATE = f"{round(1 / INTERVAL)}/s"  # one token per INTERVAL: "20/s"
REQUESTS = 5
TASKS = 8
BURST = 3
POOL_JOBS = 8
FLAKY_JOB = 3  # fails its first attempt; the retry needs a token of its own


def say(line: str) -> None:
    """Print one line in one write, so lines from several threads never interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def since(started: float) -> str:
    return f"+{time.monotonic() - started:.3f} s"


# -- 1. Go's time.Tick ------------------------------------------------------------------


def with_ticker() -> None:
    say(f"1. Go's time.Tick: cf.Ticker({INTERVAL}), one request per tick")
    started = time.monotonic()
    with cf.Ticker(INTERVAL) as ticker:  # stopped on leaving the block; time.Tick never is
        for i in range(1, REQUESTS + 1):
            ticker.channel.recv()  # Go: <-limiter
            say(f"   Processing request {i} at {since(started)}")

    with cf.Ticker(INTERVAL) as ticker:
        ticker.channel.recv()
        time.sleep(3.5 * INTERVAL)  # a slow reader: three ticks fall due meanwhile
        waiting = len(ticker.channel)
    say(f"   after a pause of 3.5 intervals: {waiting} tick waiting, not 3 (missed, not queued)")


# -- 2. JavaScript's rateLimited ------------------------------------------------------------


async def rate_limited(
    tasks: list[Callable[[], None]], limiter: cf.RateLimiter, started: float
) -> None:
    """The seeds' rateLimited(tasks, interval), with a token bucket instead of a sleep."""
    for i, task in enumerate(tasks, 1):
        await limiter.aacquire()  # JS: await new Promise((r) => setTimeout(r, interval))
        say(f"   Processing task {i} at {since(started)}")
        task()


def with_token_bucket() -> None:
    say(f"2. JavaScript's rateLimited: cf.RateLimiter({RATE!r}, burst={BURST}), {TASKS} tasks")
    ran: list[int] = []
    tasks: list[Callable[[], None]] = [partial(ran.append, i) for i in range(1, TASKS + 1)]
    started = time.monotonic()
    limiter = cf.RateLimiter(RATE, burst=BURST)
    asyncio.run(rate_limited(tasks, limiter, started))
    say(f"   {len(ran)} tasks ran, each once: {sorted(ran) == list(range(1, TASKS + 1))}")


# -- 3. a pool of workers under one limit --------------------------------------------------


class StartLog:
    """When each attempt started, from any worker thread."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._starts: list[tuple[float, int]] = []
        self._failed_once: set[int] = set()

    def request(self, job: int) -> int:
        """The job: note its start, fail the flaky job's first attempt, take 10 ms."""
        with self._lock:
            self._starts.append((time.monotonic() - self.started, job))
            fail = job == FLAKY_JOB and job not in self._failed_once
            self._failed_once.add(job)
        if fail:
            raise ConnectionError(f"request {job}: connection reset")
        time.sleep(0.01)
        return job

    def starts(self) -> list[tuple[float, int]]:
        with self._lock:
            return sorted(self._starts)


def with_pool() -> None:
    say(f"3. cf.WorkerPool(workers=4, rate={RATE!r}, retries=1): {POOL_JOBS} jobs")
    log = StartLog()
    with cf.WorkerPool(workers=4, rate=RATE, retries=1, backoff=lambda attempt: 0.0) as pool:
        done = sorted(pool.map(log.request, range(1, POOL_JOBS + 1)))
        stats = pool.stats()
    for position, (at, job) in enumerate(log.starts(), 1):
        say(f"   start {position}: job {job} at +{at:.3f} s")
    say(f"   {len(done)} jobs done, {stats.retried} retried, {len(log.starts())} starts")


# -- 4. shedding load -----------------------------------------------------------------------


def shedding_load() -> None:
    say("4. shedding load: cf.RateLimiter('2/m', burst=3), 6 requests at once")
    limiter = cf.RateLimiter("2/m", burst=3)
    for i in range(1, 7):
        verdict = "accepted" if limiter.try_acquire() else "rejected (429 Too Many Requests)"
        say(f"   request {i}: {verdict}")
    asked = time.monotonic()
    granted = limiter.acquire(timeout=1.0)  # the next token is 30 s away
    waited = time.monotonic() - asked
    say(f"   acquire(timeout=1.0) -> {granted}, without waiting: {waited < 0.5}")


def main() -> None:
    started = time.perf_counter()
    with_ticker()
    with_token_bucket()
    with_pool()
    shedding_load()
    say(f"\nall done in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
