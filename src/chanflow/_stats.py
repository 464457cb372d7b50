"""Worker pool statistics: counters kept while the pool runs, read as frozen snapshots."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from threading import Lock
from typing import Any, Protocol

from ._result import Result


class Finished(Protocol):
    """Jobs of a chunk that all returned (``_backend.Returned``), as statistics see them."""

    def elapsed(self) -> list[float]: ...


__all__ = ["PoolStats", "StatsRecorder", "StatsTee"]

_monotonic = time.monotonic

# Latency percentiles are computed over this many of the most recently finished jobs,
# so memory stays flat however many jobs a pool runs.
LATENCY_WINDOW = 10_000


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A frozen snapshot of a worker pool's counters, from ``pool.stats()``.

    * ``submitted``: jobs taken from the input (or submitted) so far;
    * ``running``: attempts executing right now;
    * ``completed``: jobs that ended with a value;
    * ``failed``: jobs that ended with an error after all their retries;
    * ``retried``: retry attempts made (a job retried twice counts 2);
    * ``timed_out``: attempts that ran past the pool's timeout;
    * ``in_flight``: ``submitted - completed - failed - cancelled``;
    * ``elapsed``: seconds since the pool started counting;
    * ``throughput``: finished jobs (completed + failed) per second of ``elapsed``;
    * ``latency_p50``/``p90``/``p99``: nearest-rank percentiles, in seconds, of the
      time from a job's first start to its end, over the last 10,000 finished jobs
      (None before any job finished);
    * ``cancelled``: jobs dropped unstarted because their call ended early (a consumer
      that broke out of its loop, a pool left early, a cancelled future);
    * ``busy_seconds``: the latencies of all finished jobs, summed: how long workers
      were busy (``busy_seconds / (workers * elapsed)`` is the pool's busy fraction).

    All counts come from one consistent instant.
    """

    submitted: int
    running: int
    completed: int
    failed: int
    retried: int
    timed_out: int
    in_flight: int
    elapsed: float
    throughput: float
    latency_p50: float | None
    latency_p90: float | None
    latency_p99: float | None
    cancelled: int = 0
    busy_seconds: float = 0.0

    def __str__(self) -> str:
        return (
            f"{self.submitted} submitted, {self.running} running, {self.completed} completed, "
            f"{self.failed} failed, {self.retried} retried, {self.timed_out} timed out, "
            f"{self.in_flight} in flight; {self.throughput:.1f} jobs/s over "
            f"{self.elapsed:.2f} s; latency p50 {_seconds(self.latency_p50)}, "
            f"p90 {_seconds(self.latency_p90)}, p99 {_seconds(self.latency_p99)}"
        )


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1.0:
        return f"{value * 1000:.3g} ms"
    return f"{value:.3g} s"


def nearest_rank(ordered: list[float], percent: int) -> float | None:
    """The nearest-rank ``percent`` percentile of an ascending list (None if empty)."""
    if not ordered:
        return None
    rank = -(-percent * len(ordered) // 100)  # ceil without floats
    return ordered[max(rank, 1) - 1]


class StatsRecorder:
    """Thread-safe counters behind ``PoolStats``; every method is non-blocking.

    One lock, held for a few integer operations per call: each recording method
    costs about 0.15 us. ``snapshot`` sorts the latency window (up to about 1 ms
    with 10,000 latencies), so call it when a snapshot is wanted, not per job.

    Call protocol: ``submitted`` when a job is taken from the input;
    ``chunk_started`` when a worker begins a chunk of attempts and ``chunk_ended``
    with the chunk's jobs that ended for good (a worker runs one attempt at a time,
    so ``running`` counts executing attempts); ``timed_out`` for an attempt that
    timed out; ``retried`` when a further attempt is scheduled; ``cancelled`` for
    jobs dropped unstarted.
    """

    __slots__ = (
        "_busy",
        "_cancelled",
        "_completed",
        "_failed",
        "_latencies",
        "_lock",
        "_retried",
        "_running",
        "_running_alone",
        "_started_at",
        "_submitted",
        "_timed_out",
    )

    def __init__(self) -> None:
        self._lock = Lock()
        self._started_at = _monotonic()
        self._submitted = 0
        self._running = 0
        # One entry per job running alone (``started_alone``): list.append and pop are
        # atomic, so a submitted job's start costs no lock.
        self._running_alone: list[None] = []
        self._completed = 0
        self._failed = 0
        self._retried = 0
        self._timed_out = 0
        self._cancelled = 0
        self._busy = 0.0
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def submitted(self, n: int = 1) -> None:
        """Count ``n`` jobs taken from the input."""
        with self._lock:
            self._submitted += n

    def retried(self) -> None:
        """Count a retry attempt scheduled for a job."""
        with self._lock:
            self._retried += 1

    def timed_out(self) -> None:
        """Count an attempt that ran past its timeout."""
        with self._lock:
            self._timed_out += 1

    def chunk_started(self) -> None:
        """A worker began a chunk of attempts (it runs them one at a time: one running)."""
        with self._lock:
            self._running += 1

    def chunk_ended(self, outcome: list[Result[Any]] | Finished) -> None:
        """A worker finished a chunk; ``outcome`` holds the jobs in it that ended for good.

        Either Results, or (the fast path) an object with ``len()`` and an
        ``elapsed()`` list whose jobs all returned. One lock round-trip for the whole
        chunk, which keeps the counting cost per job far below a microsecond.
        """
        if isinstance(outcome, list):
            failed = sum(1 for result in outcome if result.error is not None)
            latencies = [result.elapsed for result in outcome]
        else:
            failed = 0
            latencies = outcome.elapsed()
        busy = sum(latencies)
        with self._lock:
            self._running -= 1
            self._busy += busy
            self._failed += failed
            self._completed += len(latencies) - failed
            self._latencies.extend(latencies)

    def started_alone(self) -> None:
        """``chunk_started`` of a job run alone (a Task), ended by ``ended_alone``."""
        self._running_alone.append(None)

    def ended_alone(self, seconds: float, failed: bool = False, task: bool = False) -> None:
        """``chunk_ended`` of a chunk of one job that ended after ``seconds`` (~0.2 us);
        ``task``: one begun by ``started_alone``."""
        if task:
            self._running_alone.pop()
        with self._lock:
            if not task:
                self._running -= 1
            self._busy += seconds
            if failed:
                self._failed += 1
            else:
                self._completed += 1
            self._latencies.append(seconds)

    def cancelled(self, n: int = 1) -> None:
        """Count ``n`` jobs dropped without running because their call was cancelled."""
        with self._lock:
            self._cancelled += n

    def snapshot(self) -> PoolStats:
        """A consistent frozen snapshot of the counters. Never blocks beyond the lock."""
        with self._lock:
            elapsed = _monotonic() - self._started_at
            submitted, running = self._submitted, self._running + len(self._running_alone)
            completed, failed = self._completed, self._failed
            retried, timed_out = self._retried, self._timed_out
            cancelled, busy = self._cancelled, self._busy
            latencies = list(self._latencies)
        latencies.sort()
        finished = completed + failed
        return PoolStats(
            submitted=submitted,
            running=running,
            completed=completed,
            failed=failed,
            retried=retried,
            timed_out=timed_out,
            in_flight=submitted - finished - cancelled,
            elapsed=elapsed,
            throughput=finished / elapsed if elapsed > 0 else 0.0,
            latency_p50=nearest_rank(latencies, 50),
            latency_p90=nearest_rank(latencies, 90),
            latency_p99=nearest_rank(latencies, 99),
            cancelled=cancelled,
            busy_seconds=busy,
        )


class StatsTee(StatsRecorder):
    """Records into itself and into ``also``: a call's own counters beside its pool's."""

    __slots__ = ("_also",)

    def __init__(self, also: StatsRecorder) -> None:
        super().__init__()
        self._also = also

    def submitted(self, n: int = 1) -> None:
        super().submitted(n)
        self._also.submitted(n)

    def retried(self) -> None:
        super().retried()
        self._also.retried()

    def timed_out(self) -> None:
        super().timed_out()
        self._also.timed_out()

    def chunk_started(self) -> None:
        super().chunk_started()
        self._also.chunk_started()

    def chunk_ended(self, outcome: list[Result[Any]] | Finished) -> None:
        super().chunk_ended(outcome)
        self._also.chunk_ended(outcome)

    def started_alone(self) -> None:
        super().started_alone()
        self._also.started_alone()

    def ended_alone(self, seconds: float, failed: bool = False, task: bool = False) -> None:
        super().ended_alone(seconds, failed, task)
        self._also.ended_alone(seconds, failed, task)

    def cancelled(self, n: int = 1) -> None:
        super().cancelled(n)
        self._also.cancelled(n)
