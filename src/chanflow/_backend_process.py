"""The process backend: chunks of jobs run in worker processes, one dispatcher thread each.

Each worker slot is a ``chanflow-process-<n>`` thread in this process that owns one
worker process and a pipe to it: it takes a chunk from the shared channel, sends it
(cloudpickled, so lambdas and closures travel), and waits for either the outcomes
or the process's death. Because one thread watches one process, a crash, a hang or
a timeout touches only that slot's chunk:

* **Crash** (segfault, ``os._exit``, SIGKILL, OOM): the slot starts a new process.
  The worker writes the position of the job it is running into a shared integer
  before each job, so the crash is charged to exactly that job (WorkerCrashed,
  retried per ``retries``); the chunk's other jobs go back on the channel, their
  lost attempt not counted. A worker sends the outcomes of a long chunk ahead every
  few milliseconds of work (``FLUSH_SECONDS``; every half millisecond for a call
  that has already lost a worker), so those survive its death and only the work
  since then runs again. (A worker that died between jobs has each job of
  the chunk run alone.)
* **Timeout** (chunks hold one job then): the process is terminated (SIGTERM, then
  SIGKILL after a grace period) and replaced; the job fails with JobTimeout.
* **Cancelled call** (a consumer that left): the running job's
  ``current_context()`` is cancelled in the worker; a chunk that has not ended
  ``CANCEL_GRACE`` seconds later is abandoned by terminating its process (nobody
  waits for its results any more).

Workers start with the ``forkserver`` method by default on Linux: forking the
parent itself (``fork``) copies whatever locks its other threads hold, and the
pool's parent always has threads; ``spawn`` is safe too but starts each worker (and
each replacement after a crash) as a fresh interpreter, tens of milliseconds where
a fork from the server takes a few. Workers exit when the pool closes, and by
themselves when the parent dies (see ``_process_worker``). Workers do not import
the parent's main script (see ``_main_module_hidden``).
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import signal
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from multiprocessing.connection import wait
from multiprocessing.context import BaseContext
from time import monotonic
from typing import Any

import cloudpickle

from ._backend import Backend, Batch, Call, Collector, Fresh, Job, fail_chunk, pickled_function
from ._channel import Channel
from ._exceptions import ChannelClosed, RemoteError, WorkerCrashed
from ._process_worker import (
    FLUSH_SECONDS,
    FLUSH_SECONDS_AFTER_CRASH,
    KNOWN_FUNCTIONS,
    decode_outcomes,
    is_outcomes,
    worker_main,
)

__all__ = ["ProcessBackend", "default_start_method"]

_FORKSERVER_PRELOAD = [
    "chanflow._process_worker",
    "multiprocessing.sharedctypes",
    "multiprocessing.popen_forkserver",
]
_names = itertools.count(1)
_call_keys = itertools.count(1)

# How long a terminated worker gets to exit on SIGTERM before SIGKILL.
TERMINATE_GRACE = 1.0
# How often a slot waiting for a chunk checks whether its call was cancelled.
_POLL_SECONDS = 0.1
# How long a cancelled chunk may take to end by itself (its jobs' contexts are
# cancelled) before its worker is terminated.
CANCEL_GRACE = 0.25

Chunk = tuple[Call, "list[Job] | Fresh"]

# What became of a chunk sent to a worker, when the worker did not reply.
_CRASHED, _TIMED_OUT, _CANCELLED = object(), object(), object()


def default_start_method() -> str:
    """``forkserver`` where it exists (POSIX but macOS), else ``spawn``."""
    if sys.platform.startswith("linux") and "forkserver" in multiprocessing.get_all_start_methods():
        return "forkserver"
    return "spawn"


def _check_start_method(mp_context: object) -> BaseContext:
    if mp_context is None:
        context = multiprocessing.get_context(default_start_method())
    elif isinstance(mp_context, str):
        if mp_context not in multiprocessing.get_all_start_methods():
            methods = ", ".join(map(repr, multiprocessing.get_all_start_methods()))
            raise ValueError(
                f"mp_context must be one of {methods} or a context, not {mp_context!r}"
            )
        context = multiprocessing.get_context(mp_context)
    elif isinstance(mp_context, BaseContext):
        context = mp_context
    else:
        raise TypeError(f"mp_context must be a start method name or a context, not {mp_context!r}")
    if context.get_start_method() == "forkserver":
        # What every worker needs, imported once by the server instead of by each child:
        # the worker loop, and the shared-memory modules its progress counter (a
        # RawValue) is rebuilt with (ctypes alone is a few ms a child).
        context.set_forkserver_preload(_FORKSERVER_PRELOAD)
    return context


# multiprocessing's Popen objects are not thread-safe: asking one whether its process
# is alive reads the exit status off a pipe, and Process.start() asks every child
# (its _cleanup). Two threads doing so at once can both see the pipe readable and one
# reads nothing: the exit code then becomes 255. All our polling and starting goes
# through this lock; waiting for a process to end (a select on its sentinel) does not.
_process_lock = threading.Lock()


def _alive(process: Any) -> bool:
    with _process_lock:
        return bool(process.is_alive())


def _reap(process: Any, timeout: float | None) -> None:
    """Wait up to ``timeout`` for the process to end, then collect its exit code."""
    wait([process.sentinel], timeout)
    with _process_lock:
        process.join(0)


def _death(process: Any) -> str:
    with _process_lock:
        code = process.exitcode
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker process {process.pid} was killed by {name}"
    return f"worker process {process.pid} exited with code {code}"


_main_lock = threading.Lock()
# __main__'s attributes while _main_module_hidden hides them (a fork child restores them).
_main_hidden: dict[str, Any] | None = None


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start a worker without telling it where ``__main__`` came from.

    multiprocessing has every spawned or forkserver child import the parent's main
    script again (as ``__mp_main__``), so that functions defined there can be found
    by name. Workers here never need that: cloudpickle sends such functions by
    value. Hiding ``__main__``'s ``__file__`` and ``__spec__`` while a worker starts
    saves that import (from a few ms to over 100 ms per worker, again for each
    replacement after a crash) and means a script needs no
    ``if __name__ == "__main__":`` guard to use the process backend.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    global _main_hidden
    with _main_lock:
        names: tuple[str, ...] = ("__file__", "__spec__")
        saved = _main_hidden = {name: vars(main)[name] for name in names if name in vars(main)}
        main.__dict__.pop("__file__", None)
        main.__spec__ = None
        try:
            yield
        finally:
            _show_main(main, saved)
            _main_hidden = None


def _show_main(main: Any, saved: dict[str, Any]) -> None:
    main.__dict__.pop("__spec__", None)
    main.__dict__.update(saved)


class _Abandoned(Exception):
    """Nobody wants the chunk a worker was starting for any more (its call was cancelled)."""


class _InitFailed(Exception):
    """The worker initializer raised: every job fails with this, no worker restarts."""


class _Worker:
    """One worker process and the pipe to it, driven by one slot thread."""

    def __init__(self, context: BaseContext, initializer: bytes) -> None:
        self.conn, child_conn = context.Pipe(duplex=True)
        lifeline_reader, self._lifeline = context.Pipe(duplex=False)
        self.progress = context.RawValue("l", -1)
        self.process = context.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(child_conn, lifeline_reader, self.progress, initializer),
            name=f"chanflow-process-{next(_names)}",
            daemon=True,
        )
        with _main_module_hidden(), _process_lock:
            self.process.start()
        child_conn.close()
        lifeline_reader.close()
        self.jobs_run = 0
        self._chunks = 0
        self.known: OrderedDict[int, None] = OrderedDict()  # functions sent, oldest first
        self._loaded: set[int] = set()  # functions the worker has said it loaded
        self._ready = False

    def wait_ready(self, abandon: Callable[[], bool]) -> _Worker:
        """Block until the worker has run its initializer; raise _InitFailed if it failed.

        Separate from starting, so that a spare can start while other work goes on.
        An initializer may hang: while it runs, ``abandon()`` is asked every
        ``_POLL_SECONDS``, and if it says so the worker is terminated (_Abandoned).
        """
        if self._ready:
            return self
        while (reply := self.receive(_POLL_SECONDS)) is ...:
            if abandon():
                self.stop(kill=True)
                raise _Abandoned
        if reply is None:
            self.stop()
            raise _InitFailed(f"the worker initializer could not run: {_death(self.process)}")
        if reply[0] == "init-failed":
            self.stop()
            raise _InitFailed(f"the worker initializer failed:\n{reply[1]}")
        self._ready = True
        return self

    def receive(self, timeout: float | None) -> Any:
        """The next message, None if the process died, or ``...`` on timeout.

        A ``loaded`` acknowledgement is noted and also reported as ``...``.
        """
        ready = wait([self.conn, self.process.sentinel], timeout)
        if not ready:
            return ...
        if self.conn in ready:
            try:
                data = self.conn.recv_bytes()
            except (EOFError, OSError):
                return None
            if is_outcomes(data):
                return decode_outcomes(data)
            message = cloudpickle.loads(data)
            if message[0] == "loaded":
                self._loaded.add(message[1])
                return ...
            return message
        return None

    def load(self, key: int, fn_bytes: bytes, abandon: Callable[[], bool]) -> None:
        """Send the function if needed and wait until the worker has loaded it.

        Returns early if the worker dies (the chunk sent next finds out) or if
        ``abandon()`` says so (asked every ``_POLL_SECONDS``).
        """
        try:
            self.ensure_function(key, fn_bytes)
        except OSError:
            return  # it died already
        while key not in self._loaded:
            if self.receive(_POLL_SECONDS) is None or abandon():
                return

    def next_chunk(self) -> int:
        self._chunks += 1
        return self._chunks

    def cancel(self, chunk: int) -> None:
        """Ask the worker to cancel the running job's Context, if it still runs ``chunk``."""
        try:
            self._lifeline.send_bytes(chunk.to_bytes(8, "little", signed=True))
        except OSError:
            pass  # it died already

    def send(self, message: tuple[Any, ...]) -> None:
        self.conn.send_bytes(cloudpickle.dumps(message))

    def ensure_function(self, key: int, fn_bytes: bytes) -> None:
        if key in self.known:
            return
        if len(self.known) >= KNOWN_FUNCTIONS:
            forgotten, _ = self.known.popitem(last=False)
            self._loaded.discard(forgotten)
        self.known[key] = None
        self.conn.send_bytes(cloudpickle.dumps(("fn", key, fn_bytes)))

    def stop(self, kill: bool = False) -> None:
        """End the process: politely, or at once with ``kill`` (SIGTERM, then SIGKILL)."""
        process = self.process
        if not kill and _alive(process):
            try:
                self.send(("stop",))
            except OSError:
                pass
            _reap(process, TERMINATE_GRACE)
        if _alive(process):
            process.terminate()
            _reap(process, TERMINATE_GRACE)
        if _alive(process):
            process.kill()
            _reap(process, None)
        self.conn.close()
        self._lifeline.close()


class _Slot:
    """What one slot thread owns: its worker and, once a worker has died, a spare.

    Starting a replacement takes several milliseconds (the forkserver forks and
    reports back); when workers crash or time out often, that wait would come
    again with every crash. So after the first death the slot keeps a spare
    process, started by a short-lived ``chanflow-process-spare`` thread while the
    slot goes on with its work.
    """

    __slots__ = ("_starter", "spare", "wants_spare", "worker")

    def __init__(self) -> None:
        self.worker: _Worker | None = None
        self.spare: _Worker | None = None
        self.wants_spare = False
        self._starter: threading.Thread | None = None

    def prepare_spare(self, start: Callable[[], _Worker | None]) -> None:
        """Have a spare starting, unless one is there or on its way. Never blocks."""
        if self.spare is not None or self._starter is not None:
            return

        def run() -> None:
            try:
                self.spare = start()
            except (OSError, EOFError):
                self.spare = None  # the slot's own start will meet and report the problem

        self._starter = threading.Thread(
            target=run, name=f"chanflow-process-spare-{next(_names)}", daemon=True
        )
        self._starter.start()

    def take_spare(self, abandon: Callable[[], bool]) -> _Worker | None:
        """The spare, ready to work (waiting for it if it is still starting), or None."""
        if self._starter is not None:
            self._starter.join()
            self._starter = None
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        try:
            return spare.wait_ready(abandon)
        except _InitFailed:
            return None

    def stop(self) -> None:
        if self._starter is not None:
            self._starter.join()
            self._starter = None
        for worker in (self.worker, self.spare):
            if worker is not None:
                worker.stop()
        self.worker = self.spare = None


class ProcessBackend(Backend):
    """Runs jobs in up to ``workers`` worker processes (see the module docstring)."""

    kind = "process"
    # A chunk's round trip (pickling, two pipe writes, two thread wake-ups) costs
    # some 100-300 us: chunks of ~20 ms of work keep that near 1%.
    chunk_seconds = 0.02
    max_chunk = 4096
    # A retry's hand-off is a chain of wake-ups (the timer thread, a slot thread, the
    # worker process), ~1 ms and a few on a busy machine: it goes that far ahead of
    # its due time, and the worker waits out the rest (idle for at most this long).
    dispatch_lead = 0.004
    # Only the slot threads share the GIL with the consumer, and each needs it
    # briefly per chunk: releasing it often cost ~0.2 us per no-op job in GIL
    # hand-offs (measured), so release it rarely.
    gil_every = 4095

    def __init__(
        self,
        workers: int,
        *,
        mp_context: object = None,
        initializer: Any = None,
        initargs: tuple[Any, ...] = (),
        max_jobs_per_worker: int | None = None,
    ) -> None:
        self.workers = workers
        self._context = _check_start_method(mp_context)
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable, not {initializer!r}")
        if max_jobs_per_worker is not None and (
            isinstance(max_jobs_per_worker, bool)
            or not isinstance(max_jobs_per_worker, int)
            or max_jobs_per_worker < 1
        ):
            raise ValueError(
                f"max_jobs_per_worker must be an int >= 1 or None, not {max_jobs_per_worker!r}"
            )
        self._max_jobs = max_jobs_per_worker
        self._initializer = bytes(cloudpickle.dumps((initializer, tuple(initargs))))
        self._queue: Channel[Chunk] = Channel(math.inf)
        self._lock = threading.Lock()
        self._slots: list[threading.Thread] = []
        self._fn_cache: dict[int, tuple[int, bytes | BaseException]] = {}
        self._crash_prone: set[int] = set()  # ids of calls whose jobs killed a worker
        # By call id: the lists of jobs to run again that wait in the queue (up to one
        # per worker), which the next ones of that call join (see _join_waiting).
        self._waiting: dict[int, list[list[Job]]] = {}
        self._init_error: _InitFailed | None = None

    def window_cap(self) -> int:
        # Chunks of thousands of jobs are what make small jobs cheap here (a chunk's
        # round trip costs 100-300 us), and each worker needs one chunk running and one
        # waiting. Measured, 100,000 no-op jobs on 2 workers: 56 ms with chunks of up
        # to 512, 43 ms with 2048, 42 ms with 4096 (multiprocessing.Pool.imap with
        # chunksize=1000, which takes its whole input at once: 33 ms).
        return 2 * self.workers * 2048

    def chunk_cap(self, buffer: int) -> int:
        # Unlike threads (one GIL), processes run in parallel: the buffer must hold a
        # chunk running and a chunk waiting for every worker.
        cap = max(1, buffer // (2 * self.workers))
        return cap if self._max_jobs is None else min(cap, self._max_jobs)

    def first_fill(self, buffer: int) -> int:
        # Until the first chunk reports how long a job takes, send one job per worker,
        # rather than split the whole buffer into one-job chunks.
        return min(buffer, self.workers)

    def submit(self, call: Call, jobs: list[Job] | Fresh) -> None:
        own = len(jobs)
        if isinstance(jobs, list) and not call.paced:
            joined = self._join_waiting(call, jobs)
            if joined is None:
                return  # on its way with a chunk of the same call that waits in the queue
            jobs = joined
        try:
            self._queue.send_nowait((call, jobs))
        except ChannelClosed:
            if isinstance(jobs, list):
                self._take_waiting(call, jobs)
                if len(jobs) > own:  # jobs that joined this chunk meanwhile end here too
                    call.stats.cancelled(len(jobs) - own)
            raise RuntimeError("the worker pool is closed") from None
        if len(self._slots) < self.workers:
            self._start_slots()

    def _join_waiting(self, call: Call, jobs: list[Job]) -> list[Job] | None:
        """Jobs to run again (retries, one per submit): join a chunk of the same call.

        A retry comes alone, and retries that fell due together would each cost a round
        trip to a worker, one after the other: the last waited for all the others (some
        8 ms for 18 retries on 2 workers). So jobs submitted as a list join a list of
        the same call that still waits in the queue, up to the call's chunk size: None
        then. Else the list to queue, registered for later jobs to join until a slot
        takes it (:meth:`_take_waiting`).

        Up to one list waits per worker, and a job joins the shortest: retries that fall
        due together (a timer thread that woke late fires them at once) are shared among
        the workers. In one list, the first worker to take it ran them all, one after
        the other, while the next one had nothing to run (18 retries, each failing again,
        falling due at one instant on 2 workers: the last started 4.9 ms after, now 4.2,
        medians of 50 at load 2, where a failed attempt costs a worker ~0.2 ms).
        """
        limit = call.chunk_size()
        if self._max_jobs is not None:
            limit = min(limit, self._max_jobs)
        with self._lock:
            waiting = self._waiting.setdefault(id(call), [])
            if len(waiting) >= self.workers:
                shortest = min(waiting, key=len)
                if len(shortest) + len(jobs) <= limit:
                    shortest.extend(jobs)
                    return None
                # Full: it waits on, but takes no more jobs.
                waiting = self._waiting[id(call)] = _without(waiting, shortest)
            queued = list(jobs)
            waiting.append(queued)
        return queued

    def _take_waiting(self, call: Call, jobs: list[Job]) -> None:
        """A chunk leaves the queue: no job joins it from now on, and its jobs go in order.

        Jobs join in the order they fell due, but a chunk's jobs must run in index order:
        its outcome is read as a run of consecutive indices when its first and last
        ones are that far apart (see ``Done.consecutive``), and an ordered consumer
        would hand out [4, 6, 5, 7] as is, or skip 5 for ever in [4, 6, 9, 7].
        """
        with self._lock:
            waiting = self._waiting.get(id(call))
            if waiting is not None:
                kept = _without(waiting, jobs)
                if kept:
                    self._waiting[id(call)] = kept
                else:
                    del self._waiting[id(call)]
        if len(jobs) > 1:
            jobs.sort(key=_index_of)

    def submit_items(self, call: Call, start: int, items: list[Any]) -> None:
        # Paced chunks (a timeout or a rate) need per-job deadlines and tokens.
        if call.paced:
            super().submit_items(call, start, items)
        else:
            self.submit(call, Fresh(start, items))

    def _start_slots(self) -> None:
        with self._lock:
            while len(self._slots) < self.workers and not self._queue.closed:
                slot = threading.Thread(
                    target=self._serve, name=f"chanflow-process-slot-{next(_names)}", daemon=True
                )
                self._slots.append(slot)
                slot.start()

    # -- a slot -------------------------------------------------------------------------

    def _serve(self) -> None:
        slot = _Slot()
        try:
            # Every slot starts its worker at once, whether or not a chunk comes for it
            # yet: a later chunk (a retry, the next call) finds a worker ready.
            slot.prepare_spare(lambda: self._spare(None, b""))
            for call, jobs in self._queue:
                if isinstance(jobs, list):
                    self._take_waiting(call, jobs)
                self._run_chunk(slot, call, jobs)
        except BaseException as error:  # a bug of ours: fail the consumers, not hang them
            self.died(error)
            raise  # and let threading.excepthook report it
        finally:
            slot.stop()

    def _function(self, call: Call) -> tuple[int, bytes | BaseException]:
        """A key and the pickled function of ``call`` (or why it cannot be pickled)."""
        with self._lock:
            cached = self._fn_cache.get(id(call))
        if cached is not None:
            return cached
        pickled = pickled_function(call.fn, "a worker process")
        with self._lock:
            cached = self._fn_cache.setdefault(id(call), (next(_call_keys), pickled))
        call.context.after_func(lambda: self._forget(id(call)))
        return cached

    def _forget(self, call_id: int) -> None:
        with self._lock:
            self._fn_cache.pop(call_id, None)
            self._crash_prone.discard(call_id)

    def _reporting(self, call: Call) -> tuple[float, bool]:
        """How a worker sends ``call``'s outcomes ahead: how often, and at once on a failure.

        Every ``FLUSH_SECONDS`` of work (more often for a call whose jobs have killed a
        worker). And, for a call that retries, right after each failed job: a retry
        costs its backoff and nothing else, not also the wait for the end of its chunk
        (up to a flush interval); the message (some 20-50 us) is small next to a retry.
        """
        flush = FLUSH_SECONDS_AFTER_CRASH if id(call) in self._crash_prone else FLUSH_SECONDS
        return flush, call.policy.retries > 0

    def _run_chunk(self, slot: _Slot, call: Call, chunk: list[Job] | Fresh) -> None:
        key, pickled = self._function(call)
        if isinstance(pickled, BaseException):
            fail_chunk(call, chunk, pickled)
            return
        abandon = lambda: call.cancelled  # noqa: E731
        try:
            worker = self._worker_for(slot, len(chunk), abandon)
        except (_InitFailed, WorkerCrashed) as error:
            fail_chunk(call, chunk, error)
            return
        except _Abandoned:
            call.stats.cancelled(len(chunk))
            return
        if isinstance(chunk, Fresh):
            self._run_fresh(slot, worker, call, key, pickled, chunk)
            return
        if call.paced:
            # Paced chunks (one job each) start when sent: a rate token or a deadline
            # must not be spent while the worker imports what the function needs.
            worker.load(key, pickled, abandon)
        if call.limiter is not None:
            for _ in chunk:
                if not call.cancelled:
                    call.limiter.acquire(context=call.context)
        started = call.begin_all(chunk)
        if started:
            call.chunk_started()
            self._run_jobs(slot, worker, call, key, pickled, started)

    def _run_fresh(
        self, slot: _Slot, worker: _Worker, call: Call, key: int, fn_bytes: bytes, fresh: Fresh
    ) -> None:
        """The fast path: a chunk's first attempt, with no Job made unless something fails."""
        first_start = call.begin_fresh(fresh)
        if first_start is None:
            return
        call.chunk_started()
        chunk = worker.next_chunk()
        try:
            report = self._reporting(call)
            message = bytes(
                cloudpickle.dumps(("run", key, fresh.items, chunk, None, *report, None))
            )
        except Exception:  # some item cannot be pickled: find it, job by job
            message = None
        # The chunk's Jobs and its Collector, made once a failure is settled early.
        made: list[tuple[list[Job], Collector]] = []

        def settling() -> tuple[list[Job], Collector]:
            if not made:
                made.append((fresh.jobs(call, first_start), Collector(call)))
            return made[0]

        if message is not None:
            parts = _Parts(settling)
            reply = self._exchange(slot, worker, call, key, fn_bytes, message, chunk, None, parts)
            if type(reply) is tuple and not reply[1] and not made:  # every job returned
                worker.jobs_run += len(fresh)
                batch = Batch(fresh, reply[2], monotonic() - first_start)
                call.chunk_ended(batch, len(fresh), reply[3])
                return
        else:
            reply = None
        if reply is None:
            self._run_jobs(slot, worker, call, key, fn_bytes, fresh.jobs(call, first_start))
        else:
            jobs, collector = settling()
            self._end_chunk(
                slot,
                call,
                jobs,
                lambda c: self._settle(worker, call, jobs, c, reply, parts),
                collector,
            )

    def _run_jobs(
        self,
        slot: _Slot,
        worker: _Worker,
        call: Call,
        key: int,
        fn_bytes: bytes,
        jobs: list[Job],
    ) -> None:
        """Run begun ``jobs`` (their chunk counted as started) and end their chunk."""
        self._end_chunk(
            slot,
            call,
            jobs,
            lambda collector: self._run_jobs_in(slot, worker, call, key, fn_bytes, jobs, collector),
        )

    @staticmethod
    def _end_chunk(
        slot: _Slot,
        call: Call,
        jobs: list[Job],
        run: Callable[[Collector], tuple[_Worker | None, float]],
        collector: Collector | None = None,
    ) -> None:
        """``run`` gathers the jobs' outcomes and says which worker to keep; end the chunk.

        ``collector`` is the chunk's, if some outcomes went into one already.
        """
        if collector is None:
            collector = Collector(call)
        seconds = 0.0
        try:
            slot.worker, seconds = run(collector)
            if slot.worker is None:
                slot.wants_spare = True  # workers die here: keep one ready from now on
        finally:
            # Only a chunk that ran to the end measures anything (a crash or a timeout
            # says nothing about how long jobs take).
            call.chunk_ended(collector.outcome(), len(jobs) if seconds > 0 else 0, seconds)

    def _worker_for(self, slot: _Slot, jobs: int, abandon: Callable[[], bool]) -> _Worker:
        """The slot's worker for a chunk of ``jobs``: recycled, a spare, or a new one."""
        worker = slot.worker
        if worker is not None and self._over_budget(worker, jobs):
            worker.stop()  # recycle: this chunk would take it past its budget
            worker = slot.worker = None
        worker = worker or slot.take_spare(abandon) or self._new_worker(abandon)
        slot.worker = worker
        return worker

    def _over_budget(self, worker: _Worker, jobs: int) -> bool:
        return self._max_jobs is not None and worker.jobs_run + jobs > self._max_jobs

    def _spare(self, key: int | None, fn_bytes: bytes) -> _Worker | None:
        """A worker starting up (not waited for), unless the initializer is known to fail.

        It gets the current call's function (``key``), if any, at once, so that it
        imports what the function needs while it waits, not when its first chunk comes.
        """
        if self._init_error is not None:
            return None
        spare = _Worker(self._context, self._initializer)
        if key is not None:
            try:
                spare.ensure_function(key, fn_bytes)
            except OSError:
                pass  # it died already: wait_ready() will say so
        return spare

    def _new_worker(self, abandon: Callable[[], bool]) -> _Worker:
        if self._init_error is not None:
            raise self._init_error
        try:
            worker = _Worker(self._context, self._initializer)
        except (OSError, EOFError) as error:
            # No process could be started (fork's EAGAIN at a process limit, a forkserver
            # gone at Ctrl-C): the chunk fails, and the next chunk tries again.
            raise WorkerCrashed(f"could not start a worker process: {error!r}") from None
        try:
            return worker.wait_ready(abandon)
        except _InitFailed as error:
            self._init_error = error
            raise

    def _run_jobs_in(
        self,
        slot: _Slot,
        worker: _Worker,
        call: Call,
        key: int,
        fn_bytes: bytes,
        jobs: list[Job],
        collector: Collector,
    ) -> tuple[_Worker | None, float]:
        """Send begun jobs and collect their outcomes: the worker to keep (or None), the time."""
        chunk = worker.next_chunk()
        report = self._reporting(call)
        sendable, message = self._encode(key, jobs, collector, chunk, call.timeout, report)
        if not sendable:
            return worker, 0.0
        parts = _Parts(lambda: (sendable, collector))
        reply = self._exchange(
            slot, worker, call, key, fn_bytes, message, chunk, call.timeout, parts
        )
        return self._settle(worker, call, sendable, collector, reply, parts)

    def _exchange(
        self,
        slot: _Slot,
        worker: _Worker,
        call: Call,
        key: int,
        fn_bytes: bytes,
        message: bytes,
        chunk: int,
        timeout: float | None,
        parts: _Parts,
    ) -> Any:
        """Send one chunk's ``run`` message and wait for what became of it.

        The worker's ``done`` reply (with what it sent ahead: see ``_Parts``); or
        ``_CRASHED`` (the worker died), ``_TIMED_OUT`` (it ran past ``timeout`` and was
        stopped) or ``_CANCELLED`` (the call was cancelled and the chunk did not end
        within CANCEL_GRACE: the worker was stopped). Outcomes sent ahead stay in
        ``parts`` in those cases.
        """
        worker.progress.value = -1
        try:
            worker.ensure_function(key, fn_bytes)
            worker.conn.send_bytes(message)
        except OSError:
            pass  # the process died already: receive() reports it
        if slot.wants_spare:
            slot.prepare_spare(lambda: self._spare(key, fn_bytes))
        deadline = None if timeout is None else monotonic() + timeout
        give_up_at: float | None = None  # set once the call is cancelled
        while True:
            wait_for = _POLL_SECONDS
            if deadline is not None:
                wait_for = min(wait_for, max(0.0, deadline - monotonic()))
            reply = worker.receive(wait_for)
            if reply is None:
                return _CRASHED
            if reply is not ...:
                if reply[0] == "part":
                    parts.add_ahead(reply[1], reply[2])
                    continue
                return parts.whole(reply)
            if call.cancelled and give_up_at is None:
                worker.cancel(chunk)  # cooperative jobs see current_context() cancelled
                give_up_at = monotonic() + CANCEL_GRACE
            if give_up_at is not None and monotonic() >= give_up_at:
                worker.stop(kill=True)
                return _CANCELLED
            if deadline is not None and monotonic() >= deadline:
                worker.stop(kill=True)
                return _TIMED_OUT

    def _settle(
        self,
        worker: _Worker,
        call: Call,
        jobs: list[Job],
        collector: Collector,
        reply: Any,
        parts: _Parts,
    ) -> tuple[_Worker | None, float]:
        """Gather what a chunk's reply says about ``jobs``: the worker to keep, the time."""
        settled = parts.settled  # the first jobs, whose outcomes went in early
        if settled:
            worker.jobs_run += settled
            jobs = jobs[settled:]
        done = len(parts.values)
        if done and type(reply) is not tuple:  # it ended badly after sending some ahead
            _collect(jobs[:done], collector, parts.failures, parts.values)
            worker.jobs_run += done
            jobs = jobs[done:]
        if reply is _CANCELLED:
            call.stats.cancelled(len(jobs))
            return None, 0.0
        if reply is _TIMED_OUT:
            for job in jobs:
                collector.error(job, call.timed_out(job))
            return None, 0.0
        if reply is _CRASHED:
            self._crashed(worker, call, jobs, collector, settled + done)
            return None, 0.0
        _, failures, values, seconds = reply
        worker.jobs_run += len(jobs)
        _collect(jobs, collector, failures, values)
        return worker, seconds

    @staticmethod
    def _encode(
        key: int,
        jobs: list[Job],
        collector: Collector,
        chunk: int,
        timeout: float | None,
        report: tuple[float, bool],
    ) -> tuple[list[Job], bytes]:
        """The jobs whose input can be pickled and their message; the others fail clearly."""

        def run_message(jobs: list[Job]) -> bytes:
            items = [job.item for job in jobs]
            message = ("run", key, items, chunk, timeout, *report, _start_times(jobs))
            return bytes(cloudpickle.dumps(message))

        try:
            return jobs, run_message(jobs)
        except Exception:
            pass
        sendable = []
        for job in jobs:
            try:
                cloudpickle.dumps(job.item)
                sendable.append(job)
            except Exception as error:
                problem = f"job {job.index} ({job.item!r:.200}) cannot be sent to a worker process"
                collector.error(job, TypeError(f"{problem}: {error}"))
        return sendable, run_message(sendable)

    def _crashed(
        self, worker: _Worker, call: Call, jobs: list[Job], collector: Collector, done: int
    ) -> None:
        """The worker died running ``jobs``, the chunk's jobs after the ``done`` first ones."""
        with self._lock:
            if id(call) in self._fn_cache:  # not once the call is over (see _forget)
                self._crash_prone.add(id(call))
        _reap(worker.process, TERMINATE_GRACE)
        death = _death(worker.process)
        position = worker.progress.value - done
        worker.stop(kill=True)
        if len(jobs) == 1 or 0 <= position < len(jobs):
            culprit = jobs[0] if len(jobs) == 1 else jobs[position]
            error = WorkerCrashed(f"{death} while running job {culprit.index}")
            collector.error(culprit, error)
            others = [job for job in jobs if job is not culprit]
            self._run_again(call, [others] if others else [])
        else:  # it died between jobs: run each alone, so a culprit shows itself
            self._run_again(call, [[job] for job in jobs])

    def _run_again(self, call: Call, chunks: list[list[Job]]) -> None:
        """Queue jobs lost with a crashed worker again; the lost attempt does not count."""
        for chunk in chunks:
            for job in chunk:
                job.attempts -= 1
            try:
                self._queue.send_nowait((call, chunk))
            except ChannelClosed:
                call.stats.cancelled(len(chunk))

    # -- closing ------------------------------------------------------------------------

    def close(self) -> None:
        self._queue.close()
        with self._lock:
            slots = list(self._slots)
        for slot in slots:
            slot.join()
        # A chunk queued just as the pool closed, before a first slot could start for
        # it, has nobody to run it now: its jobs fail, once, saying so.
        for call, jobs in self._queue:
            if isinstance(jobs, list):
                self._take_waiting(call, jobs)
            fail_chunk(call, jobs, RuntimeError("the worker pool closed before the job started"))


class _Parts:
    """Outcomes a worker sent ahead for the chunk it runs (see ``FLUSH_SECONDS``).

    Kept until the chunk ends: merged into its ``done`` reply, or, if the worker dies,
    settled as they are, so that a crash loses only the work done since the last part.
    A part with a failure in it (a worker sends one right after a failed job when the
    call retries) is settled at once instead, with every outcome before it, so that the
    retry is scheduled now, not when the chunk ends: ``settling()`` gives the chunk's
    jobs and its collector, and ``settled`` counts the first jobs so settled; what is
    kept is about the jobs after them.
    """

    __slots__ = ("failures", "settled", "settling", "values")

    def __init__(self, settling: Callable[[], tuple[list[Job], Collector]]) -> None:
        self.failures: dict[int, Any] = {}
        self.values: list[Any] = []
        self.settled = 0
        self.settling = settling

    def add(self, failures: dict[int, Any], values: list[Any]) -> None:
        offset = len(self.values)
        self.failures.update((offset + position, f) for position, f in failures.items())
        self.values.extend(values)

    def add_ahead(self, failures: dict[int, Any], values: list[Any]) -> None:
        """A part the worker sent ahead: kept, or settled at once if a job failed."""
        self.add(failures, values)
        if failures:
            jobs, collector = self.settling()
            start = self.settled
            _collect(jobs[start : start + len(self.values)], collector, self.failures, self.values)
            self.settled += len(self.values)
            self.failures, self.values = {}, []

    def whole(self, reply: tuple[Any, ...]) -> tuple[Any, ...]:
        """The ``done`` reply for the chunk's jobs not settled yet."""
        if not self.values:
            return reply
        _, failures, values, seconds = reply
        self.add(failures, values)
        return ("done", self.failures, self.values, seconds)


def _index_of(job: Job) -> int:
    return job.index


def _without(waiting: list[list[Job]], jobs: list[Job]) -> list[list[Job]]:
    """The waiting lists but ``jobs`` (by identity: lists compare by their items)."""
    return [queued for queued in waiting if queued is not jobs]


def _start_times(jobs: list[Job]) -> list[float] | None:
    """When each job may start (``Job.not_before``), or None if all may start now."""
    starts = [job.not_before for job in jobs]
    return starts if starts and max(starts) > monotonic() else None


def _collect(
    jobs: list[Job], collector: Collector, failures: dict[int, Any], values: list[Any]
) -> None:
    if not failures:
        collector.values(jobs, values)
        return
    for position, (job, value) in enumerate(zip(jobs, values, strict=True)):
        failure = failures.get(position)
        if failure is None:
            collector.value(job, value)
        else:
            collector.error(job, *_error_of(failure))


def _error_of(failure: tuple[Any, str, str, str]) -> tuple[BaseException, str]:
    error, type_name, message, traceback = failure
    if isinstance(error, BaseException):
        return error, traceback
    return RemoteError(type_name, message), traceback


def _forget_the_parents_forkserver() -> None:
    """In a fork child: start workers from a forkserver of its own, not the parent's.

    (``os.fork`` by the user; multiprocessing's own children reset this themselves.)

    multiprocessing keeps the forkserver's address and pid in the module; a fork child
    inherits them, asks the parent's forkserver for workers, and cannot wait for them
    (they are not its children: ChildProcessError). Clearing them makes the child's
    first worker start a new forkserver, as its first ever would.
    """
    # Nor are the parent's worker processes this child's: multiprocessing's exit
    # handler would try to join them, and fail.
    children = getattr(multiprocessing.process, "_children", None)
    if isinstance(children, set):
        children.clear()
    try:
        from multiprocessing import forkserver
    except ImportError:  # no forkserver on this platform
        return
    server = getattr(forkserver, "_forkserver", None)
    if server is None:
        return
    alive = getattr(server, "_forkserver_alive_fd", None)
    if alive is not None:
        with suppress(OSError):
            os.close(alive)  # the parent's server must not live on for this child
    for name in ("_forkserver_address", "_forkserver_alive_fd", "_forkserver_pid"):
        if hasattr(server, name):
            setattr(server, name, None)
    # A lock a parent thread held at the fork (starting a worker) stays held in the
    # child for ever: the child gets fresh ones, of the same kind.
    _renew_lock(server)
    try:
        from multiprocessing import resource_tracker
    except ImportError:
        return
    _renew_lock(getattr(resource_tracker, "_resource_tracker", None))


def _renew_lock(holder: Any) -> None:
    lock = getattr(holder, "_lock", None)
    if lock is not None:
        reentrant = isinstance(lock, type(threading.RLock()))
        holder._lock = threading.RLock() if reentrant else threading.Lock()


def _renew_own_locks() -> None:
    """In a fork child: fresh module locks, and ``__main__`` as it was.

    A parent thread starting a worker at the fork holds these locks, and hides
    ``__main__``'s file and spec, for ever in the child: its first worker would wait
    for ever (seen: 9 forks in 120 under load), and its ``__file__`` would be gone.
    """
    global _main_lock, _process_lock, _main_hidden
    main = sys.modules.get("__main__")
    if _main_hidden is not None and main is not None:
        _show_main(main, _main_hidden)
    _main_hidden = None
    _main_lock = threading.Lock()
    _process_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_the_parents_forkserver)
    os.register_at_fork(after_in_child=_renew_own_locks)
