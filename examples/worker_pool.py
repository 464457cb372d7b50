"""The seeds' Go worker pools as a chanflow program.

The Go original ("Mastering Go Concurrency", the Worker Pool) starts workers that
range over a ``jobs`` channel and send a ``Result{JobID, Value, Error}`` to a
``results`` channel; a WaitGroup and a closer goroutine close ``results`` once every
worker is done (3 workers and 9 jobs here, as in "Concurrency Patterns"; the other
seeds' pools are the same program with other counts)::

    for w := 1; w <= numWorkers; w++ { wg.Add(1); go worker(w, jobs, results, &wg) }
    for j := 1; j <= numJobs; j++ { jobs <- Job{ID: j, Value: fmt.Sprintf("image%d.png", j)} }
    close(jobs)
    go func() { wg.Wait(); close(results) }()
    for result := range results { if result.Error != nil { ... } else { ... } }

Here it is four ways:

1. ``cf.WorkerPool.results``: one ``cf.Result`` per job, value or error, never an
   exception in flight; a flaky job is retried, a corrupt one fails for good.
2. ``cf.WorkerPool.map``: values in input order, stopping at the first failure.
3. The raw primitives, line for line the Go program: two ``cf.Channel``s, a
   ``cf.WaitGroup`` and a closer.
4. JS2GO EP.41's version, which calls ``wg.Wait()`` *before* reading ``results``::

       for j := 1; j <= 5; j++ { jobs <- j }
       close(jobs)
       wg.Wait()
       close(results)
       for r := range results { fmt.Println("Result:", r) }

   That works only while ``results`` can hold every result (``make(chan int, 5)``
   for 5 jobs); with a smaller buffer the workers block sending and Go stops with
   "all goroutines are asleep - deadlock!". ``wg.wait(timeout=)`` notices instead of
   hanging, and a closer thread lets the results drain.

Run it with ``.venv/bin/python examples/worker_pool.py`` (about a second).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

import chanflow as cf

NUM_WORKERS = 3
NUM_JOBS = 9
CORRUPT = {4, 8}  # these images always fail
FLAKY = {5}  # these fail once with a ConnectionError, then succeed when retried
WAIT_BEFORE_READING = 0.3  # seconds section 4 waits for the workers before reading


@dataclass(frozen=True)
class Job:
    id: int
    value: str


JOBS = [Job(j, f"image{j}.png") for j in range(1, NUM_JOBS + 1)]
_failed_once: set[int] = set()


def say(line: str) -> None:
    """Print one line in one write, so lines from several threads never interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def process(job: Job) -> str:
    """Simulate 50 ms of work on one image; some images fail on purpose."""
    say(f"{threading.current_thread().name} processing job {job.id}")
    time.sleep(0.05)
    if job.id in CORRUPT:
        raise ValueError(f"{job.value} is corrupt")
    if job.id in FLAKY and job.id not in _failed_once:
        _failed_once.add(job.id)
        raise ConnectionError(f"storage timed out reading {job.value}")
    return f"Processed: {job.value}"


def print_result(result: cf.Result[str]) -> None:
    job = result.job
    if result.ok:
        say(f"Job {job.id} completed: {result.value} (attempts {result.attempts})")
    else:
        error = result.error
        say(f"Job {job.id} failed: {type(error).__name__}: {error} (attempts {result.attempts})")


def print_summary(results: list[cf.Result[str]]) -> None:
    done = sum(result.ok for result in results)
    say(f"summary: {done} done, {len(results) - done} failed, {len(results)} jobs")


def with_pool_results() -> None:
    say(f"1. cf.WorkerPool.results: {NUM_WORKERS} workers, {NUM_JOBS} jobs")
    # Only connection errors are worth retrying; a corrupt image fails for good.
    with cf.WorkerPool(
        workers=NUM_WORKERS,
        backend="thread",
        retries=2,
        retry_on=ConnectionError,
        backoff=lambda attempt: 0.01,
    ) as pool:
        results = []
        for result in pool.results(process, JOBS):  # completion order
            print_result(result)
            results.append(result)
        stats = pool.stats()
    print_summary(results)
    say(
        f"stats: submitted={stats.submitted} completed={stats.completed} "
        f"failed={stats.failed} retried={stats.retried} in_flight={stats.in_flight} "
        f"throughput={stats.throughput:.0f} jobs/s"
    )


def with_pool_map() -> None:
    say("2. cf.WorkerPool.map: values in input order, raises the first failure")
    with cf.WorkerPool(workers=NUM_WORKERS) as pool:
        try:
            for value in pool.map(process, JOBS[:5]):
                say(f"map -> {value}")
        except ValueError as error:
            say(f"map raised ValueError: {error}")


def with_raw_primitives() -> None:
    say("3. the Go program with raw primitives: jobs/results channels and a WaitGroup")
    say("   (no retries here, so the flaky job 5 fails too)")
    jobs: cf.Channel[Job] = cf.Channel(NUM_JOBS)
    results: cf.Channel[cf.Result[str]] = cf.Channel(NUM_JOBS)
    wg = cf.WaitGroup()

    def worker() -> None:
        for job in jobs:  # ends when `jobs` is closed and drained
            try:
                result = cf.Result(job, job.id - 1, value=process(job))
            except Exception as error:
                result = cf.Result(job, job.id - 1, error=error)
            results.send(result)

    for _ in range(NUM_WORKERS):
        wg.go(worker)
    for job in JOBS:
        jobs.send(job)
    jobs.close()

    def closer() -> None:  # Go: go func() { wg.Wait(); close(results) }()
        wg.wait()
        results.close()

    cf.go(closer)

    collected = []
    for result in results:  # ends when the closer closes `results`
        print_result(result)
        collected.append(result)
    print_summary(collected)


def wait_then_read(capacity: int) -> None:
    """JS2GO EP.41's pool: 3 workers, jobs 1..5 doubled, ``results`` of ``capacity``."""
    jobs: cf.Channel[int] = cf.Channel(5)
    results: cf.Channel[int] = cf.Channel(capacity)
    wg = cf.WaitGroup()

    def worker(worker_id: int) -> None:
        for job in jobs:
            say(f"   Worker {worker_id} processing job {job}")
            results.send(job * 2)

    for worker_id in range(1, NUM_WORKERS + 1):
        wg.go(worker, worker_id)
    jobs.send_many(range(1, 6))
    jobs.close()
    if wg.wait(timeout=WAIT_BEFORE_READING):  # Go: wg.Wait()
        results.close()
        say(f"   results capacity {capacity}: the workers finished before anyone read")
    else:
        say(
            f"   results capacity {capacity}: wg.wait({WAIT_BEFORE_READING}) timed out, "
            f"{len(results)} results buffered, workers blocked sending (Go: deadlock)"
        )

        def closer() -> None:  # the fix: close results once the workers are done
            wg.wait()
            results.close()

        cf.go(closer)
    say(f"   Results: {sorted(results)}")


def with_wait_before_reading() -> None:
    say("4. JS2GO EP.41's pool: wg.Wait() before reading results, 5 jobs")
    wait_then_read(capacity=5)
    wait_then_read(capacity=2)


def main() -> None:
    started = time.perf_counter()
    with_pool_results()
    say("")
    with_pool_map()
    say("")
    _failed_once.clear()  # make job 5 flaky again
    with_raw_primitives()
    say("")
    with_wait_before_reading()
    say(f"\nall done in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
