"""Pipeline: stages over every backend pair, error policies, bounds, stopping, reports.

Jobs that must run on every backend are written once as bodies (tests/pool_helpers.py)
and adapted per backend; each test here runs real threads, event loops and processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chanflow as cf
import chanflow._pipeline
from chanflow import _link
from helpers import interrupt, wait_until
from pool_helpers import BACKENDS, Backend, Source

PROMPT = 3.0  # seconds within which a stopped flow must have ended

BACKEND_PAIRS = [
    pytest.param(first, second, id=f"{first.name}-{second.name}")
    for first, second in itertools.product(BACKENDS, BACKENDS)
]
each_backend = pytest.mark.parametrize("backend", BACKENDS, ids=str)


def square(x: int) -> int:
    return x * x


def increment(x: int) -> int:
    return x + 1


def fails_on_multiples_of(n: int, seed: int) -> Any:
    """A job that fails for the items ``x`` with ``(x + seed) % n == 0``."""

    def job(x: int) -> int:
        if (x + seed) % n == 0:
            raise ValueError(f"bad item {x}")
        return x

    return job


class Boom(Exception):
    pass


def boom_on(value: int) -> Any:
    def job(x: int) -> int:
        if x == value:
            raise Boom(f"boom at {x}")
        return x

    return job


async def async_increment(x: int) -> int:
    await asyncio.sleep(0)
    return x + 1


async def async_square(x: int) -> int:
    await asyncio.sleep(0)
    return x * x


def drain(flow: Any) -> tuple[list[Any], BaseException | None]:
    """Iterate ``flow`` to its end: the items it gave, and the error it ended with."""
    seen: list[Any] = []
    try:
        for value in flow:
            seen.append(value)
    except Exception as error:
        return seen, error
    return seen, None


def settled(count: Any, quiet: float = 0.3, timeout: float = PROMPT) -> int:
    """Poll ``count()`` until it has not changed for ``quiet`` seconds; its value then."""
    deadline = time.monotonic() + timeout
    value, since = count(), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"the count kept changing ({value})"
        time.sleep(0.01)
        if (now := count()) != value:
            value, since = now, time.monotonic()
    return int(value)


def job_for(backend: Backend, fn: Any) -> Any:
    """``fn`` as the kind of function ``backend`` runs."""
    return backend.job(fn)


# -- what flows through --------------------------------------------------------------


@pytest.mark.parametrize(("first", "second"), BACKEND_PAIRS)
def test_two_adjacent_stages_on_any_backends_keep_every_item_in_order(
    first: Backend, second: Backend
) -> None:
    flow = (
        cf.Pipeline(range(300))
        .map(job_for(first, square), backend=first.name, workers=3)
        .map(job_for(second, increment), backend=second.name, workers=2)
    )
    assert list(flow) == [x * x + 1 for x in range(300)]


@pytest.mark.parametrize(("first", "second"), BACKEND_PAIRS)
def test_unordered_adjacent_stages_deliver_each_item_exactly_once(
    first: Backend, second: Backend
) -> None:
    flow = (
        cf.Pipeline(range(500))
        .map(job_for(first, square), backend=first.name, ordered=False)
        .map(job_for(second, increment), backend=second.name, ordered=False)
    )
    out = list(flow)
    assert Counter(out) == Counter(x * x + 1 for x in range(500))


def test_filter_flat_map_and_batch_shape_the_flow() -> None:
    flow = (
        cf.Pipeline(range(10))
        .map(square)
        .filter(lambda x: x % 2 == 0)
        .flat_map(lambda x: [x, -x])
        .batch(4)
    )
    assert list(flow) == [[0, 0, 4, -4], [16, -16, 36, -36], [64, -64]]


@each_backend
def test_filter_and_flat_map_run_on_a_pool_when_given_pool_options(backend: Backend) -> None:
    flow = (
        cf.Pipeline(range(50))
        .filter(job_for(backend, lambda x: x % 3 == 0), backend=backend.name, workers=2)
        .flat_map(job_for(backend, lambda x: [x] * (x % 4)), backend=backend.name)
    )
    assert list(flow) == [x for x in range(50) if x % 3 == 0 for _ in range(x % 4)]


def test_async_functions_run_on_asyncio_by_default() -> None:
    flow = cf.Pipeline(range(100)).map(async_square, workers=10).map(increment)
    assert list(flow) == [x * x + 1 for x in range(100)]


def test_a_coroutine_function_in_a_thread_stage_is_refused() -> None:
    with pytest.raises(TypeError, match="backend='async'"):
        cf.Pipeline(range(3)).filter(async_square)


def test_a_channel_source_is_read_until_closed() -> None:
    source: cf.Channel[int] = cf.Channel(5)

    def produce() -> None:
        for x in range(200):
            source.send(x)
        source.close()

    producer = threading.Thread(target=produce)
    producer.start()
    assert list(cf.Pipeline(source).map(square, workers=4)) == [x * x for x in range(200)]
    producer.join()


def test_an_async_source_feeds_a_sync_consumer() -> None:
    async def numbers() -> AsyncIterator[int]:
        for x in range(100):
            await asyncio.sleep(0)
            yield x

    assert list(cf.Pipeline(numbers()).map(square)) == [x * x for x in range(100)]


def test_async_for_consumes_a_flow_without_blocking_its_loop() -> None:
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    def slow(x: int) -> int:
        time.sleep(0.002)
        return x

    async def main() -> list[int]:
        stop = asyncio.Event()
        task = asyncio.create_task(ticker(stop))
        out = [x async for x in cf.Pipeline(range(100)).map(slow, workers=2)]
        stop.set()
        await task
        return out

    assert asyncio.run(main()) == list(range(100))
    assert ticks >= 10, "the consumer's loop was blocked while the flow ran"


def test_a_slow_source_item_is_passed_on_without_waiting_for_more() -> None:
    released = threading.Event()

    def source() -> Iterator[int]:
        yield 1
        assert released.wait(10), "the first item never came out"
        yield 2

    flow = iter(cf.Pipeline(source()).map(square).map(increment))
    assert next(flow) == 2  # the first item went through both stages alone
    released.set()
    assert list(flow) == [5]


def test_batch_flushes_a_partial_batch_after_its_timeout() -> None:
    gate = threading.Event()

    def source() -> Iterator[int]:
        yield from range(3)
        assert gate.wait(10)
        yield 3

    flow = iter(cf.Pipeline(source()).map(increment).batch(100, timeout=0.2))
    started = time.monotonic()
    assert next(flow) == [1, 2, 3]
    assert time.monotonic() - started < 0.2 + PROMPT
    gate.set()
    assert list(flow) == [[4]]


def test_a_pipeline_can_run_again_over_a_reusable_source() -> None:
    flow = cf.Pipeline(range(5)).map(square)
    assert list(flow) == list(flow) == [0, 1, 4, 9, 16]


# -- error policies ----------------------------------------------------------------------


@each_backend
def test_raise_stops_the_flow_and_names_the_stage(backend: Backend) -> None:
    source = Source(range(10_000))
    flow = (
        cf.Pipeline(source.sync())
        .map(increment)
        .map(job_for(backend, boom_on(50)), backend=backend.name, name="checker")
    )
    seen, error = drain(flow)
    assert isinstance(error, Boom) and str(error) == "boom at 50"
    assert seen == list(range(1, 50)), "the values before the failure come out, in order"
    assert any("checker" in note for note in getattr(error, "__notes__", []))
    wait_until(lambda: source.closed, PROMPT)
    assert source.pulled < 10_000


def test_raise_in_an_inline_stage_names_it_too() -> None:
    flow = cf.Pipeline(range(10)).filter(lambda x: 1 // (x - 5) >= -1, name="divide")
    with pytest.raises(ZeroDivisionError) as caught:
        list(flow)
    assert getattr(caught.value, "__notes__", None) == ["raised in pipeline stage 'divide'"]


@each_backend
def test_skip_drops_failures_and_counts_them(backend: Backend) -> None:
    flow = cf.Pipeline(range(100)).map(
        job_for(backend, fails_on_multiples_of(10, 0)), backend=backend.name, on_error="skip"
    )
    out = list(flow)
    assert out == [x for x in range(100) if x % 10]
    stage = flow.report().stages[0]
    assert (stage.items_in, stage.items_out, stage.failed, stage.skipped) == (100, 90, 10, 10)


@each_backend
def test_dead_letters_name_their_stage(backend: Backend, tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    flow = (
        cf.Pipeline(range(60), dead_letters=path)
        .map(
            job_for(backend, fails_on_multiples_of(7, 0)),
            backend=backend.name,
            name="seven",
            on_error="dead_letter",
            retries=1,
        )
        .map(
            job_for(backend, fails_on_multiples_of(5, 0)),
            backend=backend.name,
            name="five",
            on_error="dead_letter",
        )
    )
    out = list(flow)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    by_stage = Counter(record["stage"] for record in records)
    assert by_stage == {"seven": 9, "five": len([x for x in range(60) if x % 7 and x % 5 == 0])}
    assert all(record["attempts"] == 2 for record in records if record["stage"] == "seven")
    assert out == [x for x in range(60) if x % 7 and x % 5]
    report = flow.report()
    assert report.stage("seven").retried == 9
    assert report.stage("seven").dead_lettered == 9


def test_a_stage_dead_letter_channel_gets_results_with_the_stage() -> None:
    letters: cf.Channel[cf.Result[Any]] = cf.Channel(100)
    flow = cf.Pipeline(range(20)).map(fails_on_multiples_of(4, 1), dead_letters=letters, name="m")
    assert list(flow) == [x for x in range(20) if (x + 1) % 4]
    letters.close()
    failed = list(letters)
    assert sorted(r.job for r in failed) == [3, 7, 11, 15, 19]
    assert {r.stage for r in failed} == {"m"} and not any(r.ok for r in failed)


@pytest.mark.parametrize("inline", [False, True], ids=["map", "filter"])
def test_a_stage_blocked_on_a_full_dead_letter_channel_stops_with_the_flow(inline: bool) -> None:
    # Nobody reads the dead letters: the stage waits on the full channel (backpressure)
    # until the flow is stopped, then leaves at once instead of blocking forever.
    letters: cf.Channel[cf.Result[Any]] = cf.Channel(1)
    context = cf.background().with_cancel()
    flow = cf.Pipeline(range(100), context=context)
    if inline:
        flow = flow.filter(fails_on_multiples_of(1, 0), dead_letters=letters)
    else:
        flow = flow.map(fails_on_multiples_of(1, 0), dead_letters=letters)
    consumer = cf.go(list, flow)
    wait_until(lambda: len(letters) == 1, PROMPT)
    context.cancel()
    started = time.monotonic()
    with pytest.raises(cf.Cancelled):
        consumer.result(timeout=15.0)
    assert time.monotonic() - started < PROMPT
    wait_until(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("chanflow-pipeline")],
        PROMPT,
    )
    assert len(letters) == 1  # the stopped stage sent no more


def test_dead_letter_without_a_sink_is_refused_when_the_stage_is_added() -> None:
    with pytest.raises(ValueError, match="dead_letters"):
        cf.Pipeline(range(3)).map(square, on_error="dead_letter")


def test_an_input_error_comes_out_as_is_after_the_items_before_it() -> None:
    source = Source(range(30), error=KeyError("source broke"))
    flow = cf.Pipeline(source.sync()).map(square, workers=4).map(increment)
    seen, error = drain(flow)
    assert isinstance(error, KeyError) and error.args == ("source broke",)
    assert seen == [x * x + 1 for x in range(30)]


@settings(max_examples=25, deadline=None)
@given(
    seeds=st.tuples(st.integers(0, 9), st.integers(0, 9), st.integers(0, 9)),
    moduli=st.tuples(st.integers(2, 9), st.integers(2, 9), st.integers(2, 9)),
    buffers=st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(1, 40)),
    ordered=st.booleans(),
    policy=st.sampled_from(["skip", "dead_letter"]),
)
def test_every_item_comes_out_exactly_once_through_three_failing_stages(
    seeds: tuple[int, int, int],
    moduli: tuple[int, int, int],
    buffers: tuple[int, int, int],
    ordered: bool,
    policy: str,
) -> None:
    letters: list[cf.Result[Any]] = []
    flow: cf.Pipeline[Any] = cf.Pipeline(range(400), dead_letters=letters.append)
    for index, (seed, modulus, buffer) in enumerate(zip(seeds, moduli, buffers, strict=True)):
        flow = flow.map(
            fails_on_multiples_of(modulus, seed),
            workers=1 + index * 3,
            buffer=buffer,
            ordered=ordered,
            on_error=policy,
            name=f"s{index}",
        )
    out = list(flow)
    report = flow.report()
    survivors = [
        x for x in range(400) if all((x + s) % m for s, m in zip(seeds, moduli, strict=True))
    ]
    assert sorted(out) == survivors
    if ordered:
        assert out == survivors
    dropped = sum(stage.failed for stage in report.stages)
    assert len(out) + dropped == 400
    if policy == "dead_letter":
        assert sorted(r.job for r in letters) == sorted(set(range(400)) - set(survivors))
    else:
        assert letters == []


# -- bounds ------------------------------------------------------------------------------


@pytest.mark.parametrize(("first", "second"), BACKEND_PAIRS)
def test_a_paused_consumer_stops_the_source_within_the_sum_of_the_buffers(
    first: Backend, second: Backend
) -> None:
    source = Source(itertools.count())
    buffers = (8, 5, 3)
    flow = (
        cf.Pipeline(source.sync())
        .map(job_for(first, increment), backend=first.name, buffer=buffers[0], workers=2)
        .map(job_for(second, increment), backend=second.name, buffer=buffers[1], workers=2)
        .filter(lambda x: True, buffer=buffers[2])
    )
    outputs = iter(flow)
    assert next(outputs) == 2
    # Nothing is consumed from here on: the flow fills its bounds and stops the source.
    pulled = settled(lambda: source.pulled)
    assert buffers[0] < pulled <= sum(buffers)  # the item the consumer holds counts too
    assert [next(outputs) for _ in range(100)] == list(range(3, 103))
    del outputs  # closing the flow
    wait_until(lambda: source.closed, PROMPT)


def test_memory_stays_bounded_on_an_endless_source() -> None:
    source = Source(itertools.count())
    flow = cf.Pipeline(source.sync()).map(increment, buffer=64).map(increment, buffer=64)
    last = 0
    for count, value in enumerate(flow, start=1):
        assert source.pulled - count <= 64 + 64 + 1
        last = value
        if count == 20_000:
            break
    assert last == 20_001
    wait_until(lambda: source.closed, PROMPT)


@pytest.mark.parametrize("consumer", ["for", "async for"])
def test_every_hand_off_wakes_the_stage_waiting_for_it(
    monkeypatch: pytest.MonkeyPatch, consumer: str
) -> None:
    # Waits re-check the flow every _RECHECK_SECONDS as a safety net, which would
    # hide a hand-off that forgot to wake its waiter (the flow would only be slow).
    # With the net at a minute, a missed wake stalls the flow past the limit below.
    monkeypatch.setattr(_link, "_RECHECK_SECONDS", 60.0)
    flow = (
        cf.Pipeline(range(3_000))
        .map(increment, buffer=4, workers=2)
        .filter(lambda x: x % 3 != 0, buffer=3)
        .flat_map(lambda x: [x, x], buffer=5)
        .batch(7, buffer=7)
        .map(sum, backend="thread", buffer=2, workers=1)
        .map(async_increment, buffer=3, workers=2)
    )
    started = time.monotonic()
    if consumer == "for":
        outputs = list(flow)
    else:

        async def collect() -> list[int]:
            return [item async for item in flow]

        outputs = asyncio.run(collect())
    doubled = [x for x in range(1, 3_001) if x % 3 != 0 for _ in range(2)]
    assert outputs == [sum(doubled[i : i + 7]) + 1 for i in range(0, len(doubled), 7)]
    assert time.monotonic() - started < 30.0


# -- stopping ----------------------------------------------------------------------------


@each_backend
@pytest.mark.parametrize("how", ["break", "consumer_error"])
def test_leaving_the_loop_stops_every_stage_and_closes_the_source(
    backend: Backend, how: str
) -> None:
    source = Source(itertools.count())
    flow = (
        cf.Pipeline(source.sync())
        .map(job_for(backend, square), backend=backend.name)
        .map(increment)
    )
    started = time.monotonic()
    with pytest.raises(Boom) if how == "consumer_error" else contextlib.nullcontext():
        for value in flow:
            if value > 100:
                if how == "break":
                    break
                raise Boom("consumer gave up")
    assert time.monotonic() - started < PROMPT
    assert source.closed, "the source generator was not closed when the flow stopped"


def test_a_cancelled_context_stops_the_flow_with_its_error() -> None:
    context = cf.background().with_cancel()
    source = Source(itertools.count())

    def cancel_at_1000(value: int) -> int:
        if value == 1000:
            context.cancel()
        return value

    _, error = drain(cf.Pipeline(source.sync(), context=context).map(increment).map(cancel_at_1000))
    assert isinstance(error, cf.Cancelled)
    assert source.closed


def test_a_long_running_cooperative_job_is_cancelled_when_the_flow_stops() -> None:
    started = threading.Event()
    saw_cancel: list[bool] = []

    def waits(x: int) -> int:
        if x == 1:
            started.set()
            saw_cancel.append(cf.current_context().wait(10))
        return x

    began = time.monotonic()
    for value in cf.Pipeline(range(5)).map(waits, workers=2, ordered=False):
        assert started.wait(5)
        if value == 0:
            break
    assert time.monotonic() - began < PROMPT
    assert saw_cancel == [True]


def test_a_thread_left_behind_blocked_in_a_source_is_named_with_its_stack(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(chanflow._pipeline, "_JOIN_SECONDS", 0.2)
    release = threading.Event()

    def stuck_source() -> Iterator[int]:
        yield 1
        release.wait(30)  # user code with no cancellation path
        yield 2

    try:
        with caplog.at_level(logging.WARNING, logger="chanflow"):
            for _ in cf.Pipeline(stuck_source()).map(increment):
                break
    finally:
        release.set()  # lets the thread end before the leftover-thread check
    [record] = [r for r in caplog.records if "left behind" in r.getMessage()]
    assert "stuck_source" in record.getMessage()
    assert "release.wait(30)" in record.getMessage()


def test_async_for_break_stops_the_flow() -> None:
    source = Source(itertools.count())

    async def main() -> None:
        flow = cf.Pipeline(source.sync()).map(async_square).map(increment)
        iterator = flow.__aiter__()
        async for value in iterator:
            if value > 50:
                break
        await iterator.aclose()  # type: ignore[attr-defined]

    asyncio.run(main())
    assert source.closed


def test_ctrl_c_stops_a_running_pipeline_and_leaves_no_process(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import itertools, os, sys, time
        import chanflow as cf

        def slow(x):
            time.sleep(0.01)
            return x

        if __name__ == "__main__":
            flow = cf.Pipeline(itertools.count()).map(slow, backend="process", workers=2).map(slow)
            try:
                for i, _ in enumerate(flow):
                    if i == 5:
                        print("running", flush=True)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
                sys.exit(0)
        """
    )
    path = tmp_path / "interrupt.py"
    path.write_text(script)
    child = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    started = child.stdout.readline()
    stdout, stderr = interrupt(child, within=10.0)
    assert started == "running\n", stderr
    assert child.returncode == 0, stderr
    assert stdout == "interrupted\n"


# -- to_channel, reports, progress -------------------------------------------------------


def test_to_channel_delivers_the_outputs_then_closes() -> None:
    flow = cf.Pipeline(range(50)).map(square)
    channel = flow.to_channel(capacity=5)
    assert list(channel) == [x * x for x in range(50)]
    report = flow.join(timeout=PROMPT)
    assert report.stages[0].items_out == 50


def test_to_channel_can_be_selected_on_and_stops_when_closed_by_its_receiver() -> None:
    source = Source(itertools.count())
    flow = cf.Pipeline(source.sync()).map(increment)
    channel = flow.to_channel()
    selected = cf.select(cf.Recv(channel), timeout=PROMPT)
    assert selected.value == 1
    channel.close()
    flow.join(timeout=PROMPT)
    assert source.closed


def test_to_channel_join_raises_the_flow_error() -> None:
    flow = cf.Pipeline(range(20)).map(boom_on(3))
    channel = flow.to_channel()
    assert list(channel) == [0, 1, 2]
    with pytest.raises(Boom):
        flow.join(timeout=PROMPT)


def test_the_report_counts_each_stage_and_names_the_bottleneck() -> None:
    def slow(x: int) -> int:
        time.sleep(0.003)
        return x

    flow = (
        cf.Pipeline(range(200))
        .map(increment, name="fast", workers=2)
        .map(slow, name="slow", workers=2, retries=0)
        .filter(lambda x: x % 2 == 0, name="evens")
    )
    report = flow.run()
    assert [s.name for s in report.stages] == ["fast", "slow", "evens"]
    assert [(s.items_in, s.items_out) for s in report.stages] == [
        (200, 200),
        (200, 200),
        (200, 100),
    ]
    assert report.bottleneck == "slow"
    assert report.stage("slow").busy > report.stage("fast").busy
    latency = report.stage("slow").mean_latency
    assert latency is not None and 0.003 <= latency < 0.1
    text = str(report)
    for name in ("fast", "slow *", "evens", "busy", "latency", "bottleneck"):
        assert name in text


def test_progress_draws_a_row_per_stage_on_stderr() -> None:
    script = textwrap.dedent(
        """
        import time
        import chanflow as cf

        def slow(x):
            time.sleep(0.002)
            return x

        flow = cf.Pipeline(range(200), progress=True)
        flow = flow.map(slow, name="fetch").map(slow, name="store")
        report = flow.run()
        print(report.stages[1].items_out)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "200\n"
    for text in ("fetch", "store", "queue", "items/s"):
        assert text in done.stderr


# -- bad settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: cf.Pipeline(42), TypeError, "iterable"),  # type: ignore[arg-type]
        (lambda: cf.Pipeline([], on_error="ignore"), ValueError, "on_error"),
        (lambda: cf.Pipeline([]).map(42), TypeError, "callable"),  # type: ignore[call-overload]
        (lambda: cf.Pipeline([]).map(square, workers=0), ValueError, "workers"),
        (lambda: cf.Pipeline([]).map(square, backend="gpu"), ValueError, "backend"),
        (lambda: cf.Pipeline([]).map(square, rate="fast"), ValueError, "rate"),
        (lambda: cf.Pipeline([]).map(square, buffer=0), ValueError, "buffer"),
        (lambda: cf.Pipeline([]).map(square, colour="red"), TypeError, "colour"),
        (lambda: cf.Pipeline([]).map(square, ordered="yes"), TypeError, "ordered"),
        (lambda: cf.Pipeline([]).batch(0), ValueError, "size"),
        (lambda: cf.Pipeline([]).batch(10, buffer=5), ValueError, "at least"),
        (lambda: cf.Pipeline([]).batch(10, timeout=-1), ValueError, "timeout"),
        (lambda: list(cf.Pipeline([])), ValueError, "no stages"),
    ],
)
def test_bad_settings_fail_at_once_with_a_clear_message(
    build: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        build()


def test_stage_names_are_unique_in_the_report() -> None:
    flow = cf.Pipeline(range(3)).map(square).map(square)
    report = flow.run()
    assert [s.name for s in report.stages] == ["map(square)", "map(square)#2"]


def test_many_concurrent_flows_share_nothing() -> None:
    results: dict[int, list[int]] = {}

    def run(seed: int) -> None:
        data = list(range(seed, seed + 300))
        random.Random(seed).shuffle(data)
        results[seed] = list(
            cf.Pipeline(data).map(increment, workers=3).filter(lambda x: x % 2 == 0)
        )

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    for seed in range(8):
        data = list(range(seed, seed + 300))
        random.Random(seed).shuffle(data)
        assert results[seed] == [x + 1 for x in data if (x + 1) % 2 == 0]


def test_a_process_stage_leaves_no_worker_process_behind() -> None:
    import multiprocessing

    before = set(multiprocessing.active_children())
    flow = cf.Pipeline(itertools.count()).map(square, backend="process", workers=2)
    for value in flow:
        if value > 10_000:
            break
    wait_until(lambda: not set(multiprocessing.active_children()) - before, PROMPT)


def test_an_iterator_never_stepped_starts_nothing() -> None:
    source = Source(itertools.count())
    iterator = iter(cf.Pipeline(source.sync()).map(square))
    started = [t for t in threading.enumerate() if t.name.startswith("chanflow-pipeline")]
    assert started == [] and source.pulled == 0
    del iterator
