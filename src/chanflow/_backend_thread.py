"""The thread backend: a bounded set of worker threads fed by one unbounded queue.

Workers start on demand (when more chunks wait than workers are parked) up to the
pool's limit, take one chunk at a time, and exit when the pool closes the queue. A
thread cannot be killed, so a job that runs past its ``timeout`` is reported as
JobTimeout by the timer thread, which also starts a replacement worker so the pool
keeps its capacity; the stuck thread drops its late result and exits when its job
finally returns.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from time import monotonic
from typing import Any

from ._backend import (
    Backend,
    Batch,
    Call,
    Collector,
    Fresh,
    FreshSlot,
    Job,
    JobSlot,
    Task,
    enter_slot,
    leave_slot,
)
from ._timer import schedule

__all__ = ["ThreadBackend"]

_names = itertools.count(1)

# How long close() waits for a thread abandoned after a timeout to finish its job.
ABANDONED_JOIN_SECONDS = 1.0
# A fresh chunk of more jobs than this reads the clock once every this many jobs: a
# clock read per job cost 0.05 us, a third of a pipeline stage's cost per no-op item.
SHARE_CHECK_EVERY = 16
# A fresh chunk still running this long (a hundred times the work it is sized for),
# while other workers could take work, shares its remaining jobs (see _run_fresh). Long
# enough that a thread descheduled on a busy machine rarely splits a cheap chunk.
SHARE_AFTER_SECONDS = 0.02

# A Job alone: see submit_one; a Task: see submit_task.
Chunk = tuple[Call, "list[Job] | Fresh | Job"] | Task
_EMPTY: Any = object()  # no chunk taken yet


class ThreadBackend(Backend):
    """Runs jobs on up to ``workers`` daemon threads named ``chanflow-worker-<n>``."""

    kind = "thread"
    max_chunk = 1024

    def __init__(self, workers: int) -> None:
        self.workers = workers
        # A C queue, not a Channel: a worker parks on it and is woken at a fraction of a
        # Channel's cost (no waiter object per park), which is most of a 1-job chunk's
        # hand-off when a thousand threads share the GIL. None is the close sentinel.
        self._queue: queue.SimpleQueue[Chunk | None] = queue.SimpleQueue()
        self._closed = False
        self._parked: list[None] = []  # one entry per worker blocked on the queue
        self._lock = threading.Lock()
        self._workers: set[threading.Thread] = set()
        self._abandoned: set[threading.Thread] = set()
        self._starting = 0  # workers started but not yet running

    def submit(self, call: Call, jobs: list[Job] | Fresh) -> None:
        self._put([(call, jobs)])

    def submit_one(self, call: Call, job: Job) -> None:
        self._put([(call, job)])  # run by _run_alone

    def submit_task(self, task: Task) -> None:
        """Run ``task()`` on a worker (a submitted job with default settings)."""
        with self._lock:  # as _put, for one chunk (a submit-and-wait loop's hot path)
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            self._queue.put(task)
        if self._queue.qsize() > len(self._parked) and len(self._workers) < self.workers:
            self._grow(unless_starting=True)

    def submit_chunked(self, call: Call, start: int, items: list[Any], size: int) -> None:
        if call.paced:
            super().submit_chunked(call, start, items, size)
            return
        self._put(
            [(call, Fresh(start + at, items[at : at + size])) for at in range(0, len(items), size)]
        )

    def _put(self, chunks: list[Chunk]) -> None:
        put = self._queue.put
        with self._lock:  # atomic with close(): no chunk lands behind the sentinel
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            for chunk in chunks:
                put(chunk)
        # More chunks waiting than workers parked to take them, and room for a worker
        # (read without the lock: _grow checks again under it).
        if self._unclaimed() > 0 and len(self._workers) < self.workers:
            self._grow(unless_starting=True)

    def _unclaimed(self) -> int:
        """Chunks queued beyond those the parked workers are about to take (a snapshot)."""
        return self._queue.qsize() - len(self._parked)

    def submit_items(self, call: Call, start: int, items: list[Any]) -> None:
        if call.paced:  # per-job deadlines and rate tokens: one Job each
            super().submit_items(call, start, items)
        else:
            self.submit(call, Fresh(start, items))

    def _grow(self, unless_starting: bool = False) -> None:
        """Start one more worker, if below the limit.

        ``Thread.start`` blocks until the new thread runs, which takes a millisecond or
        more when hundreds of threads want the GIL. So the submitter only starts a
        worker when none is starting; each new worker then starts up to two more
        while work is waiting (``_spread``), and the pool grows in a tree, off the
        consumer's thread.
        """
        with self._lock:
            if len(self._workers) >= self.workers or self._closed:
                return
            if unless_starting and self._starting:
                return
            thread = threading.Thread(
                target=self._work, name=f"chanflow-worker-{next(_names)}", daemon=True
            )
            self._workers.add(thread)
            self._starting += 1
        try:
            thread.start()
        except BaseException:  # the OS refused a thread: fine while others can work
            with self._lock:
                self._workers.discard(thread)
                self._starting -= 1
                alone = not self._workers
            if alone:
                raise

    def _spread(self) -> None:
        with self._lock:
            self._starting -= 1
        for _ in range(2):
            if self._unclaimed() <= 1:  # the one left is for this worker
                return
            self._grow()

    def _work(self) -> None:
        try:
            self._spread()
            self._serve()
        except BaseException as error:  # a bug of ours: fail the consumers, not hang them
            self.died(error)
            raise  # and let threading.excepthook report it
        finally:
            with self._lock:
                self._workers.discard(threading.current_thread())

    def _serve(self) -> None:
        """Run chunks until the pool closes, or until abandoned after a timeout."""
        work = self._queue
        parked = self._parked
        while True:
            # An empty queue is asked first: a raised queue.Empty costs ~1 us, a
            # fifth of a lone submitted job's hand-off.
            chunk = _EMPTY
            if work.qsize():
                try:
                    chunk = work.get_nowait()
                except queue.Empty:  # another worker took it
                    pass
            if chunk is _EMPTY:
                parked.append(None)  # list.append and pop are atomic: no lock needed
                chunk = work.get()
                parked.pop()
            if chunk is None:  # closed: pass the sentinel on to the next worker
                work.put(None)
                break
            if not self._run_any(chunk):
                return  # abandoned after a timeout: a replacement took our place

    def _run_any(self, chunk: Chunk) -> bool:
        """Run a queued chunk; False if this thread was abandoned on a timeout."""
        if isinstance(chunk, Task):
            chunk()
            return True
        call, jobs = chunk
        if isinstance(jobs, Fresh):
            self._run_fresh(call, jobs)
            return True
        if isinstance(jobs, Job):
            return self._run_alone(call, jobs)
        return self._run_chunk(call, jobs)

    def _run_alone(self, call: Call, job: Job) -> bool:
        """A submitted job (``submit_one``): a chunk of one without a Collector.

        About 2 us less than :meth:`_run_chunk` on a ~20 us submit-and-wait. A job
        with a timeout or a rate goes the chunk's way.
        """
        if call.paced:
            return self._run_chunk(call, [job])
        if not call.begin(job):
            return True
        call.chunk_started()
        slot = JobSlot()
        slot.job = job
        token = enter_slot(slot)
        try:
            value = call.fn(job.item)
        except BaseException as error:  # a job's failure, whatever it is, is its Result
            leave_slot(token)
            result = call.failed(job, error)
            call.chunk_ended([] if result is None else [result], 1, 0.0)
            return True
        leave_slot(token)
        if job._context is not None:
            job.release_context()
        call.returned_alone(job, value)
        return True

    def _run_fresh(self, call: Call, fresh: Fresh) -> None:
        """Run the first attempts of a fresh chunk (no timeout, no rate) at a loop's cost.

        No Job, clock read or Result per job while they return: about 0.1 us a job
        instead of 0.8. At the first failure the chunk goes on job by job.

        Chunks are sized from the jobs measured so far. If the jobs turn slow (the
        first thousand were cache hits, say), a chunk of a thousand must not run on one
        thread while the others wait: once it has run ``SHARE_AFTER_SECONDS`` and other
        workers could take work, its remaining jobs are queued again, shared among
        them (``_share``). The clock is read once every ``SHARE_CHECK_EVERY`` jobs,
        and not at all in shorter chunks.
        """
        started = call.begin_fresh(fresh)
        if started is None:
            return
        call.chunk_started()
        fn, items = call.fn, fresh.items
        values: list[Any] = []
        append = values.append
        slot = FreshSlot(call, fresh, started, values)
        token = enter_slot(slot)
        failure: BaseException | None = None
        sharing = False
        long = len(items) > SHARE_CHECK_EVERY
        try:
            for item in items[:SHARE_CHECK_EVERY] if long else items:
                if call.cancelled:
                    break
                append(fn(item))
            if long and not call.cancelled:
                sharing = self._run_rest(call, items, values, started + SHARE_AFTER_SECONDS)
        except BaseException as error:  # a job's failure, whatever it is, is its Result
            failure = error
        finally:
            leave_slot(token)
            slot.release_contexts()
        done = len(values)
        if failure is None:
            if done < len(items):
                if sharing:
                    self._share(call, Fresh(fresh.start + done, items[done:]))
                else:
                    call.stats.cancelled(len(items) - done)
                fresh = Fresh(fresh.start, items[:done])
            seconds = monotonic() - started
            call.chunk_ended(Batch(fresh, values, seconds) if values else [], done, seconds)
            return
        collector = Collector(call)
        collector.values(Fresh(fresh.start, items[:done]).jobs(call, started), values)
        collector.error(slot.job, failure)
        rest = Fresh(fresh.start + done + 1, items[done + 1 :]).jobs(call)
        ran = done + 1 + self._run_jobs(call, rest, collector)
        call.chunk_ended(collector.outcome(), ran, monotonic() - started)

    def _run_rest(
        self, call: Call, items: list[Any], values: list[Any], share_after: float
    ) -> bool:
        """Go on with a long fresh chunk in blocks, reading the clock between them.

        True if the chunk ran past ``share_after`` with workers that could take its
        remaining jobs (``items[len(values):]``): the caller shares them.
        """
        fn, append, end = call.fn, values.append, len(items)
        for begin in range(len(values), end, SHARE_CHECK_EVERY):
            if monotonic() > share_after and self._can_share():
                return True
            for item in items[begin : begin + SHARE_CHECK_EVERY]:
                if call.cancelled:
                    return False
                append(fn(item))
        return False

    def _helpers(self) -> int:
        """Workers that could take work now: parked ones beyond the chunks queued for
        them, and those the pool may still start (a snapshot)."""
        return -self._unclaimed() + self.workers - len(self._workers)

    def _can_share(self) -> bool:
        return self._helpers() > 0 and not self._closed

    def _share(self, call: Call, rest: Fresh) -> None:
        """Queue the jobs of a chunk that ran long, split among the workers that could help.

        If the pool closed meanwhile, nobody else will take them: run them here.
        """
        pieces = max(1, min(self._helpers() + 1, len(rest)))
        size = -(-len(rest) // pieces)
        items = rest.items
        chunks: list[Chunk] = [
            (call, Fresh(rest.start + at, items[at : at + size]))
            for at in range(0, len(items), size)
        ]
        try:
            self._put(chunks)
        except RuntimeError:  # closed: its sentinel is queued, no worker would see these
            self._run_fresh(call, rest)

    def _run_chunk(self, call: Call, jobs: list[Job]) -> bool:
        """Run a chunk; False if this thread was abandoned on a timeout."""
        collector = Collector(call)
        started = monotonic()
        call.chunk_started()
        ran = self._run_jobs(call, jobs, collector)
        if ran < 0:
            return False  # the timer thread ended this chunk for us
        call.chunk_ended(collector.outcome(), ran, monotonic() - started)
        return True

    def _run_jobs(self, call: Call, jobs: list[Job], collector: Collector) -> int:
        """Run ``jobs`` one by one into ``collector``: how many ran, or -1 if abandoned."""
        ran = 0
        fn, limiter, timeout = call.fn, call.limiter, call.timeout
        slot = JobSlot()
        token = enter_slot(slot)
        try:
            for job in jobs:
                if limiter is not None and not call.cancelled:
                    limiter.acquire(context=call.context)
                if not call.begin(job):
                    continue
                ran += 1
                slot.job = job
                if timeout is not None:
                    if not self._attempt_with_timeout(call, job, timeout, collector):
                        return -1
                    continue
                try:
                    value = fn(job.item)
                except BaseException as error:  # a job's failure, whatever it is, is its Result
                    collector.error(job, error)
                else:
                    collector.value(job, value)
        finally:
            leave_slot(token)
        return ran

    def _attempt_with_timeout(
        self, call: Call, job: Job, timeout: float, collector: Collector
    ) -> bool:
        """Run one attempt under a timer; False if the timer won and this thread is abandoned.

        Whoever takes ``settled`` first decides the attempt's outcome. When the timer
        does, it also ends the chunk (with what was collected so far, which this
        thread no longer touches) and starts a replacement worker.
        """
        settled = threading.Lock()
        worker = threading.current_thread()
        started = monotonic()

        def expire() -> None:
            if settled.acquire(False):
                self._abandon(worker)
                collector.error(job, call.timed_out(job))
                call.chunk_ended(collector.outcome(), 1, monotonic() - started)

        handle = schedule(timeout, expire)
        try:
            value = call.fn(job.item)
        except BaseException as error:
            if not settled.acquire(False):
                return False
            handle.cancel()
            collector.error(job, call.timed_out(job) if job.past_deadline() else error)
            return True
        if not settled.acquire(False):
            return False
        handle.cancel()
        if job.past_deadline():
            collector.error(job, call.timed_out(job))
        else:
            collector.value(job, value)
        return True

    def _abandon(self, thread: threading.Thread) -> None:
        with self._lock:
            self._workers.discard(thread)
            self._abandoned.add(thread)
            self._abandoned = {t for t in self._abandoned if t.is_alive()}
        self._grow()  # keep the pool's capacity

    def _run_stranded(self) -> None:
        """Run, on the closing thread, chunks queued just as the pool closed.

        A chunk queued before the sentinel normally finds a worker; but if the pool
        closed between the queueing and the start of a first worker, none exists.
        Its jobs were accepted, so they run (or, their call cancelled, are counted so).
        """
        while True:
            try:
                chunk = self._queue.get_nowait()
            except queue.Empty:
                return
            if chunk is not None:
                self._run_any(chunk)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._queue.put(None)
        while True:
            with self._lock:
                workers = list(self._workers)
            if not workers:
                break
            for thread in workers:
                # Another thread may have registered it and not called start() yet.
                while thread.ident is None and thread in self._workers:
                    time.sleep(0.0005)
                if thread.ident is not None:
                    thread.join()
                with self._lock:
                    self._workers.discard(thread)
        self._run_stranded()
        deadline = monotonic() + ABANDONED_JOIN_SECONDS
        for thread in list(self._abandoned):
            if thread is not threading.current_thread():  # see _run_stranded
                thread.join(max(0.0, deadline - monotonic()))
