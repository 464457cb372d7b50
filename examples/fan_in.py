"""The seeds' fan-in as a chanflow program: several producers' channels merged into one.

The Go original (JS2GO EP.41, "Fan-out / Fan-in")::

    func producer(nums ...int) <-chan int        // sends nums, then closes
    func worker(id int, in <-chan int) <-chan int // "Worker %d processing %d", sends n * 2
    func fanIn(chs ...<-chan int) <-chan int      // a goroutine per input + a closer

``fanIn`` is ``cf.merge``: one forwarder per input, and the merged channel closes
once every input is closed and drained, which is what Go's WaitGroup and closer
goroutine are for. The JavaScript original fans out with ``Promise.all``::

    const results = await fanOut([1, 2, 3, 4, 5]);  // worker(id, d): 100 ms, d * 2

1. Threads, as in Go: producer -> 3 workers, each with its own output channel ->
   ``cf.merge`` -> a ``for`` loop.
2. asyncio: the same stages as coroutines, the merged channel read with ``async for``.
3. JavaScript's ``fanOut`` with ``cf.afan_out``: one task per item, results in
   input order, as ``Promise.all`` gives them.

Run it with ``.venv/bin/python examples/fan_in.py`` (about a quarter second).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Coroutine
from typing import Any

import chanflow as cf

NUMBERS = (1, 2, 3, 4, 5)
NUM_WORKERS = 3


def say(line: str) -> None:
    """Print one line in one write, so lines from several threads never interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def summary(results: list[int]) -> None:
    say(f"   fan-in: {len(results)} results, sum {sum(results)}, sorted {sorted(results)}")


# -- 1. threads, as in Go -----------------------------------------------------------------


def producer(*nums: int) -> cf.Channel[int]:
    """Send ``nums`` on a new unbuffered channel from a new thread, then close it."""
    out: cf.Channel[int] = cf.Channel()

    def run() -> None:
        for n in nums:
            out.send(n)
        out.close()

    cf.go(run)
    return out


def worker(worker_id: int, inbox: cf.Channel[int]) -> cf.Channel[int]:
    """Double what arrives on ``inbox`` until it closes, on a channel of its own."""
    out: cf.Channel[int] = cf.Channel()

    def run() -> None:
        try:
            for n in inbox:
                say(f"   Worker {worker_id} processing {n}")
                time.sleep(0.01)  # simulate work, so that the workers take turns
                out.send(n * 2)
        finally:
            out.close()  # even if this worker dies, the fan-in must not wait for it

    cf.go(run)
    return out


def with_threads() -> None:
    say(f"1. threads: producer -> {NUM_WORKERS} workers -> cf.merge (Go's fanIn)")
    numbers = producer(*NUMBERS)
    outputs = [worker(worker_id, numbers) for worker_id in range(1, NUM_WORKERS + 1)]
    results: list[int] = []
    for result in cf.merge(*outputs):  # ends once every worker's channel is closed
        say(f"   Result: {result}")
        results.append(result)
    summary(results)


# -- 2. asyncio -----------------------------------------------------------------------------


async def with_asyncio() -> None:
    say(f"2. asyncio: producer -> {NUM_WORKERS} worker tasks -> cf.merge -> async for")
    tasks: list[asyncio.Task[None]] = []

    def start(coroutine: Coroutine[Any, Any, None]) -> None:
        tasks.append(asyncio.create_task(coroutine))

    def aproducer(*nums: int) -> cf.Channel[int]:
        out: cf.Channel[int] = cf.Channel()

        async def run() -> None:
            for n in nums:
                await out.asend(n)
            out.close()

        start(run())
        return out

    def aworker(worker_id: int, inbox: cf.Channel[int]) -> cf.Channel[int]:
        out: cf.Channel[int] = cf.Channel()

        async def run() -> None:
            try:
                async for n in inbox:
                    say(f"   Worker {worker_id} processing {n}")
                    await asyncio.sleep(0.01)  # simulate I/O
                    await out.asend(n * 2)
            finally:
                out.close()

        start(run())
        return out

    numbers = aproducer(*NUMBERS)
    outputs = [aworker(worker_id, numbers) for worker_id in range(1, NUM_WORKERS + 1)]
    results: list[int] = []
    async for result in cf.merge(*outputs):
        say(f"   Result: {result}")
        results.append(result)
    await asyncio.gather(*tasks)
    summary(results)


# -- 3. JavaScript's fanOut ------------------------------------------------------------------


async def js_worker(job: tuple[int, int]) -> int:
    worker_id, data = job
    await asyncio.sleep(0.1)  # the JS setTimeout(r, 100)
    say(f"   Worker {worker_id} processed {data}")
    return data * 2


async def fan_out_like_javascript() -> None:
    say("3. JavaScript's fanOut(data): one task per item with cf.afan_out (Promise.all)")
    started = time.perf_counter()
    jobs = [(index + 1, data) for index, data in enumerate(NUMBERS)]
    results = await cf.afan_out(js_worker, jobs)
    elapsed = time.perf_counter() - started
    say(f"   Results: {[result.unwrap() for result in results]}")
    say(f"   {len(jobs)} jobs of 0.1 s took {elapsed:.2f} s together")


def main() -> None:
    started = time.perf_counter()
    with_threads()
    asyncio.run(with_asyncio())
    asyncio.run(fan_out_like_javascript())
    say(f"\nall done in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
