"""The thread backend: a bounded set of worker threads fed by one unbounded channel.

Workers start on demand (when a chunk finds no worker parked) up to the pool's
limit, take one chunk at a time, and exit when the pool closes the channel. A
thread cannot be killed, so a job that runs past its ``timeout`` is reported as
JobTimeout by the timer thread, which also starts a replacement worker so the pool
keeps its capacity; the stuck thread drops its late result and exits when its job
finally returns.
"""

from __future__ import annotations

import itertools
import math
import threading
from time import monotonic
from typing import Any

from ._backend import Backend, Call, Job, reset_current_job, set_current_job
from ._channel import Channel
from ._exceptions import ChannelClosed
from ._result import Result
from ._timer import schedule

__all__ = ["ThreadBackend"]

_names = itertools.count(1)

# How long close() waits for a thread abandoned after a timeout to finish its job.
ABANDONED_JOIN_SECONDS = 1.0

Chunk = tuple[Call, list[Job]]


class ThreadBackend(Backend):
    """Runs jobs on up to ``workers`` daemon threads named ``chanflow-worker-<n>``."""

    kind = "thread"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._queue: Channel[Chunk] = Channel(math.inf)
        self._lock = threading.Lock()
        self._workers: set[threading.Thread] = set()
        self._abandoned: set[threading.Thread] = set()

    def submit(self, call: Call, jobs: list[Job]) -> None:
        try:
            self._queue.send_nowait((call, jobs))
        except ChannelClosed:
            raise RuntimeError("the worker pool is closed") from None
        if len(self._queue):  # nobody was parked to take it at once
            self._grow()

    def _grow(self) -> None:
        with self._lock:
            if len(self._workers) >= self.workers or self._queue.closed:
                return
            thread = threading.Thread(
                target=self._work, name=f"chanflow-worker-{next(_names)}", daemon=True
            )
            self._workers.add(thread)
        thread.start()

    def _work(self) -> None:
        me = threading.current_thread()
        queue = self._queue
        while True:
            try:
                call, jobs = queue.recv()
            except ChannelClosed:
                break
            if not self._run_chunk(call, jobs):
                return  # abandoned after a timeout: a replacement took our place
        with self._lock:
            self._workers.discard(me)

    def _run_chunk(self, call: Call, jobs: list[Job]) -> bool:
        """Run a chunk; False if this thread was abandoned on a timeout."""
        results: list[Result[Any]] = []
        started = monotonic()
        ran = 0
        try:
            for job in jobs:
                limiter = call.limiter
                if limiter is not None and not call.cancelled:
                    limiter.acquire(context=call.context)
                if not call.begin(job):
                    continue
                ran += 1
                if call.timeout is not None:
                    if not self._attempt_with_timeout(call, job, call.timeout, results):
                        return False
                    continue
                result = call.outcome(job, *_attempt(call, job))
                if result is not None:
                    results.append(result)
        finally:
            if results:
                call.deliver(results)
        call.measured(ran, monotonic() - started)
        return True

    def _attempt_with_timeout(
        self, call: Call, job: Job, timeout: float, results: list[Result[Any]]
    ) -> bool:
        settled = threading.Lock()  # whoever takes it first decides the attempt's outcome
        worker = threading.current_thread()

        def expire() -> None:
            if settled.acquire(False):
                self._abandon(worker)
                result = call.outcome(job, None, call.timed_out(job))
                if result is not None:
                    call.deliver([result])

        handle = schedule(timeout, expire)
        value, error = _attempt(call, job)
        if not settled.acquire(False):
            return False  # the timeout already reported this attempt
        handle.cancel()
        result = call.outcome(job, value, error)
        if result is not None:
            results.append(result)
        return True

    def _abandon(self, thread: threading.Thread) -> None:
        with self._lock:
            self._workers.discard(thread)
            self._abandoned.add(thread)
            self._abandoned = {t for t in self._abandoned if t.is_alive()}
        self._grow()  # keep the pool's capacity

    def close(self) -> None:
        self._queue.close()
        while True:
            with self._lock:
                workers = list(self._workers)
            if not workers:
                break
            for thread in workers:
                thread.join()
                with self._lock:
                    self._workers.discard(thread)
        deadline = monotonic() + ABANDONED_JOIN_SECONDS
        for thread in list(self._abandoned):
            thread.join(max(0.0, deadline - monotonic()))


def _attempt(call: Call, job: Job) -> tuple[Any, BaseException | None]:
    token = set_current_job(job)
    try:
        return call.fn(job.item), None
    except BaseException as error:  # a job's failure, whatever it is, becomes its Result
        return None, error
    finally:
        reset_current_job(token)
