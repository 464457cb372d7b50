"""The thread backend's own edge cases (its behaviour in a pool is tests/test_pool.py)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chanflow as cf
from chanflow._backend import Batch, Call, Job, Outcome, Returned
from chanflow._backend_thread import ThreadBackend
from chanflow._result import Result
from helpers import call_of, results_into, wait_until


def make_call(backend: ThreadBackend, delivered: list[Result[Any]]) -> Call:
    return call_of(backend, lambda job: job * 2, results_into(delivered))


def test_close_joins_a_worker_registered_but_not_yet_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A worker is registered under the backend's lock and started just after; a
    # close() in between once raised "cannot join thread before it is started".
    real_start = threading.Thread.start
    registered = threading.Event()

    def slow_start(thread: threading.Thread) -> None:
        if thread.name.startswith("chanflow-worker"):
            registered.set()
            time.sleep(0.1)  # widen the window a busy machine opens by chance
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", slow_start)
    backend = ThreadBackend(workers=2)
    delivered: list[Result[Any]] = []
    call = make_call(backend, delivered)
    submitter = cf.go(backend.submit, call, [Job(call, 0, 21)])
    assert registered.wait(5.0)
    backend.close()
    submitter.result(timeout=5.0)
    assert [result.value for result in delivered] == [42]


def test_submit_after_close_is_refused() -> None:
    backend = ThreadBackend(workers=1)
    call = make_call(backend, [])
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.submit(call, [Job(call, 0, 1)])


def test_chunks_queued_before_close_all_run_once() -> None:
    backend = ThreadBackend(workers=2)
    delivered: list[Result[Any]] = []
    call = make_call(backend, delivered)
    for index in range(50):
        backend.submit(call, [Job(call, index, index)])
    backend.close()  # the workers drain the queue before they see it closed
    assert sorted(result.value for result in delivered) == [2 * index for index in range(50)]


def test_a_chunk_queued_as_the_backend_closes_still_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first chunk is queued, then the pool closes before a worker could start for
    # it: close() must not leave it stranded (a submit() Future would never complete).
    backend = ThreadBackend(workers=2)
    delivered: list[Result[Any]] = []
    call = make_call(backend, delivered)
    real_grow = ThreadBackend._grow

    def close_first(self: ThreadBackend, unless_starting: bool = False) -> None:
        self.close()
        real_grow(self, unless_starting)

    monkeypatch.setattr(ThreadBackend, "_grow", close_first)
    backend.submit(call, [Job(call, 0, 21)])
    assert [result.value for result in delivered] == [42]


@settings(max_examples=25, deadline=None)
@given(
    workers=st.integers(1, 6),
    submitters=st.integers(1, 4),
    chunks=st.integers(1, 25),
    close_after=st.integers(0, 60),
)
def test_submits_racing_close_each_run_once_or_are_refused(
    workers: int, submitters: int, chunks: int, close_after: int
) -> None:
    backend = ThreadBackend(workers=workers)
    delivered: list[Result[Any]] = []
    call = make_call(backend, delivered)
    accepted: list[int] = []
    refused: list[int] = []
    go = threading.Event()

    def submit_all(first: int) -> None:
        go.wait(5.0)
        for index in range(first, first + chunks):
            try:
                backend.submit(call, [Job(call, index, index)])
            except RuntimeError:
                refused.append(index)
            else:
                accepted.append(index)

    threads = [threading.Thread(target=submit_all, args=(n * chunks,)) for n in range(submitters)]
    for thread in threads:
        thread.start()
    go.set()
    wait_until(lambda: len(accepted) + len(refused) >= min(close_after, submitters * chunks))
    backend.close()
    for thread in threads:
        thread.join(10.0)
    # Whatever was accepted ran exactly once by the time close() returned, or was
    # accepted after it (then refused): nothing in between is lost.
    ran = sorted(result.index for result in delivered)
    assert ran == sorted(accepted)
    assert sorted(accepted + refused) == list(range(submitters * chunks))


def test_the_pool_grows_to_its_limit_while_some_workers_are_parked() -> None:
    # Parked workers take only as many chunks as there are of them: the rest must
    # still start new workers, or jobs that need each other (a barrier) never meet.
    parties = 24
    backend = ThreadBackend(workers=parties)
    warm_up: list[Outcome] = []
    call, _ = fresh_call(backend, lambda item: item, warm_up)
    backend.submit_chunked(call, 0, list(range(4)), 1)
    wait_until(lambda: sum(len(outcome) for outcome in warm_up) == 4, 5.0)
    barrier = threading.Barrier(parties, timeout=10.0)
    met: list[Outcome] = []
    call, _ = fresh_call(backend, lambda item: barrier.wait() >= 0, met)
    backend.submit_chunked(call, 0, list(range(parties)), 1)
    wait_until(lambda: sum(len(outcome) for outcome in met) == parties, 15.0)
    backend.close()
    assert all(isinstance(outcome, Returned) for outcome in met), met
    assert delivered_values(met) == [True] * parties


# -- fresh chunks: first attempts run as a plain loop ---------------------------------


def delivered_values(delivered: list[Outcome]) -> list[Any]:
    return [value for outcome in delivered for value in cast(Returned, outcome).values]


def fresh_call(
    backend: ThreadBackend, fn: Callable[[Any], Any], delivered: list[Outcome]
) -> tuple[Call, threading.Event]:
    """A call of ``fn`` whose outcomes go to ``delivered``, and an Event set at each."""
    done = threading.Event()

    def deliver(outcome: Outcome) -> None:
        delivered.append(outcome)
        done.set()

    return call_of(backend, fn, deliver), done


def test_a_fresh_chunk_that_all_returned_arrives_as_one_batch_of_values() -> None:
    backend = ThreadBackend(workers=2)
    delivered: list[Outcome] = []
    call, arrived = fresh_call(backend, lambda item: item * 2, delivered)
    try:
        backend.submit_items(call, 7, list(range(500)))
        assert arrived.wait(5.0)
    finally:
        backend.close()
    [outcome] = delivered
    assert isinstance(outcome, Batch)
    assert outcome.first_index() == 7 and outcome.values == [2 * item for item in range(500)]
    results = outcome.results()
    assert [result.index for result in results] == list(range(7, 507))
    assert all(result.ok and result.attempts == 1 for result in results)
    stats = call.stats.snapshot()
    assert (stats.completed, stats.failed, stats.running) == (500, 0, 0)
    # The chunk's time is shared among its jobs, so their sum is the chunk's time.
    assert stats.busy_seconds <= stats.elapsed


def test_a_chunk_whose_jobs_turned_slow_is_shared_with_idle_workers() -> None:
    # Sized while jobs were cheap, a chunk of slow jobs must not run on one thread while
    # the pool could run them side by side: the pieces shared run on other workers.
    backend = ThreadBackend(workers=4)
    delivered: list[Result[Any]] = []
    lock = threading.Lock()
    inside, most = 0, 0

    def slow(job: int) -> int:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        time.sleep(0.03)  # the first SHARE_CHECK_EVERY jobs run here, then the rest is shared
        with lock:
            inside -= 1
        return job

    call = make_call(backend, delivered)
    call.fn = slow
    try:
        backend.submit_items(call, 0, list(range(40)))
        wait_until(lambda: len(delivered) == 40, 10.0)
    finally:
        backend.close()
    assert sorted(result.value for result in delivered) == list(range(40))
    assert all(result.ok and result.attempts == 1 for result in delivered)
    assert most >= 2, "the chunk's 40 slow jobs all ran on one thread"
    stats = call.stats.snapshot()
    assert (stats.completed, stats.cancelled, stats.running) == (40, 0, 0)


def test_a_fresh_chunk_stops_at_the_next_job_once_its_call_is_cancelled() -> None:
    backend = ThreadBackend(workers=1)
    delivered: list[Outcome] = []
    calls: list[Call] = []

    def job(item: int) -> int:
        if item == 5:
            calls[0].cancel()  # as when the consumer leaves its loop mid-chunk
        return item

    call, arrived = fresh_call(backend, job, delivered)
    calls.append(call)
    try:
        backend.submit_items(call, 0, list(range(100)))
        assert arrived.wait(5.0)
    finally:
        backend.close()
    assert delivered_values(delivered) == list(range(6))
    stats = call.stats.snapshot()
    assert (stats.completed, stats.cancelled, stats.running) == (6, 94, 0)


def test_each_job_of_a_fresh_chunk_has_its_own_context_cancelled_when_it_is_over() -> None:
    seen: list[tuple[int, cf.Context, bool, bool]] = []

    def job(item: int) -> int:
        context = cf.current_context()
        seen.append((item, context, context is cf.current_context(), context.cancelled))
        if item == 3:
            raise ValueError("three")
        return item

    with cf.WorkerPool(workers=1, backend="thread") as pool:
        results = list(pool.results(job, range(6), chunksize=6, ordered=True))
    assert [result.ok for result in results] == [True, True, True, False, True, True]
    assert [item for item, *_ in seen] == list(range(6))
    contexts = [context for _, context, _, _ in seen]
    assert len({id(context) for context in contexts}) == 6, "one Context per job"
    assert all(same and not cancelled for _, _, same, cancelled in seen)
    assert all(context is not cf.background() for context in contexts)
    assert all(context.cancelled for context in contexts), "released once the job was over"


@settings(max_examples=30, deadline=None)
@given(
    size=st.integers(1, 120),
    flaky=st.sets(st.integers(0, 119)),
    broken=st.sets(st.integers(0, 119)),
    retries=st.integers(0, 2),
)
def test_every_job_of_a_fresh_chunk_comes_out_once_whatever_fails(
    size: int, flaky: set[int], broken: set[int], retries: int
) -> None:
    # One chunk of ``size`` jobs: the flaky ones fail their first attempt, the broken
    # ones every attempt; the chunk goes on job by job after its first failure.
    attempts: Counter[int] = Counter()
    lock = threading.Lock()

    def job(item: int) -> int:
        with lock:
            attempts[item] += 1
            attempt = attempts[item]
        if item in broken or (item in flaky and attempt == 1):
            raise ValueError(f"job {item} attempt {attempt}")
        return item * 3

    with cf.WorkerPool(workers=2, backend="thread") as pool:
        results = list(
            pool.results(job, range(size), chunksize=size, retries=retries, backoff=lambda _: 0.0)
        )
    assert sorted(result.index for result in results) == list(range(size))
    for result in results:
        item = result.index
        if item in broken:
            assert not result.ok and result.attempts == retries + 1
            assert str(result.error) == f"job {item} attempt {retries + 1}"
        elif item in flaky and retries == 0:
            assert not result.ok and result.attempts == 1
        else:
            expected = 2 if item in flaky else 1
            assert result.ok and result.value == item * 3 and result.attempts == expected
        assert attempts[item] == result.attempts
    stats = pool.stats()
    assert stats.completed + stats.failed == size
    assert stats.running == 0
