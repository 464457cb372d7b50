"""The asyncio backend's own edge cases (its behaviour in a pool is tests/test_pool.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chanflow._backend import Job
from chanflow._backend_async import AsyncBackend
from chanflow._result import Result
from helpers import call_of, results_into


async def double(job: int) -> int:
    return job * 2


def test_a_chunk_queued_as_the_backend_closes_still_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first chunk is queued, then the backend stops before a worker task could
    # start for it: aclose() must not leave it stranded (a submit() Future would wait
    # for ever).
    real_grow = AsyncBackend._grow

    def stop_first(self: AsyncBackend) -> None:
        self._stop()
        real_grow(self)

    monkeypatch.setattr(AsyncBackend, "_grow", stop_first)

    async def main() -> list[Result[Any]]:
        backend = AsyncBackend(2, asyncio.get_running_loop())
        delivered: list[Result[Any]] = []
        call = call_of(backend, double, results_into(delivered))
        backend.submit(call, [Job(call, 0, 21)])
        await asyncio.wait_for(backend.aclose(), 5.0)
        return delivered

    assert [result.value for result in asyncio.run(main())] == [42]
