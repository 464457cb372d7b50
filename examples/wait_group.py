"""The seeds' "launch and wait" WaitGroup program, grown into errgroups and contexts.

The Go original ("Mastering Go Concurrency", synchronization with Wait Groups)::

    func worker(id int, wg *sync.WaitGroup) {
        defer wg.Done() // Ensures Done() is called even if panic occurs
        fmt.Printf("Worker %d starting\\n", id)
        time.Sleep(50 * time.Millisecond)
        fmt.Printf("Worker %d done\\n", id)
    }
    for i := 1; i <= 3; i++ { wg.Add(1); go worker(i, &wg) }
    wg.Wait()
    fmt.Println("All workers completed")

A WaitGroup only counts: it does not say whether a worker failed, and nothing stops
the others when one does. Go's answer is ``errgroup`` with a ``context``:

1. The program line for line: ``cf.WaitGroup.go`` is ``wg.Add(1); go ...`` with
   ``defer wg.Done()`` built in.
2. A worker that fails: ``done()`` still runs (nothing hangs) and its exception waits
   in the Future that ``wg.go`` returned, instead of being lost.
3. Go's errgroup: ``cf.Group``. The first failure cancels ``g.context``; the other
   workers, which wait on that context instead of sleeping, stop early; leaving the
   block re-raises the failure.
4. A deadline: the group under ``cf.background().with_timeout(...)``; the worker
   still running at the deadline returns its context's error, ``cf.DeadlineExceeded``
   (also a ``TimeoutError``), and the group raises it.
5. asyncio: ``async with cf.Group()`` with tasks, left early by
   ``asyncio.wait_for``: the group cancels its tasks, lets them clean up and waits
   for them, so no task outlives it.

Run it with ``.venv/bin/python examples/wait_group.py`` (about a second).
"""

from __future__ import annotations

import asyncio
import sys
import time
from concurrent.futures import Future

import chanflow as cf

WORK = 0.05  # seconds of work per worker, as in the seed
LONG = 5.0  # a worker that would take this long is always stopped before
DEADLINE = 0.5


def say(line: str) -> None:
    """Print one line in one write, so lines from several threads never interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# -- 1. launch and wait ---------------------------------------------------------------------------


def worker(worker_id: int) -> None:
    say(f"   Worker {worker_id} starting")
    time.sleep(WORK)  # simulate work
    say(f"   Worker {worker_id} done")


def launch_and_wait() -> None:
    say("1. launch and wait: cf.WaitGroup, 3 workers")
    wg = cf.WaitGroup()
    for i in range(1, 4):
        wg.go(worker, i)  # Go: wg.Add(1); go worker(i, &wg), with defer wg.Done()
    wg.wait()  # blocks until every worker is done
    say("   All workers completed")


# -- 2. a worker that fails -----------------------------------------------------------------------


def failing_worker(worker_id: int) -> None:
    say(f"   Worker {worker_id} starting")
    time.sleep(WORK)
    if worker_id == 2:
        raise OSError(f"worker {worker_id}: disk full")
    say(f"   Worker {worker_id} done")


def a_worker_fails() -> None:
    say("2. a worker fails: WaitGroup.go still calls done(), the error waits in its Future")
    wg = cf.WaitGroup()
    futures: list[Future[None]] = [wg.go(failing_worker, i) for i in range(1, 4)]
    wg.wait()  # does not hang: done() ran for the failed worker too
    say("   All workers completed")
    for worker_id, future in enumerate(futures, 1):
        error = future.exception()
        if error is not None:
            say(f"   Worker {worker_id} failed: {type(error).__name__}: {error}")


# -- 3. errgroup ----------------------------------------------------------------------------------


def group_worker(ctx: cf.Context, worker_id: int) -> None:
    say(f"   Worker {worker_id} starting")
    if worker_id == 2:
        time.sleep(WORK)
        raise OSError(f"worker {worker_id}: disk full")
    if ctx.wait(LONG):  # sleeps, but wakes up as soon as the context is cancelled
        say(f"   Worker {worker_id} stopped early: {type(ctx.error).__name__}")
        return
    say(f"   Worker {worker_id} done")


def errgroup() -> None:
    say("3. errgroup: cf.Group, the first error cancels g.context and is re-raised")
    started = time.monotonic()
    try:
        with cf.Group() as group:
            for i in range(1, 4):
                group.go(group_worker, group.context, i)
    except OSError as error:
        say(f"   the group raised {type(error).__name__}: {error}")
    took = time.monotonic() - started
    say(f"   the others did not sleep their {LONG} s: {took < LONG}")


# -- 4. a deadline --------------------------------------------------------------------------------


def timed_worker(ctx: cf.Context, worker_id: int, seconds: float) -> None:
    say(f"   Worker {worker_id} starting ({seconds} s of work)")
    if ctx.wait(seconds):
        assert ctx.error is not None
        say(f"   Worker {worker_id} stopped: {type(ctx.error).__name__}")
        raise ctx.error  # Go: return ctx.Err()
    say(f"   Worker {worker_id} done")


def deadline() -> None:
    say(f"4. a deadline: cf.Group under cf.background().with_timeout({DEADLINE})")
    with cf.background().with_timeout(DEADLINE) as ctx:
        try:
            with cf.Group(context=ctx) as group:
                for worker_id, seconds in ((1, WORK), (2, 2 * WORK), (3, LONG)):
                    group.go(timed_worker, group.context, worker_id, seconds)
        except cf.DeadlineExceeded as error:
            say(
                f"   the group raised DeadlineExceeded: {error} "
                f"(a TimeoutError: {isinstance(error, TimeoutError)})"
            )


# -- 5. asyncio -----------------------------------------------------------------------------------


async def task_worker(worker_id: int, seconds: float) -> None:
    say(f"   Task {worker_id} starting")
    try:
        await asyncio.sleep(seconds)
        say(f"   Task {worker_id} done")
    except asyncio.CancelledError:
        say(f"   Task {worker_id} cancelled, cleaning up")
        raise


async def run_tasks() -> None:
    async with cf.Group() as group:
        for worker_id, seconds in ((1, WORK), (2, LONG), (3, LONG)):
            group.go(task_worker, worker_id, seconds)


async def tasks_left_early() -> None:
    say(f"5. asyncio: async with cf.Group(), left after {DEADLINE} s by asyncio.wait_for")
    try:
        await asyncio.wait_for(run_tasks(), DEADLINE)
    except asyncio.TimeoutError:  # the built-in TimeoutError from Python 3.11 on
        say("   wait_for timed out")
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    say(f"   tasks still running: {len(others)}")


def main() -> None:
    started = time.perf_counter()
    launch_and_wait()
    a_worker_fails()
    errgroup()
    deadline()
    asyncio.run(tasks_left_early())
    say(f"\nall done in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
