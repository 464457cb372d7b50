"""PoolStats snapshots and the thread-safe StatsRecorder behind them."""

from __future__ import annotations

import dataclasses
import math
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chanflow as cf
from chanflow._result import Result
from chanflow._stats import LATENCY_WINDOW, PoolStats, StatsRecorder, StatsTee, nearest_rank


def finish(recorder: StatsRecorder, elapsed: float, ok: bool) -> None:
    """One job ends for good, in a chunk of its own (what a worker reports)."""
    error = None if ok else RuntimeError("failed")
    recorder.chunk_started()
    recorder.chunk_ended([Result("job", 0, "value" if ok else None, error, 1, elapsed)])


class AllReturned:
    """What a worker hands over when every job of a chunk returned (``_backend.Done``)."""

    def __init__(self, elapsed: list[float]) -> None:
        self._elapsed = elapsed

    def elapsed(self) -> list[float]:
        return self._elapsed


CONTRACT_FIELDS = [
    "submitted",
    "running",
    "completed",
    "failed",
    "retried",
    "timed_out",
    "in_flight",
    "elapsed",
    "throughput",
    "latency_p50",
    "latency_p90",
    "latency_p99",
]


# Beyond the contract, appended with a default so positional use stays valid.
ADDED_FIELDS = ["cancelled", "busy_seconds"]


def test_pool_stats_has_the_contract_fields_then_the_additions() -> None:
    names = [field.name for field in dataclasses.fields(PoolStats)]
    assert names == CONTRACT_FIELDS + ADDED_FIELDS


def test_cancelled_jobs_leave_the_in_flight_count() -> None:
    recorder = StatsRecorder()
    recorder.submitted(5)
    recorder.chunk_started()
    recorder.chunk_ended([])
    finish(recorder, 0.01, True)
    recorder.cancelled(3)
    stats = recorder.snapshot()
    assert (stats.completed, stats.cancelled, stats.in_flight) == (1, 3, 1)


def test_a_tee_counts_in_itself_and_in_its_pool() -> None:
    pool = StatsRecorder()
    other_call = StatsTee(pool)
    call = StatsTee(pool)
    for recorder in (call, other_call):
        recorder.submitted(3)
        recorder.chunk_started()
        recorder.timed_out()
        recorder.chunk_ended([])
        recorder.retried()
        finish(recorder, 0.5, False)
        recorder.cancelled()
    finish(call, 0.1, True)
    mine, total = call.snapshot(), pool.snapshot()
    assert (mine.submitted, mine.completed, mine.failed, mine.cancelled) == (3, 1, 1, 1)
    assert (mine.retried, mine.timed_out, mine.running, mine.in_flight) == (1, 1, 0, 0)
    assert (total.submitted, total.completed, total.failed, total.cancelled) == (6, 1, 2, 2)
    assert (total.retried, total.timed_out, total.in_flight) == (2, 2, 1)


def test_pool_stats_is_frozen_and_slotted() -> None:
    stats = StatsRecorder().snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.completed = 3  # type: ignore[misc]
    assert not hasattr(stats, "__dict__")


def test_fresh_recorder_is_all_zero() -> None:
    stats = StatsRecorder().snapshot()
    assert (stats.submitted, stats.running, stats.completed, stats.failed) == (0, 0, 0, 0)
    assert (stats.retried, stats.timed_out, stats.in_flight) == (0, 0, 0)
    assert stats.throughput == 0.0
    assert 0.0 <= stats.elapsed < 1.0, "elapsed counts from the recorder's creation"
    assert (stats.latency_p50, stats.latency_p90, stats.latency_p99) == (None, None, None)


def test_counts_follow_the_call_protocol() -> None:
    recorder = StatsRecorder()
    recorder.submitted(5)
    recorder.submitted()
    for _ in range(4):
        recorder.chunk_started()
    recorder.chunk_ended([])
    recorder.timed_out()
    recorder.retried()
    finish(recorder, 0.5, ok=True)
    finish(recorder, 1.5, ok=False)
    finish(recorder, 1.0, ok=True)
    stats = recorder.snapshot()
    assert stats.submitted == 6
    assert stats.running == 3
    assert (stats.completed, stats.failed) == (2, 1)
    assert (stats.retried, stats.timed_out) == (1, 1)
    assert stats.in_flight == 3
    assert stats.latency_p50 == 1.0
    assert stats.latency_p99 == 1.5


def test_elapsed_and_throughput_come_from_the_same_clock_reading() -> None:
    recorder = StatsRecorder()
    recorder.submitted(10)
    for _ in range(10):
        finish(recorder, 0.001, ok=True)
    time.sleep(0.02)
    stats = recorder.snapshot()
    assert stats.elapsed >= 0.02
    assert stats.throughput * stats.elapsed == pytest.approx(10)
    assert recorder.snapshot().elapsed >= stats.elapsed


def test_percentiles_are_nearest_rank() -> None:
    recorder = StatsRecorder()
    for value in reversed(range(1, 101)):
        finish(recorder, float(value), ok=True)
    stats = recorder.snapshot()
    assert (stats.latency_p50, stats.latency_p90, stats.latency_p99) == (50.0, 90.0, 99.0)


def test_one_latency_is_every_percentile() -> None:
    recorder = StatsRecorder()
    finish(recorder, 0.25, ok=False)
    stats = recorder.snapshot()
    assert stats.latency_p50 == stats.latency_p90 == stats.latency_p99 == 0.25


def test_latencies_cover_only_the_recent_window() -> None:
    recorder = StatsRecorder()
    for _ in range(50):
        finish(recorder, 1000.0, ok=True)  # old outliers that must age out
    for _ in range(LATENCY_WINDOW):
        finish(recorder, 1.0, ok=True)
    stats = recorder.snapshot()
    assert stats.completed == LATENCY_WINDOW + 50
    assert stats.latency_p99 == 1.0


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=300),
    percent=st.integers(min_value=1, max_value=100),
)
def test_nearest_rank_matches_its_definition(values: list[float], percent: int) -> None:
    ordered = sorted(values)
    result = nearest_rank(ordered, percent)
    assert result is not None
    # The smallest value with at least `percent`% of the data at or below it.
    at_or_below = sum(1 for value in ordered if value <= result)
    assert at_or_below * 100 >= percent * len(ordered)
    smaller = [value for value in ordered if value < result]
    assert len(smaller) * 100 < percent * len(ordered)


def test_nearest_rank_of_nothing_is_none() -> None:
    assert nearest_rank([], 50) is None


def test_str_is_one_readable_line() -> None:
    recorder = StatsRecorder()
    recorder.submitted(3)
    finish(recorder, 0.0123, ok=True)
    finish(recorder, 2.5, ok=False)
    text = str(recorder.snapshot())
    assert "\n" not in text
    for fragment in ("3 submitted", "1 completed", "1 failed", "1 in flight", "jobs/s"):
        assert fragment in text
    assert "12.3 ms" in text
    assert "2.5 s" in text
    assert "p50 -" in str(StatsRecorder().snapshot())


def test_counts_add_up_exactly_under_many_threads() -> None:
    recorder = StatsRecorder()
    threads_count, jobs_per_thread = 16, 1500
    start = threading.Barrier(threads_count + 1)
    stop_watching = threading.Event()
    violations: list[PoolStats] = []

    def worker(seed: int) -> None:
        start.wait()
        for job in range(jobs_per_thread):
            recorder.submitted()
            recorder.chunk_started()
            if (job + seed) % 5 == 0:
                recorder.timed_out()
                recorder.chunk_ended([])
                recorder.retried()
                recorder.chunk_started()
            recorder.chunk_ended([])
            finish(recorder, 0.001 * (job % 7), ok=(job + seed) % 3 != 0)

    def watcher() -> None:
        start.wait()
        while not stop_watching.is_set():
            stats = recorder.snapshot()
            finished = stats.completed + stats.failed
            if stats.running < 0 or stats.in_flight < 0 or finished > stats.submitted:
                violations.append(stats)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(threads_count)]
    watching = threading.Thread(target=watcher)
    for thread in [*threads, watching]:
        thread.start()
    for thread in threads:
        thread.join()
    stop_watching.set()
    watching.join()

    total = threads_count * jobs_per_thread
    stats = recorder.snapshot()
    keys = [job + seed for seed in range(threads_count) for job in range(jobs_per_thread)]
    expected_failed = sum(1 for key in keys if key % 3 == 0)
    expected_retried = sum(1 for key in keys if key % 5 == 0)
    assert violations == []
    assert stats.submitted == total
    assert stats.running == 0
    assert stats.failed == expected_failed
    assert stats.completed == total - expected_failed
    assert stats.retried == stats.timed_out == expected_retried
    assert stats.in_flight == 0
    assert stats.latency_p99 is not None
    assert math.isclose(stats.latency_p99, 0.006)


def test_a_chunk_that_all_returned_is_counted_in_one_go() -> None:
    recorder = StatsRecorder()
    recorder.submitted(4)
    recorder.chunk_started()
    assert recorder.snapshot().running == 1
    recorder.chunk_ended(AllReturned([0.1, 0.2, 0.3]))
    stats = recorder.snapshot()
    assert (stats.running, stats.completed, stats.failed, stats.in_flight) == (0, 3, 0, 1)
    assert (stats.latency_p50, stats.latency_p99) == (0.2, 0.3)


def test_busy_seconds_sum_the_latencies_of_finished_jobs() -> None:
    def nap(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    with cf.WorkerPool(workers=2, backend="thread") as pool:
        naps = list(pool.map(nap, [0.02] * 6))
        stats = pool.stats()
    assert naps == [0.02] * 6
    assert 6 * 0.02 <= stats.busy_seconds < 6 * 0.02 + 1.0
    assert stats.busy_seconds <= 2 * stats.elapsed, "two workers cannot be busier than that"


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_busy_seconds_stay_true_when_jobs_run_in_chunks(backend: str) -> None:
    # A chunk of jobs timed as a whole shares its time among them: counting the whole
    # chunk's time for each job would make two workers busier than the clock allows.
    with cf.WorkerPool(workers=2, backend=backend) as pool:
        naps = list(pool.map(time.sleep, [0.01] * 40, chunksize=10))
        stats = pool.stats()
    assert naps == [None] * 40
    assert 40 * 0.01 <= stats.busy_seconds <= 2 * stats.elapsed
