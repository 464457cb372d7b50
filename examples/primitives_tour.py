"""A tour of chanflow's primitives: the seeds' Go programs, one primitive after another.

1. A worker pool: jobs channel -> 3 workers (WaitGroup) -> results channel, closed
   by a closer once the WaitGroup is done (the seeds' classic Go program).
2. A rate limiter in front of the dispatcher (the seeds' `time.Tick(500ms)`, but a
   token bucket allowing a burst), and a Ticker reporting progress through select.
3. Fan-in with select, under a context deadline that cancels everything.
4. The seeds' pipeline `generate -> square -> print`, one coroutine per stage.
5. Programs 1-2 again as one WorkerPool call: bounded, rate-limited, retried, with
   failures as dead letters and a stats snapshot at the end.

Each pattern has an example of its own (see docs/patterns.md); this one shows them
side by side. Run it with `.venv/bin/python examples/primitives_tour.py` (about a
second). `make demo` runs `chanflow demo` instead.
"""

from __future__ import annotations

import asyncio
import time

import chanflow as cf

JOBS = 12


def worker_pool() -> None:
    print("1-2. worker pool: 3 workers, 12 jobs, dispatch limited to 40/s with a burst of 4")
    jobs: cf.Channel[int] = cf.Channel(5)
    results: cf.Channel[tuple[int, int, int]] = cf.Channel(5)
    limiter = cf.RateLimiter("40/s", burst=4)
    wg = cf.WaitGroup()

    def worker(worker_id: int) -> None:
        for job in jobs:  # ends when the dispatcher closes `jobs`
            time.sleep(0.02)  # simulate work
            results.send((worker_id, job, job * 2))

    for worker_id in range(1, 4):
        wg.go(worker, worker_id)

    def dispatch() -> None:
        for job in range(1, JOBS + 1):
            limiter.acquire()
            jobs.send(job)
        jobs.close()

    def closer() -> None:  # results end when the workers do
        wg.wait()
        results.close()

    cf.go(dispatch)
    cf.go(closer)

    started = time.monotonic()
    done = 0
    with cf.Ticker(0.1) as ticker:
        while True:
            selected = cf.select(cf.Recv(results), cf.Recv(ticker.channel))
            if selected.index == 1:
                print(f"   tick: {done}/{JOBS} done after {time.monotonic() - started:.2f} s")
                continue
            if not selected.ok:
                break
            worker_id, job, value = selected.value
            done += 1
            print(f"   worker {worker_id} finished job {job:2d} -> {value}")
    print(f"   all {done} jobs done in {time.monotonic() - started:.2f} s")


def fan_in_with_deadline() -> None:
    print("3. fan-in: three producers at different speeds, merged by select, 0.3 s deadline")
    with cf.background().with_timeout(0.3) as ctx, cf.Group(context=ctx) as group:
        sources = [cf.Channel[str]() for _ in range(3)]

        def produce(name: str, out: cf.Channel[str], every: float) -> None:
            with cf.Ticker(every) as ticker:
                for n, _tick in enumerate(ticker):
                    selected = cf.select(cf.Send(out, f"{name}#{n}"), cf.Recv(group.context.done))
                    if selected.index == 1:
                        return

        for name, out, every in zip("abc", sources, (0.05, 0.08, 0.13), strict=True):
            group.go(produce, name, out, every)

        counts = {"a": 0, "b": 0, "c": 0}
        while True:
            selected = cf.select(*(cf.Recv(s) for s in sources), cf.Recv(ctx.done))
            if selected.index == len(sources):
                break
            counts[selected.value[0]] += 1
    print(f"   merged {sum(counts.values())} messages {counts}; stopped by {ctx.error!r}")


async def pipeline() -> None:
    print("4. pipeline: generate -> square -> print, one coroutine per stage")

    async def generate(*numbers: int) -> cf.Channel[int]:
        out: cf.Channel[int] = cf.Channel()

        async def run() -> None:
            for n in numbers:
                await out.asend(n)
            out.close()

        tasks.append(asyncio.ensure_future(run()))
        return out

    async def square(inp: cf.Channel[int]) -> cf.Channel[int]:
        out: cf.Channel[int] = cf.Channel()

        async def run() -> None:
            async for n in inp:
                await out.asend(n * n)
            out.close()

        tasks.append(asyncio.ensure_future(run()))
        return out

    tasks: list[asyncio.Future[None]] = []
    squares = await square(await generate(2, 3, 4))
    print("  ", [value async for value in squares])
    await asyncio.gather(*tasks)


def flaky_double(job: int, failures: dict[int, int]) -> int:
    """Jobs divisible by 5 fail their first attempt; job 7 always fails."""
    failures[job] = failures.get(job, 0) + 1
    if job == 7 or (job % 5 == 0 and failures[job] == 1):
        raise ConnectionError(f"job {job}: connection reset")
    time.sleep(0.01)
    return job * 2


def worker_pool_in_one_call() -> None:
    print("5. the same with cf.WorkerPool: 3 workers, 40 jobs/s, 1 retry, dead letters")
    failures: dict[int, int] = {}
    letters: cf.Channel[cf.Result[int]] = cf.Channel(JOBS)
    with cf.WorkerPool(workers=3, rate="40/s", retries=1, dead_letters=letters) as pool:
        doubled = list(pool.map(lambda job: flaky_double(job, failures), range(1, JOBS + 1)))
        stats = pool.stats()
    letters.close()
    print("   values:", doubled)
    for letter in letters:
        print(f"   dead letter: job {letter.job} after {letter.attempts} attempts: {letter.error}")
    print(
        f"   stats: {stats.completed} completed, {stats.failed} failed, "
        f"{stats.retried} retried, p50 latency {stats.latency_p50 or 0:.3f} s"
    )


def main() -> None:
    worker_pool()
    fan_in_with_deadline()
    asyncio.run(pipeline())
    worker_pool_in_one_call()


if __name__ == "__main__":
    main()
