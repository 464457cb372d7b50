"""What every worker pool backend shares: jobs, calls, and the backend seam.

A *call* is one ``map``/``results``/``submit`` invocation: a function, its
failure-handling settings, and where its results go. A *job* is one input item of a
call; each time it runs is an *attempt*. The pool (``_pool``) pulls input and hands
jobs to a *backend* in chunks; the backend runs attempts wherever it runs code
(threads, an event loop, later processes or a cluster) and reports each outcome back
to the call. The call alone decides what an outcome means (retry after a backoff,
or a final Result for the consumer), so every backend gets retries, dead letters,
statistics and exactly-once delivery for free, and the semantics cannot drift apart.

Why chunks: handing a job to a parked worker costs a thread wake-up (tens of
microseconds on a small VM), far more than a no-op job. So a call measures how long
its jobs take and sends as many per chunk as fit in the backend's
``chunk_seconds`` of work (200 us on threads and asyncio); slow or I/O-bound jobs go
one per chunk, so concurrency is never lost. With a ``timeout`` or a ``rate`` every
chunk holds one job.
"""

from __future__ import annotations

import math
import threading
import traceback as tb
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from contextvars import ContextVar
from itertools import count, repeat
from time import monotonic
from typing import Any

import cloudpickle

from ._context import Context, background
from ._exceptions import JobTimeout
from ._process_worker import job_context, worker_state_dict
from ._rate import RateLimiter
from ._result import Result
from ._retry import RetryPolicy
from ._stats import StatsRecorder
from ._timer import schedule

__all__ = [
    "Backend",
    "Batch",
    "Call",
    "Collector",
    "Done",
    "Fresh",
    "FreshSlot",
    "Job",
    "JobSlot",
    "Outcome",
    "Task",
    "Returned",
    "current_context",
    "enter_slot",
    "fail_chunk",
    "pickled_function",
    "leave_slot",
    "worker_state",
]


class JobSlot:
    """Which job a worker is running: set once per chunk, updated per job (cheaper)."""

    __slots__ = ("job",)

    def __init__(self) -> None:
        self.job: Job | None = None


class FreshSlot:
    """The job holder of a worker thread running a :class:`Fresh` chunk.

    No Job exists for a fresh chunk's items; one is made only for a job that asks
    for its Context (``current_context()``). The running job is the one whose value
    comes next: position ``len(values)``, so the worker's loop updates nothing per job.
    """

    __slots__ = ("call", "first_start", "fresh", "made", "values")

    def __init__(self, call: Call, fresh: Fresh, first_start: float, values: list[Any]) -> None:
        self.call = call
        self.fresh = fresh
        self.first_start = first_start
        self.values = values
        self.made: dict[int, Job] = {}  # by position: the jobs that asked for a Context

    @property
    def job(self) -> Job:
        position = len(self.values)
        job = self.made.get(position)
        if job is None:
            fresh = self.fresh
            job = Job(self.call, fresh.start + position, fresh.items[position])
            job.attempts = 1
            job.first_start = self.first_start
            self.made[position] = job
        return job

    def release_contexts(self) -> None:
        """End the Contexts made for this chunk's jobs (they have all finished)."""
        for job in self.made.values():
            job.release_context()


def _no_job() -> None:
    """A Task's function once its job has run."""


class Task:
    """A submitted job with nothing to retry, time or pace, settling its future itself.

    ``fn(*args, **kwargs)`` run by a worker thread with no Call, Job or Collector: a
    lone job's hand-off then costs about what ``ThreadPoolExecutor``'s does. It marks
    ``future`` running when it starts (skipping the job if it was cancelled), counts
    itself in ``stats``, leaves ``pending`` (the pool's submitted futures) when it has
    ended, then settles it.
    It is its own job slot: ``current_context()`` inside it makes the job's Context
    on first use, a child of ``parent``.
    """

    __slots__ = (
        "_context",
        "args",
        "backend",
        "fn",
        "future",
        "kwargs",
        "parent",
        "pending",
        "stats",
    )

    def __init__(
        self,
        future: Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        backend: Backend,
        stats: StatsRecorder,
        parent: Context,
        pending: dict[Future[Any], Any],
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.backend = backend
        self.stats = stats
        self.parent = parent
        self.pending = pending
        self._context: Context | None = None

    @property
    def job(self) -> Task:
        return self

    def context(self) -> Context:
        context = self._context
        if context is None:
            context = self._context = self.parent.with_cancel()
        return context

    def cancel(self) -> None:
        """End the job's Context, if it made one (as :meth:`Call.cancel`)."""
        context = self._context
        if context is not None:
            context.cancel()

    def __call__(self) -> None:
        future = self.future
        try:
            started = future.set_running_or_notify_cancel()
        except RuntimeError:  # already failed: its backend died
            started = False
        if not started:
            self.stats.cancelled()
            self._forget()
            return
        stats = self.stats
        stats.started_alone()
        start = monotonic()
        token = _current_slot.set(self)
        failure: BaseException | None = None
        try:
            value = self.fn(*self.args, **self.kwargs)
        except BaseException as error:  # a job's failure, whatever it is, is its outcome
            value, failure = None, error
        self.fn = _no_job  # a worker holds its last Task until its next: keep no job
        self.args = ()
        self.kwargs = {}
        _current_slot.reset(token)
        stats.ended_alone(monotonic() - start, failure is not None, True)
        self._forget()
        try:
            if failure is None:
                future.set_result(value)
            else:
                future.set_exception(failure)
                failure = None  # its traceback holds this frame: no cycle left behind
        except InvalidStateError:  # failed meanwhile: its backend died
            pass

    def _forget(self) -> None:
        """The job has ended (or will never start): the pool forgets it."""
        self.pending.pop(self.future, None)  # atomic: no lock needed
        context = self._context
        if context is not None:
            context.cancel()


_current_slot: ContextVar[JobSlot | FreshSlot | Task | None] = ContextVar(
    "chanflow_current_job", default=None
)


_thread_state = threading.local()


def worker_state() -> dict[str, Any]:
    """A dict private to the worker running this job, for expensive set-up kept across jobs.

    In a process-backend worker it lives as long as the worker process (fill it in
    the pool's ``initializer``, or lazily in the first job: a model, a database
    connection). On threads (and on an event loop's thread) it is private to the
    thread. Never blocks.
    """
    state = worker_state_dict()
    if state is not None:
        return state
    try:
        return _thread_state.state  # type: ignore[no-any-return]
    except AttributeError:
        state = _thread_state.state = {}
        return state


def current_context() -> Context:
    """The Context of the job running in this thread, task or worker process.

    Inside a pool job it is cancelled when the job's call or pool is cancelled (early
    exit, leaving the ``with``) or when the attempt's ``timeout`` passes (then its
    error is a DeadlineExceeded). In a worker process, the parent's cancellation
    arrives as a message; a job that does not stop within a grace period is
    terminated with its worker. Outside a job it is ``background()``. Never blocks;
    the first call in an attempt costs about 2 us, later ones 0.2 us.
    """
    slot = _current_slot.get()
    if slot is None:
        in_process = job_context()  # a job of a process-backend worker, or None
        return background() if in_process is None else in_process
    job = slot.job
    return background() if job is None else job.context()


class Job:
    """One input item of a call, across its attempts."""

    __slots__ = (
        "_context",
        "attempts",
        "call",
        "deadline",
        "first_start",
        "index",
        "item",
        "not_before",
    )

    def __init__(self, call: Call, index: int, item: Any) -> None:
        self.call = call
        self.index = index
        self.item = item
        self.attempts = 0
        self.first_start = 0.0
        self.deadline: float | None = None
        # The monotonic time before which this attempt must not start: a retry handed
        # to the backend ahead of its due time (see ``Backend.dispatch_lead``); 0.0
        # (or any past time) when it may start at once.
        self.not_before = 0.0
        self._context: Context | None = None

    def context(self) -> Context:
        context = self._context
        if context is None:
            parent = self.call.context
            if self.deadline is None:
                context = parent.with_cancel()
            else:
                context = parent.with_deadline(self.deadline)
            self._context = context
        return context

    def past_deadline(self) -> bool:
        """Whether this attempt watched its Context and has reached its deadline.

        Such a job may end *because* the deadline cancelled its Context, a moment
        before the pool's own timer fires: the attempt is a timeout all the same.
        """
        return (
            self._context is not None and self.deadline is not None and monotonic() >= self.deadline
        )

    def expire_context(self) -> None:
        """The attempt ran past its deadline: cancel its Context now, as DeadlineExceeded.

        The Context's own timer does the same on the timer thread, which a busy
        machine may run late; a backend about to stop the job calls this first, so
        the job never sees itself stopped with its Context not yet cancelled.
        """
        context = self._context
        if context is not None:
            context._expire()

    def release_context(self) -> None:
        context = self._context
        if context is not None:
            self._context = None
            context.cancel()

    def __repr__(self) -> str:
        return f"<Job index={self.index} attempts={self.attempts} item={self.item!r}>"


class Returned(ABC):
    """Jobs of one chunk that all returned: values, not yet Results (the fast path).

    A chunk that went well travels to the consumer as one object, and ``map`` hands
    its values out without building a Result per job (about 0.3 us per job saved);
    ``results()`` builds them. Its jobs' indices run without a gap when
    :meth:`consecutive` says so (a fresh chunk's always do).
    """

    __slots__ = ("values",)

    values: list[Any]

    def __len__(self) -> int:
        return len(self.values)

    @abstractmethod
    def first_index(self) -> int: ...

    @abstractmethod
    def consecutive(self) -> bool: ...

    @abstractmethod
    def elapsed(self) -> list[float]: ...

    @abstractmethod
    def results(self) -> list[Result[Any]]: ...


class Done(Returned):
    """Returned jobs, each with its own attempts and end time (a worker thread's chunk)."""

    __slots__ = ("ends", "jobs")

    def __init__(self, jobs: list[Job], values: list[Any], ends: list[float]) -> None:
        self.jobs = jobs
        self.values = values
        self.ends = ends

    def first_index(self) -> int:
        return self.jobs[0].index

    def consecutive(self) -> bool:
        jobs = self.jobs
        return jobs[-1].index - jobs[0].index == len(jobs) - 1

    def elapsed(self) -> list[float]:
        return [end - job.first_start for job, end in zip(self.jobs, self.ends, strict=True)]

    def results(self) -> list[Result[Any]]:
        return [
            Result(job.item, job.index, value, None, job.attempts, end - job.first_start)
            for job, value, end in zip(self.jobs, self.values, self.ends, strict=True)
        ]


class Batch(Returned):
    """A :class:`Fresh` chunk whose jobs all returned at their first attempt.

    No Job was ever made for them. The chunk is timed as a whole (a worker process
    reports it at once; a worker thread reads no clock per job), so each job is
    given an equal share of the chunk's ``seconds``: their sum, the stage's busy
    time, stays true.
    """

    __slots__ = ("elapsed_each", "items", "start")

    def __init__(self, fresh: Fresh, values: list[Any], seconds: float) -> None:
        self.start = fresh.start
        self.items = fresh.items
        self.values = values
        self.elapsed_each = seconds / len(values) if values else 0.0

    def first_index(self) -> int:
        return self.start

    def consecutive(self) -> bool:
        return True

    def elapsed(self) -> list[float]:
        return [self.elapsed_each] * len(self.values)

    def results(self) -> list[Result[Any]]:
        elapsed, items = self.elapsed_each, self.items
        indices = range(self.start, self.start + len(items))
        return [
            Result(item, index, value, None, 1, elapsed)
            for index, item, value in zip(indices, items, self.values, strict=True)
        ]


class Fresh:
    """A chunk of jobs not yet attempted, as input items and the index of the first.

    What the pool hands a backend that can run a chunk as a whole (processes): no
    per-job object until one is needed (:meth:`jobs`), which saves about 0.3 us a job.
    """

    __slots__ = ("items", "start")

    def __init__(self, start: int, items: list[Any]) -> None:
        self.start = start
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def jobs(self, call: Call, first_start: float | None = None) -> list[Job]:
        """The chunk's jobs; with ``first_start``, their first attempt begun then."""
        jobs = list(map(Job, repeat(call, len(self.items)), count(self.start), self.items))
        if first_start is not None:
            for job in jobs:
                job.attempts = 1
                job.first_start = first_start
        return jobs


Outcome = list[Result[Any]] | Returned  # what a worker hands over for one chunk


class Collector:
    """What a worker gathers while it runs a chunk.

    Values (a :class:`Done`) while every job returns; from the first failure on,
    Results (the jobs before it become Results too), in job order either way.
    """

    __slots__ = ("_call", "_ends", "_jobs", "_results", "_values")

    def __init__(self, call: Call) -> None:
        self._call = call
        self._jobs: list[Job] = []
        self._values: list[Any] = []
        self._ends: list[float] = []
        self._results: list[Result[Any]] | None = None

    def value(self, job: Job, value: Any) -> None:
        if self._results is None:
            if job._context is not None:
                job.release_context()
            self._jobs.append(job)
            self._values.append(value)
            self._ends.append(monotonic())
        else:
            self._results.append(self._call.succeeded(job, value))

    def values(self, jobs: list[Job], values: list[Any]) -> None:
        """Many jobs returned at once (a worker process's chunk): one clock read for all.

        Their jobs never had a context here (``current_context()`` ran in the
        worker process), so there is none to release.
        """
        if self._results is not None:
            for job, value in zip(jobs, values, strict=True):
                self._results.append(self._call.succeeded(job, value))
            return
        self._jobs.extend(jobs)
        self._values.extend(values)
        self._ends.extend([monotonic()] * len(jobs))

    def error(self, job: Job, error: BaseException, traceback: str | None = None) -> None:
        results = self._results
        if results is None:
            results = self._results = Done(self._jobs, self._values, self._ends).results()
        result = self._call.failed(job, error, traceback)
        if result is not None:
            results.append(result)

    def outcome(self) -> Outcome:
        """What the chunk came to, in job order."""
        results = self._results
        if results is not None:
            results.sort(key=_index)  # a job may have failed before earlier ones ran
            return results
        return Done(self._jobs, self._values, self._ends)


def _index(result: Result[Any]) -> int:
    return result.index


class _RemoteTraceback(Exception):
    """The traceback of an error raised in a worker process, as its ``__cause__``.

    An exception that travels from a process loses its traceback; this keeps the
    worker's, so that a printed error shows where the job failed (as
    ``concurrent.futures.ProcessPoolExecutor`` does).
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


def attach_remote_traceback(error: BaseException, text: str) -> None:
    """Make the worker's traceback ``text`` the cause at the end of ``error``'s causes
    (its own cause, when it came without one), unless it has a traceback or one is there."""
    if error.__traceback__ is not None:
        return
    last, seen = error, {id(error)}
    while last.__cause__ is not None and id(last.__cause__) not in seen:
        last = last.__cause__
        seen.add(id(last))
    if not isinstance(last, _RemoteTraceback) and last.__cause__ is None:
        last.__cause__ = _RemoteTraceback(text)


def format_error(error: BaseException) -> str:
    return "".join(tb.format_exception(type(error), error, error.__traceback__))


class Call:
    """One map/results/submit invocation: its function, its settings, its sink.

    ``deliver`` receives each chunk's final outcomes (a list of Results, or a
    :class:`Returned` when every job of the chunk returned), from any thread, and must not
    block. Everything here is safe to call from worker threads, event loops and the
    timer thread at once.
    """

    __slots__ = (
        "_chunk",
        "_context",
        "_fixed_chunk",
        "_parent_context",
        "_seconds_per_job",
        "backend",
        "calibrated",
        "cancelled",
        "deliver",
        "fn",
        "limiter",
        "on_start",
        "paced",
        "policy",
        "stats",
        "timeout",
    )

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        backend: Backend,
        policy: RetryPolicy,
        timeout: float | None,
        limiter: RateLimiter | None,
        stats: StatsRecorder,
        context: Context,
        deliver: Callable[[Outcome], object],
        chunksize: int | None = None,
        on_start: Callable[[], bool] | None = None,
        derive_context: bool = False,
    ) -> None:
        self.fn = fn
        self.backend = backend
        self.policy = policy
        self.timeout = timeout
        self.limiter = limiter
        self.stats = stats
        # With ``derive_context``, ``context`` is the parent of the call's own, which
        # is made on first use: most submitted jobs never ask for theirs, and a
        # Context made and cancelled per job would cost ~1.5 us of a ~20 us submit.
        self._parent_context = context
        self._context: Context | None = None if derive_context else context
        self.deliver = deliver
        self.cancelled = False
        # Asked before a job's first attempt; False skips the job (a submitted
        # future cancelled while it waited: see PoolExecutor).
        self.on_start = on_start
        self._seconds_per_job: float | None = None
        # A timeout or a rate is per job: one job per chunk then, whatever chunksize
        # says (a job must not wait behind another's attempt, nor share its deadline).
        self.paced = timeout is not None or limiter is not None
        self._chunk = 1 if self.paced else chunksize or 1
        self._fixed_chunk = chunksize is not None
        # True once chunk sizes are known: after the first measurement, or at once
        # when every chunk holds one job anyway (paced) or the caller fixed the size.
        self.calibrated = self.paced or self._fixed_chunk

    # -- chunking ---------------------------------------------------------------------

    def chunk_size(self) -> int:
        """How many jobs to hand to one worker at a time (1 until durations are known)."""
        return self._chunk

    def measured(self, jobs: int, seconds: float) -> None:
        """A worker ran ``jobs`` attempts in ``seconds``: adapt the chunk size."""
        if self.paced or self._fixed_chunk or jobs <= 0:
            return
        per_job = seconds / jobs
        self.calibrated = True
        average = self._seconds_per_job
        average = per_job if average is None else 0.7 * average + 0.3 * per_job
        self._seconds_per_job = average
        backend = self.backend
        wanted = int(backend.chunk_seconds / max(average, 1e-9))
        self._chunk = max(1, min(backend.max_chunk, wanted))

    # -- attempts ---------------------------------------------------------------------

    def begin(self, job: Job) -> bool:
        """Start an attempt of ``job``; False if the call was cancelled (skip the job)."""
        if self.cancelled:
            self.stats.cancelled()
            return False
        if job.attempts == 0 and self.on_start is not None and not self.on_start():
            self.stats.cancelled()
            return False
        now = monotonic()
        if job.attempts == 0:
            job.first_start = now
        job.attempts += 1
        if self.timeout is not None:
            job.deadline = now + self.timeout
        return True

    def begin_fresh(self, fresh: Fresh) -> float | None:
        """Start the first attempt of a fresh chunk's jobs: the time, or None if cancelled.

        With no ``timeout`` (a fresh chunk never has one: see Backend.submit_items).
        """
        if self.cancelled:
            self.stats.cancelled(len(fresh))
            return None
        return monotonic()

    def begin_all(self, jobs: list[Job]) -> list[Job]:
        """Start an attempt of each job at once (one clock read); those not skipped.

        For backends that hand a whole chunk to a worker process at once; the
        attempts then start when the chunk is sent.
        """
        if self.cancelled:
            self.stats.cancelled(len(jobs))
            return []
        if self.on_start is not None:
            jobs = self._may_start(jobs)
        now = monotonic()
        deadline = None if self.timeout is None else now + self.timeout
        for job in jobs:
            if job.attempts == 0:
                job.first_start = now
            job.attempts += 1
            job.deadline = deadline
        return jobs

    def _may_start(self, jobs: list[Job]) -> list[Job]:
        """``jobs`` without the first attempts that ``on_start`` refuses."""
        assert self.on_start is not None
        kept = [job for job in jobs if job.attempts or self.on_start()]
        if len(kept) < len(jobs):
            self.stats.cancelled(len(jobs) - len(kept))
        return kept

    def succeeded(self, job: Job, value: Any) -> Result[Any]:
        """The attempt returned ``value``: the job's final Result."""
        if job._context is not None:
            job.release_context()
        return Result(job.item, job.index, value, None, job.attempts, monotonic() - job.first_start)

    def failed(
        self, job: Job, error: BaseException, traceback: str | None = None
    ) -> Result[Any] | None:
        """The attempt raised ``error``: schedule a retry (None) or return the final Result.

        ``traceback`` is the error's traceback text when it was formatted elsewhere
        (in a worker process); by default it is formatted from ``error``. If a
        callable ``backoff`` raises (or returns no valid delay) when asked for the
        retry's delay, the job ends with that error instead, ``error`` as its cause.
        """
        job.release_context()
        if isinstance(error, JobTimeout):
            self.stats.timed_out()
        if not self.cancelled and self.policy.should_retry(error, job.attempts):
            try:
                delay = self.policy.delay(job.attempts)
            except Exception as broken:  # the user's backoff: the job ends with its error
                broken.__cause__ = error
                error, traceback = broken, None
            else:
                self.stats.retried()
                self._retry_later(job, delay)
                return None
        elapsed = monotonic() - job.first_start
        if traceback is None:
            text = format_error(error)
        else:
            text = traceback
            attach_remote_traceback(error, traceback)
        return Result(job.item, job.index, None, error, job.attempts, elapsed, text)

    def chunk_started(self) -> None:
        """A worker starts running a chunk of this call (counted as one running attempt)."""
        self.stats.chunk_started()

    def chunk_ended(self, outcome: Outcome, ran: int, seconds: float) -> None:
        """A worker is done with a chunk: count it, adapt the chunk size, deliver it."""
        self.stats.chunk_ended(outcome)
        self.measured(ran, seconds)
        if outcome:
            self.deliver(outcome)

    def returned_alone(self, job: Job, value: Any) -> None:
        """:meth:`chunk_ended` of a chunk of one job that returned ``value`` (a submitted
        job): the same counts and delivery at a third of the cost."""
        end = monotonic()
        self.stats.ended_alone(end - job.first_start)
        self.deliver(Done([job], [value], [end]))

    def _retry_later(self, job: Job, delay: float) -> None:
        if delay <= 0 or not math.isfinite(delay):
            self._resubmit(job)
            return
        # A paced attempt (a deadline, a rate token) starts when it is handed over.
        lead = 0.0 if self.paced else self.backend.dispatch_lead
        if lead:
            job.not_before = monotonic() + delay
        if delay <= lead:
            self._resubmit(job)
        else:
            schedule(delay - lead, lambda: self._resubmit(job))

    def _resubmit(self, job: Job) -> None:
        if self.cancelled:
            self.stats.cancelled()
            return
        try:
            self.backend.submit(self, [job])
        except RuntimeError:  # the pool closed while the job waited (its call is over)
            self.stats.cancelled()

    def timed_out(self, job: Job) -> JobTimeout:
        return JobTimeout(f"job {job.index} attempt {job.attempts} ran over {self.timeout} s")

    @property
    def context(self) -> Context:
        """The call's Context: cancelled when the call is (its jobs' contexts derive from it)."""
        context = self._context
        if context is None:
            context = self._context = self._parent_context.with_cancel()
            if self.cancelled:
                context.cancel()
        return context

    def cancel(self) -> None:
        """Stop starting this call's jobs and cancel the running ones' contexts."""
        self.cancelled = True
        context = self._context
        if context is not None:
            context.cancel()


def enter_slot(slot: JobSlot | FreshSlot | Task) -> Any:
    """Make ``slot`` the current job holder of this thread or task; returns a token."""
    return _current_slot.set(slot)


def leave_slot(token: Any) -> None:
    _current_slot.reset(token)


class Backend(ABC):
    """Where a pool runs its jobs. One instance serves every call of one pool.

    ``submit`` hands a chunk of jobs of ``call`` to the workers and must never block
    (the pool bounds how many jobs are in flight). A worker running a chunk calls
    ``call.chunk_started()``, then for each job ``call.begin(job)`` (skipping the job
    if it returns False) and ``call.fn(job.item)`` with ``current_context()``
    pointing at the job (``enter_slot``), gathering what happened in a
    :class:`Collector` (``value`` or ``error``; a timed-out attempt fails with
    ``call.timed_out(job)``). It ends with ``call.chunk_ended(collector.outcome(),
    ran, seconds)``, which also delivers the outcome, in the order of the chunk's
    jobs (an ordered consumer relies on it). A backend with a ``dispatch_lead``
    starts no job before its ``job.not_before``.
    """

    kind: str = "?"
    workers: int  # how many jobs run at once, at most
    # What killed a worker thread or task of this backend, if something ever did: a
    # bug of chanflow's own (a job's failure is its Result). The chunk it held is lost,
    # so consumers waiting on this backend fail with it rather than wait for ever.
    failure: BaseException | None = None
    on_failure: Callable[[Backend], object] | None = None  # set by the pool that owns it
    # Chunks aim at about this much work: enough to make a hand-off cheap per job,
    # little enough that the head-of-line delay inside a chunk stays unnoticeable.
    chunk_seconds: float = 0.0002
    max_chunk: int = 256
    # A retry may be handed to the backend this many seconds before it is due, when
    # the backend holds each job until its ``not_before``: where a hand-off is a chain
    # of wake-ups (timer thread, slot thread, worker process), they then happen while
    # the backoff runs out instead of after it. 0: jobs are handed over when due.
    dispatch_lead: float = 0.0
    # A sync consumer handing out ready items runs pure Python without releasing the
    # GIL; a worker thread that wants it meanwhile waits up to the 5 ms switch
    # interval. The consumer releases it once every ``gil_every + 1`` items (a mask):
    # a few microseconds of work between releases, for about 0.02 us per item.
    gil_every: int = 255

    def default_buffer(self) -> int:
        """The pool's ``buffer`` when none is given, before job durations are known.

        Two jobs per worker: enough to keep every worker busy with slow jobs.
        """
        return 2 * self.workers

    def window_cap(self) -> int:
        """The most jobs a default window grows to for cheap jobs (see default_window).

        On threads and asyncio (one GIL) 1024 jobs are enough for chunks that amortise
        a wake-up: measured, a no-op job costs about 0.6 us on 8 threads with them,
        4 us with a window of 16. Never below :meth:`default_buffer`.
        """
        return max(self.default_buffer(), 1024)

    def default_window(self, chunk: int) -> int:
        """The default ``buffer`` of a call whose chunks now hold ``chunk`` jobs.

        Two chunks per worker (one running, one waiting), so that cheap jobs travel
        in chunks that amortise a wake-up, clamped between :meth:`default_buffer`
        (slow jobs, one per chunk, keep ``2 * workers`` taken ahead) and
        :meth:`window_cap`, the bound the docs state.
        """
        floor = self.default_buffer()
        return max(floor, min(floor * chunk, self.window_cap()))

    def chunk_cap(self, buffer: int) -> int:
        """The largest chunk for a call with this ``buffer``.

        Threads and asyncio share one GIL, so one chunk of the whole buffer at a time
        costs the fewest wake-ups and loses no parallelism.
        """
        return buffer

    def first_fill(self, buffer: int) -> int:
        """How many jobs a call sends before its first chunk has been measured."""
        return buffer

    @abstractmethod
    def submit(self, call: Call, jobs: list[Job]) -> None:
        """Queue ``jobs`` to run; never blocks."""

    def submit_one(self, call: Call, job: Job) -> None:
        """:meth:`submit` of one job (a submitted one); a backend may run it more cheaply."""
        self.submit(call, [job])

    def submit_items(self, call: Call, start: int, items: list[Any]) -> None:
        """Queue the first attempt of jobs made of ``items`` (indices from ``start``).

        By default as Jobs; a backend that runs a chunk as a whole may take them as a
        :class:`Fresh` chunk instead. Never blocks.
        """
        self.submit(call, Fresh(start, items).jobs(call))

    def died(self, error: BaseException) -> None:
        """A worker thread or task died of ``error`` (a bug): record it, tell the owner."""
        if self.failure is not None:
            return
        self.failure = error
        if self.on_failure is not None:
            self.on_failure(self)

    def submit_chunked(self, call: Call, start: int, items: list[Any], size: int) -> None:
        """Queue the first attempt of ``items`` in chunks of ``size``. Never blocks."""
        for begin in range(0, len(items), size):
            self.submit_items(call, start + begin, items[begin : begin + size])

    @abstractmethod
    def close(self) -> None:
        """Stop the workers after their current jobs and wait for them (blocking)."""

    async def aclose(self) -> None:
        """Async twin of :meth:`close` (by default: close() in a thread)."""
        import asyncio

        await asyncio.to_thread(self.close)


def pickled_function(fn: Any, where: str) -> bytes | BaseException:
    """``fn`` cloudpickled for ``where`` it runs, or a TypeError saying why it cannot be.

    The error becomes each job's failure: an unpicklable function never hangs a pool.
    """
    try:
        return bytes(cloudpickle.dumps(fn))
    except Exception as error:
        return TypeError(f"the job function {fn!r} cannot be sent to {where}: {error}")


def broken_backend_error(backend: Backend) -> RuntimeError | None:
    """The error for a consumer of ``backend`` once one of its workers died (else None)."""
    failure = backend.failure
    if failure is None:
        return None
    error = RuntimeError(
        f"a worker of the {backend.kind} backend failed ({type(failure).__name__}: {failure}); "
        "the jobs it held are lost. This is a bug in chanflow: please report it"
    )
    error.__cause__ = failure
    return error


def fail_chunk(call: Call, jobs: list[Job] | Fresh, error: BaseException) -> None:
    """Every job of a chunk not yet begun fails with ``error`` (its attempt counted).

    For backends that cannot run a chunk at all (no worker could start, the function
    could not be sent): each job still comes out, once, as this error.
    """
    if isinstance(jobs, Fresh):
        first_start = call.begin_fresh(jobs)
        started = [] if first_start is None else jobs.jobs(call, first_start)
    else:
        started = call.begin_all(jobs)
    if not started:
        return
    call.chunk_started()
    collector = Collector(call)
    try:
        for job in started:
            collector.error(job, error)
    finally:
        call.chunk_ended(collector.outcome(), 0, 0.0)
