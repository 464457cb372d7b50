"""The Dask backend: a real LocalCluster of worker processes, real worker deaths.

The backend-parametrised suite (tests/test_pool.py) runs on Dask too, through the
session's cluster (conftest.dask_client: 2 worker processes of 2 threads, the current
client). These tests cover what is particular to Dask: worker loss, futures cancelled
and released, the bound on what is on the cluster, connecting and owning a cluster.
Jobs report back through their return values.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from typing import Any

import pytest

import chanflow as cf
from helpers import wait_until
from pool_helpers import DASK_THREADS_PER_WORKER, DASK_WORKERS

THREADS = DASK_WORKERS * DASK_THREADS_PER_WORKER


@pytest.fixture
def client(dask_client: Any) -> Any:
    """The session's client, on a whole cluster (a test elsewhere in this process may have
    killed a worker, not yet back); after the test, whole again and holding no task of ours."""
    cluster_is_whole(dask_client)
    yield dask_client
    cluster_is_whole(dask_client)
    # A Dask future that a test itself keeps in a reference cycle is released when the
    # cycle is collected (chanflow's own are not: see the garbage collector test); the
    # scheduler then forgets the task when it gets round to it, seconds on a busy
    # machine. A task of ours that leaked stays for ever, so a generous wait catches it.
    gc.collect()
    wait_until(lambda: not chanflow_tasks(dask_client), 30.0)


def cluster_is_whole(client: Any, seconds: float = 30.0) -> None:
    """Wait until every worker is back (a killed one restarts): later tests need them all."""
    client.wait_for_workers(DASK_WORKERS, timeout=seconds)
    wait_until(lambda: sum(client.nthreads().values()) == THREADS, seconds)


def chanflow_tasks(client: Any) -> list[str]:
    """The keys of chanflow's tasks the scheduler still knows."""

    def keys(dask_scheduler: Any) -> list[str]:
        return [str(key) for key in dask_scheduler.tasks if str(key).startswith("chanflow-")]

    return list(client.run_on_scheduler(keys))


def chanflow_futures(client: Any) -> list[str]:
    """The keys of chanflow's futures this client holds."""
    return [str(key) for key in list(client.futures) if str(key).startswith("chanflow-")]


def worker_pids(client: Any) -> dict[str, int]:
    return dict(client.run(os.getpid))


def square(job: int) -> int:
    return job * job


# -- basics ---------------------------------------------------------------------------------


def test_dask_backend_of_a_client_runs_jobs_on_its_workers(client: Any) -> None:
    offset = 7  # a closure: cloudpickled by value
    with cf.WorkerPool(backend=cf.DaskBackend(client)) as pool:
        assert list(pool.map(lambda job: job + offset, range(3_000))) == [
            job + offset for job in range(3_000)
        ]
        pids = set(pool.map(lambda _: os.getpid(), range(40)))
    assert os.getpid() not in pids
    assert pids <= set(worker_pids(client).values())


def test_backend_dask_uses_the_current_client_and_starts_no_cluster(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="chanflow"), cf.WorkerPool(backend="dask") as pool:
        assert list(pool.map(square, range(100))) == [job * job for job in range(100)]
    assert not [r for r in caplog.records if "LocalCluster" in r.getMessage()]
    assert client.status == "running", "the pool must not close a client it did not open"


def test_a_scheduler_address_gets_a_client_closed_with_the_last_pool(client: Any) -> None:
    backend = cf.DaskBackend(client.scheduler.address)
    assert backend.client is None, "building it must not connect"
    with cf.WorkerPool(backend=backend) as first, cf.WorkerPool(backend=backend) as second:
        assert list(first.map(square, range(10))) == [job * job for job in range(10)]
        own = backend.client
        assert own is not None and own is not client
        assert list(second.map(square, range(10))) == [job * job for job in range(10)]
        assert backend.client is own, "pools using one backend share its connection"
        first.close()
        assert own.status == "running", "closed before its last pool"
    assert backend.client is None
    assert own.status == "closed"
    with backend:  # held open across pools, then closed
        with cf.WorkerPool(backend=backend) as pool:
            assert list(pool.map(square, [3])) == [9]
        assert backend.client is not None
    assert backend.client is None


def test_errors_keep_their_type_and_traceback(client: Any) -> None:
    def fail(job: int) -> int:
        raise KeyError(f"no {job}")

    with cf.WorkerPool(backend="dask") as pool:
        [result] = pool.results(fail, [5])
        with pytest.raises(KeyError, match="no 3"):
            list(pool.map(fail, [3]))
    assert isinstance(result.error, KeyError)
    assert result.traceback is not None and "in fail" in result.traceback


def fail_at_5(job: int) -> int:
    if job == 5:
        raise ValueError(f"bad {job}")
    return job


def test_a_failed_map_leaves_no_task_on_the_cluster_without_the_garbage_collector(
    client: Any,
) -> None:
    # The raised error's traceback, rebuilt by tblib, once held the decoding frames and
    # through them the chunk's future: its task stayed until a collection found the cycle.
    gc.disable()
    try:
        with cf.WorkerPool(backend="dask") as pool:
            with pytest.raises(ValueError, match="bad 5"):
                list(pool.map(fail_at_5, range(20)))
            wait_until(lambda: not chanflow_futures(client), 5.0)
            wait_until(lambda: not chanflow_tasks(client), 10.0)
    finally:
        gc.enable()


def chained(job: int) -> int:
    try:
        raise KeyError(f"inner {job}")
    except KeyError as error:
        raise ValueError(f"outer {job}") from error


def test_a_chained_error_shows_the_workers_traceback(client: Any) -> None:
    # A Dask worker pickles an error with its cause (tblib); the rebuilt tracebacks are
    # dropped (see the test above), and the worker's, as text, ends the chain of causes.
    with cf.WorkerPool(backend="dask") as pool, pytest.raises(ValueError, match="outer") as caught:
        list(pool.map(chained, [1]))
    error = caught.value
    assert isinstance(error.__cause__, KeyError)
    printed = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    for part in ("in chained", "KeyError: 'inner 1'", "ValueError: outer 1"):
        assert part in printed, printed


def test_what_cannot_be_pickled_fails_its_own_job_clearly(client: Any) -> None:
    lock = threading.Lock()
    with cf.WorkerPool(backend="dask") as pool:
        results = list(pool.results(lambda job: 1, [1, lock, 3], ordered=True))
        [bad_result] = pool.results(lambda job: threading.Lock(), [1])
        [bad_function] = pool.results(lambda job: lock, [1])
    assert [result.ok for result in results] == [True, False, True]
    assert isinstance(results[1].error, TypeError)
    assert "cannot be sent to a Dask worker" in str(results[1].error)
    assert "cannot be sent back" in str(bad_result.error)
    assert isinstance(bad_function.error, TypeError)
    assert "function" in str(bad_function.error)


def rebuilt_nowhere() -> None:
    raise RuntimeError("this object cannot be rebuilt")


class LoadsNowhere:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return rebuilt_nowhere, ()


def test_a_result_the_client_cannot_unpickle_fails_clearly(client: Any) -> None:
    def body(job: int) -> object:
        return LoadsNowhere() if job == 1 else job

    with cf.WorkerPool(backend="dask", chunksize=1) as pool:
        results = list(pool.results(body, range(3), ordered=True))
    assert [result.ok for result in results] == [True, False, True]
    assert isinstance(results[1].error, cf.RemoteError)
    assert "cannot be unpickled in the parent process" in str(results[1].error)


def test_coroutine_functions_and_current_context_run_on_the_workers(client: Any) -> None:
    async def double(job: int) -> int:
        await asyncio.sleep(0.001)
        return 2 * job

    def has_context(job: int) -> bool:
        return cf.current_context() is not cf.background()

    with cf.WorkerPool(backend="dask") as pool:
        assert list(pool.map(double, range(20))) == [2 * job for job in range(20)]
        assert all(pool.map(has_context, range(8)))
        assert pool.submit(square, 12).result(timeout=10) == 144


def test_async_code_consumes_a_dask_pool(client: Any) -> None:
    async def main() -> list[int]:
        async with cf.WorkerPool(backend="dask") as pool:
            return [value async for value in pool.amap(square, range(500))]

    assert asyncio.run(main()) == [job * job for job in range(500)]


def test_workers_caps_the_chunks_running_at_once(client: Any) -> None:
    def busy(job: int) -> tuple[int, float, float]:
        start = time.monotonic()
        time.sleep(0.05)
        return os.getpid(), start, time.monotonic()

    with cf.WorkerPool(workers=1, backend="dask") as pool:
        spans = list(pool.map(busy, range(6), chunksize=1))
    spans.sort(key=lambda span: span[1])
    for earlier, later in itertools.pairwise(spans):
        assert later[1] >= earlier[2] - 0.005, "two jobs ran at once with workers=1"


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="DaskBackend takes"):
        cf.DaskBackend(42)
    with pytest.raises(ValueError, match="empty"):
        cf.DaskBackend("")
    with pytest.raises(ValueError, match="backend='process' only"):
        cf.WorkerPool(backend="dask", initializer=print)
    with pytest.raises(ValueError, match="DaskBackend"):
        cf.WorkerPool(backend="cluster")


def test_a_missing_distributed_says_which_extra_to_install(monkeypatch: Any) -> None:
    import chanflow._backend_dask as backend_dask

    monkeypatch.setattr(backend_dask, "_find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"chanflow\[dask\]"):
        cf.WorkerPool(backend="dask")


# -- the bound and early exit ---------------------------------------------------------------


def test_at_most_buffer_jobs_are_on_the_cluster_and_an_early_exit_releases_them(
    client: Any,
) -> None:
    taken = itertools.count()
    source = (next(taken) for _ in itertools.count())
    most = 0

    def slowish(job: int) -> int:
        time.sleep(0.002)
        return job

    with cf.WorkerPool(backend="dask", buffer=64) as pool:
        for value in pool.map(slowish, source):
            most = max(most, len(chanflow_futures(client)))
            if value == 500:
                break
        # The call is over (the pool still open): nothing of it stays on the cluster.
        wait_until(lambda: not chanflow_futures(client), 2.0)
        wait_until(lambda: not chanflow_tasks(client), 2.0)
    assert 0 < most <= 64
    assert next(taken) <= 501 + 64 + 2, "the input was read past the buffer"


def test_leaving_the_pool_cancels_running_jobs_cooperatively(client: Any) -> None:
    def wait_for_cancel(job: int) -> bool:
        return cf.current_context().wait(20.0)

    start = time.monotonic()
    with cf.WorkerPool(backend="dask") as pool:
        iterator = pool.map(wait_for_cancel, itertools.count())
        future = cf.go(next, iterator)
        time.sleep(0.5)  # every Dask thread runs a job that waits for its cancel
        assert not future.done()
    assert time.monotonic() - start < 3.0
    with pytest.raises(cf.Cancelled):
        future.result(timeout=5)
    # The jobs saw the cancel and handed their Dask threads back at once.
    with cf.WorkerPool(backend="dask") as pool:
        started = time.monotonic()
        assert list(pool.map(square, range(THREADS), chunksize=1)) == [0, 1, 4, 9]
        assert time.monotonic() - started < 2.0


# -- timeouts -------------------------------------------------------------------------------


def test_a_timeout_abandons_the_job_and_hands_its_dask_thread_back(client: Any) -> None:
    def stuck(job: int) -> int:
        time.sleep(3.0)  # does not look at its context
        return job

    start = time.monotonic()
    with cf.WorkerPool(backend="dask", timeout=0.2) as pool:
        stuck_results = list(pool.results(stuck, range(THREADS)))
        assert time.monotonic() - start < 1.5
        assert all(isinstance(result.error, cf.JobTimeout) for result in stuck_results)
        assert all(result.attempts == 1 for result in stuck_results)
        # Every Dask thread was stuck; they took new tasks at once all the same.
        assert list(pool.map(square, range(20))) == [job * job for job in range(20)]
        assert time.monotonic() - start < 2.5
        assert pool.stats().timed_out == THREADS
    wait_until(lambda: not chanflow_tasks(client), 2.0)


# -- worker loss ----------------------------------------------------------------------------


def test_killing_a_worker_mid_run_loses_no_job_and_repeats_none(client: Any) -> None:
    """2,000 jobs; one of the two worker processes is killed (SIGKILL) a quarter of the way."""

    def job(index: int) -> tuple[int, int]:
        time.sleep(0.002)
        return index, index * index

    victim = next(iter(worker_pids(client).values()))
    seen: Counter[int] = Counter()
    with cf.WorkerPool(backend="dask") as pool:
        for result in pool.results(job, range(2_000)):
            seen[result.index] += 1
            assert result.ok, result.error
            assert result.value == (result.index, result.index**2)
            assert result.attempts == 1, "Dask reschedules a lost task: no attempt is lost"
            if sum(seen.values()) == 500:
                os.kill(victim, signal.SIGKILL)
        stats = pool.stats()
    assert seen == Counter(range(2_000)), "a job was lost or delivered twice"
    assert (stats.submitted, stats.completed, stats.failed) == (2_000, 2_000, 0)
    assert victim not in worker_pids(client).values(), "the worker was not killed"


def test_a_job_that_kills_every_worker_it_touches_ends_as_worker_crashed(client: Any) -> None:
    def job(index: int) -> int:
        if index == 7:
            os.kill(os.getpid(), signal.SIGKILL)
        return index

    with cf.WorkerPool(backend="dask") as pool:
        results = {result.index: result for result in pool.results(job, range(40))}
        stats = pool.stats()
    assert sorted(results) == list(range(40))
    assert isinstance(results[7].error, cf.WorkerCrashed)
    assert "job 7" in str(results[7].error)
    assert all(results[index].value == index for index in range(40) if index != 7)
    assert (stats.completed, stats.failed) == (39, 1)


# -- pipelines and fan-out ------------------------------------------------------------------


def test_a_pipeline_stage_and_fan_out_run_on_dask(client: Any) -> None:
    backend = cf.DaskBackend(client)
    flow = (
        cf.Pipeline(range(200))
        .map(square, backend=backend)
        .filter(lambda value: value % 2 == 0)
        .map(lambda value: value + 1, backend="dask", ordered=False)
    )
    assert sorted(flow) == sorted(job * job + 1 for job in range(200) if job % 2 == 0)
    results = cf.fan_out(square, range(6), backend="dask")
    assert [result.value for result in results] == [0, 1, 4, 9, 16, 25]
    assert [r.value for r in cf.fan_out(square, [5], backend=backend)] == [25]


# -- a pool that owns its cluster -----------------------------------------------------------

_OWN_CLUSTER = """
import chanflow as cf

def square(job):
    return job * job

if __name__ == "__main__":
    with cf.WorkerPool(backend="dask") as pool:
        print(sum(pool.map(square, range(1000))), flush=True)
"""


def test_without_a_client_the_pool_starts_a_local_cluster_and_closes_it(tmp_path: Any) -> None:
    script = tmp_path / "own_cluster.py"
    script.write_text(_OWN_CLUSTER)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{sum(job * job for job in range(1000))}\n"
    assert "started a LocalCluster" in done.stderr
