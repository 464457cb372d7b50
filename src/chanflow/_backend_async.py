"""The asyncio backend: up to ``workers`` worker tasks on one event loop.

Worker tasks start on demand on the backend's loop and await each job inline (no
task per job, which is what keeps a no-op job around a microsecond or two). A job
with a ``timeout`` runs in a task of its own so that it can be cancelled when its
time is up. When the pool is used from synchronous code, the loop is one the pool
owns, running in a ``chanflow-loop`` thread (``LoopThread``).
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from time import monotonic
from typing import Any, TypeVar

from ._backend import Backend, Call, Collector, Job, JobSlot, enter_slot, leave_slot
from ._channel import Channel
from ._exceptions import Cancelled, ChannelClosed

__all__ = ["AsyncBackend", "LoopThread"]

T = TypeVar("T")
Chunk = tuple[Call, list[Job]]


class AsyncBackend(Backend):
    """Runs coroutine jobs on ``loop`` with at most ``workers`` worker tasks."""

    kind = "async"

    def __init__(self, workers: int, loop: asyncio.AbstractEventLoop) -> None:
        self.workers = workers
        self._loop = loop
        self._thread_id: int | None = None
        self._queue: Channel[Chunk] = Channel(math.inf)
        self._tasks: dict[asyncio.Task[None], Call | None] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def submit(self, call: Call, jobs: list[Job]) -> None:
        try:
            self._queue.send_nowait((call, jobs))
        except ChannelClosed:
            raise RuntimeError("the worker pool is closed") from None
        if len(self._queue) and len(self._tasks) < self.workers:
            if _on_loop(self._loop):
                self._grow()
            else:
                self._loop.call_soon_threadsafe(self._grow)

    def _grow(self) -> None:
        if len(self._queue) and len(self._tasks) < self.workers and not self._queue.closed:
            task = _new_worker_task(self._loop, self._work())
            self._tasks[task] = None
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if task.cancelled():
            return
        error = task.exception()  # retrieved: a worker fails only by a bug of ours
        if error is not None:
            self.died(error)  # its consumers fail with it rather than wait for ever

    async def _work(self) -> None:
        queue = self._queue
        me = asyncio.current_task()
        assert me is not None
        while True:
            try:
                call, jobs = await queue.arecv()
            except ChannelClosed:
                return
            self._tasks[me] = call
            await self._run_chunk(call, jobs)
            self._tasks[me] = None

    async def _run_chunk(self, call: Call, jobs: list[Job]) -> None:
        collector = Collector(call)
        started = monotonic()
        ran = 0
        fn, limiter, timeout = call.fn, call.limiter, call.timeout
        slot = JobSlot()
        token = enter_slot(slot)
        call.chunk_started()
        try:
            for job in jobs:
                if limiter is not None and not call.cancelled:
                    await limiter.aacquire()
                if not call.begin(job):
                    continue
                ran += 1
                slot.job = job
                try:
                    if timeout is None:
                        value = await fn(job.item)
                    else:
                        value = await _attempt_with_timeout(call, job, timeout)
                except asyncio.CancelledError as error:
                    if _worker_cancelled():
                        call.stats.cancelled()  # the pool is closing: this job will not end
                        raise
                    collector.error(job, error)  # the job's own await was cancelled
                except BaseException as error:
                    collector.error(job, error)
                else:
                    collector.value(job, value)
        finally:
            leave_slot(token)
            call.chunk_ended(collector.outcome(), ran, monotonic() - started)

    def _stop(self) -> None:
        self._queue.close()
        for task, call in list(self._tasks.items()):
            if call is not None and call.cancelled:
                task.cancel()  # its job belongs to a call nobody reads any more

    async def aclose(self) -> None:
        """Stop the workers on this loop: queued jobs of live calls still run."""
        self._stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        # A chunk queued just as the pool closed, before a first worker task could
        # start for it, runs here: its jobs were accepted.
        for call, jobs in self._queue:
            await self._run_chunk(call, jobs)

    def close(self) -> None:
        """Stop the workers from another thread, blocking until they are done.

        Called on the backend's own loop (a sync ``with`` inside async code), it can
        only tell the workers to stop; they finish on their own.
        """
        if self._loop.is_closed():
            return
        if _on_loop(self._loop):
            self._stop()
            return
        asyncio.run_coroutine_threadsafe(self.aclose(), self._loop).result()


async def _attempt_with_timeout(call: Call, job: Job, timeout: float) -> Any:
    """Run one attempt as a task of its own, cancelled when ``timeout`` passes.

    Raises the job's error, or ``call.timed_out(job)`` once the cancelled job has
    actually stopped (so nothing of it runs on after its JobTimeout is reported).
    """
    task = asyncio.ensure_future(call.fn(job.item))  # copies the context: sees the job
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        # It may have ended with an error just before: nobody will read it, and asyncio
        # would print it as "never retrieved" (a Ctrl-C would show a traceback).
        task.add_done_callback(_retrieved)
        raise
    if not done:
        job.expire_context()  # before the cancel reaches the job (see Job.expire_context)
        task.cancel()
        await asyncio.wait({task})
        _retrieved(task)
        raise call.timed_out(job)
    if job.past_deadline():
        _retrieved(task)
        raise call.timed_out(job)
    if task.cancelled():
        raise Cancelled(f"job {job.index} was cancelled by something other than the pool")
    return task.result()


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Mark an ended task's error as read: the pool reports the attempt otherwise."""
    if not task.cancelled():
        task.exception()


def _worker_cancelled() -> bool:
    """True if the running task itself is being cancelled (not just an await inside it)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    # Before 3.11 only a worker task (_WorkerTask) can tell; any other: assume so.
    return cancelling is None or cancelling() > 0


if sys.version_info >= (3, 11):

    def _new_worker_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None]:
        return loop.create_task(coro)

else:

    class _WorkerTask(asyncio.Task[None]):
        """A worker task on 3.10, whose Task has no ``cancelling()``: this one counts
        the requests to cancel it, as 3.11's does, so that a job that raises
        CancelledError by itself fails alone instead of ending its worker (which
        would leave the job's call waiting for ever)."""

        _cancel_requests = 0

        def cancel(self, msg: Any = None) -> bool:
            if self.done():
                return False
            self._cancel_requests += 1
            return super().cancel(msg)

        def cancelling(self) -> int:
            return self._cancel_requests

    def _new_worker_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None]:
        return _WorkerTask(coro, loop=loop)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class LoopThread:
    """An event loop running forever in a daemon thread named ``chanflow-loop``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="chanflow-loop", daemon=True
        )
        self._thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        """Stop the loop and join its thread (blocking)."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
