"""The Dask backend: a pool's chunks of jobs run as tasks on a Dask distributed cluster.

Dask's ``Client.map`` takes a whole list (no iterator, no backpressure) and has no
rate limit, per-task timeout or dead letters. Here the pool keeps doing what it
does for every backend (lazy input, at most ``buffer`` jobs taken and not handed
out, ordering, retries, dead letters, statistics: see ``_pool`` and
``_backend.Call``), and Dask's scheduler only places chunks on its workers:

* :class:`DaskBackend` is what the user names (``backend=DaskBackend(client or
  address)``, or ``backend="dask"``): where the cluster is. It connects on first use
  and shares one connection among the pools that use it, closing what it opened (a
  client, a LocalCluster it started) when the last of them closes.
* :class:`DaskRunner` is one pool's side of it (the ``Backend`` seam), with two
  threads: ``chanflow-dask-<n>`` submits chunks as Dask tasks (``_dask_worker.
  run_chunk``; what is ready together goes in one message to the scheduler), as
  many as the pool's buffer holds (fewer with ``workers`` below the cluster's
  threads, one per free thread for a timeout or a rate), taking rate tokens first
  and cancelling futures on request; ``chanflow-dask-results-<n>`` collects finished
  futures with their results (``distributed.as_completed``) and hands outcomes to
  the calls. Neither ever waits for the other.

Failures of the cluster rather than of a job:

* **A worker dies** (killed, out of memory): Dask reschedules its tasks on other
  workers, invisibly (no attempt is lost). A task that was on ``allowed-failures +
  1`` dying workers (Dask's ``distributed.scheduler.allowed-failures``, 3 by
  default) fails with ``KilledWorker``; Dask blames every task a dying worker held,
  so its jobs run again *in quarantine*, their lost attempt not counted: one job per
  task, with nothing else of the pool on the cluster. The job that kills workers
  thus shows itself and ends as :class:`WorkerCrashed` (retried per ``retries``, in
  quarantine again); its neighbours complete.
* **Timeout** (chunks hold one job then): the worker times the attempt from when
  the job starts there (its function loaded). At the deadline it abandons the job
  (its ``current_context()`` is cancelled, it runs on in a thread of its own, its
  result is dropped) and returns at once: the job fails with :class:`JobTimeout`,
  and the Dask thread takes the next task, as the thread backend does. Should the
  worker not answer (or the task not start) within ``BACKSTOP_SECONDS`` more, the
  pool reports the JobTimeout itself and cancels the future.
* **Cancelled call** (a consumer that left, a pool closed): chunks not yet
  submitted are dropped and counted as cancelled, futures in flight are cancelled
  and released (nothing of the call stays on the cluster), and running jobs see
  ``current_context()`` cancelled.

Imports ``distributed`` only once a pool uses the backend: ``import chanflow``
never imports Dask.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import math
import threading
import uuid
from collections import deque
from collections.abc import Callable
from functools import partial
from time import monotonic
from typing import Any, cast

import cloudpickle

from ._backend import Backend, Batch, Call, Collector, Fresh, Job, fail_chunk, pickled_function
from ._backend_process import _collect, _index_of
from ._channel import Channel
from ._exceptions import ChannelClosed, JobTimeout, WorkerCrashed
from ._process_worker import decode_outcomes
from ._timer import TimerHandle, schedule_at

__all__ = ["DaskBackend", "DaskRunner"]

logger = logging.getLogger("chanflow")

_names = itertools.count(1)
# How long closing a pool waits for the cluster to confirm its cancelled futures.
CLOSE_SECONDS = 5.0
# A worker enforces an attempt's timeout from when the job starts there; the parent
# gives up on its own this much later (plus a tenth of the timeout): a job that has
# not even started by then, or a worker that does not answer, times out too.
BACKSTOP_SECONDS = 1.0

_cluster_lock = threading.Lock()  # held while this process starts a LocalCluster
_INSTALL_HINT = "the Dask backend needs the distributed package: pip install 'chanflow[dask]'"


_find_spec = importlib.util.find_spec


def _require_distributed() -> None:
    if _find_spec("distributed") is None:
        raise ImportError(_INSTALL_HINT)


class DaskBackend:
    """Where a :class:`WorkerPool` runs its jobs on a Dask distributed cluster.

    ``cf.WorkerPool(backend=cf.DaskBackend(client_or_address))``; ``backend="dask"``
    is ``DaskBackend()``. ``client_or_address`` is one of:

    * a ``distributed.Client``: used as it is, and never closed here;
    * a scheduler address (``"tcp://host:8786"``) or a cluster object: a client to it
      is opened when a pool first runs a job, and closed when the last pool using
      this backend closes;
    * None: the current client (``distributed.get_client()``) if there is one, else
      a ``LocalCluster`` of worker processes on this machine, started when a pool
      first runs a job (a log line on the ``chanflow`` logger says so) and closed
      with the last pool using it.

    One backend may serve several pools (pipeline stages, repeated runs) at once: they
    share its connection. Hold it open across pools with ``with DaskBackend(...) as
    backend:``. Building it starts nothing and never blocks; it raises ImportError
    (naming the ``chanflow[dask]`` extra) when ``distributed`` is not installed.
    Workers need chanflow installed (their tasks call into it) and whatever the job
    function imports. See docs/dask.md.
    """

    def __init__(self, client_or_address: object = None) -> None:
        _require_distributed()
        target = client_or_address
        if isinstance(target, str):
            if not target.strip():
                raise ValueError("the Dask scheduler address must not be empty")
        elif target is not None:
            from distributed import Client

            if not isinstance(target, Client) and not hasattr(target, "scheduler_address"):
                raise TypeError(
                    "DaskBackend takes a distributed.Client, a scheduler address such as "
                    f"'tcp://host:8786', a cluster or None, not {target!r}"
                )
        self._target = target
        self._lock = threading.Lock()
        self._users = 0
        self._client: Any = None
        self._closers: list[Callable[[], object]] = []  # what we opened, to close last

    def __repr__(self) -> str:
        state = "connected" if self._client is not None else "not connected"
        return f"<DaskBackend {self._target!r} {state}>"

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` in use while a pool (or a ``with``) holds it, else None."""
        return self._client

    def __enter__(self) -> DaskBackend:
        self._acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._release()

    def _acquire(self) -> Any:
        """Connect if no one holds the connection yet (blocking); the client."""
        with self._lock:
            if self._client is None:
                self._client, self._closers = _connect(self._target)
            self._users += 1
            return self._client

    def _release(self) -> None:
        """One holder is done; the last one closes what was opened for them (blocking)."""
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
            closers, self._closers = self._closers, []
            self._client = None  # resolved again next time (the current client may change)
        for close in closers:
            close()


def _connect(target: object) -> tuple[Any, list[Callable[[], object]]]:
    """A client for ``target`` and what to call, in order, to close what was opened."""
    import distributed

    dask: Any = distributed  # partly typed: its calls are Any here
    if isinstance(target, distributed.Client):
        return target, []
    if target is not None:
        client = dask.Client(target, set_as_default=False)
        return client, [client.close]
    try:
        return dask.get_client(), []
    except ValueError:  # no current client
        pass
    with _cluster_lock:  # one at a time: Dask's start-up imports are not thread-safe
        cluster = dask.LocalCluster(processes=True, dashboard_address=":0")
        try:
            client = dask.Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close()
            raise
    threads = sum(client.nthreads().values())
    logger.warning(
        "chanflow: no Dask client found, so the pool started a LocalCluster of %d worker "
        "processes (%d threads) at %s; it closes with the pool",
        len(cluster.workers),
        threads,
        cluster.scheduler_address,
    )
    return client, [client.close, cluster.close]


_Pending = tuple[Call, "list[Job] | Fresh", bool]  # a chunk to submit; True: in quarantine


def _joins(waiting: _Pending, call: Call) -> bool:
    """Whether the waiting chunk can join a chunk of ``call`` being put together."""
    other, jobs, quarantined = waiting
    return other is call and isinstance(jobs, list) and not quarantined


class _Chunk:
    """One chunk submitted as one Dask task; settled exactly once (``settle``)."""

    __slots__ = (
        "_settled",
        "call",
        "first_start",
        "future",
        "jobs",
        "key",
        "quarantined",
        "task",
        "timer",
    )

    def __init__(
        self, call: Call, jobs: list[Job] | Fresh, first_start: float | None, quarantined: bool
    ) -> None:
        self.call = call
        self.jobs = jobs
        self.first_start = first_start  # for a Fresh chunk: when its attempts began
        self.quarantined = quarantined  # a suspect job, alone on the cluster
        self.key = ""  # the Dask task's key
        self.task: tuple[str, bytes, bytes] | None = None  # run_chunk's arguments, to submit
        self.future: Any = None
        self.timer: TimerHandle | None = None
        self._settled = threading.Lock()

    def settle(self) -> bool:
        """True for the one party (result, timeout, cancel) that decides the outcome."""
        return self._settled.acquire(False)

    def job_list(self) -> list[Job]:
        jobs = self.jobs
        if isinstance(jobs, Fresh):
            assert self.first_start is not None
            jobs = self.jobs = jobs.jobs(self.call, self.first_start)
        return jobs


class DaskRunner(Backend):
    """One pool's use of a :class:`DaskBackend` (the ``Backend`` seam; see the module).

    ``workers`` is how many chunks run at once at most: the pool's ``workers=``, by
    default the cluster's thread count when the pool first runs a job. Making one
    connects (blocking: a round trip, more if the backend must connect or start a
    cluster); ``close`` cancels what is in flight and releases the backend.
    """

    kind = "dask"
    # A Dask task costs about 1-3 ms of CPU between client, scheduler and worker, and
    # 5-10 ms of latency: chunks of ~50 ms of work keep the overhead near 2-5%.
    chunk_seconds = 0.05
    max_chunk = 4096
    gil_every = 4095  # the client's event loop thread needs the GIL for every message

    def __init__(self, backend: DaskBackend, workers: int | None) -> None:
        self._backend = backend
        self._client = client = backend._acquire()
        try:
            import distributed

            from ._dask_worker import run_chunk

            dask: Any = distributed
            self._run_chunk = run_chunk
            self._threads: int = max(1, sum(client.nthreads().values()))
            self._completed: Any = dask.as_completed(
                loop=client.loop, with_results=True, raise_errors=False
            )
        except BaseException:
            backend._release()
            raise
        self.workers = workers or self._threads
        name = next(_names)
        self._name = name
        self._prefix = f"chanflow-{name}-{uuid.uuid4().hex[:8]}"
        self._keys = itertools.count()
        self._inbox: Channel[tuple[str, Any, Any]] = Channel(math.inf)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._chunks: dict[str, _Chunk] = {}  # submitted and not yet collected, by task key
        self._fn_cache: dict[int, tuple[str, bytes | BaseException]] = {}
        self._threads_list: list[threading.Thread] = []
        self._closing = False
        self._dispatch_over = False
        self._abandon = False
        self._exclusive = False  # a job in quarantine is on the cluster: submit nothing else
        # Jobs that were on a worker that died too often (KilledWorker), by call: they
        # run in quarantine from then on, retries included.
        self._suspects: dict[int, set[int]] = {}

    def window_cap(self) -> int:
        # As for processes: chunks of hundreds of small jobs are what make them cheap,
        # and each worker thread needs one chunk running and one queued.
        return 2 * self.workers * 512

    def chunk_cap(self, buffer: int) -> int:
        return max(1, buffer // (2 * self.workers))

    def first_fill(self, buffer: int) -> int:
        return min(buffer, self.workers)

    def _cap(self, call: Call) -> float:
        """How many chunks of ``call`` may be on the cluster at once.

        With ``workers`` below the cluster's threads, that many (a true cap); else as
        many as the pool's buffer holds: tasks queued on the workers hide Dask's
        latency of several milliseconds per task. A paced chunk (a timeout or a rate)
        is submitted only when a thread is there to start it at once.
        """
        if call.paced:
            return min(self.workers, self._threads)
        if self.workers < self._threads:
            return self.workers
        return math.inf

    # -- the seam -------------------------------------------------------------------------

    def submit(self, call: Call, jobs: list[Job] | Fresh) -> None:
        try:
            self._inbox.send_nowait(("chunk", call, jobs))
        except ChannelClosed:
            raise RuntimeError("the worker pool is closed") from None
        if not self._threads_list:
            self._start_threads()

    def submit_items(self, call: Call, start: int, items: list[Any]) -> None:
        if call.paced:  # per-job deadlines and rate tokens
            super().submit_items(call, start, items)
        else:
            self.submit(call, Fresh(start, items))

    def _start_threads(self) -> None:
        with self._lock:
            if self._threads_list or self._closing:
                return
            self._threads_list = [
                threading.Thread(
                    target=self._dispatch, name=f"chanflow-dask-{self._name}", daemon=True
                ),
                threading.Thread(
                    target=self._collect, name=f"chanflow-dask-results-{self._name}", daemon=True
                ),
            ]
            for thread in self._threads_list:
                thread.start()

    def close(self) -> None:
        """Cancel and release everything in flight, stop both threads, release the backend.

        Blocks for a cancel round trip to the scheduler, and until the cluster has
        confirmed the cancelled futures (at most ``CLOSE_SECONDS``); releasing the
        backend may close a client or a LocalCluster it started (about a second).
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
            threads = list(self._threads_list)
        self._inbox.close()
        if threads:
            dispatcher, collector = threads
            dispatcher.join()
            collector.join(CLOSE_SECONDS)
            if collector.is_alive():  # the cluster does not answer: stop waiting for it
                with self._lock:
                    self._abandon = True
                    self._changed.notify_all()
                self._completed.clear()
                collector.join()
                self._settle_abandoned()
        self._backend._release()

    # -- the dispatcher thread ------------------------------------------------------------

    def _dispatch(self) -> None:
        pending: deque[_Pending] = deque()
        try:
            while True:
                try:
                    messages = self._inbox.recv_many(1 << 30)
                except ChannelClosed:
                    return
                for kind, subject, detail in messages:
                    if kind == "chunk":
                        self._queue(pending, subject, detail)
                    elif kind == "cancel":
                        self._cancel(_of_call(subject))
                    elif kind == "expired":
                        self._cancel(_the_chunk(subject))
                    # "room": a chunk came back, see below whether another fits
                self._fill(pending)
        finally:
            for call, jobs, _ in pending:
                call.stats.cancelled(len(jobs))
            self._cancel(lambda chunk: True)
            with self._lock:
                self._dispatch_over = True
                self._changed.notify_all()

    def _queue(self, pending: deque[_Pending], call: Call, jobs: list[Job] | Fresh) -> None:
        """Queue a chunk to submit; its suspect jobs (see ``_crashed``) go in quarantine."""
        suspects: set[int] = set()
        if self._suspects:
            with self._lock:
                suspects = set(self._suspects.get(id(call), ()))
        if not suspects or isinstance(jobs, Fresh):  # a fresh chunk was never on a worker
            pending.append((call, jobs, False))
            return
        healthy = [job for job in jobs if job.index not in suspects]
        if healthy:
            pending.append((call, healthy, False))
        pending.extend((call, [job], True) for job in jobs if job.index in suspects)

    def _fill(self, pending: deque[_Pending]) -> None:
        """Submit waiting chunks while there is room on the cluster for them.

        Jobs to run again (retries, mostly: one chunk each) that wait side by side
        travel as one chunk, up to the call's chunk size: a Dask task costs
        milliseconds, a retried job often microseconds. A job in quarantine waits
        until nothing else of the pool is on the cluster, and nothing else is
        submitted while it runs.
        """
        batch: list[_Chunk] = []  # submitted together: one message to the scheduler
        try:
            while pending and not self._closing:
                call, jobs, quarantined = pending[0]
                if call.cancelled:
                    pending.popleft()
                    call.stats.cancelled(len(jobs))
                    continue
                with self._lock:
                    in_flight = len(self._chunks) + len(batch)
                    cap = self._cap(call)
                    if self._exclusive or in_flight >= cap or (quarantined and in_flight):
                        return
                    self._exclusive = quarantined
                pending.popleft()
                if isinstance(jobs, list) and not quarantined and not call.paced:
                    jobs = list(jobs)
                    limit = call.chunk_size()
                    while len(jobs) < limit and pending and _joins(pending[0], call):
                        jobs.extend(cast("list[Job]", pending.popleft()[1]))
                    # In index order, as a chunk's outcome must come (retries join in the
                    # order they fell due): see ProcessBackend._take_waiting.
                    jobs.sort(key=_index_of)
                if call.limiter is not None:  # its tokens first, then off it goes, alone
                    self._submit(batch)
                    batch = []
                chunk = self._prepare(call, jobs, quarantined)
                if chunk is None:
                    with self._lock:
                        self._exclusive = False
                    continue
                batch.append(chunk)
                if call.limiter is not None:
                    self._submit(batch)
                    batch = []
        finally:
            self._submit(batch)

    def _cancel(self, which: Callable[[_Chunk], bool]) -> None:
        """Cancel the futures of the chunks in flight that ``which`` picks (a round trip)."""
        with self._lock:
            futures = [chunk.future for chunk in self._chunks.values() if which(chunk)]
        if futures:
            try:
                self._client.cancel(futures)
            except Exception as error:  # the client is gone: close() stops waiting for them
                logger.debug("chanflow: cancelling Dask futures failed: %r", error)

    def _function(self, call: Call) -> tuple[str, bytes | BaseException]:
        """A key and the pickled function of ``call`` (or why it cannot be pickled)."""
        cached = self._fn_cache.get(id(call))
        if cached is not None:
            return cached
        pickled = pickled_function(call.fn, "a Dask worker")
        cached = self._fn_cache[id(call)] = (f"{self._prefix}-{next(self._keys)}", pickled)
        call.context.after_func(lambda: self._call_ended(call))
        return cached

    def _call_ended(self, call: Call) -> None:
        """The call is over or cancelled: cancel its futures still in flight."""
        try:
            self._inbox.send_nowait(("cancel", call, None))
        except ChannelClosed:
            pass  # closing cancels everything anyway
        self._fn_cache.pop(id(call), None)
        with self._lock:
            self._suspects.pop(id(call), None)

    def _prepare(self, call: Call, jobs: list[Job] | Fresh, quarantined: bool) -> _Chunk | None:
        """Begin the chunk's attempts and make its task; None if nothing is left to run.

        Never waits, but for rate tokens.
        """
        call_key, fn_bytes = self._function(call)
        if isinstance(fn_bytes, BaseException):
            fail_chunk(call, jobs, fn_bytes)
            return None
        first_start: float | None = None
        if isinstance(jobs, Fresh):
            first_start = call.begin_fresh(jobs)
            if first_start is None:
                return None
            items = jobs.items
        else:
            if call.limiter is not None:
                for _ in jobs:
                    if not call.cancelled:
                        call.limiter.acquire(context=call.context)
            jobs = call.begin_all(jobs)
            if not jobs:
                return None
            items = [job.item for job in jobs]
        call.chunk_started()
        chunk = _Chunk(call, jobs, first_start, quarantined)
        try:
            payload = bytes(cloudpickle.dumps((items, call.timeout)))
        except Exception:
            sendable = self._sendable(chunk)
            if sendable is None:
                return None
            payload = sendable
        chunk.key = f"{call_key}-{next(self._keys)}"
        chunk.task = (call_key, fn_bytes, payload)
        return chunk

    def _submit(self, batch: list[_Chunk]) -> None:
        """Submit prepared chunks as Dask tasks, in one message to the scheduler."""
        if not batch:
            return
        try:
            tasks = [chunk.task for chunk in batch if chunk.task is not None]
            keys = [chunk.key for chunk in batch]
            if len(tasks) == 1:
                futures = [self._client.submit(self._run_chunk, *tasks[0], key=keys[0], pure=False)]
            else:
                columns = zip(*tasks, strict=True)
                futures = self._client.map(self._run_chunk, *columns, key=keys, pure=False)
        except Exception as error:  # the client is closed, the cluster gone...
            with self._lock:
                self._exclusive = False
            for chunk in batch:
                self._end(chunk, _failing_with(error))
            return
        with self._lock:
            for chunk, future in zip(batch, futures, strict=True):
                chunk.future = future
                chunk.task = None  # its bytes are on their way
                self._chunks[chunk.key] = chunk
            self._changed.notify_all()
        self._completed.update(futures)
        for chunk in batch:
            timeout = chunk.call.timeout
            if timeout is not None:
                deadline = chunk.job_list()[0].deadline
                assert deadline is not None
                backstop = deadline + BACKSTOP_SECONDS + 0.1 * timeout
                chunk.timer = schedule_at(backstop, partial(self._expire, chunk))

    def _sendable(self, chunk: _Chunk) -> bytes | None:
        """Some item cannot be pickled: fail those jobs, keep the others (None: no job left)."""
        call = chunk.call
        jobs: list[Job] = []
        failing: list[tuple[Job, BaseException]] = []
        for job in chunk.job_list():
            try:
                cloudpickle.dumps(job.item)
                jobs.append(job)
            except Exception as error:
                message = f"job {job.index} ({job.item!r:.200}) cannot be sent to a Dask worker"
                failing.append((job, TypeError(f"{message}: {error}")))
        collector = Collector(call)
        for job, reason in failing:
            collector.error(job, reason)
        call.chunk_ended(collector.outcome(), 0, 0.0)  # those end here, as a chunk
        if not jobs:
            return None
        call.chunk_started()  # the others go on as a chunk of their own
        chunk.jobs = jobs
        return bytes(cloudpickle.dumps(([job.item for job in jobs], call.timeout)))

    def _expire(self, chunk: _Chunk) -> None:
        """The timer thread: the attempt is long past its deadline and the worker did not
        say so (a chunk of one job)."""
        if not chunk.settle():
            return
        call = chunk.call
        self._end(chunk, lambda collector, job: collector.error(job, call.timed_out(job)))
        try:
            self._inbox.send_nowait(("expired", chunk, None))
        except ChannelClosed:
            pass  # closing cancels everything anyway

    # -- the collector thread -------------------------------------------------------------

    def _collect(self) -> None:
        completed = self._completed
        while True:
            with self._lock:
                while not self._chunks:
                    if self._dispatch_over or self._abandon:
                        return
                    self._changed.wait()
                if self._abandon:
                    return
            try:
                batch = completed.next_batch(block=True)
            except StopIteration:  # cleared by close(): it gave up on the cluster
                continue
            for future, result in batch:
                self._finished(future, result)
            # Hold no finished task while waiting for the next: a future kept alive
            # keeps its task, and its result, on the cluster.
            batch = future = result = None

    def _finished(self, future: Any, result: Any) -> None:
        with self._lock:
            chunk = self._chunks.pop(future.key, None)
            if chunk is not None and chunk.quarantined:
                self._exclusive = False
        if chunk is None:
            return
        try:
            self._inbox.send_nowait(("room", None, None))
        except ChannelClosed:
            pass
        if chunk.timer is not None:
            chunk.timer.cancel()
        if not chunk.settle():
            return  # it timed out: already reported
        try:
            self._settle(chunk, future.status, result)
        except Exception as error:  # never lose the chunk's jobs
            self._end(chunk, _failing_with(error))

    def _settle(self, chunk: _Chunk, status: str, result: Any) -> None:
        call = chunk.call
        if status == "finished":
            _, failures, values, seconds = decode_outcomes(result)
            fresh = chunk.jobs
            if isinstance(fresh, Fresh) and not failures:
                assert chunk.first_start is not None
                batch = Batch(fresh, values, monotonic() - chunk.first_start)
                call.chunk_ended(batch, len(fresh), seconds)
                return
            jobs = chunk.job_list()
            if call.timeout is not None and isinstance(failures.get(0, (None,))[0], JobTimeout):
                # The worker gave up at the deadline (a chunk of one job): say it as
                # every backend does.
                self._end(chunk, lambda collector, job: collector.error(job, call.timed_out(job)))
                return
            collector = Collector(call)
            try:
                _collect(jobs, collector, failures, values)
            finally:
                call.chunk_ended(collector.outcome(), len(jobs), seconds)
            return
        if status == "cancelled":
            if call.cancelled or self._closing:
                call.stats.cancelled(len(chunk.jobs))
                call.chunk_ended([], 0, 0.0)
                return
            crash = WorkerCrashed(
                f"the cluster cancelled the Dask task of this job: {_error_of(result)!r}"
            )
            self._end(chunk, _failing_with(crash))
            return
        failure = _error_of(result)
        from distributed import KilledWorker

        if isinstance(failure, KilledWorker):
            self._crashed(chunk, failure)
        else:  # the task itself failed (chanflow missing on the worker, say)
            self._end(chunk, _failing_with(failure))

    def _crashed(self, chunk: _Chunk, error: BaseException) -> None:
        """The chunk's task was on every worker that died, too often (KilledWorker).

        Dask blames every task a dying worker held, so this says little: the job that
        killed them, its neighbours on those workers, or an innocent chunk of many
        jobs. So its jobs run again in quarantine, one per task with nothing else of
        the pool on the cluster, their lost attempt not counted; a job in quarantine
        whose workers die is the culprit: WorkerCrashed (retried per ``retries``, in
        quarantine again).
        """
        jobs = chunk.job_list()
        call = chunk.call
        if chunk.quarantined:
            [job] = jobs
            crash = WorkerCrashed(f"job {job.index} killed the Dask workers it ran on: {error}")
            self._end(chunk, _failing_with(crash))
            return
        call.chunk_ended([], 0, 0.0)
        with self._lock:
            self._suspects.setdefault(id(call), set()).update([job.index for job in jobs])
        for job in jobs:
            job.attempts -= 1  # the lost attempt does not count
        try:
            self._inbox.send_nowait(("chunk", call, jobs))
        except ChannelClosed:
            call.stats.cancelled(len(jobs))

    @staticmethod
    def _end(chunk: _Chunk, record: Callable[[Collector, Job], None]) -> None:
        """End a started chunk with ``record(collector, job)`` for each of its jobs."""
        call = chunk.call
        collector = Collector(call)
        try:
            for job in chunk.job_list():
                record(collector, job)
        finally:
            call.chunk_ended(collector.outcome(), 0, 0.0)

    def _settle_abandoned(self) -> None:
        """After giving up on the cluster at close: count what never came back."""
        with self._lock:
            chunks = list(self._chunks.values())
            self._chunks.clear()
        for chunk in chunks:
            if chunk.timer is not None:
                chunk.timer.cancel()
            if chunk.settle():
                chunk.call.stats.cancelled(len(chunk.jobs))
                chunk.call.chunk_ended([], 0, 0.0)


def _failing_with(error: BaseException) -> Callable[[Collector, Job], None]:
    return lambda collector, job: collector.error(job, error)


def _of_call(call: Call) -> Callable[[_Chunk], bool]:
    return lambda chunk: chunk.call is call


def _the_chunk(expired: _Chunk) -> Callable[[_Chunk], bool]:
    return lambda chunk: chunk is expired


def _error_of(result: Any) -> BaseException:
    """The exception in what ``as_completed(raise_errors=False)`` gave for a failed future."""
    if isinstance(result, BaseException):
        return result
    if isinstance(result, tuple) and len(result) == 3 and isinstance(result[1], BaseException):
        return result[1]
    return RuntimeError(f"the Dask task failed: {result!r}")
