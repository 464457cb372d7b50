"""WorkerPool: a fixed set of workers, a bounded window of jobs, results as values.

The consumer drives everything. ``map``/``results`` (and their async twins) are
generators: each time the consumer asks for the next item, the generator tops the
window up from the input (at most ``buffer`` jobs taken and not yet handed out),
hands new jobs to the backend in chunks, and waits on the call's outcome channel.
No feeder thread exists, so a consumer that stops reading stops the input, and
breaking out of the loop (which closes the generator) ends the call at once.

A backend (``_backend_thread``, ``_backend_async``, ``_backend_process``,
``_backend_dask``) only runs attempts; retries, timeouts' meaning, dead letters,
statistics and ordering live here and in ``_backend.Call``, so every backend behaves
the same.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import math
import os
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, replace
from functools import partial
from itertools import chain, islice
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    ParamSpec,
    TypedDict,
    TypeVar,
    cast,
    overload,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

from ._backend import Backend, Call, Job, Outcome, Returned, Task, broken_backend_error
from ._backend_async import AsyncBackend, LoopThread
from ._backend_dask import DaskBackend, DaskRunner
from ._backend_process import ProcessBackend
from ._backend_thread import ThreadBackend
from ._channel import Channel
from ._context import background
from ._deadletters import DeadLetterSink, make_dead_letter_sink
from ._durable import DurableCall
from ._exceptions import Cancelled, ChannelClosed
from ._journal import check_journal_setting, check_resume
from ._progress import ProgressReporter
from ._rate import RateLimiter
from ._result import Result
from ._retry import Backoff, BackoffFunction, RetryOn, RetryPolicy
from ._stats import PoolStats, StatsRecorder, StatsTee
from ._sync import is_async_callable

__all__ = ["Apply", "CallOptions", "LiveInput", "PoolSettings", "WorkerPool"]

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

BACKENDS = ("auto", "thread", "async", "process", "dask")
# How often a consumer waiting for outcomes checks that its call was not cancelled
# from elsewhere (the pool left by another thread while this one was reading).
_LIVENESS_SECONDS = 0.5
# An async consumer that always finds outcomes ready never suspends; let the loop
# run its other tasks at least once every this many batches.
_YIELD_EVERY = 16


class PoolSettings(TypedDict, total=False):
    """The settings a pool has and each call may override (see :class:`WorkerPool`)."""

    buffer: int | None
    chunksize: int | None
    retries: int
    retry_on: RetryOn
    backoff: Backoff | BackoffFunction | float | None
    timeout: float | None
    rate: float | str | RateLimiter | None
    dead_letters: object
    progress: object


class JournalSettings(PoolSettings, total=False):
    """A pool's settings with its journal, which only map/results calls use."""

    journal: object
    resume: bool


class CallOptions(JournalSettings, total=False):
    """The per-call settings of ``map``/``results``/``amap``/``aresults``.

    Each overrides the pool's setting of the same name for that call only;
    ``ordered`` defaults to True for ``map``/``amap`` and False for the others.
    """

    ordered: bool


_OPTION_NAMES = CallOptions.__required_keys__ | CallOptions.__optional_keys__


class LiveInput(ABC):
    """An input that can say what it has *now*: a pipeline link, not a plain iterator.

    A plain iterator is pulled with ``islice``, which blocks until it has all the
    items asked for. A live input hands over what is ready instead, so a stage never
    sits on finished outcomes while it waits for its next input.
    """

    @abstractmethod
    def take_ready(self, n: int, wake: Callable[[], None]) -> list[Any] | None:
        """Up to ``n`` items without blocking; None once the input has ended.

        An empty list means none yet: then ``wake()`` is called once (from any
        thread) when items arrive or the input ends.
        """


def _default_workers(kind: str) -> int:
    if kind == "async":
        return 100
    if kind in ("process", "dask"):
        # For Dask a guess made without asking the cluster (pipelines size a stage's
        # buffer with it); a pool uses the cluster's thread count.
        return os.cpu_count() or 1
    return min(32, (os.cpu_count() or 1) + 4)


def _positive_int_or_none(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1 or None, not {value!r}")
    return value


def _refuse_process_options(options: dict[str, Any]) -> None:
    """Process settings given to another backend would be silently ignored: refuse them."""
    defaults: dict[str, Any] = {"initargs": ()}
    for name, value in options.items():
        if value != defaults.get(name):
            raise ValueError(f"{name}= applies to backend='process' only")


def _check_backend(backend: object) -> str:
    """The kind of backend: one of BACKENDS ("dask" for a DaskBackend)."""
    if isinstance(backend, DaskBackend):
        return "dask"
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(
            f"backend must be one of {', '.join(map(repr, BACKENDS))} or a DaskBackend, "
            f"not {backend!r}"
        )
    return backend


def resolve_kind(kind: str, fn: object) -> str:
    """The backend that runs ``fn`` ("auto" resolved); TypeError if ``kind`` cannot run it."""
    is_async = is_async_callable(fn)
    if kind == "auto":
        return "async" if is_async else "thread"
    if kind == "async" and not is_async:
        raise TypeError(
            f"backend='async' runs coroutine functions, not {fn!r}; "
            "use backend='thread' or 'auto' for a plain function"
        )
    if kind == "thread" and is_async:
        raise TypeError(
            f"backend='thread' runs plain functions, not the coroutine function {fn!r}; "
            "use backend='async' or 'auto'"
        )
    return kind


def _check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds or None, not {timeout!r}")
    return None if math.isinf(timeout) else float(timeout)


def _make_limiter(rate: object) -> RateLimiter | None:
    if rate is None or isinstance(rate, RateLimiter):
        return rate
    if isinstance(rate, bool) or not isinstance(rate, (int, float, str)):
        raise TypeError(
            f"rate must be a RateLimiter, a number or a string like '20/s', not {rate!r}"
        )
    try:
        return RateLimiter(rate)
    except (TypeError, ValueError) as error:
        raise ValueError(f"rate {rate!r} is not valid: {error}") from None


def _check_progress(progress: object) -> object:
    if progress is None or isinstance(progress, bool):
        return bool(progress)
    from rich.progress import Progress

    if isinstance(progress, Progress):
        return progress
    raise TypeError(f"progress must be True, False or a rich.progress.Progress, not {progress!r}")


def _check_ordered(ordered: object) -> bool:
    if not isinstance(ordered, bool):
        raise TypeError(f"ordered must be True or False, not {ordered!r}")
    return ordered


@dataclass(frozen=True, slots=True)
class _Settings:
    """The validated failure-handling settings of a pool or of one call."""

    buffer: int | None
    chunksize: int | None
    policy: RetryPolicy
    timeout: float | None
    limiter: RateLimiter | None
    dead_letters: DeadLetterSink | None
    progress: object
    journal: object = None  # a path or a Journal (see _durable)
    resume: bool = False

    @property
    def plain(self) -> bool:
        """Nothing to retry, time or pace: a submitted job can run as a Task."""
        return self.policy.retries == 0 and self.timeout is None and self.limiter is None

    def override(self, options: Mapping[str, Any]) -> tuple[_Settings, bool]:
        """These settings with a call's overrides; True if the call owns a new sink."""
        changes: dict[str, Any] = {}
        if "buffer" in options:
            changes["buffer"] = _positive_int_or_none(options["buffer"], "buffer")
        if "chunksize" in options:
            changes["chunksize"] = _positive_int_or_none(options["chunksize"], "chunksize")
        if options.keys() & {"retries", "retry_on", "backoff"}:
            policy = self.policy
            changes["policy"] = RetryPolicy.build(
                options.get("retries", policy.retries),
                options.get("retry_on", policy.retry_on),
                options.get("backoff", policy.backoff),
            )
        if "timeout" in options:
            changes["timeout"] = _check_timeout(options["timeout"])
        if "rate" in options:
            changes["limiter"] = _make_limiter(options["rate"])
        owns_sink = options.get("dead_letters") is not None
        if "dead_letters" in options:
            changes["dead_letters"] = make_dead_letter_sink(options["dead_letters"])
        if "progress" in options:
            changes["progress"] = _check_progress(options["progress"])
        if "journal" in options:
            changes["journal"] = check_journal_setting(options["journal"])
        if "resume" in options:
            changes["resume"] = check_resume(options["resume"])
        return (replace(self, **changes) if changes else self), owns_sink


class _Run(Generic[T]):
    """The consumer's side of one map/results call.

    Counts what was taken from the input, what came back from the backend and what
    was handed out, keeps the reorder window of an ordered call, and decides how
    much input to take next. Used by one consumer at a time (sync or async).
    """

    def __init__(
        self,
        pool: WorkerPool,
        fn: Callable[[Any], Any],
        backend: Backend,
        settings: _Settings,
        *,
        owns_sink: bool,
        values: bool,
        ordered: bool,
        total: int | None,
    ) -> None:
        self.outcomes: Channel[Outcome] = Channel(math.inf)
        self._progress_setting = settings.progress
        self._total = total
        self._name: str = getattr(fn, "__name__", "jobs")
        self.progress: ProgressReporter | None = None
        self.call_stats = StatsTee(pool._stats) if settings.progress else None
        stats = pool._stats if self.call_stats is None else self.call_stats
        # With a journal, outcomes reach the consumer only once they are committed.
        self.durable: DurableCall | None = None
        if settings.journal is not None:
            self.durable = DurableCall(
                settings.journal,
                resume=settings.resume,
                fn=fn,
                dead_letters=settings.dead_letters is not None,
            )
        self.call = Call(
            fn,
            backend=backend,
            policy=settings.policy,
            timeout=settings.timeout,
            limiter=settings.limiter,
            stats=stats,
            context=pool._context.with_cancel(),
            deliver=self._deliver if self.durable is None else self.durable.deliver,
            chunksize=settings.chunksize,
        )
        self.stats = stats
        # An explicit buffer is a hard cap; the default window follows the chunk size
        # (see Backend.default_window) and is re-read before each refill (_adapt).
        self.adaptive = settings.buffer is None
        self._fixed = 2 * backend.workers * (settings.chunksize or 1)  # the chunks asked for
        self.buffer = settings.buffer or max(backend.default_buffer(), self._fixed)
        self.chunk_cap = backend.chunk_cap(self.buffer)
        self.first_fill = backend.first_fill(self.buffer)
        self.sink = settings.dead_letters
        self.owns_sink = owns_sink
        self.values = values
        self.ordered = ordered
        self.taken = 0
        self.returned = 0
        self.handed = 0
        self.exhausted = False
        self.input_error: Exception | None = None
        self.waits = 0
        self.refill_below = self.buffer
        self._next_out = 0
        self._pending: dict[int, Outcome] = {}  # runs by their first index
        self.ready: deque[Any] = deque()  # values (map) or Results (results)
        self.dead: deque[Result[Any]] = deque()
        self.failures = 0  # _Failure items ever put in ``ready`` (map only)
        self.awaiting_input = False  # a live input had nothing and will nudge
        # When a waiting consumer gives up with TimeoutError (PoolExecutor.map's
        # ``timeout``, measured from the call); None: it waits as long as it takes.
        self.deadline: float | None = None
        # Jobs whose outcomes the backend has delivered (counted from any thread, and
        # only for a call that may be drained: see count_deliveries), and what
        # stop_taking() left: see PoolExecutor.shutdown.
        self.counting = False
        self.delivered = 0
        self._delivered_lock = threading.Lock()
        self.drained: threading.Event | None = None
        self.stopped_error: Exception | None = None
        self.ended = False

    def start_progress(self) -> None:
        """Show the progress bar, if asked for: from the first step, not at creation."""
        self.progress = ProgressReporter.create(self._progress_setting, self._total, self._name)

    def _deliver(self, outcome: Outcome) -> None:
        try:  # once per chunk: a try costs less than contextlib.suppress
            self.outcomes.send_nowait(outcome)
        except ChannelClosed:  # the consumer has gone
            pass
        if self.counting:
            self._count_delivered(len(outcome))

    def count_deliveries(self) -> None:
        """Count delivered jobs from now on (before any is taken), so that
        :meth:`wait_delivered` can tell when the taken ones are all out. Off by
        default: a lock per chunk that a pool's own calls do not need."""
        self.counting = True

    def _count_delivered(self, jobs: int) -> None:
        with self._delivered_lock:
            self.delivered += jobs
            drained = self.drained
        if drained is not None and self.delivered >= self.taken:
            drained.set()

    def stop_taking(self, error: Exception) -> None:
        """Take no more input, from any thread; the jobs taken still run and come out.

        The consumer decides what ``stopped_error`` means (see PoolExecutor.map).
        """
        if not self.exhausted:
            self.stopped_error = error
            self.exhausted = True

    def wait_delivered(self) -> None:
        """Block until every job taken so far has been delivered (after stop_taking),
        the call is cancelled, or its backend has failed."""
        with self._delivered_lock:
            drained = self.drained = threading.Event()
        backend = self.call.backend
        while self.delivered < self.taken and not self.call.cancelled:
            if broken_backend_error(backend) is not None:
                return  # its workers died: what they held will never come out
            drained.wait(_LIVENESS_SECONDS)  # re-checked: taken may grow once more
            drained.clear()

    def nudge(self) -> None:
        """Wake the consumer to look at its live input again (an empty outcome)."""
        self._deliver([])

    # -- taking input ---------------------------------------------------------------

    def want(self) -> int:
        """How many items to take from the input now (0: none).

        Waits until a refill step (a whole chunk, at least a sixteenth of the buffer)
        fits before taking more while jobs are in flight, so that jobs reach the
        workers in chunks and batches rather than one by one; and until
        the call's chunk size is calibrated, keeps at most ``first_fill`` jobs in
        flight (so a process pool does not split its buffer into one-job chunks).
        """
        if self.exhausted or self.awaiting_input:
            return 0
        if self.adaptive:
            self._adapt()
        room = self.buffer - (self.taken - self.handed)
        in_flight = self.taken - self.returned
        if not self.call.calibrated:
            room = min(room, self.first_fill - in_flight)
        if room <= 0 or (room < self._refill_step() and in_flight):
            return 0
        return room

    def _adapt(self) -> None:
        """Size the default window to the chunks the call's measured jobs now travel in."""
        backend = self.call.backend
        window = max(backend.default_window(self.call.chunk_size()), self._fixed)
        if window != self.buffer:
            self.buffer = window
            self.chunk_cap = backend.chunk_cap(window)

    def _chunk(self) -> int:
        return min(self.call.chunk_size(), self.chunk_cap)

    def _refill_step(self) -> int:
        """Take input only once this much room is free while jobs are in flight.

        At least a whole chunk; and at least a sixteenth of the buffer, so that
        one-job chunks (slow jobs) are taken and queued a few dozen at a time rather
        than one per item handed out, which costs the consumer's thread a refill per
        job while a thousand workers want the GIL.
        """
        return max(self._chunk(), self.buffer >> 4)

    def accept(self, items: list[Any]) -> None:
        """Hand freshly taken items to the backend, in chunks."""
        if items:
            call, start = self.call, self.taken
            self.taken += len(items)
            if self.durable is None:
                self.stats.submitted(len(items))
                call.backend.submit_chunked(call, start, items, self._chunk())
            else:
                self._accept_journaled(start, items)
        # Below this many jobs held, a refill step fits again: the consumer's hot loop
        # compares against it instead of calling want() per item.
        self._set_refill()

    def _accept_journaled(self, start: int, items: list[Any]) -> None:
        """Submit items taken from a resumed input (the unfinished jobs only), under
        their input indices; digest them for the journal."""
        durable, call = cast(DurableCall, self.durable), self.call
        for index, segment in durable.split(start, items):
            durable.expect(index, segment)
            self.stats.submitted(len(segment))
            call.backend.submit_chunked(call, index, segment, self._chunk())

    def _set_refill(self) -> None:
        waiting = self.exhausted or self.awaiting_input
        self.refill_below = -1 if waiting else max(0, self.buffer - self._refill_step())

    def input_empty(self) -> None:
        """The live input had nothing: take none until it nudges (see LiveInput)."""
        self.awaiting_input = True
        self._set_refill()

    def input_failed(self, error: Exception) -> None:
        """The input raised: take no more, and raise it once the jobs taken are out."""
        self.exhausted = True
        self.input_error = error

    # -- outcomes -------------------------------------------------------------------

    def absorb(self, batches: list[Outcome]) -> None:
        if self.durable is not None and self.durable.error is not None:
            raise self.durable.error  # a commit failed: what it held is not handed out
        for outcome in batches:
            if not outcome:  # a live input's nudge: input arrived, nothing returned
                self.awaiting_input = False
                self._set_refill()
                continue
            self.returned += len(outcome)
            if not self.ordered:
                self._release(outcome)
                continue
            # Ordered: keep runs of consecutive indices (a chunk usually is one) under
            # their first index, and release them once the head of the input arrives.
            pending, durable = self._pending, self.durable
            for run in _consecutive_runs(outcome):
                first = _first_index(run)
                # A resumed call runs only unfinished jobs: its order is theirs.
                pending[first if durable is None else durable.position(first)] = run
            while self._next_out in pending:
                run = pending.pop(self._next_out)
                self._release(run)
                self._next_out += len(run)

    def _release(self, outcome: Outcome) -> None:
        """Move outcomes to where the consumer takes them: ready items or dead letters.

        For ``map`` the ready items are the values themselves, and a failure to
        raise is wrapped in a :class:`_Failure`; for ``results`` they are Results.
        """
        ready = self.ready
        if isinstance(outcome, Returned):
            ready.extend(outcome.values if self.values else outcome.results())
            return
        for result in outcome:
            if result.error is not None:
                if self.sink is not None:
                    self.dead.append(result)
                else:
                    if self.values:
                        self.failures += 1
                        ready.append(_Failure(result))
                    else:
                        ready.append(result)
            else:
                ready.append(result.value if self.values else result)

    def take_dead(self) -> Result[Any]:
        self.handed += 1
        return self.dead.popleft()

    def finished(self) -> bool:
        return self.exhausted and self.returned == self.taken and not self.ready and not self.dead

    def patience(self) -> float:
        """How long the consumer waits for outcomes before it looks around again."""
        if self.deadline is None:
            return _LIVENESS_SECONDS
        return max(0.0, min(_LIVENESS_SECONDS, self.deadline - time.monotonic()))

    def waited_too_long(self) -> None:
        """Nothing came back for a while: fail if the call was cancelled from elsewhere,
        if a worker of its backend died (see Backend.failure), or past the deadline."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise concurrent.futures.TimeoutError()
        if self.call.cancelled:
            raise _closed_while_running()
        broken = broken_backend_error(self.call.backend)
        if broken is not None:
            raise broken

    def report_progress(self) -> None:
        progress, call_stats = self.progress, self.call_stats
        if progress is not None and call_stats is not None and progress.due():
            progress.update(call_stats.snapshot())

    def end(self) -> None:
        """The consumer is done with this call (finished, failed or left early).

        Idempotent.
        """
        if self.ended:
            return
        self.ended = True
        self.call.cancel()
        self.outcomes.close()
        if self.progress is not None and self.call_stats is not None:
            self.progress.close(self.call_stats.snapshot())
        if self.owns_sink and self.sink is not None:
            self.sink.close()
        self.close_journal()

    def close_journal(self) -> None:
        """Commit what has arrived and close the call's journal (idempotent)."""
        if self.durable is not None:
            self.durable.close()


def _closed_while_running() -> Cancelled:
    return Cancelled("the worker pool was closed while this call was running")


def _until_failure(run: _Run[Any], batch: list[Any]) -> Iterator[list[Any]]:
    """Yield the items of ``batch`` before its first failure, then raise that failure."""
    for position, item in enumerate(batch):
        if type(item) is _Failure:
            yield batch[:position]
            raise item.result.error  # type: ignore[misc]
    yield batch


class _Failure:
    """A failed job's Result among the values that ``map`` hands out (it raises it)."""

    __slots__ = ("result",)

    def __init__(self, result: Result[Any]) -> None:
        self.result = result


def _first_index(run: Outcome) -> int:
    return run.first_index() if isinstance(run, Returned) else run[0].index


def _consecutive_runs(outcome: Outcome) -> list[Outcome]:
    """``outcome`` (in index order) split where indices stop being consecutive."""
    if isinstance(outcome, Returned):
        if outcome.consecutive():
            return [outcome]  # the common case: a whole chunk came back
        outcome = outcome.results()
    first, last = outcome[0].index, outcome[-1].index
    if last - first == len(outcome) - 1:
        return [outcome]
    runs: list[list[Result[Any]]] = [[outcome[0]]]
    for result in outcome[1:]:
        if result.index == runs[-1][-1].index + 1:
            runs[-1].append(result)
        else:
            runs.append([result])
    return list(runs)


def _total_of(jobs: object, progress: object) -> int | None:
    """How many jobs, for the progress bar's ETA; only asked when a bar is shown.

    Only then: ``len()`` of some lazy inputs loads them whole (an ORM query set), and
    one that fails just means no ETA.
    """
    if not progress:
        return None
    try:
        return len(jobs)  # type: ignore[arg-type]
    except Exception:
        return None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _settle(future: concurrent.futures.Future[Any], outcome: Outcome) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled meanwhile
        if not isinstance(outcome, list):  # Returned (not isinstance of it: an ABC, slower)
            future.set_result(outcome.values[0])
            return
        [result] = outcome
        if result.error is None:
            future.set_result(result.value)
        else:
            future.set_exception(result.error)


class Apply:
    """``fn(*args, **kwargs)`` as a job function whose job is ``(args, kwargs)``.

    For ``submit`` (and a map over several iterables): an object rather than a
    closure, so that the arguments travel to a process or Dask worker once, as the
    job, and a coroutine function stays one (see :class:`AsyncApply`).
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, job: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
        args, kwargs = job
        return self.fn(*args, **kwargs)

    def forget(self) -> None:
        """Drop the function (its job has ended): the pool keeps nothing of a job."""
        self.fn = _nothing

    @staticmethod
    def of(fn: Callable[..., Any]) -> Apply:
        """An Apply of ``fn``; a coroutine function's is one too (see :class:`AsyncApply`)."""
        return AsyncApply(fn) if is_async_callable(fn) else Apply(fn)


class AsyncApply(Apply):
    """:class:`Apply` of a coroutine function: itself a coroutine function."""

    __slots__ = ()

    async def __call__(self, job: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
        args, kwargs = job
        return await self.fn(*args, **kwargs)


class WorkerPool:
    """A fixed number of workers running many jobs, with bounded memory and no lost job.

    ``WorkerPool(workers=None, backend="auto", *, buffer=None, retries=0,
    retry_on=(Exception,), backoff=None, timeout=None, rate=None, dead_letters=None,
    progress=False, journal=None, resume=False)``

    * ``backend``: ``"thread"`` (plain functions on ``chanflow-worker-<n>`` threads),
      ``"async"`` (coroutine functions as worker tasks on an event loop: the caller's
      loop for ``amap``/``aresults``, else a ``chanflow-loop`` thread the pool owns),
      ``"process"`` (any function, lambdas and closures too, in worker processes, one
      job at a time each; a coroutine function runs on the worker's own event loop:
      see ``_backend_process``), ``"dask"`` or a :class:`DaskBackend` (any function,
      as tasks on a Dask distributed cluster: the current client's, or a
      LocalCluster the pool starts and closes; see ``_backend_dask``), or
      ``"auto"``: coroutine functions on asyncio, everything else on threads.
    * ``workers``: how many jobs run at once per backend; default
      ``min(32, os.cpu_count() + 4)`` threads, 100 async workers,
      ``os.cpu_count()`` processes, or the Dask cluster's thread count (read when
      the pool first runs a job; on Dask, ``workers`` counts chunks running at once).
    * ``mp_context``, ``initializer``, ``initargs``, ``max_jobs_per_worker``: for the
      process backend: the start method (default ``"forkserver"`` on Linux), a
      function run once in each worker (``cf.worker_state()`` is the per-worker dict
      to fill), and how many jobs a worker runs before it is replaced.
    * ``buffer``: at most this many jobs are taken from the input and not yet handed
      to the consumer, so memory stays flat on an endless input and a consumer that
      stops reading stops the input. Given, a hard cap. By default the window adapts
      to the job: ``2 * workers`` while job durations are unknown and for slow jobs
      (one per chunk), two chunks per worker for cheap ones, never more than
      ``max(2 * workers, 1024)`` on threads and asyncio, ``4096 * workers`` on
      processes and ``1024 * workers`` on Dask (see ``Backend.default_window``).
    * ``chunksize``: jobs handed to a worker at a time. By default the pool measures
      job durations and picks it (about 200 us of work per chunk on threads and
      asyncio, 20 ms on processes, 50 ms on Dask); a number fixes it.
    * ``retries``/``retry_on``/``backoff``: failed attempts raising an instance of
      ``retry_on`` run again, up to ``retries`` more times, after
      ``backoff`` (a :class:`Backoff`, exponential with full jitter; a number of
      seconds, the base of the default ``Backoff``; or a callable
      ``attempt -> seconds``). Retry state is per job.
    * ``timeout``: seconds per attempt; an attempt that runs longer fails with
      :class:`JobTimeout` (retried like any failure). An async job is cancelled. A
      thread cannot be killed: the pool stops waiting for it, replaces the stuck
      worker so capacity holds, and drops whatever the thread returns later; the job
      can notice through ``current_context()``.
    * ``rate``: ``"20/s"``, a number per second or a :class:`RateLimiter`; limits job
      starts (retries included) across all workers.
    * ``dead_letters``: a :class:`Channel`, a callable or a JSON Lines path that
      receives each failed job's Result; such a job is then *not* yielded by ``map``
      or ``results`` (each job comes out exactly once: as a value, as a failed
      Result, or as a dead letter).
    * ``progress``: True for a live bar on stderr, or a ``rich.progress.Progress``.
    * ``journal``/``resume``: a path (or a :class:`Journal`) where each finished job
      of a ``map``/``results`` call (and their async twins) is committed before the
      consumer sees it; with ``resume=True``, a call killed at any moment runs again
      without re-running its finished jobs: their stored outcomes come back (a
      Result's ``replayed`` is True) and only the others run. A journal holds one
      run; see docs/durable-runs.md. ``submit`` is not journaled.

    Every setting but ``workers`` and ``backend`` can be overridden per call. Bad
    settings raise TypeError or ValueError here, naming the setting.

    Use it as a context manager (``with`` or ``async with``). Leaving it cancels the
    calls whose results nobody can receive any more (an abandoned ``map`` loop),
    closes their inputs, waits for submitted futures (or cancels them when leaving on
    an exception), and stops every worker thread and task it started.
    """

    def __init__(
        self,
        workers: int | None = None,
        backend: str | DaskBackend = "auto",
        *,
        buffer: int | None = None,
        chunksize: int | None = None,
        retries: int = 0,
        retry_on: RetryOn = (Exception,),
        backoff: Backoff | BackoffFunction | float | None = None,
        timeout: float | None = None,
        rate: float | str | RateLimiter | None = None,
        dead_letters: object = None,
        progress: object = False,
        journal: object = None,
        resume: bool = False,
        mp_context: object = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        max_jobs_per_worker: int | None = None,
    ) -> None:
        self._workers = _positive_int_or_none(workers, "workers")
        self._kind = _check_backend(backend)
        process_options: dict[str, Any] = {
            "mp_context": mp_context,
            "initializer": initializer,
            "initargs": initargs,
            "max_jobs_per_worker": max_jobs_per_worker,
        }
        # Built now, so its settings are checked now; it starts nothing before work.
        self._process_backend: ProcessBackend | None = None
        if self._kind == "process":
            workers = self._workers or _default_workers("process")
            self._process_backend = ProcessBackend(workers, **process_options)
            self._process_backend.on_failure = self._backend_died
        else:
            _refuse_process_options(process_options)
        # A Dask pool connects (or starts a LocalCluster) when it first runs a job.
        self._dask: DaskBackend | None = None
        self._dask_runner: DaskRunner | None = None
        if isinstance(backend, DaskBackend):
            self._dask = backend
        elif self._kind == "dask":
            self._dask = DaskBackend()
        self._settings = _Settings(
            buffer=_positive_int_or_none(buffer, "buffer"),
            chunksize=_positive_int_or_none(chunksize, "chunksize"),
            policy=RetryPolicy.build(retries, retry_on, backoff),
            timeout=_check_timeout(timeout),
            limiter=_make_limiter(rate),
            dead_letters=make_dead_letter_sink(dead_letters),
            progress=_check_progress(progress),
            journal=check_journal_setting(journal),
            resume=check_resume(resume),
        )
        self._stats = StatsRecorder()
        self._context = background().with_cancel()
        self._lock = threading.Lock()
        self._closed = False
        self._thread_backend: ThreadBackend | None = None
        self._async_backends: dict[asyncio.AbstractEventLoop, AsyncBackend] = {}
        self._loop_thread: LoopThread | None = None
        # The generators of map/results calls not yet finished, and their runs.
        self._runs: weakref.WeakKeyDictionary[Any, _Run[Any]] = weakref.WeakKeyDictionary()
        self._futures: dict[concurrent.futures.Future[Any], Call | Task] = {}
        self._last_kind: tuple[Callable[[], object], str] = (_nothing, self._kind)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<WorkerPool backend={self._kind!r} workers={self._workers} {state}>"

    # -- backends ---------------------------------------------------------------------

    def _backend_for(self, fn: object, loop: asyncio.AbstractEventLoop | None) -> Backend:
        """The backend that runs ``fn``; ``loop`` is the async consumer's loop, if any."""
        kind = self._kind_of(fn)
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            if kind == "thread":
                backend: Backend = self._thread_locked()
            elif kind == "process":
                backend = self._process_locked()
            elif kind == "dask":
                backend = self._dask_locked()
            else:
                backend = self._async_locked(loop)
        broken = broken_backend_error(backend)
        if broken is not None:  # one of its workers died of a bug: it takes no more work
            raise broken
        return backend

    def _submit_backend(self, fn: object) -> Backend:
        """:meth:`_backend_for` a submit, without the lock in the common case.

        A thread backend that exists and has not failed is the answer, unless the
        pool is closed; if it closes meanwhile, the backend refuses the job itself.
        """
        backend = self._thread_backend
        if (
            backend is not None
            and self._kind_of(fn) == "thread"
            and not self._closed
            and backend.failure is None
        ):
            return backend
        return self._backend_for(fn, _running_loop())

    def _kind_of(self, fn: object) -> str:
        """The backend kind that runs ``fn``; the last answer is kept, as a loop of
        submits asks it about one function again and again (inspect costs ~0.6 us)."""
        last_fn, last_kind = self._last_kind
        if fn is last_fn():
            return last_kind
        if not callable(fn):
            raise TypeError(f"the job function must be callable, not {fn!r}")
        kind = resolve_kind(self._kind, fn)
        with contextlib.suppress(TypeError):  # a builtin cannot be referred to weakly
            self._last_kind = (weakref.ref(fn), kind)  # weak: the pool keeps no job alive
        return kind

    def _backend_died(self, backend: Backend) -> None:
        """Fail the submitted futures waiting on ``backend``: their jobs may be lost."""
        with self._lock:
            doomed = [future for future, call in self._futures.items() if call.backend is backend]
        error = broken_backend_error(backend)
        for future in doomed:
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                future.set_exception(error)

    def _thread_locked(self) -> ThreadBackend:
        if self._thread_backend is None:
            self._thread_backend = ThreadBackend(self._workers or _default_workers("thread"))
            self._thread_backend.on_failure = self._backend_died
        return self._thread_backend

    def _process_locked(self) -> ProcessBackend:
        assert self._process_backend is not None, "made in __init__ for backend='process'"
        return self._process_backend

    def _dask_locked(self) -> DaskRunner:
        if self._dask_runner is None:
            assert self._dask is not None, "made in __init__ for a Dask pool"
            self._dask_runner = DaskRunner(self._dask, self._workers)  # connects: blocks
            self._dask_runner.on_failure = self._backend_died
        return self._dask_runner

    def _async_locked(self, loop: asyncio.AbstractEventLoop | None) -> AsyncBackend:
        if loop is None:
            if self._loop_thread is None:
                self._loop_thread = LoopThread()
            loop = self._loop_thread.loop
        backend = self._async_backends.get(loop)
        if backend is None:
            workers = self._workers or _default_workers("async")
            backend = self._async_backends[loop] = AsyncBackend(workers, loop)
            backend.on_failure = self._backend_died
        return backend

    # -- map and results --------------------------------------------------------------

    def _start(
        self,
        method: str,
        fn: Callable[[Any], Any],
        jobs: object,
        loop: asyncio.AbstractEventLoop | None,
        options: dict[str, Any],
    ) -> _Run[Any]:
        unknown = sorted(options.keys() - _OPTION_NAMES)
        if unknown:
            raise TypeError(f"{method}() got an unexpected keyword argument {unknown[0]!r}")
        values = method in ("map", "amap")
        ordered = _check_ordered(options.pop("ordered", values))
        settings, owns_sink = self._settings.override(options)
        backend = self._backend_for(fn, loop)
        return _Run(
            self,
            fn,
            backend,
            settings,
            owns_sink=owns_sink,
            values=values,
            ordered=ordered,
            total=_total_of(jobs, settings.progress),
        )

    @overload
    def map(
        self, fn: Callable[[T], Awaitable[R]], jobs: Iterable[T], **options: Unpack[CallOptions]
    ) -> Iterator[R]: ...

    @overload
    def map(
        self, fn: Callable[[T], R], jobs: Iterable[T], **options: Unpack[CallOptions]
    ) -> Iterator[R]: ...

    def map(self, fn: Callable[[Any], Any], jobs: Any, **options: Any) -> Iterator[Any]:
        """Run ``fn(job)`` for each job; yield the values lazily, in input order by default.

        Raises the error of the first failed job (in the order values are yielded)
        once the consumer reaches it, cancelling the rest; with ``dead_letters`` set,
        failed jobs go there and are skipped instead. An exception raised by
        ``jobs`` itself is raised as is after the values of the jobs taken before it.
        Each ``next()`` blocks until the next value is ready (and while a full
        dead-letter channel applies backpressure). Settings are checked now; nothing
        runs before the first ``next()``. Costs about 0.6 us per no-op job on 8
        threads with the default window (jobs travel to the workers in chunks sized
        from measured job times, at most ``buffer`` jobs at a time).
        """
        iterator = self._sync_input(jobs, "map")
        run = self._start("map", fn, jobs, None, options)
        return cast(Iterator[Any], self._register(self._driver(run, iterator, jobs), run))

    @overload
    def results(
        self, fn: Callable[[T], Awaitable[R]], jobs: Iterable[T], **options: Unpack[CallOptions]
    ) -> Iterator[Result[R]]: ...

    @overload
    def results(
        self, fn: Callable[[T], R], jobs: Iterable[T], **options: Unpack[CallOptions]
    ) -> Iterator[Result[R]]: ...

    def results(self, fn: Callable[[Any], Any], jobs: Any, **options: Any) -> Iterator[Result[Any]]:
        """Run ``fn(job)`` for each job; yield one :class:`Result` per job, never raising for one.

        Completion order by default (``ordered=True`` for input order). Jobs that
        failed for good go to ``dead_letters`` instead, when it is set. Otherwise as
        :meth:`map`.
        """
        iterator = self._sync_input(jobs, "results")
        run = self._start("results", fn, jobs, None, options)
        return cast(Iterator[Result[Any]], self._register(self._driver(run, iterator, jobs), run))

    def _map_batches(
        self, fn: Callable[[Any], Any], jobs: Iterable[Any] | LiveInput, **options: Any
    ) -> Iterator[list[Any]]:
        """:meth:`map` a list at a time, each list the values ready when it is yielded.

        For pipelines: a stage passes lists on without a step per item. A list
        counts as handed out when yielded (see ``_batches``).
        """
        iterator = jobs if isinstance(jobs, LiveInput) else self._sync_input(jobs, "map")
        run = self._start("map", fn, jobs, None, options)
        batches = self._batches(run, iterator, jobs, stretch_by_item=False)
        return cast(Iterator[list[Any]], self._register(batches, run))

    @staticmethod
    def _sync_input(jobs: object, method: str) -> Iterator[Any]:
        if isinstance(jobs, AsyncIterable) and not isinstance(jobs, Iterable):
            raise TypeError(f"{method}() takes an iterable; use a{method}() for an async iterable")
        try:
            return iter(jobs)  # type: ignore[call-overload, no-any-return]
        except TypeError:
            raise TypeError(f"{method}() takes an iterable of jobs, not {jobs!r}") from None

    def _register(self, generator: Any, run: _Run[Any]) -> Any:
        with self._lock:
            self._runs[generator] = run
        return generator

    def _driver(
        self, run: _Run[Any], iterator: Iterator[Any], jobs: object
    ) -> Generator[Any, None, None]:
        if run.durable is None:
            return self._drive(run, iterator, jobs)
        return self._drive_journaled(run, iterator, jobs)

    def _drive_journaled(
        self, run: _Run[Any], iterator: Iterator[Any], jobs: object
    ) -> Generator[Any, None, None]:
        """Drive a call with a journal: check a resumed input, run the unfinished jobs,
        and hand out the finished ones' stored outcomes in their places."""
        durable = cast(DurableCall, run.durable)
        batches: Generator[list[Any], None, None] | None = None
        try:
            live = chain(durable.prefix(iterator), iterator)
            durable.start(run._deliver, run.nudge)
            # The first window runs while the consumer takes the replayed outcomes.
            run.accept(_pull(run, live, run.want()))
            batches = self._batches(run, live, jobs)
            if not run.ordered:
                for result in durable.replays():
                    yield from _replayed(run, result)
                for batch in batches:
                    yield from batch
                return
            replays = durable.replays()
            replay = next(replays, None)
            position = 0  # of the next job that runs, among those that run
            while True:
                following = durable.original(position)
                while replay is not None and replay.index < following:
                    yield from _replayed(run, replay)
                    replay = next(replays, None)
                batch = next(batches, None)  # type: ignore[arg-type]
                if batch is None:
                    break
                if replay is None:
                    position += len(batch)
                    yield from batch
                    continue
                for item in batch:
                    following = durable.original(position)
                    while replay is not None and replay.index < following:
                        yield from _replayed(run, replay)
                        replay = next(replays, None)
                    position += 1
                    yield item
            while replay is not None:
                yield from _replayed(run, replay)
                replay = next(replays, None)
        finally:
            if batches is not None:
                batches.close()
            run.end()  # if the batches never started
            if inspect.isgenerator(jobs):
                jobs.close()

    def _drive(
        self, run: _Run[Any], iterator: Iterator[Any], jobs: object
    ) -> Generator[Any, None, None]:
        batches = self._batches(run, iterator, jobs)
        try:
            for batch in batches:
                yield from batch
        finally:
            batches.close()  # ends the call and closes the input, whoever stops first

    def _batches(
        self,
        run: _Run[Any],
        iterator: Iterator[Any] | LiveInput,
        jobs: object,
        stretch_by_item: bool = True,
    ) -> Generator[list[Any], None, None]:
        """Drive one call; yield the items ready to hand out, a list at a time.

        A list is counted as handed out when it is yielded, and no input is taken
        before the consumer asks for the next list: so a consumer that holds a list
        holds at most ``buffer`` items. For ``map``, a failure ends the list before it
        and is raised when the consumer asks for more.
        """
        run.start_progress()
        ready, values, take = run.ready, run.values, run.ready.popleft
        gil_every = run.call.backend.gil_every
        # A consumer stepping item by item holds the GIL through a stretch; one that
        # takes lists (a pipeline stage) hands each on in one step.
        longest = gil_every + 1 if stretch_by_item else 1 << 30
        since_release = 0
        try:
            while True:
                while run.dead:
                    cast(DeadLetterSink, run.sink).put(run.take_dead())
                while ready:
                    # Hand items out in stretches, keeping the books once per stretch
                    # (about 0.1 us a job less): up to where a refill of the input is
                    # due, and at most until the next release of the GIL.
                    due = run.taken - run.handed - run.refill_below
                    stretch = min(len(ready), max(1, due), longest)
                    run.handed += stretch  # no input is taken before the stretch is out
                    if stretch == len(ready):
                        batch = list(ready)
                        ready.clear()
                    else:
                        batch = [take() for _ in range(stretch)]
                    if values and run.failures:
                        yield from _until_failure(run, batch)
                    else:
                        yield batch
                    since_release += stretch
                    if since_release > gil_every:
                        since_release = 0
                        time.sleep(0)  # let the workers' threads in: see Backend.gil_every
                    if run.taken - run.handed <= run.refill_below:
                        run.accept(_pull(run, iterator, run.want()))
                if want := run.want():
                    run.accept(_pull(run, iterator, want))
                if run.finished():
                    break
                run.absorb(self._wait(run))
                run.report_progress()
            if run.input_error is not None:
                raise run.input_error
        finally:
            run.end()
            if inspect.isgenerator(jobs):
                jobs.close()

    @staticmethod
    def _wait(run: _Run[Any]) -> list[Outcome]:
        while True:
            try:
                return run.outcomes.recv_many(1 << 30, timeout=run.patience())
            except TimeoutError:
                run.waited_too_long()
            except ChannelClosed:
                raise _closed_while_running() from None

    def _started_map(
        self, fn: Callable[[Any], Any], jobs: object, deadline: float | None, **options: Any
    ) -> tuple[Generator[Any, None, None], _Run[Any], Iterator[Any]]:
        """:meth:`map` with its first window already taken, and a ``deadline``; also
        the call's run and its input iterator.

        For PoolExecutor.map, whose jobs start when it is called (as the stdlib's
        do) and whose ``next()`` raises TimeoutError once ``deadline`` has passed.
        """
        iterator = self._sync_input(jobs, "map")
        run = self._start("map", fn, jobs, None, options)
        run.deadline = deadline
        run.count_deliveries()
        # The whole window, even before job times are known (want() would take less
        # then): the stdlib's map submits its jobs at the call, and they run whether
        # or not anyone iterates.
        run.accept(_pull(run, iterator, run.buffer))
        # Not registered: the executor ends its maps itself, letting taken jobs finish.
        return self._drive(run, iterator, jobs), run, iterator

    # -- async map and results -----------------------------------------------------------

    @overload
    def amap(
        self,
        fn: Callable[[T], Awaitable[R]],
        jobs: Iterable[T] | AsyncIterable[T],
        **options: Unpack[CallOptions],
    ) -> AsyncIterator[R]: ...

    @overload
    def amap(
        self,
        fn: Callable[[T], R],
        jobs: Iterable[T] | AsyncIterable[T],
        **options: Unpack[CallOptions],
    ) -> AsyncIterator[R]: ...

    def amap(self, fn: Callable[[Any], Any], jobs: Any, **options: Any) -> AsyncIterator[Any]:
        """Async twin of :meth:`map`, to use with ``async for`` on a running loop.

        ``jobs`` may be an iterable or an async iterable. Coroutine jobs run as worker
        tasks on the caller's loop; plain functions on the pool's threads. Waiting
        never blocks the loop. Costs about 1-2 us per no-op coroutine job.
        """
        loop = asyncio.get_running_loop()
        source = self._async_input(jobs, "amap")
        run = self._start("amap", fn, jobs, loop, options)
        return cast(AsyncIterator[Any], self._register(self._adriver(run, source, jobs), run))

    @overload
    def aresults(
        self,
        fn: Callable[[T], Awaitable[R]],
        jobs: Iterable[T] | AsyncIterable[T],
        **options: Unpack[CallOptions],
    ) -> AsyncIterator[Result[R]]: ...

    @overload
    def aresults(
        self,
        fn: Callable[[T], R],
        jobs: Iterable[T] | AsyncIterable[T],
        **options: Unpack[CallOptions],
    ) -> AsyncIterator[Result[R]]: ...

    def aresults(
        self, fn: Callable[[Any], Any], jobs: Any, **options: Any
    ) -> AsyncIterator[Result[Any]]:
        """Async twin of :meth:`results` (see :meth:`amap`)."""
        loop = asyncio.get_running_loop()
        source = self._async_input(jobs, "aresults")
        run = self._start("aresults", fn, jobs, loop, options)
        return cast(
            AsyncIterator[Result[Any]], self._register(self._adriver(run, source, jobs), run)
        )

    @staticmethod
    def _async_input(jobs: object, method: str) -> Iterator[Any] | AsyncIterator[Any]:
        if isinstance(jobs, AsyncIterable):
            return jobs.__aiter__()
        try:
            return iter(jobs)  # type: ignore[call-overload, no-any-return]
        except TypeError:
            raise TypeError(
                f"{method}() takes an iterable or an async iterable of jobs, not {jobs!r}"
            ) from None

    def _adriver(
        self, run: _Run[Any], source: Iterator[Any] | AsyncIterator[Any], jobs: object
    ) -> AsyncIterator[Any]:
        if run.durable is None:
            return self._adrive(run, source, jobs)
        return self._adrive_journaled(run, source, jobs)

    async def _adrive_journaled(
        self, run: _Run[Any], source: Iterator[Any] | AsyncIterator[Any], jobs: object
    ) -> AsyncIterator[Any]:
        """Async twin of :meth:`_drive_journaled`."""
        durable = cast(DurableCall, run.durable)
        outputs: AsyncIterator[Any] | None = None
        try:
            live: Iterator[Any] | AsyncIterator[Any]
            if isinstance(source, AsyncIterator):
                live = _achain(await durable.aprefix(source), source)
            else:
                live = chain(durable.prefix(source), source)
            durable.start(run._deliver, run.nudge)
            run.accept(await _apull(run, live, run.want()))
            outputs = self._adrive(run, live, jobs)
            replays = durable.replays()
            replay = next(replays, None)
            position = 0
            while True:
                if run.ordered:
                    following = durable.original(position)
                    while replay is not None and replay.index < following:
                        for item in await _areplayed(run, replay):
                            yield item
                        replay = next(replays, None)
                else:
                    while replay is not None:
                        for item in await _areplayed(run, replay):
                            yield item
                        replay = next(replays, None)
                try:
                    item = await outputs.__anext__()
                except StopAsyncIteration:
                    break
                position += 1
                yield item
            while replay is not None:
                for item in await _areplayed(run, replay):
                    yield item
                replay = next(replays, None)
        finally:
            if outputs is not None:
                await outputs.aclose()  # type: ignore[attr-defined]
            run.end()
            if inspect.isasyncgen(source):
                await source.aclose()
            elif inspect.isgenerator(jobs):
                jobs.close()

    async def _adrive(
        self, run: _Run[Any], source: Iterator[Any] | AsyncIterator[Any], jobs: object
    ) -> AsyncIterator[Any]:
        run.start_progress()
        ready, values = run.ready, run.values
        try:
            while True:
                while run.dead:
                    await cast(DeadLetterSink, run.sink).aput(run.take_dead())
                while ready:
                    item = ready.popleft()
                    run.handed += 1
                    if values and type(item) is _Failure:
                        raise item.result.error  # type: ignore[misc]
                    yield item
                    if run.taken - run.handed <= run.refill_below:
                        run.accept(await _apull(run, source, run.want()))
                if want := run.want():
                    run.accept(await _apull(run, source, want))
                if run.finished():
                    break
                run.absorb(await self._await(run))
                run.report_progress()
            if run.input_error is not None:
                raise run.input_error
        finally:
            run.end()
            if inspect.isasyncgen(source):
                await source.aclose()
            elif inspect.isgenerator(jobs):
                jobs.close()

    @staticmethod
    async def _await(run: _Run[Any]) -> list[Outcome]:
        run.waits += 1
        if run.waits % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
        while True:
            try:
                return await run.outcomes.arecv_many(1 << 30, timeout=_LIVENESS_SECONDS)
            except TimeoutError:
                run.waited_too_long()
            except ChannelClosed:
                raise _closed_while_running() from None

    # -- submit -----------------------------------------------------------------------

    @overload
    def submit(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[R]: ...

    @overload
    def submit(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[R]: ...

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args, **kwargs)`` on the pool; return a ``concurrent.futures.Future``.

        Never blocks. The pool's retries, backoff, timeout and rate apply; dead letters
        do not (the future holds the error). A coroutine function runs on the
        caller's loop when called from one, else on the pool's loop thread. Cancelling
        the future cancels the job (its ``current_context()``) if it has not ended.
        Leaving the pool's ``with`` waits for submitted jobs, or cancels them when it
        is left on an exception.
        """
        return self._submit(fn, args, kwargs, False)

    def _submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        mark_running: bool,
    ) -> concurrent.futures.Future[Any]:
        """:meth:`submit`; with ``mark_running`` the future turns running when its job
        starts (and is then no longer cancellable), as a stdlib executor's does."""
        backend = self._submit_backend(fn)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        settings = self._settings
        if mark_running and settings.plain and isinstance(backend, ThreadBackend):
            self._submit_task(backend, future, fn, args, kwargs)
            return future
        if mark_running:
            # The worker forgets the future when the job ends or is skipped: a future
            # that cannot be cancelled once running needs no done-callback for it.
            deliver: Callable[[Outcome], object] = partial(self._settle_forgetting, future)
            on_start: Callable[[], bool] | None = partial(self._start_or_forget, future)
        else:
            deliver, on_start = partial(_settle, future), None
        call = Call(
            Apply.of(fn),
            backend=backend,
            policy=settings.policy,
            timeout=settings.timeout,
            limiter=settings.limiter,
            stats=self._stats,
            context=self._context,
            derive_context=True,
            deliver=deliver,
            chunksize=1,
            on_start=on_start,
        )
        with self._lock:
            self._futures[future] = call
        if not mark_running:
            future.add_done_callback(self._forget_future)
        self._stats.submitted()
        backend.submit_one(call, Job(call, 0, (args, kwargs)))
        return future

    def _submit_task(
        self,
        backend: ThreadBackend,
        future: concurrent.futures.Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """A submit with nothing to retry, time or pace, as a :class:`Task` (cheaper)."""
        task = Task(future, fn, args, kwargs, backend, self._stats, self._context, self._futures)
        # One dict operation is atomic (the GIL, or the dict's own lock without one):
        # no pool lock on this path. close() copies the dict in one step too.
        self._futures[future] = task
        self._stats.submitted()
        backend.submit_task(task)

    def _settle_forgetting(self, future: concurrent.futures.Future[Any], outcome: Outcome) -> None:
        self._forget_call(future)
        _settle(future, outcome)

    def _start_or_forget(self, future: concurrent.futures.Future[Any]) -> bool:
        try:
            if future.set_running_or_notify_cancel():
                return True
        except RuntimeError:  # already failed: its backend died
            pass
        self._forget_call(future)
        return False

    def _forget_call(self, future: concurrent.futures.Future[Any]) -> None:
        call = self._futures.pop(future, None)  # atomic: see _submit_task
        if call is not None:
            call.cancel()  # the job has ended: frees what a backend keeps per call
            if isinstance(call, Call) and isinstance(call.fn, Apply):
                call.fn.forget()  # a worker's frame may hold it until its next job

    def _forget_future(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            call = self._futures.pop(future, None)
        if call is not None:
            call.cancel()  # ends the job's context, if it made one; else just a flag

    # -- statistics -------------------------------------------------------------------

    def stats(self) -> PoolStats:
        """A frozen snapshot of this pool's counters (all calls). Never blocks; ~10 us."""
        return self._stats.snapshot()

    # -- closing ----------------------------------------------------------------------

    def _begin_close(
        self,
    ) -> tuple[list[tuple[Any, _Run[Any]]], list[concurrent.futures.Future[Any]]] | None:
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            runs = list(self._runs.items())
            futures = list(self._futures)
        return runs, futures

    def _cancel_submitted(self, futures: list[concurrent.futures.Future[Any]]) -> None:
        for future in futures:
            future.cancel()

    def _cancel_pending_futures(self) -> None:
        """Cancel the submitted futures (those of PoolExecutor: the ones not started)."""
        with self._lock:
            futures = list(self._futures)
        self._cancel_submitted(futures)

    def close(self, *, cancel_futures: bool = False) -> None:
        """Stop the pool (what leaving ``with`` does): blocks until its workers are gone.

        Open ``map``/``results`` generators are closed (their inputs too), submitted
        jobs are waited for (cancelled with ``cancel_futures=True``), then every
        worker thread and task the pool started is stopped. Idempotent.
        """
        started = self._begin_close()
        if started is None:
            return
        runs, futures = started
        for generator, run in runs:
            self._close_generator(generator, run)
        if cancel_futures:
            self._cancel_submitted(futures)
        else:
            concurrent.futures.wait(futures)
        self._context.cancel()
        self._stop_backends(_running_loop())

    @staticmethod
    def _close_generator(generator: Any, run: _Run[Any]) -> None:
        """End an abandoned call; the input closes with the generator."""
        if inspect.isgenerator(generator):
            with contextlib.suppress(ValueError):  # running in another thread
                generator.close()
        run.call.cancel()  # for one that could not be closed here
        run.outcomes.close()  # wakes its consumer if it is waiting in another thread
        if not inspect.isgenerator(generator) or inspect.getgeneratorstate(generator) == (
            inspect.GEN_CLOSED
        ):
            run.close_journal()  # never started (its finally never ran) or done

    def _stop_backends(self, loop: asyncio.AbstractEventLoop | None) -> None:
        if self._thread_backend is not None:
            self._thread_backend.close()
        if self._process_backend is not None:
            self._process_backend.close()
        if self._dask_runner is not None:
            self._dask_runner.close()
        for backend_loop, backend in self._async_backends.items():
            if backend_loop is not loop:
                backend.close()
        if self._loop_thread is not None:
            self._loop_thread.stop()
        if self._settings.dead_letters is not None:
            self._settings.dead_letters.close()

    async def aclose(self, *, cancel_futures: bool = False) -> None:
        """Async twin of :meth:`close`: waits without blocking the loop."""
        started = self._begin_close()
        if started is None:
            return
        runs, futures = started
        for generator, run in runs:
            if inspect.isasyncgen(generator):
                with contextlib.suppress(RuntimeError):  # running in another task
                    await generator.aclose()
            self._close_generator(generator, run)
        if cancel_futures:
            self._cancel_submitted(futures)
        elif futures:
            await asyncio.wait([asyncio.wrap_future(future) for future in futures])
        self._context.cancel()
        loop = asyncio.get_running_loop()
        here = self._async_backends.get(loop)
        if here is not None:
            await here.aclose()
        await asyncio.to_thread(self._stop_backends, loop)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(cancel_futures=exc_type is not None)

    async def __aenter__(self) -> WorkerPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose(cancel_futures=exc_type is not None)


async def _achain(items: list[Any], source: AsyncIterator[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item
    async for item in source:
        yield item


async def _areplayed(run: _Run[Any], result: Result[Any]) -> list[Any]:
    """Async twin of :func:`_replayed`: a full dead-letter channel never blocks the loop."""
    if result.error is not None and run.sink is not None:
        await run.sink.aput(result)
        return []
    return list(_replayed(run, result))


def _replayed(run: _Run[Any], result: Result[Any]) -> Iterator[Any]:
    """What a journaled outcome gives the consumer: its value or Result, its stored
    error raised (map), or nothing (a dead letter, sent to the call's sink)."""
    if result.error is None:
        yield result.value if run.values else result
    elif run.sink is not None:
        run.sink.put(result)
    elif run.values:
        raise result.error
    else:
        yield result


def _nothing() -> None:
    """A dead weak reference: what no job function is."""


def has_more(iterator: Iterator[Any]) -> bool:
    """Whether an input that was stopped had items left (one is taken to know)."""
    try:
        return next(iterator, _NOTHING) is not _NOTHING
    except Exception:
        return True


_NOTHING = object()


def _pull(run: _Run[Any], iterator: Iterator[Any] | LiveInput, n: int) -> list[Any]:
    """Take up to ``n`` items; an input error is kept for later, not lost with the items."""
    if isinstance(iterator, LiveInput):
        return _pull_live(run, iterator, n)
    items: list[Any] = []
    try:
        # list.extend keeps the items it got before an error; islice runs in C.
        items.extend(islice(iterator, n))
    except Exception as error:
        run.input_failed(error)
        return items
    if len(items) < n:
        run.exhausted = True
    return items


def _pull_live(run: _Run[Any], live: LiveInput, n: int) -> list[Any]:
    try:
        items = live.take_ready(n, run.nudge)
    except Exception as error:
        run.input_failed(error)
        return []
    if items is None:
        run.exhausted = True
    elif not items:
        run.input_empty()
    return items or []


async def _apull(run: _Run[Any], source: Iterator[Any] | AsyncIterator[Any], n: int) -> list[Any]:
    if not isinstance(source, AsyncIterator):
        return _pull(run, source, n)
    items: list[Any] = []
    try:
        for _ in range(n):
            items.append(await source.__anext__())
    except StopAsyncIteration:
        run.exhausted = True
    except Exception as error:
        run.input_failed(error)
    return items
