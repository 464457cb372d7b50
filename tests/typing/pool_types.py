"""What users' type checkers see of the pool API. Checked by mypy (`make typecheck`), not run."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

from typing_extensions import assert_type

import chanflow as cf


def double(job: int) -> int:
    return job * 2


async def describe(job: int) -> str:
    await asyncio.sleep(0)
    return str(job)


def sync_use(pool: cf.WorkerPool) -> None:
    for value in pool.map(double, range(3), ordered=False, retries=2, timeout=1.0):
        assert_type(value, int)
    for text in pool.map(describe, range(3)):  # a coroutine function from sync code
        assert_type(text, str)
    for result in pool.results(double, [1, 2], rate="5/s", dead_letters="failed.jsonl"):
        assert_type(result, cf.Result[int])
        assert_type(result.unwrap(), int)
    assert_type(pool.submit(double, 3), Future[int])
    assert_type(pool.submit(describe, 3), Future[str])
    assert_type(pool.stats(), cf.PoolStats)


async def async_use(pool: cf.WorkerPool) -> None:
    async for text in pool.amap(describe, range(3), backoff=cf.Backoff(base=0.1)):
        assert_type(text, str)
    async for value in pool.amap(double, range(3)):  # a plain function: on threads
        assert_type(value, int)
    async for result in pool.aresults(describe, range(3)):
        assert_type(result, cf.Result[str])
