"""The seeds' Go pipeline, "generate -> square -> print", as a chanflow program.

The Go original (from the seeds) chains two goroutine stages by unbuffered channels::

    func generate(nums ...int) <-chan int { ...; for _, n := range nums { out <- n }; close(out) }
    func square(in <-chan int) <-chan int { ...; for n := range in { out <- n * n }; close(out) }
    for val := range square(generate(2, 3, 4)) { fmt.Println(val) } // 4, 9, 16

Here it is three ways:

1. ``cf.Pipeline``: the source is the generator, ``square`` a stage of 4 workers
   (input order kept), and the loop prints.
2. A bigger flow mixing kinds of work: async "fetch", a process stage that does CPU
   work, a thread stage that filters, batches, and a stage that fails on bad items
   sending them to dead letters, then the run's report (per-stage table).
3. The raw primitives, line for line the Go program: ``cf.Channel`` and ``cf.go``.

Run it with ``.venv/bin/python examples/pipeline.py`` (about a second).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import chanflow as cf


def generate(*nums: int) -> Iterator[int]:
    yield from nums


def square(n: int) -> int:
    return n * n


def with_pipeline() -> None:
    print("1. generate -> square -> print with cf.Pipeline")
    for value in cf.Pipeline(generate(2, 3, 4)).map(square, workers=4):
        print(value)


async def fetch(n: int) -> int:
    await asyncio.sleep(0.001)  # stands for a network call
    return n


def digest(n: int) -> int:
    """CPU work, on worker processes (the item comes out unchanged)."""
    checksum = sum(i * i for i in range(20_000))
    return n if checksum else -1


def store(batch: list[int]) -> int:
    if 13 in batch:
        raise ValueError(f"cannot store {batch}: it holds 13")
    return len(batch)


def mixed_flow() -> None:
    print("2. async fetch -> process digest -> filter -> batch -> thread store")
    dead: list[cf.Result[Any]] = []
    flow = (
        cf.Pipeline(range(40), dead_letters=dead.append)
        .map(fetch, workers=8, name="fetch")
        .map(digest, backend="process", workers=2, name="digest")
        .filter(lambda n: n % 3 != 0, name="not-threes")
        .batch(5, timeout=0.5)
        .map(store, workers=2, name="store", on_error="dead_letter")
    )
    stored = sum(flow)
    report = flow.report()
    print(f"stored {stored} items in {report.stage('store').items_out} batches")
    for result in dead:
        print(f"dead letter from stage {result.stage!r}: {result.error}")
    print(report)


def with_primitives() -> None:
    print("3. generate -> square -> print with channels, as in Go")

    def generate_ch(*nums: int) -> cf.Channel[int]:
        out: cf.Channel[int] = cf.Channel()

        def run() -> None:
            for n in nums:
                out.send(n)
            out.close()

        cf.go(run)
        return out

    def square_ch(inbox: cf.Channel[int]) -> cf.Channel[int]:
        out: cf.Channel[int] = cf.Channel()

        def run() -> None:
            for n in inbox:
                out.send(n * n)
            out.close()

        cf.go(run)
        return out

    for value in square_ch(generate_ch(2, 3, 4)):
        print(value)


if __name__ == "__main__":
    with_pipeline()
    mixed_flow()
    with_primitives()
