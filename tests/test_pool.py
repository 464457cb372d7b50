"""Behavioural tests of cf.WorkerPool: one suite for every backend and both consumption styles.

A test marked ``each_backend_and_style`` runs for every backend of pool_helpers.BACKENDS,
consumed from sync code (``with`` + ``map``/``results``, on this thread) and from async code
(``async with`` + ``amap``/``aresults``, on an event loop thread of the test's own): so the
thread and process backends are also driven from async code, and the async backend from
sync code (where the pool owns an event loop thread). Job bodies are written once (see
pool_helpers) and adapted to each backend; what they record goes through probes that work
across processes. Only the public namespace ``chanflow`` is used, except by the
worker-death tests, which inject a bug into ``chanflow._backend.Call`` (no public call
can make a worker die).

Bounds on "promptly" are generous (PROMPT seconds where the slow path takes 5 s); bounds on
how much input is taken allow SLACK items beyond ``buffer``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import itertools
import json
import math
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.progress import Progress

import chanflow as cf
from chanflow._backend import Call
from chanflow._backend_dask import CLOSE_SECONDS
from helpers import HookCapture, interrupt, wait_until
from pool_helpers import (
    BACKENDS,
    DASK_THREADS_PER_WORKER,
    DASK_WORKERS,
    DEFAULT_WORKERS,
    STOP,
    STYLES,
    AsyncSession,
    Backend,
    Outcome,
    Pause,
    Sleep,
    Source,
    Steps,
    Style,
    WaitCancelled,
    WaitEvent,
)
from probes import LOCAL, Log, Stamps

each_backend_and_style = pytest.mark.parametrize(
    ("backend", "style"),
    [
        pytest.param(backend, style, id=f"{backend}-{style}")
        for backend in BACKENDS
        for style in STYLES
    ],
)
each_backend = pytest.mark.parametrize("backend", BACKENDS, ids=str)
ASYNC_STYLE = next(style for style in STYLES if style.name == "async")

# The contract bounds the items taken from the input and not yet handed to the consumer by
# ``buffer``: allow a feeder holding one item in hand, and one off-by-one.
SLACK = 2
# "Returns promptly": well under the 5 s that the jobs of these tests would otherwise wait.
PROMPT = 3.0


class Boom(Exception):
    pass


class Flaky(Exception):
    pass


class InputBroken(Exception):
    pass


class ConsumerError(Exception):
    pass


def no_backoff(attempt: int) -> float:
    return 0.0


def double(job: int) -> int:
    return job * 2


def identity(job: Any) -> Any:
    return job


def fail_odd(job: int) -> int:
    if job % 2:
        raise Boom(f"bad {job}")
    return job


def value_of(item: Any) -> Any:
    return item.value if isinstance(item, cf.Result) else item


def assert_no_more_starts(starts: Log[Any]) -> None:
    """Nothing may start any more: give the pool a moment to misbehave, then look.

    A worker process learns of a cancel by a message, so a job of a chunk it already
    holds may start until that message arrives: let the count settle first (callers
    bound the total separately).
    """
    count = len(starts)
    deadline = time.monotonic() + PROMPT
    while True:
        time.sleep(0.1)
        if len(starts) == count or time.monotonic() > deadline:
            break
        count = len(starts)
    time.sleep(0.05)
    assert len(starts) == count, f"{len(starts) - count} jobs started after the call ended"


# -- ordering and results -------------------------------------------------------------------


def every_fourth_is_slow(finished: Log[int]) -> Any:
    def body(job: int) -> Steps:
        # Job 0, 4, 8... sleep longest, so the three after each finish before it.
        yield Sleep(0.02 if job % 4 == 0 else 0.001)
        finished.append(job)
        return job * 10

    return body


@each_backend_and_style
def test_map_yields_input_order_though_later_jobs_finish_first(
    backend: Backend, style: Style
) -> None:
    finished = backend.log()
    outcome = style.run(backend, "map", every_fourth_is_slow(finished), range(24))
    assert outcome.error is None
    assert outcome.items == [job * 10 for job in range(24)]
    assert finished != sorted(finished), "no job finished out of order: the test proved nothing"


@each_backend_and_style
@pytest.mark.parametrize("method", ["map", "results"])
def test_ordered_true_yields_input_order(backend: Backend, style: Style, method: str) -> None:
    finished = backend.log()
    outcome = style.run(backend, method, every_fourth_is_slow(finished), range(24), ordered=True)
    assert outcome.error is None
    assert [value_of(item) for item in outcome.items] == [job * 10 for job in range(24)]
    if method == "results":
        assert [result.index for result in outcome.items] == list(range(24))
    assert finished != sorted(finished)


@each_backend_and_style
@pytest.mark.parametrize(
    ("method", "call_kwargs"),
    [("results", {}), ("results", {"ordered": False}), ("map", {"ordered": False})],
    ids=["results-default", "results-unordered", "map-unordered"],
)
def test_unordered_yields_completion_order(
    backend: Backend, style: Style, method: str, call_kwargs: dict[str, Any]
) -> None:
    # Job 0 finishes only once the consumer has received the three others: in completion
    # order that is possible; in input order job 0 would wait 3 s and report -1.
    released = backend.event()
    seen: list[int] = []

    def body(job: int) -> Steps:
        if job == 0:
            released_in_time = yield WaitEvent(released, 3.0)
            return 0 if released_in_time else -1
        return job

    def on_item(item: Any) -> None:
        seen.append(value_of(item))
        if len(seen) == 3:
            released.set()

    outcome = style.run(backend, method, body, range(4), on_item=on_item, **call_kwargs)
    assert outcome.error is None
    assert sorted(seen[:3]) == [1, 2, 3]
    assert seen[3:] == [0]


@each_backend_and_style
def test_result_fields(backend: Backend, style: Style) -> None:
    def body(job: str) -> Steps:
        yield Sleep(0.01)
        if job == "bad":
            raise Boom("bad job")
        return job.upper()

    started = time.monotonic()
    outcome = style.run(backend, "results", body, ["good", "bad"])
    wall = time.monotonic() - started  # no job can take longer than its whole call
    assert outcome.error is None
    good, bad = sorted(outcome.items, key=lambda result: result.index)
    assert isinstance(good, cf.Result)
    assert (good.job, good.index, good.value, good.error) == ("good", 0, "GOOD", None)
    assert good.ok
    assert good.attempts == 1
    assert 0.009 <= good.elapsed <= wall
    assert good.unwrap() == "GOOD"
    assert good.traceback is None

    assert isinstance(bad, cf.Result)
    assert (bad.job, bad.index, bad.value) == ("bad", 1, None)
    assert not bad.ok
    assert isinstance(bad.error, Boom)
    assert str(bad.error) == "bad job"
    assert bad.attempts == 1
    assert 0.009 <= bad.elapsed <= wall
    with pytest.raises(Boom, match="bad job"):
        bad.unwrap()
    assert isinstance(bad.traceback, str)
    assert "Boom: bad job" in bad.traceback


def break_chunk_ended_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inject a bug into chanflow's own bookkeeping (no job can cause this): the first
    worker to end a chunk raises, as a bug of ours would, and dies. A chunk ends in
    ``Call.chunk_ended``, or in ``Call.returned_alone`` for a submitted job alone."""
    real_chunk_ended = Call.chunk_ended
    real_returned_alone = Call.returned_alone
    broken: list[bool] = []

    def break_once() -> None:
        if not broken:
            broken.append(True)
            raise RuntimeError("injected bug")

    def chunk_ended_broken_once(self: Call, outcome: Any, ran: int, seconds: float) -> None:
        break_once()
        real_chunk_ended(self, outcome, ran, seconds)

    def returned_alone_broken_once(self: Call, job: Any, value: Any) -> None:
        break_once()
        real_returned_alone(self, job, value)

    monkeypatch.setattr(Call, "chunk_ended", chunk_ended_broken_once)
    monkeypatch.setattr(Call, "returned_alone", returned_alone_broken_once)


@each_backend_and_style
def test_a_worker_killed_by_a_bug_fails_its_consumer_instead_of_hanging(
    backend: Backend, style: Style, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker that meets the injected bug dies with its chunk, and whoever waits
    # for that chunk must get an error saying so, not wait for ever.
    break_chunk_ended_once(monkeypatch)
    with HookCapture():  # the dying thread's report (threads and slots)
        outcome = style.run(backend, "results", identity, range(50), pool={"workers": 2})
    assert outcome.seconds < PROMPT + 1.0
    if backend.name == "dask":
        # The Dask backend settles chunks in callbacks that catch what goes wrong: the
        # chunk's jobs fail with the bug, and every job still comes out once.
        assert outcome.error is None
        assert sorted(result.index for result in outcome.items) == list(range(50))
        assert any("injected bug" in str(result.error) for result in outcome.items)
        return
    assert isinstance(outcome.error, RuntimeError), outcome
    assert "bug in chanflow" in str(outcome.error)
    assert "injected bug" in str(outcome.error.__cause__)


@pytest.mark.parametrize("kind", ["thread", "async", "process"])
def test_a_worker_killed_by_a_bug_fails_submitted_futures_and_refuses_more_work(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def adouble(job: int) -> int:
        return job * 2

    job = adouble if kind == "async" else double
    break_chunk_ended_once(monkeypatch)
    with HookCapture(), cf.WorkerPool(workers=2, backend=kind) as pool:
        future = pool.submit(job, 21)
        with pytest.raises(RuntimeError, match="bug in chanflow") as caught:
            future.result(timeout=PROMPT)
        assert "injected bug" in str(caught.value.__cause__)
        with pytest.raises(RuntimeError, match="bug in chanflow"):
            pool.submit(job, 1)  # the backend is broken: refused at once
        with pytest.raises(RuntimeError, match="bug in chanflow"):
            list(pool.map(job, range(3)))


# -- backpressure ---------------------------------------------------------------------------


@each_backend_and_style
@pytest.mark.parametrize("method", ["map", "results"])
def test_a_paused_consumer_stops_the_input(backend: Backend, style: Style, method: str) -> None:
    source = Source.endless()
    pulled_while_paused: list[int] = []

    def on_item(item: Any) -> object:
        if not pulled_while_paused:
            return Pause(0.3, then=lambda: pulled_while_paused.append(source.pulled))
        return STOP

    outcome = style.run(
        backend, method, identity, source, pool={"workers": 2, "buffer": 4}, on_item=on_item
    )
    assert outcome.error is None
    # One item handed over, at most `buffer` more taken.
    assert 1 <= pulled_while_paused[0] <= 1 + 4 + SLACK, pulled_while_paused
    assert source.closed


class Lookahead:
    """An on_item callback: how many items the pool had taken beyond each one handed over.

    Stops the loop once ``stop_after`` items were handed over.
    """

    def __init__(self, source: Source, stop_after: int) -> None:
        self.source = source
        self.stop_after = stop_after
        self.ahead: list[int] = []

    def __call__(self, item: Any) -> object:
        self.ahead.append(self.source.pulled - (len(self.ahead) + 1))
        return STOP if len(self.ahead) == self.stop_after else None


@each_backend_and_style
def test_the_default_window_keeps_slow_jobs_to_two_per_worker(
    backend: Backend, style: Style
) -> None:
    # Slow jobs (one per chunk on every backend) must not pull a generator that opens
    # files or sockets far ahead: with no buffer=, 2 * workers taken and not handed out.
    workers = 3
    source = Source.endless()
    lookahead = Lookahead(source, stop_after=4 * workers)

    def body(job: int) -> Steps:
        yield Sleep(0.06)  # over every backend's chunk target (50 ms on Dask)
        return job

    pool = {"workers": workers}
    outcome = style.run(backend, "map", body, source, pool=pool, on_item=lookahead)
    assert outcome.error is None
    assert max(lookahead.ahead) <= 2 * workers + SLACK, lookahead.ahead


@each_backend_and_style
def test_the_default_window_grows_for_cheap_jobs_within_its_documented_bound(
    backend: Backend, style: Style
) -> None:
    # Cheap jobs travel in chunks that amortise a wake-up: the window grows past
    # 2 * workers, and never past the bound docs/worker-pool.md states.
    workers = 2
    source = Source.endless()
    lookahead = Lookahead(source, stop_after=5_000)
    pool = {"workers": workers}
    outcome = style.run(backend, "map", identity, source, pool=pool, on_item=lookahead)
    assert outcome.error is None
    assert max(lookahead.ahead) > 2 * workers + SLACK, "the default window never grew"
    assert max(lookahead.ahead) <= backend.default_window_bound(workers) + SLACK


@each_backend_and_style
@settings(max_examples=5, deadline=None)
@given(
    workers=st.integers(1, 4),
    buffer=st.integers(1, 8),
    ordered=st.booleans(),
    pause_at=st.integers(0, 10),
)
def test_the_in_flight_bound_holds_for_any_buffer(
    backend: Backend, style: Style, workers: int, buffer: int, ordered: bool, pause_at: int
) -> None:
    source = Source.endless()
    handed: list[Any] = []

    def on_item(item: Any) -> object:
        handed.append(item)
        bound = len(handed) + buffer + SLACK
        assert source.pulled <= bound, f"{source.pulled} items taken, {len(handed)} handed over"
        if len(handed) == pause_at + 1:
            return Pause(0.03)
        return STOP if len(handed) == 20 else None

    outcome = style.run(
        backend,
        "results",
        identity,
        source,
        pool={"workers": workers, "buffer": buffer},
        on_item=on_item,
        ordered=ordered,
    )
    assert outcome.error is None
    assert len(handed) == 20


@each_backend_and_style
def test_slow_jobs_take_the_input_a_sixteenth_of_the_buffer_at_a_time(
    backend: Backend, style: Style
) -> None:
    # One-job chunks (slow jobs) must not cost a refill per item handed out: while jobs
    # are in flight the consumer takes input only once buffer / 16 items fit.
    buffer, items = 64, 400
    source = Source(range(items))
    pulled_at_each_item: list[int] = []

    def body(job: int) -> Steps:
        yield Sleep(0.002)  # ten chunks' worth of work: one job per chunk
        return job

    outcome = style.run(
        backend,
        "map",
        body,
        source,
        pool={"workers": 4, "buffer": buffer},
        on_item=lambda item: pulled_at_each_item.append(source.pulled),
    )
    assert outcome.error is None
    assert outcome.items == list(range(items))
    steps = [
        later - earlier
        for earlier, later in itertools.pairwise(pulled_at_each_item)
        if later > earlier and later < items  # the last refill may find the input short
    ]
    assert steps, pulled_at_each_item
    assert min(steps) >= buffer // 16, steps


@each_backend_and_style
def test_one_slow_job_in_ordered_mode_keeps_the_in_flight_bound(
    backend: Backend, style: Style
) -> None:
    source = Source(range(200))
    pulled_when_the_head_came: list[int] = []

    def body(job: int) -> Steps:
        if job == 0:
            yield Sleep(0.3)
        return job

    def on_item(item: int) -> None:
        if item == 0:
            pulled_when_the_head_came.append(source.pulled)

    pool = {"workers": 2, "buffer": 4}
    outcome = style.run(backend, "map", body, source, pool=pool, on_item=on_item)
    assert outcome.error is None
    assert outcome.items == list(range(200))
    # The head handed over, at most `buffer` more taken (not the 200 that finished behind it).
    assert pulled_when_the_head_came[0] <= 1 + 4 + SLACK


@each_backend_and_style
@pytest.mark.parametrize("method", ["map", "results"])
def test_an_endless_input_with_break_returns_promptly(
    backend: Backend, style: Style, method: str
) -> None:
    source = Source.endless()
    taken = itertools.count(1)
    with style.session(backend) as session:
        outcome = session.consume(
            method, identity, source, on_item=lambda item: STOP if next(taken) == 100 else None
        )
        assert outcome.error is None
        assert outcome.seconds < PROMPT
        assert len(outcome.items) == 100
        wait_until(lambda: source.closed, PROMPT)
        bound = backend.default_window_bound(session.pool_kwargs["workers"])
        assert source.pulled <= 100 + bound + SLACK
    assert session.exit_seconds < PROMPT


# -- failures -------------------------------------------------------------------------------


@each_backend_and_style
def test_map_raises_the_first_failure_in_input_order_and_cancels_the_rest(
    backend: Backend, style: Style
) -> None:
    source = Source(range(500))
    starts = backend.log()

    def body(job: int) -> Steps:
        starts.append(job)
        if job == 6:
            raise Boom(6)  # fails first in time...
        yield Sleep(0.03 if job == 3 else 0.002)
        if job == 3:
            raise Boom(3)  # ...but this one comes first in input order
        return job

    with style.session(backend, buffer=8) as session:
        outcome = session.consume("map", body, source)
        assert isinstance(outcome.error, Boom)
        assert outcome.error.args == (3,)
        assert outcome.items == [0, 1, 2]
        wait_until(lambda: source.closed, PROMPT)
        assert len(starts) <= 4 + 8 + SLACK
        assert_no_more_starts(starts)
        # The pool is still usable after a call failed.
        assert session.consume("map", identity, range(5)).items == [0, 1, 2, 3, 4]


@each_backend_and_style
def test_map_with_dead_letters_skips_failed_jobs(backend: Backend, style: Style) -> None:
    letters: list[cf.Result[Any]] = []
    outcome = style.run(backend, "map", fail_odd, range(20), dead_letters=letters.append)
    assert outcome.error is None
    assert outcome.items == list(range(0, 20, 2))
    assert sorted(letter.index for letter in letters) == list(range(1, 20, 2))
    assert all(isinstance(letter, cf.Result) and not letter.ok for letter in letters)


@each_backend_and_style
def test_results_never_raise_for_a_job(backend: Backend, style: Style) -> None:
    def body(job: int) -> int:
        raise Boom(job)

    outcome = style.run(backend, "results", body, range(20))
    assert outcome.error is None
    assert sorted(result.index for result in outcome.items) == list(range(20))
    for result in outcome.items:
        assert not result.ok
        assert isinstance(result.error, Boom)
        assert result.error.args == (result.job,)


@each_backend_and_style
@pytest.mark.parametrize("method", ["map", "results"])
def test_an_input_error_reaches_the_consumer_as_is(
    backend: Backend, style: Style, method: str
) -> None:
    broken = InputBroken("the input broke")
    outcome = style.run(backend, method, identity, Source(range(5), error=broken))
    assert outcome.error is broken
    values = sorted(value_of(item) for item in outcome.items)
    assert values == list(range(len(values)))
    assert len(values) <= 5


# -- async iterable input -------------------------------------------------------------------


@each_backend
@pytest.mark.parametrize("method", ["map", "results"])
def test_async_iterable_input(backend: Backend, method: str) -> None:
    broken = InputBroken("the async input broke")
    with ASYNC_STYLE.session(backend) as session:
        whole = session.consume(method, identity, Source(range(30)), async_input=True)
        assert whole.error is None
        assert sorted(value_of(item) for item in whole.items) == list(range(30))
        failing = Source(range(3), error=broken)
        cut = session.consume(method, identity, failing, async_input=True)
        assert cut.error is broken


@each_backend
def test_break_closes_an_async_input(backend: Backend) -> None:
    source = Source.endless()
    with ASYNC_STYLE.session(backend) as session:
        outcome = session.consume(
            "map", identity, source, async_input=True, on_item=lambda v: STOP if v == 9 else None
        )
        assert outcome.items == list(range(10))
        wait_until(lambda: source.closed, PROMPT)
        bound = backend.default_window_bound(session.pool_kwargs["workers"])
        assert source.pulled <= 10 + bound + SLACK


# -- early exit -----------------------------------------------------------------------------


@each_backend_and_style
@pytest.mark.parametrize("how", ["break", "consumer_error", "leave_with"])
def test_early_exit_cancels_closes_and_returns_promptly(
    backend: Backend, style: Style, how: str
) -> None:
    source = Source(range(1000))
    starts, ends, saw_cancel = backend.log(), backend.log(), backend.log()
    later_job_started = backend.event()

    def body(job: int) -> Steps:
        starts.append(job)
        try:
            if job >= 5:
                later_job_started.set()
                # Cooperative: stops once the pool cancels the job's context.
                try:
                    saw_cancel.append((yield WaitCancelled(5.0)))
                except BaseException:
                    # Leaving the pool also cancels its asyncio tasks: a job stopped so
                    # must find its context cancelled already. (Only before 3.12 did
                    # asyncio.wait_for, which WaitCancelled awaits, swallow that cancel
                    # once the context it waited for was done.)
                    saw_cancel.append(cf.current_context().cancelled)
                    raise
            elif job == 4:
                # The consumer stops on job 4's value: hold it back until a later job runs,
                # so that the stop has a running job to cancel.
                assert (yield WaitEvent(later_job_started, PROMPT)), "no later job started"
            return job
        finally:
            ends.append(job)

    def on_item(value: int) -> object:
        if value < 4:
            return None
        if how == "break":
            return STOP
        raise consumer_error

    consumer_error = ConsumerError("the consumer gave up")
    closed_on_exit: list[bool] = []
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        raised = None
        if how == "consumer_error":
            raised = stack.enter_context(pytest.raises(ConsumerError))
        with style.session(backend, buffer=8) as session:
            session.after_exit = lambda: closed_on_exit.append(source.closed)
            if how == "leave_with":
                take = session.iterate("map", body, source)
                assert [take() for _ in range(5)] == [0, 1, 2, 3, 4]
            else:
                session.consume("map", body, source, on_item=on_item)
                if how == "break":
                    # A break alone (the pool is not left yet) ends the call.
                    wait_until(lambda: source.closed, PROMPT)
                    wait_until(lambda: sorted(ends) == sorted(starts), PROMPT)
    if raised is not None:
        assert raised.value is consumer_error
    assert time.monotonic() - start < PROMPT
    assert session.exit_seconds < PROMPT
    assert closed_on_exit == [True], "the input was not closed when the pool was left"
    wait_until(lambda: sorted(ends) == sorted(starts), PROMPT)
    assert saw_cancel, "no job waited for its cancel: the test proved nothing"
    assert all(saw_cancel), "a waiting job ended without its context cancelled"
    assert len(starts) <= 5 + 8 + SLACK
    assert_no_more_starts(starts)


# -- retries --------------------------------------------------------------------------------


class FlakyJobs:
    """Job ``j`` fails its first ``plan[j]`` attempts, then returns ``j``."""

    def __init__(self, backend: Backend, plan: list[int]) -> None:
        self.plan = plan
        self.attempts = backend.probes.tally()  # attempts of one job never overlap

    def body(self, job: int) -> int:
        attempt = self.attempts.add(job)
        if attempt <= self.plan[job]:
            raise Flaky(job, attempt)
        return job

    def failing(self, retries: int) -> set[int]:
        return {job for job, failures in enumerate(self.plan) if failures > retries}

    def retried(self, retries: int) -> int:
        return sum(min(failures, retries) for failures in self.plan)

    @staticmethod
    def plan_for(jobs: int, seed: int) -> list[int]:
        rng = random.Random(seed)
        return [rng.choice((0, 0, 0, 0, 0, 1, 1, 2, 3)) for _ in range(jobs)]


@each_backend_and_style
@settings(max_examples=6, deadline=None)
@given(plan=st.lists(st.integers(0, 4), min_size=1, max_size=12), retries=st.integers(0, 3))
def test_a_job_failing_k_times_succeeds_after_k_retries(
    backend: Backend, style: Style, plan: list[int], retries: int
) -> None:
    jobs = FlakyJobs(backend, plan)
    with style.session(backend, retries=retries, backoff=no_backoff) as session:
        outcome = session.consume("results", jobs.body, range(len(plan)))
        stats = session.stats()
    assert outcome.error is None
    by_index = {result.index: result for result in outcome.items}
    assert sorted(by_index) == list(range(len(plan)))
    for job, failures in enumerate(plan):
        result = by_index[job]
        if failures <= retries:
            assert (result.ok, result.value, result.attempts) == (True, job, failures + 1)
        else:
            assert not result.ok
            assert result.attempts == retries + 1
            assert isinstance(result.error, Flaky)
            assert result.error.args == (job, retries + 1), "not the last attempt's error"
    assert stats.retried == jobs.retried(retries)
    assert stats.failed == len(jobs.failing(retries))


@each_backend_and_style
def test_retry_on_decides_which_errors_are_retried(backend: Backend, style: Style) -> None:
    attempts = backend.probes.tally()
    errors = {"key": KeyError, "value": ValueError, "type": TypeError}

    def fails_once(job: str) -> str:
        if attempts.add(job) == 1:
            raise errors[job.split("-")[0]](job)
        return job

    def by_job(outcome: Outcome) -> dict[str, tuple[bool, int]]:
        return {result.job: (result.ok, result.attempts) for result in outcome.items}

    with style.session(backend, retries=2, backoff=no_backoff, retry_on=KeyError) as session:
        pool_setting = session.consume("results", fails_once, ["key-1", "value-1"])
        per_call = session.consume(
            "results", fails_once, ["key-2", "value-2", "type-2"], retry_on=(KeyError, ValueError)
        )
    assert by_job(pool_setting) == {"key-1": (True, 2), "value-1": (False, 1)}
    assert by_job(per_call) == {"key-2": (True, 2), "value-2": (True, 2), "type-2": (False, 1)}


@each_backend_and_style
def test_retries_can_be_overridden_per_call(backend: Backend, style: Style) -> None:
    jobs = FlakyJobs(backend, [1, 1, 3])
    with style.session(backend, retries=1, backoff=no_backoff) as session:
        refused = session.consume("results", jobs.body, [0], retries=0)
        pool_setting = session.consume("results", jobs.body, [1])
        more = session.consume("results", jobs.body, [2], retries=3)
    [refused_result], [pool_result], [more_result] = refused.items, pool_setting.items, more.items
    assert (refused_result.ok, refused_result.attempts) == (False, 1)
    assert (pool_result.ok, pool_result.attempts) == (True, 2)
    assert (more_result.ok, more_result.attempts) == (True, 4)


@each_backend_and_style
def test_a_callable_backoff_sets_the_delay_between_attempts(backend: Backend, style: Style) -> None:
    asked: list[int] = []
    starts = backend.log()

    def backoff(attempt: int) -> float:
        asked.append(attempt)
        return 0.03

    def body(job: str) -> str:
        starts.append(time.monotonic())
        if len(starts) <= 2:
            raise Flaky(len(starts))
        return job

    outcome = style.run(backend, "results", body, ["once"], pool={"retries": 2, "backoff": backoff})
    [result] = outcome.items
    assert (result.ok, result.value, result.attempts) == (True, "once", 3)
    # Asked once per retry, with consecutive attempt numbers (0- or 1-based).
    assert len(asked) == 2
    assert asked[0] in (0, 1)
    assert asked[1] == asked[0] + 1
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert all(gap >= 0.03 - 0.002 for gap in gaps), gaps
    assert result.elapsed >= 0.06 - 0.004


@each_backend_and_style
@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        pytest.param(lambda attempt: 1 / 0, ZeroDivisionError, id="raises"),
        pytest.param(lambda attempt: "soon", TypeError, id="not-a-number"),
        pytest.param(lambda attempt: -1.0, ValueError, id="negative"),
    ],
)
def test_a_broken_backoff_ends_its_job_with_the_backoffs_error(
    backend: Backend, style: Style, backoff: Any, expected: type[Exception]
) -> None:
    # Once, a backoff that raised killed the worker that asked it, and the pool hung.
    def body(job: int) -> int:
        if job == 2:
            raise Flaky(job)
        return job

    outcome = style.run(
        backend, "results", body, range(6), pool={"retries": 2, "backoff": backoff}, ordered=True
    )
    assert outcome.error is None
    assert [result.index for result in outcome.items] == list(range(6))
    bad = outcome.items[2]
    assert isinstance(bad.error, expected)
    assert isinstance(bad.error.__cause__, Flaky)  # the job's own failure, kept
    assert bad.attempts == 1  # no retry was scheduled
    assert [result.value for result in outcome.items if result.index != 2] == [0, 1, 3, 4, 5]


# What may come on top of a backoff's delay, from an attempt's failure to the next
# attempt's start, in a test: the pools' own cost is a few ms (5 ms targets on threads,
# asyncio and processes, 50 ms on Dask: benchmarks/bench_retry.py), but on a loaded
# machine (the suite on 2 cores, a CPU burner beside it) the scheduler can leave each
# of a retry's hand-offs (worker -> pool -> timer thread -> worker) waiting for its
# turn, and Dask's own threads and processes stall now and then: up to ~0.2 s seen,
# once in 80 retries under a burner. 0.3 s holds that with room, and a capped delay
# stays tellable from an uncapped one: see the test below.
RETRY_SLACK = 0.3


@each_backend_and_style
def test_a_backoff_object_keeps_its_delays_under_its_cap(
    backend: Backend, style: Style, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # The gap that names the backoff: from an attempt's failure to the next attempt's
    # start. Stamps, not a backend's log(): a manager proxy used for the first time in a
    # worker process connects to the manager (hundreds of ms under load), in that gap.
    stamps = Stamps(tmp_path / "stamps")
    retries = 5

    def body(job: str) -> str:
        stamps.stamp("start")  # first thing: what came before is the pool's doing
        if len(stamps.times("start")) <= retries:  # attempts of one job never overlap
            stamps.stamp("failed")  # last thing before the raise
            raise RuntimeError("flaky")  # builtin: nothing to import where a retry runs
        return job

    # Full jitter: uncapped, base 0.5 s would wait uniformly up to 0.5, 1, 2, 4 and 8 s
    # (15.5 s at most), and all five waits would fit under cap + RETRY_SLACK = 0.32 s
    # with a chance of 0.64 * 0.32 * 0.16 * 0.08 * 0.04 = 1e-4: an uncapped backoff fails.
    backoff = cf.Backoff(base=0.5, cap=0.02)
    # Nothing of the suite in the gaps: one worker, which has loaded the body (and the
    # suite's modules it needs) before the first attempt, runs every attempt; on Dask,
    # whose cluster places tasks where it likes, every worker imports them first.
    if backend.name == "dask":
        request.getfixturevalue("dask_client").run(importlib.import_module, "pool_helpers")
    pool = {"workers": 1, "retries": retries, "backoff": backoff}
    outcome = style.run(backend, "results", body, ["job"], pool=pool)
    [result] = outcome.items
    assert (result.ok, result.attempts) == (True, retries + 1)
    starts, failures = stamps.times("start"), stamps.times("failed")
    assert (len(starts), len(failures)) == (retries + 1, retries)
    gaps = [start - failed for failed, start in zip(failures, starts[1:], strict=True)]
    assert all(0 <= gap <= backoff.cap + RETRY_SLACK for gap in gaps), gaps


# -- timeouts -------------------------------------------------------------------------------


@each_backend_and_style
def test_timed_out_jobs_report_job_timeout_and_capacity_holds(
    backend: Backend, style: Style
) -> None:
    release = backend.event()
    stuck_ends, stuck_errors = backend.log(), backend.log()

    def stuck(job: str) -> Steps:
        try:
            yield WaitEvent(release, 5.0)
            return job
        except BaseException as error:
            stuck_errors.append(type(error).__name__)
            raise
        finally:
            stuck_ends.append(job)

    meter = backend.meter()
    rendezvous = backend.rendezvous(4)

    def flowing(job: int) -> Steps:
        meter.enter()
        try:
            if job < 4:
                return (yield rendezvous.arrive())  # all 4 workers at once, or False after 3 s
            yield Sleep(0.005)
            return True
        finally:
            meter.leave()

    try:
        with style.session(backend, workers=4) as session:
            timed_out = session.consume("results", stuck, ["a", "b"], timeout=0.05)
            assert timed_out.error is None
            assert timed_out.seconds < 1.0, "JobTimeout came late"
            assert len(timed_out.items) == 2
            for result in timed_out.items:
                assert isinstance(result.error, cf.JobTimeout)  # a TimeoutError: test_public_api
                assert result.attempts == 1
            if backend.timed_out_jobs == "cancelled":
                wait_until(lambda: len(stuck_ends) == 2, PROMPT)
                assert stuck_errors == ["CancelledError"] * 2
            else:  # still holding their threads, or killed with their processes
                assert stuck_ends == [], "the stuck jobs should not have ended"
            flow = session.consume("map", flowing, range(20))
            assert flow.error is None
            assert flow.items == [True] * 20, "fewer than 4 workers ran at once"
            assert meter.most == 4
            assert session.stats().timed_out == 2
    finally:
        release.set()
    assert session.exit_seconds < PROMPT
    if backend.timed_out_jobs == "killed":
        time.sleep(0.1)  # a process that was not killed would end its jobs now
        assert stuck_ends == [] and stuck_errors == [], "a timed-out job ran on"
    else:
        wait_until(lambda: len(stuck_ends) == 2, PROMPT)


@each_backend_and_style
def test_current_context_is_cancelled_when_the_attempt_times_out(
    backend: Backend, style: Style
) -> None:
    assert cf.current_context() is cf.background()
    contexts: list[cf.Context] = []  # read by the test where jobs run in its process
    deadlines, time_left = backend.log(), backend.log()
    ended, saw_cancel = backend.log(), backend.log()

    def cooperative(job: int) -> Steps:
        context = cf.current_context()
        assert context is not cf.background()
        assert context.deadline is not None
        contexts.append(context)
        deadlines.append(context.deadline)
        time_left.append(context.deadline - time.monotonic())
        try:
            cancelled = yield WaitCancelled(5.0)
            saw_cancel.append(cancelled)
            return cancelled
        except BaseException:
            # A job stopped from outside (an asyncio task cancelled at its timeout) must
            # find its context cancelled already: it may be all the job looks at.
            saw_cancel.append(cf.current_context().cancelled)
            raise
        finally:
            ended.append(job)

    start = time.monotonic()
    outcome = style.run(backend, "results", cooperative, [0], timeout=0.05)
    [result] = outcome.items
    assert isinstance(result.error, cf.JobTimeout)
    # The context's deadline is this attempt's: set in this run, at most the timeout
    # after the job started (a late start under load leaves less, never more).
    assert start < deadlines[0], (start, deadlines[0])
    assert time_left[0] <= 0.05, time_left[0]
    if backend.timed_out_jobs == "killed":
        return  # the job ended with its process: nothing in it could see the cancel
    if backend.probes is LOCAL:  # the job ran here: its very Context object is at hand
        wait_until(lambda: contexts[0].cancelled, PROMPT)
    wait_until(lambda: len(ended) == 1, PROMPT)
    assert saw_cancel == [True], "the job ended without its context cancelled"
    assert time.monotonic() - start < PROMPT


# -- rate limits ----------------------------------------------------------------------------


@each_backend_and_style
def test_a_rate_limits_job_starts_across_all_workers(
    backend: Backend, style: Style, tmp_path: Path
) -> None:
    stamps = Stamps(tmp_path / "stamps")  # not log(): see Stamps

    def body(job: int) -> int:
        stamps.stamp("start")
        return job

    limiter = _GrantClock(50)
    outcome = style.run(backend, "map", body, range(40), pool={"workers": 8, "rate": limiter})
    assert outcome.items == list(range(40))
    starts = stamps.times("start")
    # 39 intervals of 20 ms after the first start (a little less after an initial burst):
    # where the jobs ran, no start came sooner than the rate allows...
    assert max(starts) - min(starts) >= 0.55, starts
    # ...and the pool asked for the tokens as fast as the rate gives them. (Measured at
    # the limiter: a start on a worker adds the backend's dispatch, which a loaded
    # machine stretches by hundreds of milliseconds on Dask.)
    assert len(limiter.grants) == 40
    assert max(limiter.grants) - min(limiter.grants) <= 1.5, limiter.grants


class _GrantClock(cf.RateLimiter):
    """A RateLimiter that notes when it let each token go (in the pool's process)."""

    def __init__(self, rate: float) -> None:
        super().__init__(rate)
        self.grants: list[float] = []

    def acquire(
        self, tokens: int = 1, timeout: float | None = None, *, context: cf.Context | None = None
    ) -> bool:
        granted = super().acquire(tokens, timeout, context=context)
        if granted:
            self.grants.append(time.monotonic())
        return granted

    async def aacquire(self, tokens: int = 1, timeout: float | None = None) -> bool:
        granted = await super().aacquire(tokens, timeout)
        if granted:
            self.grants.append(time.monotonic())
        return granted


@each_backend_and_style
@pytest.mark.parametrize("kind", ["number", "limiter"])
def test_a_per_call_rate_as_a_number_or_a_limiter(
    backend: Backend, style: Style, kind: str, tmp_path: Path
) -> None:
    stamps = Stamps(tmp_path / "stamps")

    def body(job: int) -> int:
        stamps.stamp("start")
        return job

    limiter = _GrantClock(100)
    rate = 100 if kind == "number" else limiter
    outcome = style.run(backend, "map", body, range(20), pool={"workers": 8}, rate=rate)
    assert outcome.items == list(range(20))
    starts = stamps.times("start")
    assert max(starts) - min(starts) >= 0.15, starts  # the call's rate held where jobs ran
    if kind == "limiter":  # the tokens were asked for as fast as they come (at the limiter:
        # a start on a worker adds dispatch, which a loaded machine stretches on Dask)
        assert len(limiter.grants) == 20
        assert max(limiter.grants) - min(limiter.grants) <= 1.0, limiter.grants


# -- dead letters ---------------------------------------------------------------------------


def drain(channel: cf.Channel[Any]) -> list[Any]:
    items = []
    while True:
        try:
            items.append(channel.recv_nowait())
        except (cf.WouldBlock, cf.ChannelClosed):
            return items


@each_backend_and_style
def test_dead_letters_into_a_channel(backend: Backend, style: Style) -> None:
    channel: cf.Channel[cf.Result[Any]] = cf.Channel(100)
    outcome = style.run(
        backend,
        "map",
        fail_odd,
        range(10),
        pool={"dead_letters": channel, "retries": 1, "backoff": no_backoff},
    )
    assert outcome.error is None
    assert outcome.items == [0, 2, 4, 6, 8]
    letters = drain(channel)
    assert sorted(letter.index for letter in letters) == [1, 3, 5, 7, 9]
    for letter in letters:
        assert isinstance(letter, cf.Result)
        assert not letter.ok
        assert isinstance(letter.error, Boom)
        assert letter.attempts == 2


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_letter_line(line: dict[str, Any], jobs: list[str]) -> None:
    keys = {"job", "index", "error_type", "message", "traceback", "attempts", "elapsed"}
    assert keys | {"timestamp"} <= set(line), line
    index = line["index"]
    assert line["job"] == repr(jobs[index])
    assert line["error_type"].endswith("Boom")
    assert line["message"] == f"bad {index}"
    assert f"Boom: bad {index}" in line["traceback"]
    assert line["attempts"] == 2
    assert isinstance(line["elapsed"], (int, float))
    assert 0 <= line["elapsed"] < 10
    timestamp = line["timestamp"]
    if isinstance(timestamp, str):
        timestamp = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    assert abs(timestamp - time.time()) < 60, line["timestamp"]


@each_backend_and_style
def test_dead_letters_into_a_json_lines_file(
    backend: Backend, style: Style, tmp_path: Path
) -> None:
    jobs = [f"job-{index}" for index in range(10)]

    def body(job: str) -> str:
        index = int(job.split("-")[1])
        if index % 3 == 0:
            raise Boom(f"bad {index}")
        return job

    pool_file, call_file = tmp_path / "pool.jsonl", tmp_path / "call.jsonl"
    settings_ = {"dead_letters": pool_file, "retries": 1, "backoff": no_backoff}
    with style.session(backend, **settings_) as session:
        first = session.consume("map", body, jobs)
        second = session.consume("map", body, jobs[:5], dead_letters=os.fspath(call_file))
    kept = [job for index, job in enumerate(jobs) if index % 3]
    assert first.items == kept
    assert second.items == kept[:3]
    pool_lines, call_lines = read_jsonl(pool_file), read_jsonl(call_file)
    assert sorted(line["index"] for line in pool_lines) == [0, 3, 6, 9]
    assert sorted(line["index"] for line in call_lines) == [0, 3]
    for line in pool_lines + call_lines:
        check_letter_line(line, jobs)


# -- exactly once ---------------------------------------------------------------------------


@each_backend_and_style
def test_exactly_once_results_under_10000_jobs_with_random_failures(
    backend: Backend, style: Style
) -> None:
    jobs = FlakyJobs(backend, FlakyJobs.plan_for(10_000, seed=3))
    with style.session(backend, retries=2, backoff=no_backoff) as session:
        outcome = session.consume("results", jobs.body, range(10_000))
        stats = session.stats()
    assert outcome.error is None
    assert Counter(result.index for result in outcome.items) == Counter(range(10_000))
    assert {result.index for result in outcome.items if not result.ok} == jobs.failing(2)
    for result in outcome.items:
        assert result.job == result.index
        assert result.attempts == min(jobs.plan[result.index] + 1, 3)
        assert result.value == (result.index if result.ok else None)
    failed = len(jobs.failing(2))
    assert (stats.submitted, stats.completed, stats.failed) == (10_000, 10_000 - failed, failed)
    assert stats.retried == jobs.retried(2)
    assert stats.in_flight == 0


@each_backend_and_style
def test_exactly_once_map_with_dead_letters_under_10000_jobs(
    backend: Backend, style: Style
) -> None:
    jobs = FlakyJobs(backend, FlakyJobs.plan_for(10_000, seed=4))
    letters: list[cf.Result[Any]] = []
    outcome = style.run(
        backend,
        "map",
        jobs.body,
        range(10_000),
        pool={"retries": 2, "backoff": no_backoff, "dead_letters": letters.append},
    )
    assert outcome.error is None
    failing = jobs.failing(2)
    assert outcome.items == [job for job in range(10_000) if job not in failing]
    assert Counter(letter.index for letter in letters) == Counter(failing)


@each_backend_and_style
@settings(max_examples=8, deadline=None)
@given(
    plan=st.lists(st.integers(0, 3), max_size=40),
    delays=st.lists(st.integers(0, 3), min_size=40, max_size=40),
    workers=st.integers(1, 4),
    buffer=st.integers(1, 6),
    retries=st.integers(0, 2),
    method=st.sampled_from(["map", "results"]),
    ordered=st.booleans(),
)
def test_exactly_once_for_any_failure_pattern(
    backend: Backend,
    style: Style,
    plan: list[int],
    delays: list[int],
    workers: int,
    buffer: int,
    retries: int,
    method: str,
    ordered: bool,
) -> None:
    jobs = FlakyJobs(backend, plan)

    def body(job: int) -> Steps:
        yield Sleep(delays[job] / 1000)
        return jobs.body(job)

    letters: list[cf.Result[Any]] = []
    call = {"dead_letters": letters.append} if method == "map" else {}
    pool = {"workers": workers, "buffer": buffer, "retries": retries, "backoff": no_backoff}
    outcome = style.run(backend, method, body, range(len(plan)), pool=pool, ordered=ordered, **call)
    assert outcome.error is None
    if method == "map":
        delivered = [*outcome.items, *(letter.index for letter in letters)]
    else:
        delivered = [result.index for result in outcome.items]
    assert Counter(delivered) == Counter(range(len(plan)))
    failed = (
        {letter.index for letter in letters}
        if method == "map"
        else {result.index for result in outcome.items if not result.ok}
    )
    assert failed == jobs.failing(retries)


# -- submit and stats -----------------------------------------------------------------------


@each_backend_and_style
def test_submit_returns_a_concurrent_future(backend: Backend, style: Style) -> None:
    def body(a: int, b: int, *, scale: int) -> Steps:
        yield Sleep(0.001)
        if scale == 0:
            raise Boom("zero scale")
        return (a + b) * scale

    with style.session(backend) as session:
        good = session.submit(body, 2, 3, scale=10)
        bad = session.submit(body, 2, 3, scale=0)
        assert isinstance(good, concurrent.futures.Future)
        assert good.result(timeout=5) == 50
        assert isinstance(bad.exception(timeout=5), Boom)
        with pytest.raises(Boom, match="zero scale"):
            bad.result(timeout=5)


@each_backend_and_style
def test_stats_add_up_after_a_run(backend: Backend, style: Style) -> None:
    release = backend.event()
    attempts = backend.probes.tally()
    stuck_ends = backend.log()

    def body(job: int) -> Steps:
        attempt = attempts.add(job)
        if job < 3:
            raise Boom(job)  # fails both attempts
        if job == 3 and attempt == 1:
            raise Flaky(job)  # fails once, then succeeds
        if job == 4:
            try:
                yield WaitEvent(release, 5.0)  # times out both attempts
            finally:
                stuck_ends.append(job)
        return job

    try:
        # The timeout stops job 4 (stuck for 5 s) and no other: a busy Dask cluster may
        # take a good part of a second to start and end a job.
        with style.session(backend, retries=1, backoff=no_backoff, timeout=1.0) as session:
            before = session.stats()
            assert isinstance(before, cf.PoolStats)
            assert (before.submitted, before.completed, before.failed) == (0, 0, 0)
            assert before.latency_p50 is None
            outcome = session.consume("results", body, range(12))
            release.set()
            if backend.timed_out_jobs != "killed":
                wait_until(lambda: len(stuck_ends) == 2, PROMPT)
            wait_until(lambda: session.stats().running == 0, PROMPT)
            stats = session.stats()
    finally:
        release.set()
    assert outcome.error is None
    assert len(outcome.items) == 12
    assert stats.submitted == 12
    assert (stats.completed, stats.failed) == (8, 4)
    assert stats.retried == 5  # jobs 0, 1, 2, 3 and 4 once each
    assert stats.timed_out == 2
    assert stats.in_flight == 0
    assert stats.elapsed > 0
    assert math.isclose(stats.throughput, 12 / stats.elapsed, rel_tol=1e-6)
    assert stats.latency_p50 is not None
    assert stats.latency_p90 is not None
    assert stats.latency_p99 is not None
    assert 0 <= stats.latency_p50 <= stats.latency_p90 <= stats.latency_p99
    with pytest.raises(AttributeError):
        stats.completed = 0


# -- workers, threads and event loops -------------------------------------------------------


@each_backend_and_style
def test_workers_bound_concurrency_and_all_are_used(backend: Backend, style: Style) -> None:
    meter = backend.meter()
    rendezvous = backend.rendezvous(4)

    def body(job: int) -> Steps:
        meter.enter()
        try:
            if job < 4:
                return (yield rendezvous.arrive())
            yield Sleep(0.002)
            return True
        finally:
            meter.leave()

    outcome = style.run(backend, "map", body, range(40), pool={"workers": 4})
    assert outcome.items == [True] * 40
    assert meter.most == 4


@each_backend
def test_default_workers(backend: Backend) -> None:
    cpus = os.cpu_count() or 1
    if backend.name == "dask":  # the cluster's thread count (the session's LocalCluster)
        workers = DASK_WORKERS * DASK_THREADS_PER_WORKER
    else:
        workers = {"thread": min(32, cpus + 4), "async": 100, "process": cpus}[backend.name]
    meter = backend.meter()
    rendezvous = backend.rendezvous(workers)

    def body(job: int) -> Steps:
        meter.enter()
        try:
            if job < workers:
                return (yield rendezvous.arrive())
            yield Sleep(0.002)
            return True
        finally:
            meter.leave()

    with cf.WorkerPool(backend=backend.name) as pool:
        assert list(pool.map(backend.job(body), range(2 * workers))) == [True] * (2 * workers)
    assert meter.most == workers


@each_backend_and_style
def test_where_jobs_run(backend: Backend, style: Style) -> None:
    places = backend.log()

    def body(job: int) -> int:
        places.append((os.getpid(), threading.current_thread().name))
        return job

    style.run(backend, "map", body, range(8))
    pids = {pid for pid, _ in places}
    names = {name for _, name in places}
    if backend.name == "process":
        assert os.getpid() not in pids, "process jobs should run in worker processes"
        assert len(pids) <= DEFAULT_WORKERS
    elif backend.name == "dask":
        assert os.getpid() not in pids, "Dask jobs should run in the cluster's worker processes"
        assert len(pids) <= DASK_WORKERS
        assert all("Dask-" in name for name in names), names
    elif backend.name == "async" and style.name == "async":
        assert names == {"test-consumer-loop"}, "async jobs should run on the caller's loop"
    else:
        assert pids == {os.getpid()}
        assert all(name.startswith("chanflow-") for name in names), names


@each_backend
def test_consuming_from_async_code_never_blocks_the_loop(backend: Backend) -> None:
    def body(job: int) -> Steps:
        yield Sleep(0.1)
        return job

    with ASYNC_STYLE.session(backend, workers=4) as session:
        outcome = session.consume("map", body, range(8))
    assert outcome.items == list(range(8))
    assert isinstance(session, AsyncSession)
    assert session.max_stall < 0.08, session.max_stall


def test_auto_backend_picks_by_the_kind_of_function() -> None:
    def where(job: int) -> str:
        return threading.current_thread().name

    async def where_async(job: int) -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    with cf.WorkerPool(workers=2) as pool:
        assert all(name.startswith("chanflow-") for name in pool.map(where, range(4)))
        assert all(name.startswith("chanflow-") for name in pool.map(where_async, range(4)))

    async def main() -> None:
        here = threading.current_thread().name
        async with cf.WorkerPool(workers=2, backend="auto") as pool:
            assert [name async for name in pool.amap(where_async, range(4))] == [here] * 4
            on_threads = [name async for name in pool.amap(where, range(4))]
            assert all(name.startswith("chanflow-") for name in on_threads)
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(main())


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("workers", 0),
        ("workers", -1),
        ("workers", 2.5),
        ("backend", "fibres"),
        ("buffer", 0),
        ("chunksize", 0),
        ("retries", -1),
        ("timeout", -1.0),
        ("rate", "fast"),
        ("retry_on", "ValueError"),
        ("backoff", "slow"),
        ("dead_letters", 42),
    ],
)
def test_bad_settings_are_refused_with_a_clear_error(name: str, value: object) -> None:
    with pytest.raises((TypeError, ValueError), match=f"{name}|{re.escape(repr(value))}"):
        cf.WorkerPool(**{name: value})


def test_a_bad_per_call_override_is_refused() -> None:
    with cf.WorkerPool(workers=2) as pool, pytest.raises(ValueError, match="retries"):
        list(pool.map(identity, range(3), retries=-1))


def test_progress_bar_does_not_change_the_results() -> None:
    with cf.WorkerPool(workers=2, progress=True) as pool:
        assert list(pool.map(identity, range(50))) == list(range(50))


# -- submit, closing and misuse -------------------------------------------------------------


def test_leaving_the_with_normally_waits_for_submitted_jobs() -> None:
    with cf.WorkerPool(workers=2) as pool:
        futures = [pool.submit(time.sleep, 0.05) for _ in range(4)]
    assert all(future.done() and not future.cancelled() for future in futures)


class Cooperative:
    """A submitted job that waits until its context is cancelled; notes each start."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.contexts: list[cf.Context] = []

    def __call__(self) -> bool:
        self.contexts.append(cf.current_context())
        self.started.set()
        return cf.current_context().wait(5.0)


def test_leaving_the_with_on_an_exception_cancels_submitted_jobs() -> None:
    cooperative = Cooperative()
    futures: list[concurrent.futures.Future[bool]] = []

    def leave_on_an_error() -> None:
        with cf.WorkerPool(workers=1) as pool:
            futures.extend([pool.submit(cooperative), pool.submit(cooperative)])
            assert cooperative.started.wait(5.0)
            raise ConsumerError("leave early")

    start = time.monotonic()
    with pytest.raises(ConsumerError):
        leave_on_an_error()
    assert time.monotonic() - start < PROMPT
    running, queued = futures
    assert running.cancelled() and queued.cancelled()
    contexts = cooperative.contexts
    assert len(contexts) == 1 and contexts[0].cancelled, "the queued job should never start"


def test_cancelling_a_future_cancels_its_job_context() -> None:
    cooperative = Cooperative()
    with cf.WorkerPool(workers=1) as pool:
        future = pool.submit(cooperative)
        assert cooperative.started.wait(5.0)
        assert future.cancel()
        wait_until(lambda: cooperative.contexts[0].cancelled, PROMPT)


def test_an_async_function_submitted_from_sync_code_runs_on_the_pool_loop() -> None:
    async def where(delay: float) -> str:
        await asyncio.sleep(delay)
        return threading.current_thread().name

    with cf.WorkerPool(workers=2) as pool:
        assert pool.submit(where, 0.01).result(timeout=5) == "chanflow-loop"


def test_cancelled_jobs_are_counted_and_leave_in_flight() -> None:
    with cf.WorkerPool(workers=2, buffer=10) as pool:
        for value in pool.map(time.sleep, [0.01] * 100):
            assert value is None
            break
        wait_until(lambda: pool.stats().running == 0, PROMPT)
        stats = pool.stats()
    assert stats.submitted <= 10 + SLACK
    assert stats.completed + stats.failed + stats.cancelled == stats.submitted
    assert stats.in_flight == 0


async def coroutine_identity(job: Any) -> Any:
    return job


@pytest.mark.parametrize(
    ("backend", "fn", "message"),
    [
        ("thread", coroutine_identity, "runs plain functions"),
        ("async", identity, "runs coroutine functions"),
    ],
)
def test_a_function_of_the_wrong_kind_is_refused_at_once(
    backend: str, fn: Any, message: str
) -> None:
    with cf.WorkerPool(workers=2, backend=backend) as pool, pytest.raises(TypeError, match=message):
        pool.map(fn, range(3))


def test_misuse_gets_a_clear_error() -> None:
    async def numbers() -> Any:
        yield 1

    with cf.WorkerPool(workers=2) as pool:
        with pytest.raises(TypeError, match="amap"):
            pool.map(identity, numbers())
        with pytest.raises(TypeError, match="iterable"):
            pool.results(identity, 42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="callable"):
            pool.map(42, range(3))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="unexpected keyword"):
            pool.map(identity, range(3), workers=3)  # type: ignore[call-arg]
    with pytest.raises(RuntimeError, match="closed"):
        pool.map(identity, range(3))
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(identity, 1)


def test_a_pool_used_without_with_is_closed_by_close() -> None:
    pool = cf.WorkerPool(workers=2)
    iterator = pool.map(identity, itertools.count())
    assert next(iterator) == 0
    pool.close()
    pool.close()  # idempotent
    with pytest.raises(StopIteration):
        next(iterator)


def test_an_async_job_cancelled_from_inside_fails_alone() -> None:
    async def body(job: int) -> int:
        if job == 3:
            raise asyncio.CancelledError("the job's own await was cancelled")
        await asyncio.sleep(0)
        return job

    async def main() -> list[cf.Result[int]]:
        async with cf.WorkerPool(workers=2) as pool:
            return [result async for result in pool.aresults(body, range(10), ordered=True)]

    results = asyncio.run(main())
    assert [result.index for result in results] == list(range(10))
    assert [result.ok for result in results] == [job != 3 for job in range(10)]


def test_progress_on_a_rich_progress_object() -> None:
    console = Console(file=open(os.devnull, "w"), force_terminal=True)  # noqa: SIM115
    try:
        with Progress(console=console) as progress, cf.WorkerPool(workers=2) as pool:
            assert list(pool.map(identity, range(30), progress=progress)) == list(range(30))
            [task] = progress.tasks
            assert task.completed == 30
    finally:
        console.file.close()


class CountsItsLength:
    """A lazy input whose ``len()`` is costly (an ORM query set loads every row for it)."""

    def __init__(self, n: int, broken: bool = False) -> None:
        self.n = n
        self.broken = broken
        self.asked = 0

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.n))

    def __len__(self) -> int:
        self.asked += 1
        if self.broken:
            raise RuntimeError("the database is away")
        return self.n


def test_the_input_length_is_asked_only_for_a_progress_bar() -> None:
    quiet, broken = CountsItsLength(20), CountsItsLength(20, broken=True)
    console = Console(file=open(os.devnull, "w"), force_terminal=True)  # noqa: SIM115
    try:
        with Progress(console=console) as progress, cf.WorkerPool(workers=2) as pool:
            assert list(pool.map(identity, quiet)) == list(range(20))
            assert quiet.asked == 0  # no bar, no len()
            # A bar: its ETA wants the length; an input whose len() fails just has none.
            assert list(pool.map(identity, broken, progress=progress)) == list(range(20))
            assert broken.asked == 1
            [task] = progress.tasks
            assert (task.total, task.completed) == (None, 20)
    finally:
        console.file.close()


@each_backend
def test_many_consumer_threads_share_one_pool(backend: Backend) -> None:
    def body(job: tuple[int, int]) -> Steps:
        yield Sleep(random.random() / 1000)
        if job[1] % 7 == 3:
            raise Boom(job)
        return job

    def consume(pool: cf.WorkerPool, consumer: int) -> list[cf.Result[Any]]:
        jobs = [(consumer, index) for index in range(300)]
        return list(pool.results(backend.job(body), jobs, ordered=consumer % 2 == 0))

    with cf.WorkerPool(workers=6, backend=backend.name, buffer=5) as pool:
        futures = [cf.go(consume, pool, consumer) for consumer in range(8)]
        outcomes = [future.result(timeout=30) for future in futures]
        stats = pool.stats()
    for consumer, results in enumerate(outcomes):
        assert Counter(result.index for result in results) == Counter(range(300))
        if consumer % 2 == 0:
            assert [result.index for result in results] == list(range(300))
        for result in results:
            assert result.job == (consumer, result.index)
            assert result.ok == (result.index % 7 != 3)
    assert stats.submitted == 8 * 300
    assert stats.in_flight == 0


# -- Ctrl-C ---------------------------------------------------------------------------------

_INTERRUPTED_RUN = """
import asyncio, itertools, sys, time
import chanflow as cf

def cooperative(job):
    return cf.current_context().wait(30.0)  # stops as soon as the pool cancels it

async def acooperative(job):
    return await asyncio.wait_for(asyncio.sleep(30.0), 60.0)

async def amain():
    async with cf.WorkerPool(workers=4) as pool:
        async for _ in pool.amap(acooperative, itertools.count()):
            pass

if sys.argv[1] != "async":
    # On Dask: the test session's cluster, whose scheduler address is argv[2].
    backend = cf.DaskBackend(sys.argv[2]) if sys.argv[1] == "dask" else sys.argv[1]
    with cf.WorkerPool(workers=4, backend=backend) as pool:
        print("running", flush=True)
        for _ in pool.map(cooperative, itertools.count()):
            pass
else:
    print("running", flush=True)
    asyncio.run(amain())
"""


@each_backend
def test_ctrl_c_stops_a_running_map_promptly(backend: Backend) -> None:
    arguments = [backend.name]
    if backend.name == "dask":
        import distributed

        arguments.append(distributed.get_client().scheduler.address)
    child = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-c", _INTERRUPTED_RUN, *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout = cast(IO[str], child.stdout)  # a pipe: stdout=PIPE
    started = stdout.readline()
    time.sleep(0.3)  # let the workers start their jobs
    # The jobs would run 30 s: a pool that waits for them misses either bound. Closing
    # a Dask pool may wait up to CLOSE_SECONDS for the cluster to confirm the cancels,
    # then closes its client.
    _, stderr = interrupt(child, within=5.0 if backend.name != "dask" else CLOSE_SECONDS + 5.0)
    assert started == "running\n", stderr
    assert child.returncode != 0
    assert "KeyboardInterrupt" in stderr, stderr
    if backend.name == "dask":  # the jobs on the shared cluster saw their cancel and ended
        import distributed

        def tasks(dask_scheduler: Any) -> int:
            return sum(str(key).startswith("chanflow-") for key in dask_scheduler.tasks)

        client = distributed.get_client()
        wait_until(lambda: client.run_on_scheduler(tasks) == 0, PROMPT)
