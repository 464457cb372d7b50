"""What users' type checkers see of merge, tee, fan_out and afan_out. Checked by mypy
(`make typecheck`), not run."""

from __future__ import annotations

import asyncio

from typing_extensions import assert_type

import chanflow as cf


def double(job: int) -> int:
    return job * 2


async def describe(job: int) -> str:
    await asyncio.sleep(0)
    return str(job)


def channels(a: cf.Channel[int], b: cf.Channel[int]) -> None:
    assert_type(cf.merge(a, b), cf.Channel[int])
    assert_type(cf.merge(a, b, capacity=10), cf.Channel[int])
    assert_type(cf.tee(a, 2), list[cf.Channel[int]])
    assert_type(cf.tee(a, 3, capacity=1)[0].recv(), int)


def sync_use() -> None:
    assert_type(cf.fan_out(double, [1, 2]), list[cf.Result[int]])
    assert_type(cf.fan_out(describe, range(3), limit=2), list[cf.Result[str]])
    assert_type(cf.fan_out(double, range(3), backend="process")[0].unwrap(), int)


async def async_use() -> None:
    assert_type(await cf.afan_out(describe, [1, 2]), list[cf.Result[str]])
    assert_type(await cf.afan_out(double, range(3), backend="thread"), list[cf.Result[int]])
