"""What users' type checkers see of PoolExecutor. Checked by mypy (`make typecheck`), not run."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator
from concurrent.futures import Future

from typing_extensions import assert_type

import chanflow as cf


def double(job: int) -> int:
    return job * 2


def join(left: int, right: str) -> str:
    return f"{left}{right}"


async def describe(job: int) -> str:
    await asyncio.sleep(0)
    return str(job)


def submit_and_map(ex: cf.PoolExecutor) -> None:
    assert_type(ex.submit(double, 1), Future[int])
    assert_type(ex.submit(describe, 1), Future[str])  # a coroutine function: its value
    assert_type(ex.submit(join, 1, right="x"), Future[str])
    assert_type(ex.map(double, [1]), Iterator[int])
    assert_type(ex.map(describe, [1]), Iterator[str])
    assert_type(ex.map(join, [1], ["x"], timeout=1.0, chunksize=2, buffersize=4), Iterator[str])
    assert_type(ex.stats(), cf.PoolStats)
    ex.shutdown(wait=False, cancel_futures=True)


def settings() -> None:
    with cf.PoolExecutor(max_workers=8) as ex:
        assert_type(ex, cf.PoolExecutor)
    cf.PoolExecutor(4, backend="process", timeout=30, retries=2, backoff=0.01, rate="20/s")
    cf.PoolExecutor(backend=cf.DaskBackend(), dead_letters="failed.jsonl", progress=True)
    cf.WorkerPool(backoff=0.5)


def drop_in(ex: cf.PoolExecutor) -> None:
    """Wherever the stdlib's executors go."""
    executor: concurrent.futures.Executor = ex
    thread_pool: concurrent.futures.ThreadPoolExecutor = ex
    assert_type(executor.submit(double, 1), Future[int])
    assert_type(thread_pool.map(double, [1]), Iterator[int])


async def in_asyncio(ex: cf.PoolExecutor) -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ex)
    assert_type(await loop.run_in_executor(ex, double, 1), int)
    assert_type(await asyncio.wrap_future(ex.submit(double, 1)), int)
