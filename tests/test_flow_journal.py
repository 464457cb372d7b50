"""Journaled pipelines (``cf.Pipeline(source, journal=..., resume=...)``), killed for real."""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import sqlite3
import sys
import textwrap
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import chanflow as cf
from chanflow._flow_journal import FlowJournal
from helpers import kill_and_resume

# -- stage functions: each logs (stage, value) when it runs, from any process ------------


def _log(log: str, stage: str, value: Any) -> None:
    descriptor = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, f"{stage} {value}\n".encode())
    finally:
        os.close(descriptor)


def parse(log: str, x: int) -> int:
    _log(log, "parse", x)
    return x + 1


async def double(log: str, x: int) -> int:
    _log(log, "double", x)
    return x * 2


def keep(log: str, x: int) -> bool:
    _log(log, "keep", x)
    return x % 3 != 0


def spread(log: str, x: int) -> list[int]:
    _log(log, "spread", x)
    return [x, -x] if x % 5 == 0 else ([] if x % 11 == 0 else [x])


def check(log: str, x: int) -> int:
    _log(log, "check", x)
    if x % 7 == 0:
        raise ValueError(f"{x} is a multiple of 7")
    return x


def expected(n: int) -> list[int]:
    """What the flow of :func:`flow` makes of range(n)."""
    out = []
    for x in range(n):
        y = (x + 1) * 2
        if y % 3 == 0:
            continue
        for z in [y, -y] if y % 5 == 0 else ([] if y % 11 == 0 else [y]):
            if z % 7 != 0:
                out.append(z)
    return out


def flow(source: Any, log: Path, journal: Path, **options: Any) -> cf.Pipeline[int]:
    at = str(log)
    return (
        cf.Pipeline(source, journal=journal, **options)
        .map(functools.partial(parse, at), workers=4)
        .map(functools.partial(double, at), workers=8)
        .filter(functools.partial(keep, at))
        .flat_map(functools.partial(spread, at))
        .map(functools.partial(check, at), workers=2, on_error="skip")
    )


def stage_runs(log: Path) -> Counter[tuple[str, int]]:
    if not log.exists():
        return Counter()
    lines = (line.split() for line in log.read_text().splitlines())
    return Counter((stage, int(value)) for stage, value in lines)


def parsed(log: Path) -> Counter[int]:
    """How many times each source item entered the flow (its first stage ran on it)."""
    return Counter(
        value
        for (stage, value), count in stage_runs(log).items()
        for _ in range(count)
        if stage == "parse"
    )


# -- resuming ------------------------------------------------------------------------


def test_a_resumed_flow_gives_every_output_once_and_reruns_no_finished_item(
    tmp_path: Path,
) -> None:
    log, journal = tmp_path / "log", tmp_path / "flow.db"
    first = list(flow(range(60), log, journal))
    assert sorted(first) == sorted(expected(60))
    with cf.Journal(journal) as stored:
        assert len(stored) == 60  # every source item, outputs or none
    again = list(flow(range(100), log, journal, resume=True))
    assert sorted(again) == sorted(expected(100))
    assert parsed(log) == Counter(range(100)), "a finished item went through a stage again"


def test_a_flow_left_halfway_resumes_to_each_output_exactly_once(tmp_path: Path) -> None:
    log, journal = tmp_path / "log", tmp_path / "flow.db"
    for taken, _ in enumerate(flow(range(400), log, journal)):
        if taken == 40:
            break
    with cf.Journal(journal) as stored:
        finished = {row.idx for row in stored.stored(0, 1000)}
    before = parsed(log)
    again = list(flow(range(400), log, journal, resume=True))
    assert sorted(again) == sorted(expected(400))
    rerun = parsed(log) - before
    assert not set(rerun) & finished, "a finished item went through a stage again"
    assert set(rerun) | finished == set(range(400))


def test_dead_letters_are_replayed_to_their_stage_sink(tmp_path: Path) -> None:
    log, journal = tmp_path / "log", tmp_path / "flow.db"
    at = str(log)

    def dead_flow(sink: list[cf.Result[int]], **options: Any) -> cf.Pipeline[int]:
        return cf.Pipeline(range(30), journal=journal, **options).map(
            functools.partial(check, at), on_error="dead_letter", dead_letters=sink.append
        )

    first: list[cf.Result[int]] = []
    assert sorted(dead_flow(first)) == [x for x in range(30) if x % 7]
    assert sorted(r.job for r in first) == [0, 7, 14, 21, 28]
    again: list[cf.Result[int]] = []
    assert sorted(dead_flow(again, resume=True)) == [x for x in range(30) if x % 7]
    stage = first[0].stage
    assert sorted((r.job, r.replayed, r.stage) for r in again) == [
        (x, True, stage) for x in (0, 7, 14, 21, 28)
    ]
    assert all(isinstance(r.error, ValueError) for r in again)


def test_finished_items_need_resume_and_a_changed_source_is_refused(tmp_path: Path) -> None:
    log, journal = tmp_path / "log", tmp_path / "flow.db"
    list(flow(range(50), log, journal))
    before = stage_runs(log)
    with pytest.raises(cf.JournalError, match="already holds 50 finished jobs"):
        list(flow(range(50), log, journal))
    changed = [*range(20), 999, *range(21, 50)]
    with pytest.raises(cf.JournalError, match=r"item 20 \(999\) is not the item it finished"):
        list(flow(changed, log, journal, resume=True))
    with pytest.raises(cf.JournalError, match="it has 10 items"):
        list(flow(range(10), log, journal, resume=True))
    assert stage_runs(log) == before, "a stage ran before the source was checked"


def total(log: str, batch: list[int]) -> int:
    _log(log, "total", len(batch))
    return sum(batch)


@pytest.mark.parametrize("stop_after", [0, 3, 10])
def test_a_flow_with_batches_resumes_to_each_item_exactly_once(
    stop_after: int, tmp_path: Path
) -> None:
    """A batch list is several source items' (after a flat_map, one item's values may
    land in two lists): a resume neither loses nor repeats any of their values."""
    log, journal = tmp_path / "log", tmp_path / "flow.db"
    at = str(log)

    def batched(**options: Any) -> cf.Pipeline[list[int]]:
        return (
            cf.Pipeline(range(200), journal=journal, **options)
            .flat_map(functools.partial(spread, at))
            .filter(functools.partial(keep, at))
            .batch(4, timeout=0.01)
            .map(sorted, workers=4)
        )

    expected_values = [
        z
        for x in range(200)
        if x % 3
        for z in ([x, -x] if x % 5 == 0 else [] if x % 11 == 0 else [x])
    ]
    if stop_after:
        for taken, _ in enumerate(batched()):
            if taken + 1 >= stop_after:
                break
    else:
        list(batched())
    again = [value for values in batched(resume=True) for value in values]
    assert Counter(again) == Counter(expected_values)
    with cf.Journal(journal) as stored:
        assert len(stored) == 200


def test_source_items_that_share_a_batch_list_are_finished_together(tmp_path: Path) -> None:
    """Item 0's two values land in two lists; the later list, holding item 2's only
    value, arrives first: item 2 must wait for item 0, or a resume would lose it (the
    list is stored with its first source item, 0, which is not finished)."""
    flow_journal = FlowJournal(tmp_path / "flow.db", resume=False, identity="test")
    try:
        zero, one, two = flow_journal.tagged(iter("abc"))
        first, second = flow_journal.shaped("flat_map", [(zero.index, ["a1", "a2"])])
        early = flow_journal.batched([first, one])
        late = flow_journal.batched([second, two])
        assert flow_journal.delivered([late]) == [["a2", "c"]]
        assert len(flow_journal.journal) == 0, "item 2 was committed without item 0"
        assert flow_journal.delivered([early]) == [["a1", "b"]]
        assert len(flow_journal.journal) == 3
        rows = flow_journal.journal.stored(0, 2)
        stored = {row.idx: flow_journal.journal.outcome(row) for row in rows}
        assert stored == {0: [["a2", "c"], ["a1", "b"]], 1: [], 2: []}  # each list once
    finally:
        flow_journal.close()


def test_another_flow_is_refused(tmp_path: Path) -> None:
    log, journal = tmp_path / "log", tmp_path / "flow.db"
    list(flow(range(5), log, journal))
    other = cf.Pipeline(range(5), journal=journal, resume=True).map(abs)
    with pytest.raises(cf.JournalError, match="different run"):
        list(other)


def test_an_async_source_and_an_async_consumer_resume(tmp_path: Path) -> None:
    log, journal = tmp_path / "log", tmp_path / "flow.db"

    async def source(n: int) -> AsyncIterator[int]:
        for x in range(n):
            yield x

    async def consume(n: int, resume: bool) -> list[int]:
        return [x async for x in flow(source(n), log, journal, resume=resume)]

    assert sorted(asyncio.run(consume(40, False))) == sorted(expected(40))
    assert sorted(asyncio.run(consume(70, True))) == sorted(expected(70))
    assert parsed(log) == Counter(range(70))


def test_what_a_journaled_flow_cannot_do_is_refused_when_it_is_built(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not a Channel"):
        cf.Pipeline(cf.Channel[int](1), journal=tmp_path / "x.db")
    with pytest.raises(TypeError, match="journal must be a path"):
        cf.Pipeline(range(3), journal=3.5)
    with pytest.raises(TypeError, match="resume must be True or False"):
        cf.Pipeline(range(3), resume=1)  # type: ignore[arg-type]


# -- real crashes ----------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import asyncio, os, sys, time
    import chanflow as cf

    journal, log, total = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def note(stage, x):
        with open(log, "a") as file:
            file.write(f"{os.getpid()} {stage} {x}\\n")

    def parse(x):
        note("parse", x)
        time.sleep(0.003)
        return x * 10

    async def fetch(x):
        await asyncio.sleep(0.002)
        return x + 1

    def crunch(x):
        time.sleep(0.002)  # the slow stage: a run makes some progress before its kill
        return -x

    if __name__ == "__main__":
        flow = (
            cf.Pipeline(range(total), journal=journal, resume=True)
            .map(parse, backend="thread", workers=8)
            .map(fetch, backend="async", workers=16)
            .map(crunch, backend="process", workers=2)
        )
        got = sorted(flow)
        assert got == sorted(-(x * 10 + 1) for x in range(total)), "lost or doubled output"
        print("complete", flush=True)
    """
)


def _committed(journal: Path) -> set[int]:
    if not journal.exists():
        return set()
    try:
        with closing(sqlite3.connect(journal)) as db, db:
            return {index for (index,) in db.execute("SELECT idx FROM jobs")}
    except sqlite3.OperationalError:  # a child is making its tables
        return set()


@pytest.mark.timeout(400)
def test_a_three_stage_flow_killed_at_fifty_random_moments_resumes_exactly_once(
    tmp_path: Path,
) -> None:
    journal, log, total = tmp_path / "flow.db", tmp_path / "starts.log", 3000
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    # Each run is killed once outputs reach its consumer: the process stage's
    # workers take a moment to start.
    pids, committed_before, out = kill_and_resume(
        [sys.executable, str(script), str(journal), str(log), str(total)],
        kills=50,
        seed=4321,
        longest_delay=0.1,
        progress=lambda: _committed(journal),
        committed=lambda: _committed(journal),
    )
    assert "complete" in out
    assert _committed(journal) == set(range(total))
    landed = sum(1 for before, after in itertools.pairwise(committed_before) if after != before)
    assert landed >= 40, "most kills should land while items flow"
    starts = [line.split() for line in log.read_text().splitlines()]
    for run, pid in enumerate(pids):
        entered = {int(x) for p, _, x in starts if int(p) == pid}
        assert not entered & committed_before[run], f"run {run} re-ran finished items"
