"""The seeds' Go fan-out/fan-in as a chanflow program.

One producer, several workers reading the same channel (fan-out), their outputs
merged into one stream (fan-in). Each result is a ``cf.Result`` carrying the value
or the error, as the seeds' ``Result{Value, Error}`` struct does; one image is
corrupt on purpose. The Go original::

    func producer(nums ...int) <-chan int      // sends, then closes
    func worker(id int, in <-chan int) <-chan int  // one output channel per worker
    func fanIn(chs ...<-chan int) <-chan int   // merges, closes when all inputs close

1. Threads and channels, as in Go: ``fan_in`` merges the workers' channels with
   ``cf.select``, and drops a channel once it is closed by setting it to None
   (Go's nil-channel idiom: a select case on None is never ready).
2. asyncio and ``cf.WorkerPool``: an async generator produces, the pool fans out
   to 3 workers and ``aresults`` fans in, one Result per job in completion order.
3. "Mastering Go Concurrency"'s version, one goroutine per image, each sending a
   ``Result{Value, Error}`` to a buffered channel that a closer goroutine closes::

       for i := 1; i <= 5; i++ { wg.Add(1); go processImage(i, results, &wg) }
       go func() { wg.Wait(); close(results) }()
       for result := range results { if result.Error != nil { ... } else { ... } }

   is ``cf.fan_out``: a thread per image, one ``cf.Result`` per image in input
   order, and the images take about as long together as one of them alone.

Run it with ``.venv/bin/python examples/fan_out_fan_in.py`` (about a third of a second).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterator

import chanflow as cf

NUM_WORKERS = 3
IMAGES = [f"image{i}.png" for i in range(1, 7)]
CORRUPT = "image4.png"


def say(line: str) -> None:
    """Print one line in one write, so lines from several threads never interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def resize(image: str) -> str:
    if image == CORRUPT:
        raise ValueError(f"{image}: corrupt header")
    return f"{image} resized"


# -- 1. threads and channels ------------------------------------------------------------


def producer(images: list[str]) -> cf.Channel[tuple[int, str]]:
    """Send (index, image) pairs on a new channel from a new thread, then close it."""
    out: cf.Channel[tuple[int, str]] = cf.Channel()

    def run() -> None:
        try:
            for index, image in enumerate(images):
                out.send((index, image))
        finally:
            out.close()

    cf.go(run)
    return out


def worker(worker_id: int, inbox: cf.Channel[tuple[int, str]]) -> cf.Channel[cf.Result[str]]:
    """Process images from ``inbox`` until it closes; one Result each on its own channel."""
    out: cf.Channel[cf.Result[str]] = cf.Channel()

    def run() -> None:
        try:
            for index, image in inbox:
                say(f"worker {worker_id} processing {image}")
                time.sleep(0.05)  # simulate work
                try:
                    result = cf.Result(image, index, value=resize(image))
                except ValueError as error:
                    result = cf.Result(image, index, error=error)
                out.send(result)
        finally:
            out.close()  # even if this worker dies, fan_in must not wait for it forever

    cf.go(run)
    return out


def fan_in(channels: list[cf.Channel[cf.Result[str]]]) -> Iterator[cf.Result[str]]:
    """Yield from all ``channels`` as items arrive, until every one is closed."""
    live: list[cf.Channel[cf.Result[str]] | None] = list(channels)
    while any(channel is not None for channel in live):
        selected = cf.select(*(cf.Recv(channel) for channel in live))
        if not selected.ok:  # closed and drained: never select on it again
            live[selected.index] = None
            continue
        yield selected.value


class Tally:
    """Print each result as it arrives, then how many were processed and failed."""

    def __init__(self) -> None:
        self.processed = 0
        self.failed = 0

    def add(self, result: cf.Result[str]) -> None:
        if result.ok:
            self.processed += 1
            say(f"Result: {result.value}")
        else:
            self.failed += 1
            say(f"Error: {result.job}: {result.error!r}")

    def summary(self) -> None:
        say(f"fan-in: {self.processed} processed, {self.failed} failed")


def with_channels() -> None:
    say(f"1. threads: producer -> {NUM_WORKERS} workers -> fan_in(select)")
    jobs = producer(IMAGES)
    outputs = [worker(worker_id, jobs) for worker_id in range(1, NUM_WORKERS + 1)]
    tally = Tally()
    for result in fan_in(outputs):
        tally.add(result)
    tally.summary()


# -- 2. asyncio and the pool --------------------------------------------------------------


async def produce(images: list[str]) -> AsyncIterator[str]:
    for image in images:
        yield image


async def process(image: str) -> str:
    say(f"processing {image}")
    await asyncio.sleep(0.05)  # simulate I/O
    return resize(image)


async def with_pool() -> None:
    say(f"2. asyncio: async producer -> cf.WorkerPool({NUM_WORKERS}) -> aresults")
    tally = Tally()
    async with cf.WorkerPool(workers=NUM_WORKERS) as pool:
        async for result in pool.aresults(process, produce(IMAGES)):
            tally.add(result)
    tally.summary()


# -- 3. one thread per image ---------------------------------------------------------------


def process_image(image: str) -> str:
    say(f"processing {image}")
    time.sleep(0.05)  # simulate work
    return resize(image)


def one_thread_per_image() -> None:
    say(f"3. one thread per image: cf.fan_out over {len(IMAGES)} images of 50 ms")
    started = time.perf_counter()
    results = cf.fan_out(process_image, IMAGES)  # input order; never raises for an image
    elapsed = time.perf_counter() - started
    tally = Tally()
    for result in results:
        tally.add(result)
    tally.summary()
    say(f"{len(IMAGES)} images of 0.05 s took {elapsed:.2f} s together")


def main() -> None:
    started = time.perf_counter()
    with_channels()
    say("")
    asyncio.run(with_pool())
    say("")
    one_thread_per_image()
    say(f"\nall done in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
